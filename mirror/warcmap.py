"""The WARC record mapping, store to WARC: pure functions over plain values, no files, no database.

Export (`plan_target`): one document's versions, their recorded headers, its events and its
re-checks become the records that tell its history in WARC 1.1:

- each version is a `response` record dated at its capture (`first_seen`), with the HTTP
  status and headers recorded, its payload the stored bytes, and `WARC-Payload-Digest`
  `sha256:` plus the version's hash in lower-case hex. Headers never contradict the payload:
  `Transfer-Encoding` and `Content-Encoding` are dropped (the body is stored decoded, whole)
  and `Content-Length` is the stored size (`DROPPED_HEADERS`);
- a `metadata` record beside it (`WARC-Concurrent-To` the response) carries the event that
  made the version: its sequence number, chain hash and kind, and the redirect chain;
- each later check that found the same content (a 304 included) is a `revisit` record of the
  identical-payload-digest profile naming the response it repeats (`WARC-Refers-To`);
- each disappearance is a `metadata` record of its event.

Record ids are UUID 5 of what they describe, so one store exported twice names every record alike.

Import (`read_record`): one WARC (or ARC) record read by warcio becomes a `Capture` to store,
a `Revisit` to resolve against the payload it repeats, a `Refusal` (its payload digest matches
its bytes under neither common reading: as transferred, chunked, or dechunked), or a `Skipped`.
A version's body is warcio's reading of the payload: dechunked and its content coding decoded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from mirror.domain import StoredEvent, Version
from mirror.events import DOCUMENT_DISAPPEARED

# Headers of the recorded answer a WARC response must not repeat over the stored payload.
DROPPED_HEADERS = ("transfer-encoding", "content-encoding", "content-length")
REVISIT_PROFILE = "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest"
METADATA_TYPE = "application/json"
METADATA_SCHEME = "metadata://mirror/"  # a metadata record's WARC-Target-URI: this, then the document's URL

# -- export ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recheck:
    """A later check that found the version's content again (outcome `unchanged`; a 304 included)."""

    at: datetime
    http_status: int | None


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored version with the response headers recorded with it."""

    version: Version
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RecordPlan:
    """One WARC record to write. `sha256` names the stored payload (a response); `payload` is a metadata body.

    `http` is the status line and headers of a response or revisit; `warc_headers` are the
    named WARC fields in order (WARC-Type, -Target-URI, -Date, -Record-ID and the digests
    are among them; `WARC-Block-Digest` of a response is added where its bytes are written).
    """

    kind: str
    url: str
    at: datetime
    warc_headers: tuple[tuple[str, str], ...]
    http: tuple[str, tuple[tuple[str, str], ...]] | None = None
    sha256: str | None = None
    payload: bytes | None = None


def warc_date(at: datetime) -> str:
    """Return `at` as WARC 1.1 writes a date: ISO 8601 UTC with microseconds (`...T12:00:00.000000Z`)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_id(*parts: object) -> str:
    """Return a stable `<urn:uuid:...>` record id for what `parts` describe."""
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, ' '.join(map(str, parts)))}>"


def payload_digest(sha256: str) -> str:
    """Return the WARC-Payload-Digest of content with this SHA-256: `sha256:` and lower-case hex."""
    return f"sha256:{sha256.lower()}"


def status_line(status: int | None) -> str:
    """Return the status line of a recorded status (`200 OK`); a version without one was a 200."""
    code = status or 200
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def http_headers(headers: Mapping[str, str], size: int) -> tuple[tuple[str, str], ...]:
    """Return the recorded headers as a WARC response carries them over the stored payload.

    Dropped: `Transfer-Encoding` and `Content-Encoding` (the payload is stored whole and decoded)
    and the recorded `Content-Length`; the stored size is the `Content-Length`.
    """
    kept = [
        ("-".join(p.capitalize() for p in name.split("-")), value)
        for name, value in sorted(headers.items())
        if name.lower() not in DROPPED_HEADERS and "\r" not in value and "\n" not in value
    ]
    return (*kept, ("Content-Length", str(size)))


def announcing_event(events: Sequence[StoredEvent], version: Version) -> StoredEvent | None:
    """Return the event that made `version` (it announces its number and content), or None."""
    for event in events:
        if event.details.get("version") == version.number and event.new_sha256 == version.sha256:
            return event
    return None


def redirect_chain(url: str, version: Version, events: Sequence[StoredEvent], before: int) -> list[str]:
    """Return the URLs a version's answer came through, `url` first, its final URL last; [] if none.

    The hops are those of the last `document.moved` event before sequence number `before`.
    """
    final = version.final_url
    if not final or final == url:
        return []
    hops = [url]
    for event in events:
        if event.seq < before and event.details.get("redirects"):
            hops = [str(u) for u in event.details["redirects"]]
    return [*hops, final] if hops[-1] != final else hops


def current_at(versions: Sequence[Stored], at: datetime) -> Stored | None:
    """Return the version current at `at`: the latest captured by then (the highest number on a tie)."""
    best: Stored | None = None
    for stored in versions:
        v = stored.version
        if v.first_seen <= at and (
            best is None or (v.first_seen, v.number) > (best.version.first_seen, best.version.number)
        ):
            best = stored
    return best


def _within(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at <= until)


def plan_target(
    url: str,
    versions: Sequence[Stored],
    events: Sequence[StoredEvent],
    rechecks: Sequence[Recheck],
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[RecordPlan]:
    """Return the WARC records of one document's history between `since` and `until`, by date."""
    plans: list[RecordPlan] = []
    for stored in versions:
        v = stored.version
        if not _within(v.first_seen, since, until):
            continue
        response_id = record_id(url, "response", v.number, v.sha256)
        date = warc_date(v.first_seen)
        plans.append(
            RecordPlan(
                "response",
                url,
                v.first_seen,
                (
                    ("WARC-Type", "response"),
                    ("WARC-Target-URI", url),
                    ("WARC-Date", date),
                    ("WARC-Record-ID", response_id),
                    ("WARC-Payload-Digest", payload_digest(v.sha256)),
                ),
                (status_line(v.status), http_headers(stored.headers, v.size)),
                sha256=v.sha256,
            )
        )
        event = announcing_event(events, v)
        about: dict[str, Any] = {
            "url": url,
            "version": v.number,
            "sha256": v.sha256,
            "event_seq": event.seq if event else None,
            "event_hash": event.hash if event else None,
            "event_kind": event.kind if event else None,
            "final_url": v.final_url,
            "redirects": redirect_chain(url, v, events, event.seq if event else 2**63),
        }
        plans.append(_metadata(url, v.first_seen, about, response_id))
    for check in rechecks:
        repeated = current_at(versions, check.at)
        if repeated is None or check.at <= repeated.version.first_seen or not _within(check.at, since, until):
            continue
        v = repeated.version
        plans.append(
            RecordPlan(
                "revisit",
                url,
                check.at,
                (
                    ("WARC-Type", "revisit"),
                    ("WARC-Target-URI", url),
                    ("WARC-Date", warc_date(check.at)),
                    ("WARC-Record-ID", record_id(url, "revisit", check.at.isoformat(), v.sha256)),
                    ("WARC-Payload-Digest", payload_digest(v.sha256)),
                    ("WARC-Profile", REVISIT_PROFILE),
                    ("WARC-Refers-To", record_id(url, "response", v.number, v.sha256)),
                    ("WARC-Refers-To-Target-URI", url),
                    ("WARC-Refers-To-Date", warc_date(v.first_seen)),
                ),
                (status_line(v.status), http_headers(repeated.headers, v.size)),
                sha256=v.sha256,
            )
        )
    for event in events:
        if event.kind == DOCUMENT_DISAPPEARED and _within(event.at, since, until):
            gone = {
                "url": url,
                "event_seq": event.seq,
                "event_hash": event.hash,
                "event_kind": event.kind,
                "details": dict(event.details),
            }
            plans.append(_metadata(url, event.at, gone, None))
    return sorted(plans, key=lambda p: (p.at, ("response", "metadata", "revisit").index(p.kind)))


def _metadata(url: str, at: datetime, about: Mapping[str, Any], concurrent: str | None) -> RecordPlan:
    payload = json.dumps(about, sort_keys=True, separators=(",", ":")).encode()
    # Not the document's URL: replay tools (pywb) would show this JSON for the page at that second.
    fields = [
        ("WARC-Type", "metadata"),
        ("WARC-Target-URI", f"{METADATA_SCHEME}{url}"),
        ("WARC-Date", warc_date(at)),
        ("WARC-Record-ID", record_id(url, "metadata", at.isoformat(), about.get("event_seq"))),
    ]
    if concurrent is not None:
        fields.append(("WARC-Concurrent-To", concurrent))
    return RecordPlan("metadata", f"{METADATA_SCHEME}{url}", at, tuple(fields), payload=payload)
