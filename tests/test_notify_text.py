"""Which events a destination is told, and what the message says: pure functions, no network, no store."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from mirror.config_notify import Destination, mask_destination
from mirror.domain import StoredEvent, Version
from mirror.events import (
    DOCUMENT_BLOCKED,
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_EVENTS,
    DOCUMENT_MOVED,
    DOCUMENT_NEW,
)
from mirror.notify_text import (
    Head,
    backoff,
    digest_due,
    digest_message,
    event_id,
    head_document,
    head_message,
    message,
    selects,
    signature,
    webhook_body,
)

T = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
URL = "https://www.prisoncensorship.info/archive/etext/wim/"


def event(kind: str, seq: int = 1, **details) -> StoredEvent:
    return StoredEvent(seq, kind, URL, T, "a" * 64, "b" * 64, details, None, f"{seq:064x}")


# A night's log: what each filter must let through is listed by seq below.
LOG = [
    event(DOCUMENT_NEW, 1),
    event(DOCUMENT_CHANGED, 2, significance=0.0, noise=["date"]),
    event(DOCUMENT_CHANGED, 3, significance=0.04),
    event(DOCUMENT_CHANGED, 4, significance=0.05),
    event(DOCUMENT_CHANGED, 5, significance=0.8, suspicious=True, reasons=["text shrank by 90%"]),
    event(DOCUMENT_CHANGED, 6),  # recorded before changes were weighed
    event(DOCUMENT_MOVED, 7, to="https://elsewhere.example/", suspicious=True, reasons=["cross-host"]),
    event(DOCUMENT_DISAPPEARED, 8, status=404),
    event(DOCUMENT_BLOCKED, 9, rule="cloudflare-challenge"),
]


@pytest.mark.parametrize(
    ("dest", "told"),
    [
        (Destination("all"), [1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (Destination("kinds", events=frozenset({DOCUMENT_DISAPPEARED, DOCUMENT_MOVED})), [7, 8]),
        (Destination("weighed", min_significance=0.05), [1, 4, 5, 6, 7, 8, 9]),
        (Destination("suspicious", only_suspicious=True), [5, 7]),
        (
            Destination(
                "both", events=frozenset({DOCUMENT_CHANGED}), min_significance=0.5, only_suspicious=True
            ),
            [5],
        ),
        (Destination("blocked", events=frozenset({DOCUMENT_BLOCKED})), [9]),
        (Destination("head only", events=frozenset({"integrity.head"})), []),
    ],
    ids=lambda v: v.name if isinstance(v, Destination) else None,
)
def test_filters_select_exactly_the_expected_events(dest, told):
    assert [e.seq for e in LOG if selects(dest, e)] == told


def test_a_digest_lists_every_selected_event_once_with_counts():
    chosen = [e for e in LOG if selects(Destination("d", only_suspicious=True), e)]
    text = digest_message(chosen, T - timedelta(hours=1), T)
    assert text.title == "mirror: 2 events (1 document.changed, 1 document.moved)"
    lines = text.body.splitlines()
    assert (
        lines[0] == "2 events from 2026-12-03 07:00:00 UTC to 2026-12-03 08:00:00 UTC: "
        "1 document.changed, 1 document.moved"
    )
    assert lines[2:4] == [
        f"#5 2026-12-03 08:00:00 UTC document.changed [suspicious]: {URL} (significance 0.8)",
        f"#7 2026-12-03 08:00:00 UTC document.moved [suspicious]: {URL}",
    ]


def test_a_digest_is_due_once_its_period_is_over():
    daily = Destination("d", digest=timedelta(days=1))
    assert not digest_due(daily, T, T + timedelta(hours=23))
    assert digest_due(daily, T, T + timedelta(days=1))
    assert digest_due(Destination("each"), T, T)  # no digest: every pass


def test_a_change_message_says_what_where_old_and_new_the_diff_head_and_the_command():
    diff = "\n".join(["--- v4", "+++ v5", *(f"-line {i}" for i in range(30))])
    changed = StoredEvent(
        12,
        DOCUMENT_CHANGED,
        URL,
        T,
        "a" * 64,
        "b" * 64,
        {
            "version": 5,
            "size": 1234,
            "first_seen": T.isoformat(),
            "significance": 0.8,
            "suspicious": True,
            "reasons": ["text shrank by 90%"],
            "status": 200,
        },
        diff,
        "c" * 64,
    )
    old = Version(4, "a" * 64, 9000, T - timedelta(days=3), T - timedelta(hours=6), 200, "text/html", URL)
    text = message(changed, old)
    assert text.title == f"[suspicious] Changed: {URL}"
    lines = text.body.splitlines()
    assert lines[:7] == [
        "document.changed at 2026-12-03 08:00:00 UTC",
        f"URL: {URL}",
        "SUSPICIOUS: text shrank by 90%",
        "Significance: 0.8",
        f"Old: v4 sha256 {'a' * 64}, first seen 2026-11-30 08:00:00 UTC",
        f"New: v5 sha256 {'b' * 64}, 1234 bytes, first seen 2026-12-03 08:00:00 UTC",
        "Status: 200",
    ]
    assert "Diff (20 of 32 lines):" in lines
    assert "-line 17" in lines and "-line 18" not in lines  # the head of the diff only
    assert lines[-3:] == [
        f"See the rest: mirror history {URL}",
        f"              mirror diff {URL} --from 4 --to 5",
        f"Event #12, chain hash {'c' * 64}",
    ]


def test_a_disappearance_message_says_why_without_a_new_version():
    text = message(event(DOCUMENT_DISAPPEARED, 8, status=404, error="http", message="HTTP 404"))
    assert text.title == f"Disappeared: {URL}"
    assert f"Old: sha256 {'a' * 64}" in text.body
    assert "Status: 404" in text.body and "Message: HTTP 404" in text.body


def test_the_webhook_body_is_the_exact_bytes_signed_and_ids_are_stable():
    document = {"seq": 3, "kind": DOCUMENT_CHANGED, "hash": "ab" * 32, "details": {"é": 1}}
    body = webhook_body(document)
    assert (
        body
        == '{"details":{"é":1},"hash":"{}","kind":"document.changed","seq":3}'.replace(
            "{}", "ab" * 32
        ).encode()
    )
    mac = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(b"k", 1700000000, body) == f"t=1700000000,v1={mac}"
    assert event_id(document) == f"3-{'ab' * 8}"
    head = head_document(Head(9, "f" * 64, T))
    assert event_id(head) == "head-9-2026-12-03"
    assert event_id({"kind": "digest", "events": [document, {**document, "seq": 4}]}) == (
        f"digest-3-{'ab' * 8}..4-{'ab' * 8}"
    )


def test_the_head_message_gives_the_command_that_checks_it_later():
    text = head_message(Head(1234, "9f" * 32, T))
    assert text.title == "mirror: chain head #1234"
    assert f"mirror verify --published 1234:{'9f' * 32}" in text.body


@pytest.mark.parametrize(
    ("failures", "seconds"), [(0, 0), (1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (99, 3600)]
)
def test_backoff_doubles_from_5_seconds_up_to_an_hour(failures, seconds):
    assert backoff(failures) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mailto://user:pass@example.org?to=archive@example.org", "mailto://example.org/…"),
        ("tgram://123456:ABCdef/987", "tgram://…"),
        ("not a url", "***"),
        ("ntfy://ntfy.example.org/archive", "ntfy://ntfy.example.org/…"),
        ("https://hooks.example.org:8443/T0/B1/secret", "https://hooks.example.org:8443/…"),
        ("json://127.0.0.1:8080", "json://127.0.0.1:8080"),
    ],
)
def test_destinations_are_shown_without_what_may_be_a_secret(url, shown):
    assert mask_destination(url) == shown


def test_every_document_event_has_words_in_a_title():
    for kind in DOCUMENT_EVENTS:
        assert not message(event(kind)).title.startswith("document.")


def test_damage_found_by_verify_says_how_much_and_the_commands_that_show_and_repair_it():
    from datetime import UTC, datetime

    from mirror.domain import VerifyRun
    from mirror.notify_text import damaged_document, damaged_message, event_id

    run = VerifyRun(datetime(2025, 3, 1, 12, tzinfo=UTC), False, 3, 41, "ab" * 32, id=7)
    told = damaged_message(run)
    assert told.title == "mirror: DAMAGE found by verify (3 problems)"
    assert "found 3 problems at 2025-03-01 12:00:00 UTC" in told.body
    assert f"up to event #41, hash {'ab' * 32}" in told.body
    assert "  mirror verify\n" in told.body and "  mirror verify --repair-from SOURCE" in told.body
    assert event_id(damaged_document(run)) == "verify-7"
