"""The WARC record mapping, both ways: pure functions over plain values, no files, no database.

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

import base64
import hashlib
import io
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from warcio.bufferedreaders import BufferedReader, ChunkedDataReader

from mirror.domain import KEPT_HEADERS, StoredEvent, Version
from mirror.events import DOCUMENT_DISAPPEARED

# Headers of the recorded answer a WARC response must not repeat over the stored payload.
DROPPED_HEADERS = ("transfer-encoding", "content-encoding", "content-length")
REVISIT_PROFILE = "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest"
METADATA_TYPE = "application/json"
METADATA_SCHEME = "metadata://mirror/"  # a metadata record's WARC-Target-URI: this, then the document's URL
IMPORT_TYPES = ("response", "resource", "revisit")

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


# -- import ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read: the file's name and the record's byte offset in it."""

    file: str
    offset: int


@dataclass(frozen=True, slots=True)
class Capture:
    """A payload to store as a version of `url`, captured at `at`."""

    url: str
    at: datetime
    body: bytes
    sha256: str
    status: int | None
    headers: Mapping[str, str]
    source: Source
    record_type: str
    digests: tuple[str, ...] = ()  # the digests a revisit may name it by (normalised, `digest_key`)
    readings: tuple[bytes, ...] = ()  # the payload as transferred and dechunked, where not `body`


@dataclass(frozen=True, slots=True)
class Revisit:
    """A revisit record: the same payload as a record it names, captured again at `at`."""

    url: str
    at: datetime
    digest: str | None  # `digest_key` of its WARC-Payload-Digest
    refers_to_url: str | None
    refers_to_date: datetime | None
    status: int | None
    headers: Mapping[str, str]
    source: Source


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record not stored, and why (a payload its digest fails under every reading, a revisit of nothing)."""

    url: str
    source: Source
    reason: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record that is no capture of a document (request, warcinfo, metadata, a 3xx/4xx/5xx answer)."""

    reason: str
    source: Source = field(default=Source("", 0))


Read = Capture | Revisit | Refusal | Skipped


def digest_key(digest: str | None) -> str | None:
    """Return a payload digest as `algo:BASE32`, whatever RFC 4648 encoding it was in; None if unreadable."""
    if not digest or ":" not in digest:
        return None
    algo, _, value = digest.strip().partition(":")
    algo = algo.lower().replace("-", "")
    size = {"sha1": 20, "sha256": 32, "sha512": 64, "md5": 16}.get(algo)
    if size is None:
        return None
    value = value.strip()
    for decode in (_b32, _b16, _b64):
        try:
            raw = decode(value)
        except (ValueError, TypeError):
            continue
        if len(raw) == size:
            return f"{algo}:{base64.b32encode(raw).decode()}"
    return None


def _b32(s: str) -> bytes:
    return base64.b32decode(s.upper() + "=" * (-len(s) % 8))


def _b16(s: str) -> bytes:
    return base64.b16decode(s, casefold=True)


def _b64(s: str) -> bytes:
    altchars = b"-_" if "-" in s or "_" in s else None
    return base64.b64decode(s + "=" * (-len(s) % 4), altchars=altchars, validate=True)


def digest_of(algo_key: str, data: bytes) -> str:
    """Return the `digest_key` of `data` under the algorithm of `algo_key` (`sha1:...`)."""
    algo = algo_key.partition(":")[0]
    return f"{algo}:{base64.b32encode(hashlib.new(algo, data).digest()).decode()}"


def readings(raw: bytes, headers: Mapping[str, str]) -> tuple[bytes, bytes, bytes]:
    """Return a payload's three readings: as transferred, dechunked, and decoded (warcio's `content_stream`).

    Writers differ on chunked bodies: some keep the chunks, some dechunk and keep the header.
    The decoded reading is the one stored: dechunked when `Transfer-Encoding: chunked` says so
    (warcio falls back to the bytes as they are when they are not chunked), and the content
    coding undone when it is one warcio decodes.
    """
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    dechunked = ChunkedDataReader(io.BytesIO(raw)).read() if chunked else raw
    coding = headers.get("content-encoding", "").lower() or None
    if coding not in BufferedReader.get_supported_decompressors():
        coding = None
    if chunked:
        decoded = ChunkedDataReader(io.BytesIO(raw), decomp_type=coding).read()
    elif coding:
        decoded = BufferedReader(io.BytesIO(raw), decomp_type=coding).read()
    else:
        decoded = raw
    return raw, dechunked, decoded


def read_record(
    record_type: str,
    url: str,
    at: datetime,
    warc_headers: Mapping[str, str],
    status: int | None,
    headers: Sequence[tuple[str, str]],
    raw: bytes,
    source: Source,
) -> Read:
    """Return what one WARC record is to the store. `warc_headers` and `headers` are as read; names any case.

    `raw` is the record's payload as it is in the file (after the HTTP headers, if any);
    `status` is None for a record without HTTP headers (a `resource`, an ARC record's body).

    Raises:
        ValueError: the payload cannot be decoded (a broken chunk or gzip stream).
    """
    if record_type not in IMPORT_TYPES:
        return Skipped(f"{record_type} record", source)
    if not url.lower().startswith(("http://", "https://")):
        return Skipped(f"{record_type} of {url or 'no URL'}", source)
    if status is not None and not 200 <= status < 300:
        return Skipped(f"HTTP {status}", source)
    lowered = {k.lower(): v for k, v in headers}
    kept = {k: v for k, v in lowered.items() if k in KEPT_HEADERS}
    fields = {k.lower(): v for k, v in warc_headers.items()}
    if record_type == "revisit":
        refers = fields.get("warc-refers-to-date")
        return Revisit(
            url,
            at,
            digest_key(fields.get("warc-payload-digest")),
            fields.get("warc-refers-to-target-uri"),
            parse_date(refers) if refers else None,
            status,
            kept,
            source,
        )
    as_sent, dechunked, body = readings(raw, lowered)
    digests: list[str] = []
    claimed = fields.get("warc-payload-digest")
    if claimed:
        key = digest_key(claimed)
        if key is None:
            return Refusal(url, source, f"unreadable WARC-Payload-Digest {claimed!r}")
        if key not in (digest_of(key, as_sent), digest_of(key, dechunked)):
            return Refusal(
                url,
                source,
                f"WARC-Payload-Digest {claimed} matches neither the chunked nor the dechunked payload",
            )
        digests.append(key)
    sha256 = hashlib.sha256(body).hexdigest()
    digests.append(digest_of("sha256:", body))
    if "content-type" not in kept and fields.get("content-type") and record_type == "resource":
        kept["content-type"] = fields["content-type"]
    kept.pop("content-encoding", None)  # stored decoded, as a fetch stores it
    others = tuple(dict.fromkeys(r for r in (as_sent, dechunked) if r != body))
    return Capture(url, at, body, sha256, status, kept, source, record_type, tuple(digests), others)


def parse_date(text: str) -> datetime:
    """Return a WARC-Date (`2014-01-03T03:03:21Z`, fractions allowed) or an ARC date (`20140103030321`).

    Raises:
        ValueError: it is neither.
    """
    text = text.strip()
    if text.isdigit() and len(text) >= 14:
        return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_repeat(kept: Sequence[tuple[datetime, str]], at: datetime, sha256: str) -> bool:
    """Return whether a capture adds nothing to versions `kept` (capture time, sha256) of its document.

    It adds nothing when a version has its content and capture time, or when the version
    current at its time (the latest captured by then) has its content: a repeat, as a later
    check that finds the same content is.
    """
    if (at, sha256) in kept:
        return True
    before = [k for k in kept if k[0] <= at]
    return bool(before) and max(before)[1] == sha256
