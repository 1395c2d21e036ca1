"""Logging: `configure_logging()`, called once by the command line. Event names are in `mirror.events`.

Events go to stderr (stdout carries `--json` documents and `show` bytes): readable
colour on a terminal, one JSON object per line otherwise (journald, files, pipes).

structlog is configured when it is first imported, not before: a command that logs
nothing (`status`, `history`, `show`) never loads it, nor the `rich` it loads when
installed (together ~20-60 ms of every command's start-up).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, Protocol, TextIO, cast

from mirror.events import LIBRARY_LOG
from mirror.urls import mask_userinfo


class _ToStructlog(logging.Handler):
    """Sends stdlib log records through structlog, so every line has one format and one writer lock."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            import structlog  # configured as it loads (`configure_logging`)

            structlog.get_logger(record.name).log(
                record.levelno, LIBRARY_LOG, logger=record.name, message=record.getMessage()
            )
        except Exception:  # a log line must never take the process down
            self.handleError(record)


class SupportsLock(Protocol):
    def acquire(self, block: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...


_HIDDEN: set[str] = set()  # secrets no log line may show (`hide`)


def hide(*secrets: str) -> None:
    """Mask each of `secrets` (a webhook's secret, an Apprise URL) as `***` in every later log line."""
    _HIDDEN.update(s for s in secrets if len(s) >= 4)


def _masked(text: str) -> str:
    for secret in _HIDDEN:  # whole secrets first: masking user info would change what they look like
        if secret in text:
            text = text.replace(secret, "***")
    return mask_userinfo(text)


def mask_secrets(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Mask the user info of every URL, and every hidden secret, in a log line's text fields (and lists).

    The sources mask what they log already; this is the net under them, for a message a
    library wrote or a field added later.
    """
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = _masked(value)
        elif isinstance(value, list | tuple):
            event[key] = [_masked(v) if isinstance(v, str) else v for v in value]
    return event


def configure_logging(json: bool | None = None, level: str = "info") -> None:
    """Configure logging once. `json=None` picks JSON unless stderr is a terminal.

    Library records (stdlib `logging`) go through structlog from now on; structlog itself is
    configured now if it is loaded, else the moment it is first imported (`_ConfigureOnImport`).
    """
    if json is None:
        json = not sys.stderr.isatty()
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(logging.WARNING)
    for finder in [f for f in sys.meta_path if isinstance(f, _ConfigureOnImport)]:
        sys.meta_path.remove(finder)  # an earlier call's settings, never applied: these replace them
    configure = _structlog_configurer(json, level)
    if "structlog" in sys.modules:
        configure()
    else:
        sys.meta_path.insert(0, _ConfigureOnImport(configure))


def _structlog_configurer(json: bool, level: str) -> Callable[[], None]:
    threshold = logging.getLevelNamesMapping()[level.upper()]

    def configure() -> None:
        import structlog

        shared: list[Any] = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_secrets,
        ]
        renderer: list[Any]
        if json:
            renderer = [
                structlog.processors.dict_tracebacks,
                structlog.processors.JSONRenderer(sort_keys=False),
            ]
        else:
            renderer = [structlog.dev.ConsoleRenderer(colors=True)]
        structlog.configure(
            processors=[*shared, structlog.processors.StackInfoRenderer(), *renderer],
            wrapper_class=structlog.make_filtering_bound_logger(threshold),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=False,
        )

    return configure


class _ConfigureOnImport(importlib.abc.MetaPathFinder):
    """On `sys.meta_path` until structlog is imported: it loads as always, then `configure` runs.

    The module is configured before the `import` statement that loaded it returns, so no
    line is ever logged with structlog's defaults (which print to stdout).
    """

    def __init__(self, configure: Callable[[], None]) -> None:
        self.configure = configure

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "structlog":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # once; the finders after it find the package as ever
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenConfigure(spec.loader, self.configure)
        return spec


class _ThenConfigure(importlib.abc.Loader):
    """The package's own loader, then `configure`; afterwards the module names its own loader again."""

    def __init__(self, loader: importlib.abc.Loader, configure: Callable[[], None]) -> None:
        self.loader = loader
        self.configure = configure

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.configure()


SHARED_WAIT = 2.0  # seconds a process waits for the shared lock before it writes anyway (its holder died)


class _WholeLines:
    """stderr shared by processes: what a line's writes bring is written at its flush, whole, under `lock`.

    structlog prints the line and its newline in two writes, then flushes, under a lock of
    its own per file (so threads never mix this buffer); across processes, a pipe keeps
    writes whole only up to 4 KiB, and a line with a diff is longer.
    """

    def __init__(self, file: TextIO, lock: SupportsLock) -> None:
        self._file = file
        self._lock = lock
        self._pending: list[str] = []

    def write(self, text: str) -> int:
        self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        text, self._pending = "".join(self._pending), []
        taken = self._lock.acquire(timeout=SHARED_WAIT)
        try:
            self._file.write(text)
            self._file.flush()
        finally:
            if taken:
                self._lock.release()


def share_stderr(lock: SupportsLock) -> None:
    """Write each log line whole under `lock`, which every process sharing this stderr takes (`mirror.team`).

    Call before forking: the children inherit the setting.
    """
    import structlog

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _WholeLines(sys.stderr, lock)))
    )
