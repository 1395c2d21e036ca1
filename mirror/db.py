"""The database edge: open an engine, migrate it, run transactions with retries.

Everything SQLAlchemy raises is translated here, once, into `StoreError` or
`DatabaseUnavailable` with a one-line message and the password masked; and only
here are transient errors (a locked SQLite file, a lost PostgreSQL connection,
a serialisation failure) retried, as apscheduler's `_retry.py` does.

- SQLite: WAL, `busy_timeout`, `foreign_keys=ON`, `synchronous=NORMAL`. pysqlite's
  own transaction handling is switched off and SQLAlchemy emits the BEGIN itself:
  `BEGIN IMMEDIATE` for writes, so concurrent writers queue on the busy timeout
  instead of dead-locking when a reader upgrades its lock; a plain deferred BEGIN
  for reads (`write=False`), so readers never wait for writers under WAL.
- PostgreSQL through psycopg 3, with `pool_pre_ping`.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Column, Insert, Table, create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.pool import ConnectionPoolEntry

from mirror.errors import DatabaseUnavailable, NoStore, StoreError
from mirror.events import STORE_MIGRATED, STORE_RETRY

if TYPE_CHECKING:  # alembic is imported only when a migration is due (it costs ~0.1 s per command)
    from alembic.config import Config

T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_PAGE_SIZE = 2048
SQLITE_BUSY_TIMEOUT = 30.0  # seconds a writer waits for the file lock before "database is locked"
PG_CONNECT_TIMEOUT = 10  # seconds; an unreachable server fails `open_engine` instead of hanging
POOL_SIZE = 10  # connections kept open: the worker pool plus the dispatcher
POOL_OVERFLOW = 20  # extra connections under a burst, closed when returned
MIGRATION_LOCK_KEY = 0x6D6972726F72  # "mirror": the PostgreSQL advisory lock held while migrating

# JSON columns (`events.details`, `snapshots.headers`) are written without the spaces of
# `json.dumps`'s default separators: they are 10-15% of each value and carry nothing
# (the chain hashes its own canonical form of the details, not the stored text).
_json_serializer = functools.partial(json.dumps, separators=(",", ":"))

# Execution option naming a read-only transaction (SQLite: deferred BEGIN, not IMMEDIATE).
_READ_ONLY = "mirror_read_only"

# SQLSTATE classes and codes that a retry can cure: connection exceptions (08...),
# serialisation failure, deadlock, server shutting down or starting up, and a unique
# violation (23505): another transaction committed the same key first (a version number,
# should two processes record one target at once); the retry re-reads what it committed.
_TRANSIENT_SQLSTATES = ("08", "23505", "40001", "40P01", "57P01", "57P02", "57P03")
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database is busy")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How often and how patiently a transaction is retried on a transient error.

    `attempts` counts the first try; `wait` is the pause before the second, doubled
    after each failure and capped at `max_wait` (all in seconds).
    """

    attempts: int = 5
    wait: float = 0.1
    max_wait: float = 2.0


DEFAULT_RETRY = RetrySettings()


def mask_url(url: str | URL) -> str:
    """Return the URL as text with its password replaced by `***`."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def sqlite_file(url: str) -> str | None:
    """Return the file of a SQLite store's URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.database


def open_engine(url: str, *, migrate: bool = True, existing: bool = False, read_only: bool = False) -> Engine:
    """Return an engine on the store at `url`, migrated to the latest schema unless `migrate=False`.

    Accepts `sqlite:///path` (the parent folder is created) and `postgresql://...`
    (run through psycopg 3). Connects once to prove the database is there.

    `existing=True` is for the read-only commands: the store must be there already, at
    the schema revision this code reads; nothing is created or migrated (no SQLite folder
    or file, no table), whatever `migrate` says. `read_only=True` (with `existing`; for
    `mirror serve`) makes every connection refuse writes: `PRAGMA query_only` on SQLite,
    `default_transaction_read_only` on PostgreSQL.

    Raises:
        DatabaseUnavailable: a bad or unsupported URL, or the database cannot be
            opened, reached or migrated; the message is one line, password masked.
        NoStore: with `existing`, no store at `url`, or one at another schema revision.
    """
    masked = mask_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(
            masked, "not a database URL (expected sqlite:///PATH or postgresql://...)"
        ) from None
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            engine = _sqlite_engine(parsed, create=not existing)
            if read_only:
                event.listen(engine, "connect", _sqlite_query_only)
        elif backend in ("postgresql", "postgres"):
            engine = _postgresql_engine(parsed, read_only=read_only)
        else:
            raise DatabaseUnavailable(masked, f"unsupported database {backend!r} (use sqlite or postgresql)")
    except (NoSuchModuleError, ImportError) as exc:
        raise DatabaseUnavailable(masked, f"no driver for {parsed.drivername!r}: {one_line(exc)}") from None
    try:
        with engine.connect() as conn:
            conn.execution_options(**{_READ_ONLY: True}).execute(text("SELECT 1"))
        if existing:
            _require_head(current_revision(engine), masked)
        elif migrate and current_revision(engine) != HEAD_REVISION:
            _upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseUnavailable(masked, _problem(exc, parsed)) from None
    except (StoreError, NoStore):
        engine.dispose()
        raise
    return engine


_HOW_TO_MIGRATE = "`mirror check` or `mirror run` creates and migrates the store"


def _require_head(revision: str | None, masked: str) -> None:
    """Refuse a database without a store, or with a store at a schema other than ours.

    Raises:
        NoStore: naming the revision found and what to do.
    """
    if revision == HEAD_REVISION:
        return
    if revision is None:
        raise NoStore(masked, f"no mirror store here; {_HOW_TO_MIGRATE}")
    known = {p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("*.py")}
    if revision in known:
        raise NoStore(
            masked,
            f"the store is at schema revision {revision}, this mirror reads {HEAD_REVISION}: "
            "run `mirror check` or `mirror run` once to migrate it",
        )
    raise NoStore(
        masked,
        f"the store is at schema revision {revision!r}, unknown to this mirror "
        f"(which reads {HEAD_REVISION}): a newer mirror migrated it; upgrade mirror",
    )


def run_in_transaction(
    engine: Engine,
    fn: Callable[[Connection], T],
    *,
    write: bool = True,
    retry: RetrySettings = DEFAULT_RETRY,
) -> T:
    """Return `fn(conn)` run in one transaction, committed, retrying the whole of it on transient errors.

    `fn` may run more than once, so it must do nothing outside the database that
    a retry would repeat. `write=False` marks a read (on SQLite a deferred BEGIN,
    which never waits for writers). Exceptions that are not database errors
    propagate unchanged after the rollback.

    Raises:
        DatabaseUnavailable: the connection failed and retries did not help.
        StoreError: any other database error (a constraint, a broken schema).
    """
    attempt = 1
    while True:
        try:
            with engine.connect() as conn:
                if not write:
                    conn.execution_options(**{_READ_ONLY: True})
                with conn.begin():
                    return fn(conn)
        except (OperationalError, InterfaceError, IntegrityError) as exc:
            if not is_transient(exc) or attempt >= retry.attempts:
                raise _translate(exc, engine.url) from exc
            pause = min(retry.wait * 2 ** (attempt - 1), retry.max_wait)
            _log().warning(STORE_RETRY, attempt=attempt, wait=pause, error=one_line(exc))
            time.sleep(pause)
            attempt += 1
        except DBAPIError as exc:
            raise _translate(exc, engine.url) from exc


def read(engine: Engine, fn: Callable[[Connection], T], *, retry: RetrySettings = DEFAULT_RETRY) -> T:
    """Return `fn(conn)` run in a read-only transaction (see `run_in_transaction`)."""
    return run_in_transaction(engine, fn, write=False, retry=retry)


@functools.cache
def insert_ignoring(dialect: str, table: Table, key: Column[Any]) -> Insert:
    """Return `INSERT ... ON CONFLICT (key) DO NOTHING` into `table` for `dialect` ("sqlite", "postgresql").

    Built once per table and dialect. The dialect's module is imported by name: its engine
    has loaded it already, and a SQLite command need not load PostgreSQL's (~50 ms).
    """
    module = importlib.import_module(f"sqlalchemy.dialects.{dialect}")
    statement: Insert = module.insert(table).on_conflict_do_nothing(index_elements=[key])
    return statement


def is_transient(exc: DBAPIError) -> bool:
    """Return True when retrying the transaction may succeed (lock, lost connection, serialisation)."""
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATES):
        return True
    message = str(exc.orig).lower()
    return any(text in message for text in _TRANSIENT_SQLITE)


def one_line(exc: BaseException) -> str:
    """Return the driver's message of `exc` on one line, without SQLAlchemy's SQL and links."""
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc)
    return " ".join(message.split())[:300] or type(exc).__name__


def _log() -> Any:
    """Return the store's logger; structlog is loaded on the first line logged, not by every command."""
    import structlog

    return structlog.get_logger("mirror.db")


def _translate(exc: DBAPIError, url: URL) -> StoreError:
    if isinstance(exc, OperationalError | InterfaceError) and (
        exc.connection_invalidated or _is_connection_error(exc)
    ):
        return DatabaseUnavailable(mask_url(url), _problem(exc, url))
    return StoreError(f"database {mask_url(url)}: {_problem(exc, url)}")


def _is_connection_error(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith(("08", "57P"))
    # psycopg sets no SQLSTATE when it never reached the server; SQLite has none at all.
    return exc.orig is not None and "sqlite" not in type(exc.orig).__module__


def _problem(exc: BaseException, url: URL) -> str:
    problem = one_line(exc)
    if url.password:  # drivers rarely echo it, but a message must never carry it
        problem = problem.replace(str(url.password), "***")
    return problem


# -- SQLite ----------------------------------------------------------------------------------


def _sqlite_engine(url: URL, *, create: bool = True) -> Engine:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise DatabaseUnavailable(
            mask_url(url), "an in-memory SQLite database cannot hold an archive; give a file path"
        )
    path = Path(database).expanduser()
    if not create:
        if not path.is_file():  # sqlite3 would make an empty one, and its folder a migration
            raise NoStore(mask_url(url), f"no such file; {_HOW_TO_MIGRATE}")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = "a file is in the way" if isinstance(exc, FileExistsError) else (exc.strerror or str(exc))
            raise DatabaseUnavailable(
                mask_url(url), f"cannot create the folder {path.parent}: {why}"
            ) from None
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT},
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_timeout=SQLITE_BUSY_TIMEOUT,
        json_serializer=_json_serializer,
    )
    # Opening an existing store sets no page size and no journal mode: ours is WAL already,
    # and a file that is not a store (an empty one, another program's) must stay as it was.
    event.listen(engine, "connect", _sqlite_on_connect if create else _sqlite_on_connect_existing)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    _sqlite_pragmas(dbapi_connection, new=True)


def _sqlite_on_connect_existing(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    _sqlite_pragmas(dbapi_connection, new=False)


def _sqlite_query_only(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # A reader beside the daemon: it can take no write lock, so it can never make the daemon wait.
    dbapi_connection.execute("PRAGMA query_only = ON")


def _sqlite_pragmas(dbapi_connection: Any, *, new: bool) -> None:
    # Switch off pysqlite's own BEGIN (it begins late, deferred, and not before DDL);
    # `_sqlite_on_begin` emits ours. Busy timeout first: changing the journal mode
    # of a new file may itself have to wait for another process.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
        if new:
            # A new file only (before WAL, which fixes it): a blob of ~10 KB ends in a half-filled
            # overflow page on average; 2 KB pages waste half as much (benchmark store: -2.5%).
            cursor.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            # Pages `mirror gc` frees by re-packing go back to the file system in small steps
            # (`PRAGMA incremental_vacuum`), never in one VACUUM that would lock the store. Only
            # on an empty file: on a store it would wait for the write lock (and change nothing).
            if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:
                cursor.execute("PRAGMA auto_vacuum = INCREMENTAL")
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN, so two writers queue on busy_timeout
    # rather than both reading and then failing to upgrade their locks.
    read_only = conn.get_execution_options().get(_READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# -- PostgreSQL ------------------------------------------------------------------------------


def _postgresql_engine(url: URL, *, read_only: bool = False) -> Engine:
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT}
    if read_only:
        connect_args["options"] = "-c default_transaction_read_only=on"
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        connect_args=connect_args,
        json_serializer=_json_serializer,
    )


# -- Migrations ------------------------------------------------------------------------------


HEAD_REVISION = "0008"  # the newest file in migrations/versions; tests/test_migrations.py holds them equal


def current_revision(engine: Engine) -> str | None:
    """Return the schema revision the store is at (None before the first migration), without Alembic."""
    try:
        with engine.connect() as conn:  # a read: on SQLite a deferred BEGIN, which takes no write lock
            conn.execution_options(**{_READ_ONLY: True})
            value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):  # no alembic_version table yet
        return None
    return None if value is None else str(value)


def alembic_config(conn: Connection | None = None) -> Config:
    """Return an Alembic config for the migrations shipped in the package (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def _upgrade(engine: Engine) -> None:
    """Bring the schema to the latest revision; log `store.migrated` when something was applied.

    The whole upgrade is one transaction, entered under a lock, so two processes
    starting together migrate once: on PostgreSQL an advisory lock (DDL there is
    transactional), on SQLite the BEGIN IMMEDIATE write lock.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.util import CommandError

    with engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        before = MigrationContext.configure(conn).get_current_revision()
        try:
            command.upgrade(alembic_config(conn), "head")
        except CommandError as exc:  # e.g. a revision unknown here: the store was migrated by a newer mirror
            raise DatabaseUnavailable(
                mask_url(engine.url), f"cannot migrate the schema: {one_line(exc)}"
            ) from None
        after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        _log().info(STORE_MIGRATED, database=mask_url(engine.url), from_revision=before, to_revision=after)
