"""Discovery over a small linked archive on loopback: crawl rounds, bounds, sitemaps, robots."""

from __future__ import annotations

import gzip
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from mirror.config import load_config
from mirror.config_targets import Source
from mirror.crawl import Discovery
from mirror.domain import Conditional, FetchLimits, Target
from mirror.fetch import fetch, make_session
from mirror.politeness import HostGate
from mirror.robots import RobotsCache
from tests.fixtures_http import PDF_BYTES

LIMITS = FetchLimits(timeout=5.0, connect_timeout=2.0, retries=0, user_agent="mirror/test")
DAY = timedelta(days=1)
SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"

PAGES = {
    "/archive/index.html": """<html><head><title>Archive</title></head><body>
        <a href="page1.html">one</a> <a href="page2.html">two</a> <a href="frames.html">framed</a>
        <a href="../outside.html">out of scope</a>
        <a href="http://other.example/archive/x.html">other host</a>
        <a href="/archive/../private/secret.html">a dot-dot trick</a>
        <a href="mailto:editor@example.org">mail</a> <a href="doc.pdf">the PDF</a>
        <a href="#top">top</a> <a href="index.html">this page</a></body></html>""",
    "/archive/page1.html": '<a href="sub/a.html">a</a> <a href="index.html">back to the index</a>',
    "/archive/page2.html": '<a href="page1.html">one</a> <a href="page2.html#again">itself</a>',
    "/archive/frames.html": '<frameset><frame src="sub/c.html"><frame src="page1.html"></frameset>',
    "/archive/sub/a.html": '<a href="../page2.html">up</a> <a href="b.html">b</a>',
    "/archive/sub/b.html": "<p>A leaf: no links.</p>",
    "/archive/sub/c.html": '<a href="../../archive/sub/a.html">a again</a>',
    "/outside.html": '<a href="/archive/never-linked-from-inside.html">lure</a>',
    "/private/secret.html": "<p>Never fetched.</p>",
}
IN_SCOPE = [
    "/archive/index.html",
    "/archive/page1.html",
    "/archive/page2.html",
    "/archive/frames.html",
    "/archive/doc.pdf",
    "/archive/sub/a.html",
    "/archive/sub/c.html",
    "/archive/sub/b.html",
]


@pytest.fixture
def archive(site):
    for path, body in PAGES.items():
        site.put(path, f"<html><body>{body}</body></html>" if "<html>" not in body else body)
    site.put("/archive/doc.pdf", PDF_BYTES + b'<a href="sub/hidden.html">', "application/pdf")
    return site


@pytest.fixture
def session():
    with make_session(LIMITS) as session:
        yield session


class Store:
    """The targets table as discovery sees it: which URLs are known, how many under a scope."""

    def __init__(self, *targets: Target) -> None:
        self.targets = {t.url: t for t in targets}

    def count(self, scope: str) -> int:
        return sum(url.startswith(scope) for url in self.targets)

    def known(self, urls):
        return {u for u in urls if u in self.targets}

    def add(self, targets: list[Target]) -> list[Target]:
        new = [t for t in targets if t.url not in self.targets]
        self.targets.update((t.url, t) for t in new)
        return new


def crawl(discovery: Discovery, store: Store, session, *, with_known: bool = True, rounds: int = 20) -> None:
    """Check every target once per round, as the daemon does, adding what each check finds."""
    checked: set[str] = set()
    for _ in range(rounds):
        due = [url for url in store.targets if url not in checked]
        if not due:
            return
        for url in due:
            checked.add(url)
            result = fetch(url, session, LIMITS)
            store.add(discovery.found(url, result, store.count, store.known if with_known else None))
    raise AssertionError("the crawl did not end")


def crawl_source(site, **overrides) -> Source:
    fields = {"max_pages": 100, "robots": True, **overrides}
    return Source("crawl", site.url("/archive/index.html"), site.url("/archive/"), interval=DAY, **fields)


def test_a_crawl_from_the_start_page_finds_exactly_the_pages_in_scope(archive, session):
    source = crawl_source(archive)
    store = Store(Target(source.url, DAY, "crawl"))

    crawl(Discovery([source]), store, session)

    assert sorted(store.targets) == sorted(archive.url(p) for p in IN_SCOPE)
    assert {(t.source, t.interval) for t in store.targets.values()} == {("crawl", DAY)}
    for never in ("/outside.html", "/private/secret.html", "/archive/sub/hidden.html"):
        assert archive.hits(never) == 0
    assert all(archive.hits(p) == 1 for p in IN_SCOPE)  # the cycles fetched nothing twice


def test_a_crawl_started_from_the_config_file_reaches_the_same_pages(archive, session, tmp_path):
    config_file = tmp_path / "mirror.toml"
    config_file.write_text(f'[[sources]]\nstart = "{archive.url("/archive/index.html")}"\ninterval = "1d"\n')
    config = load_config(config_file, {})
    store = Store(*config.discovery_seeds())

    crawl(Discovery(config.sources), store, session)

    assert sorted(store.targets) == sorted(archive.url(p) for p in IN_SCOPE)


@pytest.mark.parametrize("with_known", [True, False], ids=["store-says-what-it-knows", "counts-only"])
def test_max_pages_bounds_the_targets_a_crawl_adds(archive, session, with_known):
    source = crawl_source(archive, max_pages=4)
    store = Store(Target(source.url, DAY, "crawl"))

    crawl(Discovery([source]), store, session, with_known=with_known)

    assert len(store.targets) == 4
    assert all(url.startswith(archive.url("/archive/")) for url in store.targets)


def test_a_page_outside_every_crawl_scope_is_not_read_for_links(archive, session):
    discovery = Discovery([crawl_source(archive)])
    outside = archive.url("/outside.html")

    assert discovery.found(outside, fetch(outside, session, LIMITS), lambda scope: 0) == []


def test_a_failed_or_unchanged_check_finds_nothing(archive, session):
    discovery = Discovery([crawl_source(archive)])
    missing, index = archive.url("/archive/missing.html"), archive.url("/archive/index.html")
    etag = fetch(index, session, LIMITS).headers["etag"]

    assert discovery.found(missing, fetch(missing, session, LIMITS), lambda scope: 0) == []
    unchanged = fetch(index, session, LIMITS, Conditional(etag=etag))
    assert unchanged.not_modified
    assert discovery.found(index, unchanged, lambda scope: 0) == []


def test_links_resolve_against_the_page_a_redirect_led_to(archive, session):
    archive.redirect("/archive/old/", "/archive/sub/a.html")
    discovery = Discovery([crawl_source(archive)])
    url = archive.url("/archive/old/")

    found = discovery.found(url, fetch(url, session, LIMITS), lambda scope: 0)

    assert [t.url for t in found] == [archive.url("/archive/page2.html"), archive.url("/archive/sub/b.html")]


def test_robots_are_asked_only_for_pages_of_sources_that_honour_them(archive):
    mine = Source("crawl", archive.url("/mine/"), archive.url("/mine/"), 10, DAY, robots=False)
    theirs = crawl_source(archive)
    discovery = Discovery([mine, theirs])

    assert discovery.honours_robots(archive.url("/archive/page1.html"))
    assert not discovery.honours_robots(archive.url("/mine/page.html"))
    assert not discovery.honours_robots(archive.url("/configured-by-hand.html"))


# --- sitemaps ---------------------------------------------------------------------------------


def urlset(site, *paths: str) -> str:
    entries = "".join(f"<url><loc>{site.url(p)}</loc></url>" for p in paths)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="{SITEMAP_NS}">{entries}</urlset>'


def put_sitemaps(site) -> None:
    index = "".join(
        f"<sitemap><loc>{url}</loc></sitemap>"
        for url in (
            site.url("/sitemaps/pages.xml"),
            site.url("/sitemaps/more.xml.gz"),
            "http://other.example/sitemap.xml",  # an index names sitemaps of its own site only
        )
    )
    site.put("/sitemap.xml", f'<sitemapindex xmlns="{SITEMAP_NS}">{index}</sitemapindex>', "application/xml")
    site.put("/sitemaps/pages.xml", urlset(site, "/archive/1.html", "/archive/2.html"), "application/xml")
    more = gzip.compress(urlset(site, "/archive/3.html", "/archive/1.html", "/news/4.html").encode())
    site.put("/sitemaps/more.xml.gz", more, "application/gzip")


def sitemap_source(site, **overrides) -> Source:
    fields = {"scope": site.url("/"), "max_pages": 100, "interval": DAY, "robots": True, **overrides}
    return Source("sitemap", site.url("/sitemap.xml"), **fields)


def test_a_sitemap_index_with_a_plain_and_a_gzipped_sitemap_lists_exactly_their_pages(site, session):
    put_sitemaps(site)

    targets = Discovery([sitemap_source(site)]).sitemap_targets(session, LIMITS)

    assert targets == [
        Target(site.url(p), DAY, "sitemap")
        for p in ("/archive/1.html", "/archive/2.html", "/archive/3.html", "/news/4.html")
    ]


def test_a_sitemap_source_keeps_the_pages_in_its_scope_within_max_pages(site, session):
    put_sitemaps(site)
    source = sitemap_source(site, scope=site.url("/archive/"), max_pages=3)
    store = Store(Target(site.url("/archive/2.html"), DAY, "crawl"))

    scoped = Discovery([sitemap_source(site, scope=site.url("/archive/"))]).sitemap_targets(session, LIMITS)
    bounded = Discovery([source]).sitemap_targets(session, LIMITS, known_count=store.count, known=store.known)

    assert [t.url for t in scoped] == [site.url(f"/archive/{n}.html") for n in (1, 2, 3)]
    assert [t.url for t in bounded] == [site.url("/archive/1.html"), site.url("/archive/3.html")]


def test_a_broken_nested_sitemap_is_logged_and_the_others_still_count(site, session):
    put_sitemaps(site)
    site.fail("/sitemaps/pages.xml", 500)

    with capture_logs() as logs:
        targets = Discovery([sitemap_source(site)]).sitemap_targets(session, LIMITS)

    assert [t.url for t in targets] == [
        site.url(p) for p in ("/archive/3.html", "/archive/1.html", "/news/4.html")
    ]
    failed = [e for e in logs if e["event"] == "sitemap.failed"]
    assert [(e["url"], e["status"]) for e in failed] == [(site.url("/sitemaps/pages.xml"), 500)]


def test_a_sitemap_index_is_followed_a_bounded_number_of_times(site, session):
    put_sitemaps(site)

    with capture_logs() as logs:
        targets = Discovery([sitemap_source(site)], max_sitemaps=2).sitemap_targets(session, LIMITS)

    assert [t.url for t in targets] == [site.url("/archive/1.html"), site.url("/archive/2.html")]
    assert site.hits("/sitemaps/more.xml.gz") == 0
    assert any(e["event"] == "sitemap.failed" and e["error"] == "too_many_sitemaps" for e in logs)


def test_a_sitemap_disallowed_by_robots_is_not_read_unless_the_source_ignores_robots(site, session):
    put_sitemaps(site)
    site.put("/robots.txt", "User-agent: mirror\nDisallow: /sitemaps/\n", "text/plain")
    gate = HostGate(1, 0.0)

    honouring = Discovery([sitemap_source(site)])
    ignoring = Discovery([sitemap_source(site, robots=False)])
    polite = honouring.sitemap_targets(session, LIMITS, robots=RobotsCache(), gate=gate.slot)
    own = ignoring.sitemap_targets(session, LIMITS, robots=RobotsCache(), gate=gate.slot)

    assert polite == []
    assert len(own) == 4
    assert site.hits("/sitemaps/pages.xml") == 1
