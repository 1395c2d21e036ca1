"""What the record says about watching: targets removed from the config, and targets that never appeared.

A target removed from the config is `unwatched` (since when it left) in `targets`, `status`
and `history`; it is never checked or claimed again until it is configured again. A
target whose checks never got the document is `unavailable`, never `gone`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from mirror.domain import Target
from mirror.errors import TargetNotWatched
from tests.fixtures_store import HOUR, T0, save_version, watch
from tests.test_cli import Mirror, write_config

A = "https://archive.example/etext/a.html"
B = "https://archive.example/etext/b.html"
FAR = T0 + timedelta(days=30)


def claimable(archive) -> list[str]:
    claimed = [t.url for t in archive.claim_due("probe", FAR, 100, timedelta(minutes=5))]
    archive.release_leases("probe")
    return claimed


def test_a_target_removed_from_the_config_is_unwatched_since_then_and_never_claimed(archive):
    watch(archive, A, B)
    save_version(archive, A, b"<p>kept</p>", T0)
    removed_at = T0 + 2 * HOUR
    archive.sync_targets([Target(B, HOUR)], removed_at)

    by_url = {t.url: t for t in archive.targets()}
    assert (by_url[A].status, by_url[A].unwatched_since, by_url[A].versions) == ("unwatched", removed_at, 1)
    assert (by_url[B].status, by_url[B].unwatched_since) == ("new", None)
    assert [t.url for t in archive.targets("unwatched")] == [A]
    assert archive.targets("ok") == []
    h = archive.history(A)
    assert (h.status, h.unwatched_since, len(h.versions)) == ("unwatched", removed_at, 1)
    status = archive.status(FAR)
    assert ({k: n for k, n in status.targets_by_status.items() if n}, status.targets) == (
        {"new": 1, "unwatched": 1},
        1,
    )
    assert claimable(archive) == [B]
    assert [t.url for t in archive.active_targets()] == [B]
    with pytest.raises(TargetNotWatched, match=r"no longer watched .*since 2025-03-01 14:00:00Z"):
        archive.active_targets([A])


def test_a_target_configured_again_is_watched_again_with_its_history(archive):
    watch(archive, A, B)
    save_version(archive, A, b"<p>kept</p>", T0)
    archive.sync_targets([Target(B, HOUR)], T0 + HOUR)
    archive.sync_targets([Target(A, HOUR), Target(B, HOUR)], T0 + 2 * HOUR)

    (a,) = archive.targets("ok")
    assert (a.url, a.unwatched_since, a.versions) == (A, None, 1)
    assert archive.history(A).status == "ok"
    assert sorted(claimable(archive)) == [A, B]
    assert archive.targets("unwatched") == []


def test_discovered_pages_of_a_source_removed_from_the_config_are_unwatched_until_it_returns(archive):
    scope = "https://archive.example/etext/"
    crawled = [Target(A, HOUR, "crawl"), Target(B, HOUR, "sitemap")]
    archive.add_discovered(crawled, T0)
    archive.sync_targets([], T0, scopes=[scope])
    assert sorted(claimable(archive)) == [A, B]

    report = archive.sync_targets([], T0 + HOUR, scopes=[])
    assert report.removed == 2
    assert [(t.status, t.unwatched_since) for t in archive.targets()] == [("unwatched", T0 + HOUR)] * 2
    assert claimable(archive) == []

    report = archive.sync_targets([], T0 + 2 * HOUR, scopes=["https://archive.example/"])
    assert report.added == 2
    assert [t.status for t in archive.targets()] == ["new", "new"]
    assert sorted(claimable(archive)) == [A, B]


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def mirror_at(tmp_path, database_url):
    def make(urls: list[str]) -> Mirror:
        return Mirror(write_config(tmp_path / "mirror.toml", urls), database_url, tmp_path)

    return make


def test_removed_and_never_seen_targets_from_the_command_line(site, mirror_at):
    site.put("/etext/kept.html", "<p>Kept.</p>")
    site.put("/etext/dropped.html", "<p>Dropped from the config.</p>")
    kept, dropped, missing = (
        site.url(p) for p in ("/etext/kept.html", "/etext/dropped.html", "/etext/no.html")
    )
    mirror = mirror_at([kept, dropped, missing])
    first = mirror.json("check")
    assert {t["url"]: t["status"] for t in first["targets"]} == {
        kept: "ok",
        dropped: "ok",
        missing: "unavailable",
    }

    mirror = mirror_at([kept, missing])  # the operator removes one target
    second = mirror.json("check")
    assert sorted(t["url"] for t in second["targets"]) == sorted([kept, missing])

    listed = {t["url"]: t for t in mirror.json("targets")["targets"]}
    assert listed[dropped]["status"] == "unwatched" and listed[dropped]["unwatched_since"]
    assert (listed[missing]["status"], listed[missing]["unwatched_since"]) == ("unavailable", None)
    assert [t["url"] for t in mirror.json("targets", "--state", "unwatched")["targets"]] == [dropped]
    assert [t["url"] for t in mirror.json("targets", "--state", "unavailable")["targets"]] == [missing]
    assert mirror.json("targets", "--state", "gone")["targets"] == []
    text = mirror("targets").stdout.decode()
    assert f"  {dropped}  (unwatched since " in text
    history = mirror.json("history", dropped)
    assert (history["status"], history["unwatched_since"]) == (
        "unwatched",
        listed[dropped]["unwatched_since"],
    )
    assert "(unwatched since " in mirror("history", dropped).stdout.decode()
    by_status = mirror.json("status")["targets_by_status"]
    assert (by_status["ok"], by_status["unavailable"], by_status["unwatched"]) == (1, 1, 1)

    refused = mirror("check", dropped, check=False)
    assert refused.returncode == 2
    error = refused.stderr.decode().splitlines()[-1]
    assert error.startswith(f"mirror: error: {dropped}: no longer watched (removed from the config since ")

    mirror = mirror_at([kept, dropped, missing])  # and adds it back
    back = mirror.json("check", dropped)
    assert [(t["url"], t["outcome"], t["status"]) for t in back["targets"]] == [(dropped, "unchanged", "ok")]
    assert mirror.json("history", dropped)["unwatched_since"] is None
