"""The WARC record mapping, WARC to store: one record read by warcio becomes what to store. Pure.

`read_record` makes of one WARC (or ARC) record a `Capture` to store, a `Revisit` to resolve
against the payload it repeats, a `Refusal` (its payload digest matches its bytes under neither
common reading: as transferred, chunked, or dechunked), or a `Skipped`. A version's body is
warcio's reading of the payload: dechunked and its content coding undone, as a fetch stores it.
`is_repeat` decides whether a capture adds a version. The other way is `mirror.warcmap`.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from warcio.bufferedreaders import BufferedReader, ChunkedDataReader

from mirror.domain import KEPT_HEADERS

IMPORT_TYPES = ("response", "resource", "revisit")


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
