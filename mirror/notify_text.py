"""What a notification says and which events it is for: pure functions over stored events.

- `selects(dest, event)`: the destination's filters (`events`, `min_significance` for
  `document.changed`, `only_suspicious`).
- `message(event, old)`, `digest_message(events, since, until)`, `head_message(head)`: the
  title and text a person reads.
- `webhook_body(document)`, `signature(secret, t, body)`, `event_id(...)`: what a webhook
  receives, byte for byte, and how it proves where it came from.
- `backoff(failures)`: how long a destination that failed waits before the next try.

No I/O, no clock: time is a parameter.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mirror.config_notify import Destination
from mirror.domain import StoredEvent, VerifyRun, Version
from mirror.events import (
    DOCUMENT_BLOCKED,
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_IMPORTED,
    DOCUMENT_MOVED,
    DOCUMENT_NEW,
    DOCUMENT_REAPPEARED,
    DOCUMENT_REPAIRED,
    DOCUMENT_UNBLOCKED,
    INTEGRITY_DAMAGED,
    INTEGRITY_HEAD,
)

DIFF_LINES = 20  # lines of the diff a message shows; the `mirror diff` command shows the rest
BACKOFF_FIRST = timedelta(seconds=5)
BACKOFF_MAX = timedelta(hours=1)
SIGNATURE_HEADER = "X-Mirror-Signature"
EVENT_ID_HEADER = "X-Mirror-Event-Id"
EVENT_KIND_HEADER = "X-Mirror-Event"

_WHAT = {
    DOCUMENT_NEW: "New document",
    DOCUMENT_CHANGED: "Changed",
    DOCUMENT_DISAPPEARED: "Disappeared",
    DOCUMENT_REAPPEARED: "Reappeared",
    DOCUMENT_MOVED: "Moved",
    DOCUMENT_BLOCKED: "Blocked",
    DOCUMENT_UNBLOCKED: "Unblocked",
    DOCUMENT_REPAIRED: "Repaired from a second copy",
    DOCUMENT_IMPORTED: "Imported from a WARC file",
}

# Details of an event shown as a line each ("Source: mirror store ...", for a repair).
_DETAIL_LINES = (
    "to", "status", "error", "message", "reason", "title", "rule", "versions", "source", "problem",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Message:
    """A notification for people: a one-line title and a plain-text body."""

    title: str
    body: str


@dataclass(frozen=True, slots=True)
class Head:
    """The chain head at a time: what `integrity.head` carries."""

    seq: int
    hash: str
    at: datetime


def selects(dest: Destination, event: StoredEvent) -> bool:
    """Return whether `dest` wants `event`, by its kind, significance and suspicion."""
    if event.kind not in dest.events:
        return False
    if dest.only_suspicious and not event.details.get("suspicious"):
        return False
    if event.kind == DOCUMENT_CHANGED and dest.min_significance > 0:
        weight = event.details.get("significance")
        # A change recorded before changes were weighed has no significance: it is told.
        if (
            isinstance(weight, int | float)
            and not isinstance(weight, bool)
            and weight < dest.min_significance
        ):
            return False
    return True


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def title(event: StoredEvent) -> str:
    """Return the one-line title: what happened, to which URL."""
    flag = "[suspicious] " if event.details.get("suspicious") else ""
    return f"{flag}{_WHAT.get(event.kind, event.kind)}: {event.url}"


def message(event: StoredEvent, old: Version | None = None) -> Message:
    """Return the message of one event: what happened, the URL, old and new version, the head of the diff.

    `old` is the version the event replaced (its number and first seen time), when known.
    """
    details: Mapping[str, Any] = event.details
    lines = [f"{event.kind} at {_time(event.at)}", f"URL: {event.url}"]
    if details.get("suspicious"):
        reasons = details.get("reasons")
        lines.append("SUSPICIOUS: " + ("; ".join(map(str, reasons)) if isinstance(reasons, list) else "yes"))
    if "significance" in details:
        noise = details.get("noise") or []
        lines.append(
            f"Significance: {details['significance']}"
            + (f" (noise: {', '.join(map(str, noise))})" if noise else "")
        )
    version = details.get("version")
    if event.old_sha256:
        where = (
            f"v{old.number} "
            if old
            else (f"v{version - 1} " if isinstance(version, int) and version > 1 else "")
        )
        since = f", first seen {_time(old.first_seen)}" if old else ""
        lines.append(f"Old: {where}sha256 {event.old_sha256}{since}")
    if event.new_sha256:
        where = f"v{version} " if isinstance(version, int) else ""
        size = f", {details['size']} bytes" if isinstance(details.get("size"), int) else ""
        seen = _parse_time(details.get("first_seen")) or event.at
        lines.append(f"New: {where}sha256 {event.new_sha256}{size}, first seen {_time(seen)}")
    for key in (
        "to",
        "status",
        "error",
        "message",
        "reason",
        "title",
        "rule",
        "versions",
        "source",
        "problem",
    ):
        if details.get(key) not in (None, ""):
            lines.append(f"{key.capitalize()}: {details[key]}")
    diff = event.diff or (details.get("diff") if isinstance(details.get("diff"), str) else None)
    if diff:
        diff_lines = diff.splitlines()
        lines.append("")
        lines.append(f"Diff ({min(len(diff_lines), DIFF_LINES)} of {len(diff_lines)} lines):")
        lines.extend(diff_lines[:DIFF_LINES])
    lines.append("")
    lines.extend(commands(event))
    lines.append(f"Event #{event.seq}, chain hash {event.hash}")
    return Message(title(event), "\n".join(lines))


def commands(event: StoredEvent) -> list[str]:
    """Return the `mirror` commands that show the rest."""
    version = event.details.get("version")
    shown = [f"See the rest: mirror history {event.url}"]
    if event.kind == DOCUMENT_CHANGED and isinstance(version, int) and version > 1:
        shown.append(f"              mirror diff {event.url} --from {version - 1} --to {version}")
    return shown


def digest_message(events: Sequence[StoredEvent], since: datetime, until: datetime) -> Message:
    """Return one message listing every event of a digest period, one line each."""
    kinds: dict[str, int] = {}
    for event in events:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    lines = [f"{len(events)} events from {_time(since)} to {_time(until)}: {counts}", ""]
    for event in events:
        weight = event.details.get("significance")
        extra = f" (significance {weight})" if weight is not None else ""
        flag = " [suspicious]" if event.details.get("suspicious") else ""
        lines.append(f"#{event.seq} {_time(event.at)} {event.kind}{flag}: {event.url}{extra}")
    lines += ["", "See one: mirror history URL"]
    return Message(f"mirror: {len(events)} events ({counts})", "\n".join(lines))


def head_message(head: Head) -> Message:
    """Return the daily message that publishes the chain head."""
    body = (
        f"The event chain's head at {_time(head.at)}: event #{head.seq}, hash {head.hash}\n\n"
        f"Keep this message. Later, check that history up to it was not rewritten:\n"
        f"  mirror verify --published {head.seq}:{head.hash}"
    )
    return Message(f"mirror: chain head #{head.seq}", body)


def event_document(event: StoredEvent) -> dict[str, Any]:
    """Return the stored event as a webhook sends it: every field, `seq` and chain `hash` included."""
    return {
        "seq": event.seq,
        "kind": event.kind,
        "url": event.url,
        "at": event.at.isoformat(),
        "old_sha256": event.old_sha256,
        "new_sha256": event.new_sha256,
        "details": dict(event.details),
        "diff": event.diff,
        "hash": event.hash,
    }


def damaged_message(run: VerifyRun) -> Message:
    """Return the message that tells of a `mirror verify` run that found damage."""
    s = "" if run.problems == 1 else "s"
    body = (
        f"mirror verify found {run.problems} problem{s} at {_time(run.finished_at)}: "
        f"the store's record is damaged.\n"
        f"It checked the event chain up to event #{run.head_seq}, hash {run.head_hash}.\n\n"
        "See every problem, and what it spoils:\n"
        "  mirror verify\n"
        "Put damaged or missing blobs back from a second copy (another store, or exported WARC files):\n"
        "  mirror verify --repair-from SOURCE"
    )
    return Message(f"mirror: DAMAGE found by verify ({run.problems} problem{s})", body)


def damaged_document(run: VerifyRun) -> dict[str, Any]:
    """Return what a webhook gets for `integrity.damaged`: the verify run, by its id."""
    return {
        "kind": INTEGRITY_DAMAGED,
        "verify_run": run.id,
        "at": run.finished_at.isoformat(),
        "problems": run.problems,
        "head_seq": run.head_seq,
        "head_hash": run.head_hash,
    }


def head_document(head: Head) -> dict[str, Any]:
    return {"kind": INTEGRITY_HEAD, "seq": head.seq, "hash": head.hash, "at": head.at.isoformat()}


def digest_document(events: Sequence[StoredEvent], since: datetime, until: datetime) -> dict[str, Any]:
    return {
        "kind": "digest",
        "since": since.isoformat(),
        "until": until.isoformat(),
        "events": [event_document(e) for e in events],
    }


def webhook_body(document: Mapping[str, Any]) -> bytes:
    """Return the exact bytes POSTed: compact JSON, keys sorted, UTF-8."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def event_id(document: Mapping[str, Any]) -> str:
    """Return a stable id to deduplicate on: the same for every resend of the same delivery.

    An event: `<seq>-<first 16 hex of its chain hash>`; a head: `head-<seq>-<day>`; damage
    found by verify: `verify-<its verify_runs id>`; a digest: the id of its first and last event.
    """
    if document.get("kind") == "digest":
        events = document["events"]
        return f"digest-{event_id(events[0])}..{event_id(events[-1])}"
    if document.get("kind") == INTEGRITY_HEAD:
        return f"head-{document['seq']}-{str(document['at'])[:10]}"
    if document.get("kind") == INTEGRITY_DAMAGED:
        return f"verify-{document['verify_run']}"
    return f"{document['seq']}-{str(document['hash'])[:16]}"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """Return the `X-Mirror-Signature` value: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def backoff(failures: int) -> timedelta:
    """Return the wait after `failures` failed attempts in a row: 5 s, 10 s, 20 s, ... at most 1 h."""
    if failures <= 0:
        return timedelta(0)
    wait: timedelta = BACKOFF_FIRST * (2 ** min(failures - 1, 20))
    return min(BACKOFF_MAX, wait)


def digest_due(dest: Destination, since: datetime | None, now: datetime) -> bool:
    """Return whether a digest destination's period, begun at `since`, is over at `now`."""
    return dest.digest is None or since is None or now - since >= dest.digest


def head_due(last: datetime | None, now: datetime, every: timedelta = timedelta(days=1)) -> bool:
    """Return whether `integrity.head` is due: never sent, or sent `every` ago."""
    return last is None or now - last >= every
