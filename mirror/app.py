"""The command line's plumbing: the app context (config and store opened once), exit codes, errors.

This is the only place that maps `MirrorError` classes to exit codes:
0 success; 1 verify found damage; 2 usage, config, unknown URL/version or no store to read;
3 runtime failure; 130 interrupted. Usage errors are one line too, as every error is.
The commands themselves are in `mirror.cli`.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import click

from mirror import render
from mirror.errors import ConfigError, MirrorError, NoStore, NotFound, RestoreError, StoreError, UsageError

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT (click alone would say 1, `verify`'s "damaged")

if TYPE_CHECKING:  # real imports are deferred so that `--help` stays fast
    from mirror.archive import Archive
    from mirror.config import Config
    from mirror.integrity import VerifyReport
    from mirror.reader import Reader


_STARTING = [False]  # the collector is off for this process's start-up (`starting`)


def starting() -> None:
    """Turn the cyclic garbage collector off until the command has started (`started`).

    A command's start-up allocates the objects of every module it imports, its config and
    its store's engine, nearly all of which live to the end; the collector's passes over
    that growing heap find nothing and cost ~13% of the imports (measured, what `check`
    imports: 0.38 -> 0.33 s CPU). For the `mirror` program only: a caller that runs commands
    in its own process (tests) keeps its collector.
    """
    if gc.isenabled():
        gc.disable()
        _STARTING[0] = True


def started() -> None:
    """Start the collector again, with everything loaded so far frozen out of its passes.

    Frozen objects (modules, classes, the config) are skipped by every later full collection
    of a long round or the daemon, and stay shared with forked worker processes instead of
    being copied when a collection touches their headers (Python's documented use of
    `gc.freeze`).
    """
    if _STARTING[0]:
        _STARTING[0] = False
        gc.freeze()
        gc.enable()


def exit_code_for(error: MirrorError) -> int:
    """Return the documented exit code for an error."""
    if isinstance(error, ConfigError | UsageError | NotFound | NoStore | RestoreError):
        return EXIT_USAGE
    if isinstance(error, StoreError):
        return EXIT_RUNTIME
    return EXIT_RUNTIME


@dataclass
class AppContext:
    config_option: str | None
    log_format: str
    log_level: str
    _config: Config | None = None
    _store: Reader | None = None

    def config(self) -> Config:
        if self._config is None:
            from mirror.config import config_path, load_config

            self._config = load_config(config_path(self.config_option, os.environ), os.environ)
            started()
        return self._config

    def database(self) -> str:
        """Return the store's URL; unless the whole config is loaded already, without reading the targets
        (and without checking the file again when it passed before: `mirror.config_cache`)."""
        if self._config is not None:
            return self._config.storage.database
        from mirror.config_cache import config_path, store_url

        return store_url(config_path(self.config_option, os.environ), os.environ)

    def archive(self, *, create: bool = False) -> Archive:
        """Return the store; only `create=True` (`check`; `run` opens its own) makes or migrates one.

        Raises:
            NoStore: without `create`, there is no store at the current schema.
        """
        from mirror.archive import Archive

        if isinstance(self._store, Archive):
            return self._store
        self.close()
        database = self.config().storage.database if create else self.database()
        archive = Archive.open(database, existing=not create)
        self._store = archive
        started()
        return archive

    def reader(self) -> Reader:
        """Return the store's read side, for the commands that only read the record.

        Raises:
            NoStore: there is no store at the current schema.
        """
        if self._store is None:
            from mirror.reader import Reader

            self._store = Reader.open(self.database(), existing=True)
            started()
        return self._store

    def adopt(self, store: Reader) -> None:
        """Make `store` the one this context closes at the end (`serve` opens its own, read-only)."""
        self.close()
        self._store = store
        started()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


pass_app = click.make_pass_decorator(AppContext)
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")


def emit_json(document: Any) -> None:
    """Write one JSON document to stdout, a piece at a time (a round's report holds every target)."""
    for piece in render.json_pieces(document):
        click.echo(piece, nl=False)
    click.echo()


def echo_lines(lines: list[str]) -> None:
    click.echo("\n".join(lines))


def parse_time(text: str, option: str = "--at") -> datetime:
    """Return an aware UTC datetime from ISO 8601 text; a time without a zone is UTC.

    Raises:
        UsageError: not ISO 8601.
    """
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option}: expected an ISO 8601 time like 2026-11-01T12:00:00Z, got {text!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def published_head(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
        raise UsageError(f"--published: expected SEQ:HASH (a number and 64 hex digits), got {text!r}")
    return int(seq), digest


def one_of(spec: str | None, at: str | None) -> str | None:
    if spec is not None and at is not None:
        raise UsageError("give --version or --at, not both")
    return spec


def url_argument(text: str) -> str:
    from mirror.urls import BadURL, normalize_url

    try:
        return normalize_url(text)
    except BadURL as exc:
        raise UsageError(str(exc)) from None


def bind_address(text: str, *, public: bool) -> tuple[str, int]:
    """Return (host, port) of `--bind HOST:PORT` (`[::1]:8070` for IPv6).

    Raises:
        UsageError: not HOST:PORT, or a host other than loopback without `--public`.
    """
    import ipaddress

    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--bind: expected HOST:PORT like 127.0.0.1:8070, got {text!r}")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not public:
        raise UsageError(
            f"--bind {text}: not a loopback address; the page has no authentication, "
            "so binding it elsewhere needs --public"
        )
    return host, int(port)


def record_verify_run(archive: Archive, report: VerifyReport, started: datetime) -> None:
    """Record a finished verify run in the store; a store that cannot be written is told on stderr.

    The report stands either way: a copy of the store on read-only media verifies as well.
    """
    from mirror.domain import VerifyRun

    run = VerifyRun(datetime.now(UTC), report.ok, len(report.problems), report.head_seq, report.head_hash)
    try:
        archive.record_verify(run, started)
    except StoreError as exc:
        click.echo(f"mirror: warning: this verify run is not recorded: {exc}", err=True)


def fail(error: MirrorError) -> NoReturn:
    click.echo(f"mirror: error: {error}", err=True)
    raise SystemExit(exit_code_for(error))


def usage_line(exc: click.ClickException) -> str:
    """Return click's complaint as our one line: lower-case, on one line, with where to get help."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    head, did, hint = message.partition(". Did you mean ")
    if did:
        message = f"{head} (did you mean {hint.rstrip('?')}?)"
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError):
        message += f"; try '{ctx.command_path if ctx is not None else 'mirror'} --help'"
    return message


def catch_sigint() -> None:
    """Make Ctrl-C raise KeyboardInterrupt, however the process was started.

    A shell starts a background job with SIGINT ignored, and Python then installs no
    handler of its own: Ctrl-C (or `kill -INT`) would do nothing. `mirror run` replaces
    this handler with its own graceful stop.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def errors_to_exit_codes() -> Iterator[None]:
    try:
        yield
    except MirrorError as exc:
        fail(exc)
    except OSError as exc:  # disk full, permission denied, ...: a runtime failure, one line
        click.echo(f"mirror: error: {exc}", err=True)
        raise SystemExit(EXIT_RUNTIME) from None
    except Exception as exc:  # a bug: a runtime failure (3), never 1, which `verify` says only of damage
        traceback.print_exc()
        click.echo(f"mirror: error: unexpected {type(exc).__name__}: {exc}", err=True)
        raise SystemExit(EXIT_RUNTIME) from None


pass_app = click.make_pass_decorator(AppContext)
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")


def version_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--version V` and `--at TIME`, the two ways to name one version of a document."""
    f = click.option(
        "--at", "at", metavar="TIME", help="The version current at this ISO 8601 time (UTC if no zone)."
    )(f)
    return click.option(
        "--version", "spec", metavar="V", help="Version number, -1 latest, or sha256 prefix."
    )(f)
