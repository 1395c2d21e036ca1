"""Logging: event names, and `configure_logging()` called once by the command line.

Events go to stderr (stdout carries `--json` documents and `show` bytes): readable
colour on a terminal, one JSON object per line otherwise (journald, files, pipes).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from mirror.urls import mask_userinfo

# Event names are a contract with users' scripts: change them only on purpose.
DOCUMENT_NEW = "document.new"
DOCUMENT_CHANGED = "document.changed"
DOCUMENT_DISAPPEARED = "document.disappeared"
DOCUMENT_REAPPEARED = "document.reappeared"
DOCUMENT_MOVED = "document.moved"
DOCUMENT_BLOCKED = "document.blocked"  # warning: a bot wall, challenge or rate limit answered instead
DOCUMENT_UNBLOCKED = "document.unblocked"  # info: the first answer after a blocked one that is not blocked
CHECK_FAILED = "check.failed"
INTEGRITY_DAMAGED = "integrity.damaged"

CHECK_DONE = "check.done"  # debug: every check, with its outcome
ROUND_STARTED = "round.started"
ROUND_FINISHED = "round.finished"
STORE_RETRY = "store.retry"
FETCH_RETRY = "fetch.retry"
STORE_MIGRATED = "store.migrated"
CONFIG_LOADED = "config.loaded"
CONFIG_REJECTED = "config.rejected"
TARGETS_SYNCED = "targets.synced"
TARGETS_DISCOVERED = "targets.discovered"
SITEMAP_READ = "sitemap.read"  # info: one sitemap source read, how many pages it lists
SITEMAP_FAILED = "sitemap.failed"  # warning: a sitemap could not be fetched or parsed
ROBOTS_FETCHED = "robots.fetched"  # debug: one robots.txt fetched and what it means
ROBOTS_UNREACHABLE = "robots.unreachable"  # warning: a site's robots.txt failed, its pages wait
CHECK_SKIPPED = "check.skipped"  # robots.txt forbids the fetch
CHECK_SUPERSEDED = "check.superseded"  # warning: not recorded, another process recorded the target first
ROUND_SKIPPED_CLAIMED = "round.skipped_claimed"  # info: targets another process holds, left to it
SERVICE_STARTED = "service.started"
SERVICE_SUMMARY = "service.summary"  # info, every `schedule.summary`: the daemon's checks since the last one
SERVICE_STOPPING = "service.stopping"
SERVICE_STOPPED = "service.stopped"
CHECKS_PRUNED = "checks.pruned"
TEXTPOOL_BROKEN = "textpool.broken"  # warning: a text-rendering helper process died; it is replaced
TEXTPOOL_UNAVAILABLE = "textpool.unavailable"  # warning: no helper process can start; texts rendered in place

DOCUMENT_EVENTS = (
    DOCUMENT_NEW,
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_REAPPEARED,
    DOCUMENT_MOVED,
    DOCUMENT_BLOCKED,
    DOCUMENT_UNBLOCKED,
)


LIBRARY_LOG = "library.log"  # a warning or error from a library's stdlib logging (APScheduler, urllib3)


class _ToStructlog(logging.Handler):
    """Sends stdlib log records through structlog, so every line has one format and one writer lock."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger(record.name).log(
                record.levelno, LIBRARY_LOG, logger=record.name, message=record.getMessage()
            )
        except Exception:  # a log line must never take the process down
            self.handleError(record)


def mask_secrets(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Mask the user info of every URL in a log line's text fields (and lists of them).

    The sources mask what they log already; this is the net under them, for a message a
    library wrote or a field added later.
    """
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = mask_userinfo(value)
        elif isinstance(value, list | tuple):
            event[key] = [mask_userinfo(v) if isinstance(v, str) else v for v in value]
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
