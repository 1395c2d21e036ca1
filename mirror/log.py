"""Logging: `configure_logging()`, called once by the command line. Event names are in `mirror.events`.

Events go to stderr (stdout carries `--json` documents and `show` bytes): readable
colour on a terminal, one JSON object per line otherwise (journald, files, pipes).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from mirror.events import LIBRARY_LOG
from mirror.urls import mask_userinfo


class _ToStructlog(logging.Handler):
    """Sends stdlib log records through structlog, so every line has one format and one writer lock."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger(record.name).log(
                record.levelno, LIBRARY_LOG, logger=record.name, message=record.getMessage()
            )
        except Exception:  # a log line must never take the process down
            self.handleError(record)


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
    """Configure structlog once. `json=None` picks JSON unless stderr is a terminal."""
    if json is None:
        json = not sys.stderr.isatty()
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
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(logging.WARNING)
