"""Large pages rendered to text in a helper process: same texts, and a dead helper costs nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
from structlog.testing import capture_logs

from mirror.diff import compare
from mirror.text import to_text, to_texts
from mirror.textpool import MAX_BROKEN, MIN_POOL_BYTES, START_AFTER, TextPool

MENU = "".join(f"<li><a href='/etext/{i}.html'>Issue {i} of the newsletter</a></li>" for i in range(600))


def page(words: str) -> bytes:
    body = f"<html><body><ul>{MENU}</ul><h1>Statement</h1><p>{words}</p><p>Signed, the committee.</p>"
    return (body + "</body></html>").encode()


OLD, NEW = page("The congress met in Bonn."), page("The congress met in Berlin, €.")


def texts(pool: TextPool, sides: list[tuple[bytes, str]]) -> list[str | None]:
    """Return the texts of `sides` as the pool computes them (a helper when they are large)."""
    return pool.run(sum(len(body) for body, _ in sides), to_texts, sides)


@pytest.fixture
def pool():
    texts = TextPool(workers=1, start_after=0)
    yield texts
    texts.close()


@pytest.fixture
def helpers():
    """Return a function listing the helper processes started since the test began."""
    before = {p.pid for p in multiprocessing.active_children()}
    return lambda: [p for p in multiprocessing.active_children() if p.pid not in before]


def test_a_large_change_is_rendered_by_a_helper_process_to_the_same_texts(pool, helpers):
    assert len(OLD) + len(NEW) >= MIN_POOL_BYTES
    assert helpers() == []
    assert pool.start(timeout=60)

    rendered = texts(pool, [(OLD, "text/html; charset=utf-8"), (NEW, "text/html; charset=utf-8")])

    assert rendered == [to_text(OLD, "text/html; charset=utf-8"), to_text(NEW, "text/html; charset=utf-8")]
    assert [p.pid != os.getpid() for p in helpers()] == [True]


def test_the_diff_through_the_pool_is_the_diff_rendered_in_place(pool):
    assert pool.start(timeout=60)
    through_pool = compare(OLD, "text/html", NEW, "text/html", run=pool.run)
    in_place = compare(OLD, "text/html", NEW, "text/html")

    assert through_pool == in_place
    assert "-The congress met in Bonn." in through_pool.unified
    assert "+The congress met in Berlin, €." in through_pool.unified


def test_small_bodies_are_rendered_in_place_without_starting_a_helper(pool, helpers):
    assert texts(pool, [(b"<p>short</p>", "text/html"), (b"%PDF-1.4 ...", "application/pdf")]) == [
        "short",
        None,
    ]
    assert helpers() == []


def test_a_killed_helper_is_replaced_and_the_change_at_hand_still_gets_its_texts(pool, helpers):
    sides = [(OLD, "text/html"), (NEW, "text/html")]
    expected = texts(pool, sides)  # rendered here while the helper starts
    assert pool.start(timeout=60)
    assert texts(pool, sides) == expected
    (helper,) = helpers()

    os.kill(helper.pid, signal.SIGKILL)
    helper.join(5)
    with capture_logs() as logs:
        deadline = time.monotonic() + 10
        while not any(e["event"] == "textpool.broken" for e in logs) and time.monotonic() < deadline:
            assert texts(pool, sides) == expected  # in place while the pool notices its loss

    assert [e["log_level"] for e in logs if e["event"] == "textpool.broken"] == ["warning"]
    assert texts(pool, sides) == expected  # a new helper
    assert [p.pid for p in helpers()] != [helper.pid]


def test_a_check_with_a_few_large_changes_starts_no_helper(helpers):
    pool = TextPool(workers=1)  # the default threshold
    try:
        for _ in range(START_AFTER):
            assert texts(pool, [(OLD, "text/html"), (NEW, "text/html")])[1] == to_text(NEW, "text/html")
        assert helpers() == []

        texts(pool, [(OLD, "text/html"), (NEW, "text/html")])

        assert len(helpers()) == 1  # changes keep coming: now a helper pays for itself
    finally:
        pool.close()


def test_changes_met_while_the_helper_starts_are_rendered_in_place_at_once(pool):
    rendered = texts(pool, [(OLD, "text/html"), (NEW, "text/html")])

    assert rendered == [to_text(OLD, "text/html"), to_text(NEW, "text/html")]
    assert not pool.start(timeout=0)  # the helper had not answered yet: nothing waited for it
    assert pool.start(timeout=60)


def test_helpers_that_cannot_start_are_given_up_after_a_few_tries(pool, monkeypatch):
    monkeypatch.setenv("PYTHONHOME", "/nonexistent")  # a spawned interpreter dies at once
    sides = [(OLD, "text/html"), (NEW, "text/html")]
    expected = [to_text(OLD, "text/html"), to_text(NEW, "text/html")]

    with capture_logs() as logs:
        for _ in range(MAX_BROKEN):
            assert not pool.start(timeout=30)
            assert texts(pool, sides) == expected
        assert texts(pool, sides) == expected

    events = [e["event"] for e in logs]
    assert events.count("textpool.broken") == MAX_BROKEN
    assert events.count("textpool.unavailable") == 1
    assert not pool.start(timeout=0)  # closed: no more helpers are spawned


def test_a_closed_pool_renders_in_place(pool, helpers):
    pool.close()

    assert texts(pool, [(OLD, "text/html")]) == [to_text(OLD, "text/html")]
    assert helpers() == []
