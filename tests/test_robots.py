"""robots.txt as a site owner writes it, asked of a real server on loopback."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from mirror.config import DEFAULT_USER_AGENT
from mirror.domain import FetchLimits
from mirror.fetch import make_session
from mirror.robots import MAX_ROBOTS_BYTES, RobotsCache, product_token, robots_url

LIMITS = FetchLimits(timeout=5.0, connect_timeout=2.0, retries=0, user_agent=DEFAULT_USER_AGENT)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def session():
    with make_session(LIMITS) as session:
        yield session


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def robots(clock):
    return RobotsCache(ttl=3600, retry_ttl=60, clock=clock)


def test_a_disallow_for_mirror_keeps_us_out_of_that_folder_only(site, session, robots):
    site.put("/robots.txt", "User-agent: mirror\nDisallow: /private/\n", "text/plain")

    assert robots.allowed(site.url("/archive/index.html"), session, LIMITS)
    assert not robots.allowed(site.url("/private/letters.html"), session, LIMITS)
    assert not robots.allowed(site.url("/private/"), session, LIMITS)
    assert robots.allowed(site.url("/privateer.html"), session, LIMITS)


def test_rules_for_every_robot_apply_to_us_with_wildcards(site, session, robots):
    site.put(
        "/robots.txt",
        "User-agent: googlebot\nDisallow: /\n\nUser-agent: *\nDisallow: /*.pdf$\nDisallow: /drafts\n"
        "Allow: /drafts/public/\n",
        "text/plain",
    )

    assert robots.allowed(site.url("/archive/page.html"), session, LIMITS)
    assert not robots.allowed(site.url("/archive/scan.pdf"), session, LIMITS)
    assert robots.allowed(site.url("/archive/scan.pdf?page=2"), session, LIMITS)  # "$" ends the match
    assert not robots.allowed(site.url("/drafts/notes.html"), session, LIMITS)
    assert robots.allowed(site.url("/drafts/public/notes.html"), session, LIMITS)  # longest match wins


def test_a_group_for_mirror_replaces_the_rules_for_every_robot(site, session, robots):
    site.put(
        "/robots.txt", "User-agent: *\nDisallow: /\n\nUser-agent: mirror\nDisallow: /tmp/\n", "text/plain"
    )

    assert robots.allowed(site.url("/archive/index.html"), session, LIMITS)
    assert not robots.allowed(site.url("/tmp/x"), session, LIMITS)


def test_robots_txt_is_asked_for_with_our_user_agent_once_and_kept(site, session, robots, clock):
    site.put("/robots.txt", "User-agent: *\nDisallow: /private/\n", "text/plain")

    for path in ("/a.html", "/b.html", "/private/c.html", "/d.html"):
        robots.allowed(site.url(path), session, LIMITS)
    clock.now += 3599
    robots.allowed(site.url("/e.html"), session, LIMITS)

    assert site.hits("/robots.txt") == 1
    assert site.requests[0].headers["user-agent"] == DEFAULT_USER_AGENT
    assert site.requests[0].headers["user-agent"].startswith("mirror/")


def test_a_changed_robots_txt_counts_once_the_cached_one_expires(site, session, robots, clock):
    site.put("/robots.txt", "User-agent: *\nDisallow:\n", "text/plain")
    assert robots.allowed(site.url("/archive/x.html"), session, LIMITS)

    site.put("/robots.txt", "User-agent: *\nDisallow: /archive/\n", "text/plain")
    assert robots.allowed(site.url("/archive/x.html"), session, LIMITS)  # still the cached answer
    clock.now += 3601

    assert not robots.allowed(site.url("/archive/x.html"), session, LIMITS)
    assert site.hits("/robots.txt") == 2


def test_a_site_without_robots_txt_allows_everything(site, session, robots):
    # The loopback site answers 404 for a path nobody put.
    assert robots.allowed(site.url("/archive/index.html"), session, LIMITS)
    assert robots.allowed(site.url("/private/x.html"), session, LIMITS)
    assert site.hits("/robots.txt") == 1


@pytest.mark.parametrize("status", [401, 403, 410])
def test_a_forbidden_or_gone_robots_txt_allows_everything(site, session, robots, status):
    site.fail("/robots.txt", status)

    assert robots.allowed(site.url("/archive/index.html"), session, LIMITS)


def test_a_failing_robots_txt_disallows_everything_until_asked_again_soon(site, session, robots, clock):
    site.put("/robots.txt", "User-agent: *\nDisallow: /private/\n", "text/plain")
    site.fail("/robots.txt", 500, times=1)

    assert not robots.allowed(site.url("/archive/index.html"), session, LIMITS)
    clock.now += 59
    assert not robots.allowed(site.url("/archive/index.html"), session, LIMITS)  # not asked again yet
    assert site.hits("/robots.txt") == 1
    clock.now += 2

    assert robots.allowed(site.url("/archive/index.html"), session, LIMITS)
    assert not robots.allowed(site.url("/private/x.html"), session, LIMITS)
    assert site.hits("/robots.txt") == 2


def test_a_busy_site_429_counts_as_unreachable(site, session, robots):
    site.fail("/robots.txt", 429)

    assert not robots.allowed(site.url("/archive/index.html"), session, LIMITS)


def test_an_unreachable_site_is_disallowed(refused_url, session, robots):
    assert not robots.allowed(refused_url, session, LIMITS)


def test_a_huge_robots_txt_is_refused_not_read(site, session, robots):
    site.put("/robots.txt", "User-agent: *\nAllow: /\n" + "# padding\n" * (MAX_ROBOTS_BYTES // 10 + 1))

    assert not robots.allowed(site.url("/archive/index.html"), session, replace(LIMITS, max_bytes=10**9))


def test_crawl_delay_of_a_cached_site_is_told_to_the_politeness_gate(site, session, robots):
    site.put("/robots.txt", "User-agent: mirror\nCrawl-delay: 2.5\nDisallow: /private/\n", "text/plain")
    host = f"127.0.0.1:{site.port}"

    assert robots.crawl_delay(host) is None  # nothing is fetched to answer this
    robots.allowed(site.url("/x.html"), session, LIMITS)

    assert robots.crawl_delay(host) == 2.5
    assert robots.crawl_delay("elsewhere.example") is None


def test_threads_asking_about_one_site_wait_for_one_fetch(site, session, robots):
    site.put("/robots.txt", "User-agent: *\nDisallow: /private/\n", "text/plain")
    answers: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def ask(path: str) -> None:
        with make_session(LIMITS) as own:  # sessions are per thread, as in the checker
            start.wait()
            answer = robots.allowed(site.url(path), own, LIMITS)
        with lock:
            answers.append(answer)

    threads = [
        threading.Thread(target=ask, args=(f"/{'private/' if i % 2 else ''}{i}.html",)) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(answers) == [False] * 4 + [True] * 4
    assert site.hits("/robots.txt") == 1


def test_the_robots_txt_of_a_url_and_our_product_token():
    assert robots_url("HTTP://Example.org:80/a/b.html?x#y") == "http://example.org/robots.txt"
    assert robots_url("https://example.org:8443/a") == "https://example.org:8443/robots.txt"
    assert product_token(DEFAULT_USER_AGENT) == "mirror"
    assert product_token("ArchiveBot/2.0 (+https://x.org)") == "archivebot"


def test_a_url_that_is_not_http_is_never_allowed(session, robots):
    assert not robots.allowed("ftp://example.org/x", session, LIMITS)
