"""The WARC record mapping, both ways, without files or a database."""

from __future__ import annotations

import base64
import gzip
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from mirror.domain import StoredEvent, Version
from mirror.warcmap import Recheck, Stored, http_headers, plan_target
from mirror.warcread import Capture, Refusal, Revisit, Skipped, Source, digest_key, is_repeat, read_record

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
URL = "https://example.org/a.html"
HERE = Source("a.warc.gz", 100)


def version(n: int, body: bytes, at: datetime) -> Stored:
    sha = hashlib.sha256(body).hexdigest()
    v = Version(n, sha, len(body), at, at, 200, "text/html", URL)
    return Stored(
        v,
        {
            "content-type": "text/html",
            "content-encoding": "gzip",
            "transfer-encoding": "chunked",
            "content-length": "999",
            "etag": '"x"',
        },
    )


def event(seq: int, kind: str, at: datetime, **details) -> StoredEvent:
    return StoredEvent(seq, kind, URL, at, None, details.pop("sha", None), details, None, f"{seq:064x}")


def test_headers_never_contradict_the_stored_payload():
    assert http_headers(
        {
            "content-type": "text/html",
            "content-encoding": "gzip",
            "transfer-encoding": "chunked",
            "content-length": "999",
        },
        42,
    ) == (("Content-Type", "text/html"), ("Content-Length", "42"))


def test_a_history_becomes_responses_revisits_and_metadata_in_date_order():
    v1, v2 = version(1, b"one", T0), version(2, b"two", T0 + timedelta(hours=2))
    events = [
        event(1, "document.new", T0, version=1, sha=v1.version.sha256),
        event(2, "document.changed", v2.version.first_seen, version=2, sha=v2.version.sha256),
        event(3, "document.disappeared", T0 + timedelta(hours=3)),
    ]
    plans = plan_target(URL, [v1, v2], events, [Recheck(T0 + timedelta(hours=1), 304)])
    assert [p.kind for p in plans] == ["response", "metadata", "revisit", "response", "metadata", "metadata"]
    first, revisit = dict(plans[0].warc_headers), dict(plans[2].warc_headers)
    assert first["WARC-Payload-Digest"] == f"sha256:{v1.version.sha256}"
    assert first["WARC-Date"] == "2026-01-01T12:00:00.000000Z"
    assert (
        revisit["WARC-Refers-To"] == first["WARC-Record-ID"]
        and revisit["WARC-Payload-Digest"] == first["WARC-Payload-Digest"]
    )
    assert revisit["WARC-Profile"].endswith("/revisit/identical-payload-digest")
    assert plans[0].http == (
        "200 OK",
        (("Content-Type", "text/html"), ("Etag", '"x"'), ("Content-Length", "3")),
    )
    assert b'"event_seq":2' in plans[4].payload and b'"event_kind":"document.disappeared"' in plans[5].payload
    # One store exported twice names every record alike.
    assert plan_target(URL, [v1, v2], events, []) == [p for p in plans if p.kind != "revisit"]
    # --since / --until keep what lies between.
    assert [p.kind for p in plan_target(URL, [v1, v2], events, [], since=T0 + timedelta(minutes=1))] == [
        "response",
        "metadata",
        "metadata",
    ]


@pytest.mark.parametrize(
    "encode",
    [
        lambda d: base64.b32encode(d).decode(),
        lambda d: d.hex(),
        lambda d: d.hex().upper(),
        lambda d: base64.b64encode(d).decode(),
        lambda d: base64.urlsafe_b64encode(d).decode().rstrip("="),
    ],
)
def test_a_digest_reads_the_same_in_every_rfc4648_encoding(encode):
    raw = hashlib.sha1(b"x", usedforsecurity=False).digest()
    assert digest_key(f"sha1:{encode(raw)}") == f"sha1:{base64.b32encode(raw).decode()}"


def sha1_of(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode()


BODY = b"<html>hello</html>"
CHUNKED = b"5\r\n<html\r\nd\r\n>hello</html>\r\n0\r\n\r\n"


@pytest.mark.parametrize("digest_of", [CHUNKED, BODY], ids=["chunked", "dechunked"])
def test_a_payload_is_taken_under_either_reading_and_stored_dechunked_and_decoded(digest_of):
    head = [("Transfer-Encoding", "chunked"), ("Content-Type", "text/html")]
    read = read_record(
        "response", URL, T0, {"WARC-Payload-Digest": sha1_of(digest_of)}, 200, head, CHUNKED, HERE
    )
    assert isinstance(read, Capture) and read.body == BODY and read.sha256 == hashlib.sha256(BODY).hexdigest()
    assert read.headers == {"content-type": "text/html"} and read.at == T0


def test_a_payload_its_digest_fails_under_both_readings_is_refused():
    read = read_record("response", URL, T0, {"WARC-Payload-Digest": sha1_of(b"other")}, 200, [], BODY, HERE)
    assert isinstance(read, Refusal) and read.source == HERE and "matches neither" in read.reason


def test_a_gzip_body_is_stored_decoded():
    zipped = gzip.compress(BODY)
    read = read_record(
        "response",
        URL,
        T0,
        {"WARC-Payload-Digest": sha1_of(zipped)},
        200,
        [("Content-Encoding", "gzip")],
        zipped,
        HERE,
    )
    assert isinstance(read, Capture) and read.body == BODY and "content-encoding" not in read.headers
    assert zipped in read.readings


@pytest.mark.parametrize(
    ("kind", "status", "url"),
    [
        ("request", None, URL),
        ("response", 302, URL),
        ("metadata", None, URL),
        ("resource", None, "metadata://x/y"),
    ],
)
def test_what_is_no_capture_is_skipped(kind, status, url):
    assert isinstance(read_record(kind, url, T0, {}, status, [], b"", HERE), Skipped)


def test_a_revisit_names_what_it_repeats():
    read = read_record(
        "revisit",
        URL,
        T0,
        {
            "WARC-Payload-Digest": sha1_of(BODY),
            "WARC-Refers-To-Target-URI": URL,
            "WARC-Refers-To-Date": "2014-01-27T17:12:00Z",
        },
        200,
        [],
        b"",
        HERE,
    )
    assert isinstance(read, Revisit) and read.digest == digest_key(sha1_of(BODY))
    assert read.refers_to_date == datetime(2014, 1, 27, 17, 12, tzinfo=UTC)


def test_a_capture_adds_nothing_when_stored_or_when_the_version_current_then_has_its_content():
    kept = [(T0, "a"), (T0 + timedelta(days=2), "b")]
    assert is_repeat(kept, T0, "a")  # stored already
    assert is_repeat(kept, T0 + timedelta(days=1), "a")  # a repeat of what was current then
    assert not is_repeat(kept, T0 + timedelta(days=1), "b")  # b before b was seen: a version
    assert not is_repeat(kept, T0 - timedelta(days=1), "a")  # older than everything: a version
    assert not is_repeat([], T0, "a")
