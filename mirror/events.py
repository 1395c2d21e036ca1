"""The vocabulary of events: every name `mirror` logs or stores, and nothing else. Pure data.

Event names are a contract with users' scripts (README, "Events"): change them only
on purpose, with a CHANGELOG entry. Code names an event by its constant here, never
by a string literal; `tests/test_docs.py` holds this list, the README's tables and
the names the code uses equal.

The document events are stored in the hash chain as well as logged; every other
event is a log line only.
"""

from __future__ import annotations

# Stored in the event log (and logged): what happened to a document.
DOCUMENT_NEW = "document.new"
DOCUMENT_CHANGED = "document.changed"
DOCUMENT_DISAPPEARED = "document.disappeared"
DOCUMENT_REAPPEARED = "document.reappeared"
DOCUMENT_MOVED = "document.moved"
DOCUMENT_BLOCKED = "document.blocked"  # warning: a bot wall, challenge or rate limit answered instead
DOCUMENT_UNBLOCKED = "document.unblocked"  # info: the first answer after a blocked one that is not blocked
DOCUMENT_REPAIRED = "document.repaired"  # warning: a damaged or missing blob of its versions was put back
DOCUMENT_IMPORTED = "document.imported"  # a version read from a WARC or ARC file (`mirror import warc`)

DOCUMENT_EVENTS = (
    DOCUMENT_NEW,
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_REAPPEARED,
    DOCUMENT_MOVED,
    DOCUMENT_BLOCKED,
    DOCUMENT_UNBLOCKED,
    DOCUMENT_REPAIRED,
    DOCUMENT_IMPORTED,
)

# One check.
CHECK_FAILED = "check.failed"
CHECK_SKIPPED = "check.skipped"  # robots.txt forbids the fetch
CHECK_SUPERSEDED = "check.superseded"  # warning: not recorded, another process recorded the target first
CHECK_CRASHED = "check.crashed"  # error: a check raised; the others go on
CHECK_DONE = "check.done"  # debug: every check, with its outcome

# A round of checks (`mirror check`) and the daemon.
ROUND_STARTED = "round.started"
ROUND_FINISHED = "round.finished"
ROUND_SKIPPED_CLAIMED = "round.skipped_claimed"  # info: targets another process holds, left to it
ROUND_PROCESS_LOST = "round.process_lost"  # error: a process of a `check` round died (killed)
SERVICE_STARTED = "service.started"
SERVICE_SUMMARY = "service.summary"  # info, every `schedule.summary`: the daemon's checks since the last one
SERVICE_STOPPING = "service.stopping"
SERVICE_STOPPED = "service.stopped"
DISPATCH_CLAIMED = "dispatch.claimed"  # debug: targets a daemon claimed in one tick
SERVE_STARTED = "serve.started"  # info: `mirror serve` is listening (`url`, `public`, `database`)

# Targets, their discovery, and robots.txt.
TARGETS_SYNCED = "targets.synced"
TARGETS_DISCOVERED = "targets.discovered"
SITEMAP_READ = "sitemap.read"  # info: one sitemap source read, how many pages it lists
SITEMAP_FAILED = "sitemap.failed"  # warning: a sitemap could not be fetched or parsed
ROBOTS_FETCHED = "robots.fetched"  # debug: one robots.txt fetched and what it means
ROBOTS_UNREACHABLE = "robots.unreachable"  # warning: a site's robots.txt failed, its pages wait

# The store and the writer.
STORE_RETRY = "store.retry"
STORE_MIGRATED = "store.migrated"
GC_FINISHED = "gc.finished"  # `mirror gc`, or the daemon's idle slice of it: blobs re-packed
STORE_FAILED = "store.failed"  # error: the writer could not record a batch after retries
WRITER_CALLBACK_FAILED = "writer.callback_failed"  # error: the step after a recorded check crashed
CHECKS_PRUNED = "checks.pruned"
INTEGRITY_DAMAGED = "integrity.damaged"
REPAIR_UNREPAIRED = "repair.unrepaired"  # warning: a damaged or missing blob the repair source could not give
REPAIR_FINISHED = "repair.finished"  # info: `verify --repair-from` done: what was put back, what was not

# Notifications (`[[notify]]`): the outbox's deliveries.
INTEGRITY_HEAD = "integrity.head"  # daily, to destinations that select it: the chain head's seq and hash
NOTIFY_SENT = "notify.sent"  # info: a destination acknowledged a message (2xx, or Apprise accepted it)
NOTIFY_FAILED = "notify.failed"  # warning: a delivery failed; retried after a back-off
NOTIFY_CRASHED = "notify.crashed"  # error: a delivery pass raised; the worker goes on

# The archive world's formats.
WARC_EXPORTED = "warc.exported"  # info: `mirror export warc` wrote its files
WARC_IMPORTED = "warc.imported"  # info: `mirror import warc` read its files
WARC_REFUSED = "warc.refused"  # warning: a record not stored (its digest fails, a revisit of nothing)

# Helpers, configuration and libraries.
TEXTPOOL_BROKEN = "textpool.broken"  # warning: a text-rendering helper process died; it is replaced
TEXTPOOL_UNAVAILABLE = "textpool.unavailable"  # warning: no helper process can start; texts rendered in place
CONFIG_LOADED = "config.loaded"
CONFIG_REJECTED = "config.rejected"
LIBRARY_LOG = "library.log"  # a warning or error from a library's stdlib logging (APScheduler, urllib3)


def vocabulary() -> frozenset[str]:
    """Return every event name defined here."""
    return frozenset(v for k, v in globals().items() if k.isupper() and isinstance(v, str))
