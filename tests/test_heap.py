"""Memory a round gives back: glibc's free heap pages after a large page, the weighing budget,
and the texts a `mirror check` round does not keep.

`mirror.heap.give_back` is checked in a fresh interpreter (its heap is its own): a parse tree
of a large page, freed, stays resident until the pages are given back. `_Weighing` is the
checker's gate for changes being weighed: real threads, each holding its place until told.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest

from mirror import diff
from mirror.check import _Weighing
from mirror.config import load_config
from mirror.heap import give_back
from mirror.rounds import check_round
from tests.test_service import write_config

_TREE = """
import json
from resiliparse.parse.html import HTMLTree
from mirror.heap import bound_malloc_arenas, give_back

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

bound_malloc_arenas()
blocks = "".join(f"<div><p>paragraph {i}</p><a href='/{i}'>link</a></div>" for i in range(40_000))
page = f"<html><body>{blocks}</body></html>".encode()
before = rss()
tree = HTMLTree.parse_from_bytes(page)
held = rss()
del tree
freed = rss()
gave = give_back()
print(json.dumps({"before": before, "held": held, "freed": freed, "after": rss(), "gave": gave}))
"""


@pytest.mark.skipif(not give_back(), reason="glibc's malloc_trim only")
def test_the_pages_of_a_freed_parse_tree_are_given_back():
    done = subprocess.run(
        [sys.executable, "-c", _TREE], capture_output=True, text=True, timeout=60, check=True
    )
    mib = json.loads(done.stdout)

    assert mib["held"] - mib["before"] >= 20, mib  # the tree of a ~2.5 MB page
    assert mib["freed"] - mib["before"] >= 15, f"freed blocks stay resident without a trim: {mib}"
    assert mib["after"] - mib["before"] <= 8, f"given back: {mib}"


class Scales:
    """A `_Weighing` and changes that enter it from their own threads and leave when told."""

    def __init__(self, count: int, size: int) -> None:
        self.weighing = _Weighing(count, size)
        self.inside: list[str] = []
        self.most = 0
        self._lock = threading.Lock()
        self._leave: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []

    def enter(self, name: str, size: int) -> None:
        leave = self._leave[name] = threading.Event()

        def weigh() -> None:
            with self.weighing.held(size):
                with self._lock:
                    self.inside.append(name)
                    self.most = max(self.most, len(self.inside))
                leave.wait(10)
                with self._lock:
                    self.inside.remove(name)

        thread = threading.Thread(target=weigh, daemon=True)
        thread.start()
        self._threads.append(thread)
        time.sleep(0.05)  # it is in, or waiting

    def leave(self, name: str) -> None:
        self._leave[name].set()
        time.sleep(0.05)

    def now(self) -> list[str]:
        with self._lock:
            return sorted(self.inside)

    def finish(self) -> None:
        for event in self._leave.values():
            event.set()
        for thread in self._threads:
            thread.join(10)
            assert not thread.is_alive()


def test_changes_are_weighed_a_few_at_once():
    scales = Scales(count=2, size=100)
    for name in "abc":
        scales.enter(name, 10)
    assert scales.now() == ["a", "b"]
    scales.leave("a")
    assert scales.now() == ["b", "c"]
    scales.finish()
    assert scales.most == 2


def test_a_change_larger_than_the_budget_is_weighed_alone():
    scales = Scales(count=4, size=100)
    scales.enter("small", 30)
    scales.enter("huge", 500)
    assert scales.now() == ["small"], "the huge change waits for the small one"
    scales.enter("later", 10)
    assert scales.now() == ["small"], "nothing overtakes a waiting change"
    scales.leave("small")
    assert scales.now() == ["huge"]
    scales.leave("huge")
    assert scales.now() == ["later"]
    scales.finish()


def test_changes_share_the_budget_in_bytes():
    scales = Scales(count=4, size=100)
    scales.enter("a", 60)
    scales.enter("b", 30)
    scales.enter("c", 30)  # 120 > 100: waits
    assert scales.now() == ["a", "b"]
    scales.leave("b")
    assert scales.now() == ["a", "c"]
    scales.finish()


def test_a_change_that_gives_up_waiting_passes_its_turn_on():
    weighing = _Weighing(1, 100)
    entered, release = threading.Event(), threading.Event()

    def first() -> None:
        with weighing.held(10):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=first, daemon=True)
    holder.start()
    assert entered.wait(5)
    quitter = threading.Thread(target=_give_up_waiting, args=(weighing,), daemon=True)
    quitter.start()
    time.sleep(0.3)
    with weighing._changed:  # a spurious wake-up: the waiter looks again, and gives up
        weighing._changed.notify_all()
    quitter.join(5)
    assert not quitter.is_alive()
    release.set()
    holder.join(5)

    done = threading.Event()

    def last() -> None:
        with weighing.held(10):
            done.set()

    threading.Thread(target=last, daemon=True).start()
    assert done.wait(5), "the abandoned turn blocked the ones after it"


class _GaveUp(Exception):
    pass


def _give_up_waiting(weighing: _Weighing) -> None:
    """Wait for a place and give up after 0.2 s from inside the wait, as a Ctrl-C landing there would."""
    deadline = time.monotonic() + 0.2
    fits = weighing._fits

    def impatient(size: int) -> bool:
        if time.monotonic() > deadline:
            raise _GaveUp
        return fits(size)

    weighing._fits = impatient  # type: ignore[method-assign]
    with pytest.raises(_GaveUp), weighing.held(10):
        raise AssertionError("never entered: the first change holds the only place")
    weighing._fits = fits  # type: ignore[method-assign]


def _page(edition: int, i: int, run: str = "") -> str:
    return f"<html><body><h1>Statement {i}</h1><p>Edition {edition}{run}: we met.</p></body></html>"


def test_a_check_round_keeps_no_texts_for_a_next_change_it_will_not_see(site, archive, tmp_path):
    paths = [f"/kept/{i}.html" for i in range(3)]
    run = f" of {uuid.uuid4()}"  # contents no other test's round saw (the caches are the process's)
    for i, path in enumerate(paths):
        site.put(path, _page(1, i, run))
    config = load_config(write_config(tmp_path / "mirror.toml", [site.url(p) for p in paths]), {})
    check_round(config, archive, [])
    for i, path in enumerate(paths):
        site.put(path, _page(2, i, run))
    kept = diff.TEXTS.size, diff.VIEWS.size

    report = check_round(config, archive, [])

    assert report.counts == {"changed": 3}
    assert (diff.TEXTS.size, diff.VIEWS.size) == kept, "a check round kept texts"
    assert (diff.TEXTS.max_bytes, diff.VIEWS.max_bytes) == (diff.TEXT_CACHE_BYTES,) * 2
    # Elsewhere (the daemon) a compared version's text is kept for its next change.
    old, new = _page(2, 0, run).encode(), _page(3, 0, run).encode()
    diff.compare(old, "text/html", new, "text/html", old_sha256="a" * 64, new_sha256="b" * 64)
    assert diff.TEXTS.get("b" * 64, "text/html") is not None
