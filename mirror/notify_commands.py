"""What `mirror notify status` and `mirror notify test` show: each destination's place, and a sample sent.

Reads through the store's read side only (`Reader.cursors`, `Reader.events_after`); the
sample goes out through the same sender as real deliveries (`mirror.notify_send`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mirror.config import Config
from mirror.config_notify import Destination
from mirror.domain import StoredEvent
from mirror.errors import UsageError
from mirror.events import DOCUMENT_CHANGED
from mirror.notify import check_destinations, hide_secrets
from mirror.notify_send import Sender
from mirror.notify_text import event_document, message, selects
from mirror.outbox import Cursor
from mirror.reader import Reader
from mirror.webhook import Answer


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    """One destination for `mirror notify status`."""

    name: str
    kind: str
    to: list[str]  # masked
    configured: bool
    cursor: int | None
    last_delivered_seq: int | None
    last_delivered_at: datetime | None
    backlog: int | None  # selected events after the cursor (None: no longer configured)
    failures: int
    last_error: str | None
    last_error_at: datetime | None
    retry_at: datetime | None


def status(reader: Reader, destinations: Sequence[Destination]) -> list[DestinationStatus]:
    """Return each destination's cursor, backlog and last error; those in the store but not configured too."""
    cursors = {c.name: c for c in reader.cursors()}
    rows = []
    for dest in destinations:
        cursor = cursors.pop(dest.name, None)
        start = cursor.seq if cursor is not None else reader.chain_head()[0]
        rows.append(_status(dest.name, dest.kind, dest.shown(), cursor, backlog(reader, dest, start)))
    for name, cursor in cursors.items():
        rows.append(_status(name, "", [], cursor, None))
    return rows


def _status(
    name: str, kind: str, to: list[str], cursor: Cursor | None, pending: int | None
) -> DestinationStatus:
    return DestinationStatus(
        name,
        kind,
        to,
        configured=pending is not None,
        cursor=cursor.seq if cursor else None,
        last_delivered_seq=cursor.delivered_seq if cursor else None,
        last_delivered_at=cursor.delivered_at if cursor else None,
        backlog=pending,
        failures=cursor.failures if cursor else 0,
        last_error=cursor.last_error if cursor else None,
        last_error_at=cursor.last_error_at if cursor else None,
        retry_at=cursor.retry_at if cursor else None,
    )


def backlog(reader: Reader, dest: Destination, after: int) -> int:
    """Return how many events after `after` `dest`'s filters select."""
    count, seq = 0, after
    while events := reader.events_after(seq, limit=1000):
        count += sum(1 for e in events if selects(dest, e))
        seq = events[-1].seq
    return count


def sample_event(now: datetime) -> StoredEvent:
    """Return the made-up change `mirror notify test` sends (seq 0: never a real event)."""
    diff = (
        "--- v1\n+++ v2\n@@ -1,2 +1,2 @@\n This is a test of mirror's notifications.\n"
        "-Nothing changed.\n+Nothing changed, really."
    )
    return StoredEvent(
        seq=0,
        kind=DOCUMENT_CHANGED,
        url="https://example.org/mirror-notification-test.html",
        at=now,
        old_sha256="0" * 64,
        new_sha256="f" * 64,
        details={
            "test": True,
            "version": 2,
            "size": 42,
            "first_seen": now.isoformat(),
            "significance": 0.1,
            "noise": [],
        },
        diff=diff,
        hash="0" * 64,
    )


def send_test(config: Config, name: str | None, now: datetime) -> list[tuple[Destination, str, Answer]]:
    """Send the sample event to every destination (or `name`); return each URL's answer.

    Raises:
        UsageError: no destination is configured, or none is called `name`.
    """
    chosen = [d for d in config.notify if name is None or d.name == name]
    if not chosen:
        known = ", ".join(d.name for d in config.notify) or "none configured"
        raise UsageError(
            f"no [[notify]] destination {name!r} in {config.path} ({known})"
            if name
            else f"no [[notify]] destination in {config.path}"
        )
    check_destinations(config)
    hide_secrets(chosen)
    sender = Sender(config.fetch.limits())
    event = sample_event(now)
    results: list[tuple[Destination, str, Answer]] = []
    try:
        for dest in chosen:
            answers = sender.send(dest, message(event), event_document(event))
            results.extend((dest, shown, answer) for shown, answer in zip(dest.shown(), answers, strict=True))
    finally:
        sender.close()
    return results
