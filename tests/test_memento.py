"""Memento (RFC 7089) as pure functions, checked against the RFC's own examples; diff rows for the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from requests.utils import parse_header_links

from mirror import diffview, memento
from mirror.memento import BadDatetime, Memento

T1 = datetime(2000, 6, 20, 18, 2, 59, tzinfo=UTC)  # RFC 7089 section 5's first memento
T2 = datetime(2000, 6, 21, 1, 17, 31, tzinfo=UTC)
T3 = datetime(2009, 10, 27, 20, 49, 54, tzinfo=UTC)


def test_http_dates_are_imf_fixdates_in_gmt_as_the_rfc_writes_them():
    assert memento.http_date(T1) == "Tue, 20 Jun 2000 18:02:59 GMT"
    assert memento.http_date(datetime(2007, 5, 31, 22, 35, tzinfo=UTC) + timedelta()) == (
        "Thu, 31 May 2007 22:35:00 GMT"
    )
    # Another zone is converted, never printed as if it were GMT.
    cest = datetime(2000, 6, 20, 22, 2, 59, tzinfo=timezone(timedelta(hours=2)))
    assert memento.http_date(cest) == "Tue, 20 Jun 2000 20:02:59 GMT"


def test_accept_datetime_is_parsed_and_round_trips():
    assert memento.parse_http_date("Thu, 31 May 2007 20:35:00 GMT") == datetime(
        2007, 5, 31, 20, 35, tzinfo=UTC
    )
    assert memento.parse_http_date(memento.http_date(T3)) == T3


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2007-05-31T20:35:00Z",  # ISO 8601 is not an HTTP date
        "Thu, 31 May 2007 20:35:00",  # no zone
        "Thu, 31 May 2007 20:35:00 CEST",
        "Thursday, 31-May-07 20:35:00 GMT",  # RFC 850: obsolete, refused
        "Fri, 31 May 2007 20:35:00 GMT",  # 31 May 2007 was a Thursday
        "Thu, 31 Feb 2007 20:35:00 GMT",
        "Thu, 31 May 2007 25:35:00 GMT",
        "",
    ],
)
def test_a_malformed_accept_datetime_is_refused_with_what_was_expected(text):
    with pytest.raises(BadDatetime, match=r"HTTP date|no such date|was a"):
        memento.parse_http_date(text)


def test_14_digit_times_round_trip_and_bad_ones_are_refused():
    assert memento.timestamp14(T1) == "20000620180259"
    assert memento.parse_timestamp14("20000620180259") == T1
    assert memento.memento_path(T1, "http://a.example.org/") == "/20000620180259/http://a.example.org/"
    for bad in ("2000062018025", "20001320180259", "2000062018025x"):
        with pytest.raises(BadDatetime):
            memento.parse_timestamp14(bad)
    assert memento.same_second(T1 + timedelta(microseconds=999_999), T1)
    assert not memento.same_second(T1 + timedelta(seconds=1), T1)


@pytest.mark.parametrize(
    ("wanted", "index"),
    [
        (T1 - timedelta(days=400), 0),  # before the first: the first
        (T1, 0),
        (T1 + timedelta(hours=3), 0),  # between, nearer the first
        (T2 - timedelta(hours=1), 1),  # between, nearer the second
        (T2 + (T3 - T2) / 2, 1),  # exactly between: the earlier, the one served at that moment
        (T3 + timedelta(days=4000), 2),  # after the last: the last
    ],
)
def test_the_timegate_chooses_the_closest_memento(wanted, index):
    assert memento.choose([T1, T2, T3], wanted) == index


def test_the_timegate_has_nothing_to_choose_from_an_empty_list():
    with pytest.raises(ValueError, match="one memento"):
        memento.choose([], T1)


def test_a_timemap_is_link_format_with_original_self_timegate_and_marked_mementos():
    mementos = [
        Memento(f"http://arxiv.example.net/web/{memento.timestamp14(t)}/http://a.example.org", t)
        for t in (T1, T2, T3)
    ]
    text = memento.timemap(
        "http://a.example.org",
        "http://arxiv.example.net/timemap/http://a.example.org",
        "http://arxiv.example.net/timegate/http://a.example.org",
        mementos,
    )
    # An independent parser (requests' parse_header_links, which `Response.links` uses) reads it back.
    links = parse_header_links(text.replace("\n", ""))
    assert [(link["url"], link["rel"]) for link in links[:3]] == [
        ("http://a.example.org", "original"),
        ("http://arxiv.example.net/timemap/http://a.example.org", "self"),
        ("http://arxiv.example.net/timegate/http://a.example.org", "timegate"),
    ]
    assert links[1]["type"] == "application/link-format"
    assert links[1]["from"] == "Tue, 20 Jun 2000 18:02:59 GMT"
    assert links[1]["until"] == "Tue, 27 Oct 2009 20:49:54 GMT"
    assert [(link["rel"], link["datetime"]) for link in links[3:]] == [
        ("first memento", "Tue, 20 Jun 2000 18:02:59 GMT"),
        ("memento", "Wed, 21 Jun 2000 01:17:31 GMT"),
        ("last memento", "Tue, 27 Oct 2009 20:49:54 GMT"),
    ]
    assert links[3]["url"] == "http://arxiv.example.net/web/20000620180259/http://a.example.org"


def test_a_timemap_of_one_memento_marks_it_first_and_last():
    text = memento.timemap(
        "http://a/",
        "http://m/timemap/link/http://a/",
        "http://m/timegate/http://a/",
        [Memento("http://m/1/http://a/", T1)],
    )
    assert parse_header_links(text.replace("\n", ""))[-1]["rel"] == "first last memento"


def test_a_mementos_link_header_names_original_timegate_timemap_and_the_memento_chosen():
    header = memento.memento_links(
        "http://a/",
        "http://m/timegate/http://a/",
        "http://m/timemap/link/http://a/",
        Memento("http://m/20000620180259/http://a/", T1),
    )
    rels = {link["rel"]: link for link in parse_header_links(header)}
    assert set(rels) == {"original", "timegate", "timemap", "memento"}
    assert rels["timemap"]["type"] == "application/link-format"
    assert rels["memento"]["datetime"] == "Tue, 20 Jun 2000 18:02:59 GMT"


UNIFIED = """--- a v1
+++ a v2
@@ -1,4 +1,4 @@
 title
-old line
-gone line
+new line
 same
@@ -9,0 +10,1 @@
+added at the end"""


def test_a_diff_side_by_side_pairs_removed_lines_with_the_added_ones_after_them():
    rows = diffview.side_by_side(UNIFIED)
    assert [(r.kind, r.old_no, r.old, r.new_no, r.new) for r in rows if r.kind != "hunk"] == [
        ("same", 1, "title", 1, "title"),
        ("changed", 2, "old line", 2, "new line"),
        ("removed", 3, "gone line", None, None),
        ("same", 4, "same", 3, "same"),
        ("added", None, None, 10, "added at the end"),
    ]


def test_a_diff_inline_numbers_each_side():
    rows = diffview.inline(UNIFIED)
    assert [(r.kind, r.old_no, r.new_no, r.text) for r in rows][:5] == [
        ("hunk", None, None, "@@ -1,4 +1,4 @@"),
        ("same", 1, 1, "title"),
        ("removed", 2, None, "old line"),
        ("removed", 3, None, "gone line"),
        ("added", None, 2, "new line"),
    ]
    note = diffview.inline("--- a\n+++ b\n# too costly to align\n-x\n+y")
    assert [(r.kind, r.old_no, r.new_no) for r in note] == [
        ("note", None, None),
        ("removed", None, None),
        ("added", None, None),
    ]
