"""Links of pages and entries of sitemaps, as an archive's old pages and sitemaps really are."""

from __future__ import annotations

import gzip
import time

import pytest

from mirror.discover import (
    MAX_SITEMAP_BYTES,
    SitemapError,
    canonical_url,
    folder_of,
    in_scope,
    links,
    sitemap_urls,
)
from tests.fixtures_http import PDF_BYTES

BASE = "http://archive.example/etext/wim/index.html"
HTML = "text/html; charset=utf-8"
SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def test_a_page_links_to_its_anchors_areas_frames_and_alternates_in_document_order():
    page = b"""<html><head><link rel="alternate" type="application/rss+xml" href="feed.rss">
    <link rel="stylesheet" href="style.css"><link rel="alternate stylesheet" href="print.css"></head>
    <body><a href="cong/note.html">note</a>
    <map><area href="/etext/map.html" shape="rect"></map>
    <iframe src="http://other.example/embed.html"></iframe>
    <a href="CONG/Note.html">a different file on a case-sensitive server</a>
    <a href="cong/note.html">the same link again</a></body></html>"""

    assert links(page, HTML, BASE) == [
        "http://archive.example/etext/wim/feed.rss",
        "http://archive.example/etext/wim/cong/note.html",
        "http://archive.example/etext/map.html",
        "http://other.example/embed.html",
        "http://archive.example/etext/wim/CONG/Note.html",
    ]


def test_a_frameset_page_of_the_2000s_links_to_its_frames():
    page = b"""<html><frameset cols="20%,80%"><frame src="menu.html" name="menu">
    <frame src="main.html" name="main"><noframes><a href="main.html">no frames</a></noframes>
    </frameset></html>"""

    assert links(page, "text/html", BASE) == [
        "http://archive.example/etext/wim/menu.html",
        "http://archive.example/etext/wim/main.html",
    ]


def test_base_href_changes_where_relative_links_point():
    page = b'<html><head><base href="/etext/mt/"></head><body><a href="a.html">a</a></body></html>'

    assert links(page, HTML, BASE) == ["http://archive.example/etext/mt/a.html"]


def test_fragments_mail_and_script_links_are_not_documents():
    page = b"""<a href="#top">top</a><a href="mailto:editor@example.org">mail</a>
    <a href="javascript:window.print()">print</a><a href="ftp://archive.example/x.zip">ftp</a>
    <a href="tel:+15551234">call</a><a href="">empty</a><a>no href</a>
    <a href="page.html#section-2">section</a><a href="page.html#section-3">same page</a>"""

    assert links(page, HTML, BASE) == ["http://archive.example/etext/wim/page.html"]


def test_messy_hrefs_of_hand_written_pages_are_cleaned_the_way_browsers_do():
    page = b"""<a href="  spaced name.html ">spaces</a><a href="caf\xc3\xa9.html">accent</a>
    <a href="../../etext/./wim/x.html">dots</a><a href="HTTP://ARCHIVE.EXAMPLE:80/Y.html">shouted</a>
    <a href="line\n\tbreak.html">a newline and a tab inside the href</a><a href="http://[bad">broken</a>"""

    assert links(page, HTML, BASE) == [
        "http://archive.example/etext/wim/spaced%20name.html",
        "http://archive.example/etext/wim/caf%C3%A9.html",
        "http://archive.example/etext/wim/x.html",
        "http://archive.example/Y.html",
        "http://archive.example/etext/wim/linebreak.html",
    ]


def test_a_page_in_a_legacy_charset_gives_its_links_decoded_right():
    page = '<meta charset="windows-1252"><a href="r\u00e9sum\u00e9.html">\u201cR\u00e9sum\u00e9\u201d</a>'

    assert links(page.encode("cp1252"), "text/html", BASE) == [
        "http://archive.example/etext/wim/r%C3%A9sum%C3%A9.html"
    ]


def test_an_xhtml_page_with_an_xml_declaration_is_read():
    page = (
        b'<?xml version="1.0" encoding="iso-8859-1"?>\n'
        b'<html xmlns="http://www.w3.org/1999/xhtml"><body><a href="x.html">x</a></body></html>'
    )

    assert links(page, "application/xhtml+xml", BASE) == ["http://archive.example/etext/wim/x.html"]


def test_a_page_served_without_a_type_is_sniffed_as_html():
    assert links(b"<html><body><a href='x.html'>x</a></body></html>", None, BASE) == [
        "http://archive.example/etext/wim/x.html"
    ]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (PDF_BYTES, "application/pdf"),
        (PDF_BYTES, "text/html"),  # old servers do serve PDFs as HTML
        (b"PK\x03\x04" + b'<a href="inside.html">' * 3, "application/zip"),
        (b'see <a href="x.html">this</a>', "text/plain"),
        (b'{"href": "x.html"}', "application/json"),
        (b"", "text/html"),
        (b"   \n ", "text/html"),
    ],
    ids=["pdf", "pdf-served-as-html", "zip", "plain-text", "json", "empty", "blank"],
)
def test_documents_that_are_not_html_have_no_links(body, content_type):
    assert links(body, content_type, BASE) == []


@pytest.mark.parametrize(
    ("url", "inside"),
    [
        ("http://archive.example/etext/wim/a.html", True),
        ("http://archive.example/etext/", True),
        ("HTTP://Archive.Example:80/etext/x#frag", True),
        ("http://archive.example/etext", False),  # the folder's own name without the slash
        ("http://archive.example/etextra/x.html", False),
        ("http://archive.example/etext/../private/x.html", False),
        ("http://archive.example/etext/%2E%2E/private/x.html", False),
        ("http://archive.example/etext/wim/../../private/", False),
        ("http://archive.example/etext/wim/../mt/x.html", True),
        ("https://archive.example/etext/x.html", False),  # another scheme is another site
        ("http://archive.example:8080/etext/x.html", False),
        ("http://archive.example.evil.org/etext/x.html", False),
        ("mailto:x@archive.example", False),
        ("not a url", False),
    ],
)
def test_scope_is_a_prefix_of_canonical_urls_on_one_site(url, inside):
    assert in_scope(url, "http://archive.example/etext/") is inside


def test_canonical_urls_and_folders():
    assert canonical_url("HTTP://A.Example/x/./y/../z.html#f") == "http://a.example/x/z.html"
    assert canonical_url("http://a.example/../..") == "http://a.example/"
    assert folder_of("http://a.example/x/y.html?q=1") == "http://a.example/x/"
    assert folder_of("http://a.example") == "http://a.example/"


# --- sitemaps --------------------------------------------------------------------------------


def urlset(*locs: str, ns: str = SITEMAP_NS) -> bytes:
    entries = "".join(f"<url><loc>{loc}</loc><lastmod>2024-01-01</lastmod></url>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{ns}">{entries}</urlset>'.encode()


def test_a_sitemap_lists_its_pages_once_each_in_order():
    body = urlset(
        "http://a.example/1.html", " http://a.example/2.html?x=1&amp;y=2 ", "http://a.example/1.html"
    )

    assert sitemap_urls(body) == (["http://a.example/1.html", "http://a.example/2.html?x=1&y=2"], [])


def test_a_sitemap_index_lists_its_sitemaps():
    body = (
        f'<sitemapindex xmlns="{SITEMAP_NS}"><sitemap><loc>http://a.example/s1.xml</loc></sitemap>'
        "<sitemap><loc>http://a.example/s2.xml.gz</loc></sitemap></sitemapindex>"
    ).encode()

    assert sitemap_urls(body) == ([], ["http://a.example/s1.xml", "http://a.example/s2.xml.gz"])


def test_a_gzipped_sitemap_in_any_namespace_or_none_is_read():
    assert sitemap_urls(gzip.compress(urlset("http://a.example/1.html"))) == (["http://a.example/1.html"], [])
    assert sitemap_urls(urlset("http://a.example/1.html", ns="http://www.google.com/schemas/sitemap/0.84"))[
        0
    ] == ["http://a.example/1.html"]
    assert sitemap_urls(b"<urlset><url><loc>http://a.example/1.html</loc></url></urlset>")[0] == [
        "http://a.example/1.html"
    ]


def test_a_plain_text_sitemap_is_one_url_a_line():
    body = b"\xef\xbb\xbfhttp://a.example/1.html\r\n\r\nhttp://a.example/2.html\n"

    assert sitemap_urls(body) == (["http://a.example/1.html", "http://a.example/2.html"], [])


def test_a_sitemap_skips_entries_that_are_not_web_pages():
    body = urlset("ftp://a.example/x", "/relative.html", "", "http://a.example/ok.html")

    assert sitemap_urls(body) == (["http://a.example/ok.html"], [])


def test_an_xml_bomb_sitemap_is_refused_at_once():
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY lol0 "lol">{entities}'
        '<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        f'<urlset xmlns="{SITEMAP_NS}"><url><loc>http://a.example/&lol9;&xxe;</loc></url></urlset>'
    ).encode()

    started = time.process_time()  # CPU time: a busy machine does not stretch it
    with pytest.raises(SitemapError, match="DOCTYPE"):
        sitemap_urls(bomb)
    assert time.process_time() - started < 1


def test_a_gzip_bomb_sitemap_is_refused_without_inflating_it_all():
    bomb = gzip.compress(b"<urlset>" + b" " * (MAX_SITEMAP_BYTES + 1), compresslevel=9)

    with pytest.raises(SitemapError, match="inflates past"):
        sitemap_urls(bomb)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html><body>Not Found</body></html>", "root element is <html>"),
        (b'<rss version="2.0"><channel></channel></rss>', "root element is <rss>"),
        (b"just some words\nand more", "neither XML nor lines of URLs"),
        (b"\x1f\x8b\x08\x00garbage", "broken gzip"),
    ],
    ids=["html-error-page", "rss-feed", "prose", "broken-gzip"],
)
def test_what_is_not_a_sitemap_is_refused_with_a_reason(body, problem):
    with pytest.raises(SitemapError, match=problem):
        sitemap_urls(body)
