"""The text a user sees for a stored page: charsets as browsers pick them, every visible word, stable form."""

from __future__ import annotations

import codecs
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from mirror.text import decode, is_text, normalise, to_text

GERMAN = "„Anführungszeichen“ für das Café — 5 €"
MAC = "Übersicht: café \u2013 crème"  # an en dash


def page(body: str, head: str = "") -> str:
    return f"<!DOCTYPE html><html><head>{head}<title>Archive</title></head><body>{body}</body></html>"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        pytest.param(
            "text/html",
            page(f"<p>{GERMAN}</p>", '<meta charset="windows-1252">').encode("cp1252"),
            GERMAN,
            id="windows-1252-only-in-meta-charset",
        ),
        pytest.param(
            "text/html",
            page(
                f"<p>{GERMAN}</p>",
                '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">',
            ).encode("cp1252"),
            GERMAN,
            id="windows-1252-only-in-meta-http-equiv",
        ),
        pytest.param(
            # WHATWG: an iso-8859-1 label means windows-1252, so „ “ — € (bytes 0x80-0x9f) survive.
            "text/html; charset=iso-8859-1",
            page(f"<p>{GERMAN}</p>").encode("cp1252"),
            GERMAN,
            id="iso-8859-1-header-means-windows-1252",
        ),
        pytest.param(
            "text/html; charset=macintosh",
            page(f"<p>{MAC}</p>").encode("mac_roman"),
            MAC,
            id="mac-roman-labelled-macintosh",
        ),
        pytest.param(
            "text/html; charset=x-mac-roman",
            page(f"<p>{MAC}</p>").encode("mac_roman"),
            MAC,
            id="mac-roman-labelled-x-mac-roman",
        ),
        pytest.param(
            "text/html",
            page(f"<p>{MAC}</p>", '<meta charset="x-mac-roman">').encode("mac_roman"),
            MAC,
            id="mac-roman-in-meta",
        ),
        pytest.param(
            "text/html; charset=utf-8",
            page(f"<p>{GERMAN}</p>", '<meta charset="windows-1252">').encode("utf-8"),
            GERMAN,
            id="header-charset-beats-meta",
        ),
        pytest.param(
            "text/html",
            codecs.BOM_UTF8 + page(f"<p>{GERMAN}</p>", '<meta charset="iso-8859-1">').encode("utf-8"),
            GERMAN,
            id="utf-8-bom-beats-meta",
        ),
        pytest.param(
            "text/html",
            codecs.BOM_UTF16_LE + page(f"<p>{GERMAN}</p>").encode("utf-16-le"),
            GERMAN,
            id="utf-16-with-bom",
        ),
        pytest.param(
            "text/html", page(f"<p>{GERMAN}</p>").encode("utf-8"), GERMAN, id="unlabelled-utf-8-detected"
        ),
        pytest.param(
            "application/xhtml+xml",
            (
                '<?xml version="1.0" encoding="windows-1252"?>'
                f'<html xmlns="http://www.w3.org/1999/xhtml"><body><p>{GERMAN}</p></body></html>'
            ).encode("cp1252"),
            GERMAN,
            id="xhtml-xml-declaration",
        ),
        pytest.param(
            "text/plain; charset=windows-1252", GERMAN.encode("cp1252"), GERMAN, id="plain-text-header"
        ),
        pytest.param(
            "application/json", f'{{"title": "{GERMAN}"}}'.encode(), f'{{"title": "{GERMAN}"}}', id="json"
        ),
    ],
)
def test_page_text_shows_the_characters_the_author_wrote(content_type, body, expected):
    assert to_text(body, content_type) == expected


def test_plain_text_quoting_a_meta_tag_is_not_decoded_by_it():
    body = f'Use <meta charset="iso-8859-1"> in old pages. {GERMAN}'.encode()
    assert decode(body, "text/plain") == body.decode("utf-8")


def test_undecodable_bytes_become_replacement_characters_instead_of_failing():
    text = to_text(b"<p>caf\xe9 ok</p>", "text/html; charset=utf-8")
    assert text == "caf\ufffd ok"


def test_decode_returns_the_markup_of_a_page_in_its_declared_charset():
    body = page(f"<p>{GERMAN}</p>", '<meta charset="windows-1252">').encode("cp1252")
    assert f"<p>{GERMAN}</p>" in decode(body, "text/html")


INVISIBLE = ("tracking", "color", "inHead", "margin", "JavaScript", "template row", "hidden draft", "styled")


def test_all_visible_text_counts_menus_footers_and_tables_but_not_scripts_or_styles():
    html = page(
        """
        <header><nav><ul><li><a href="/">Home</a></li><li><a href="/etext/">Texts</a></li></ul></nav></header>
        <script>document.write("tracking code")</script>
        <style>p { color: red }</style>
        <noscript>Please enable JavaScript</noscript>
        <template><p>template row</p></template>
        <div hidden>hidden draft</div>
        <div style="display: none">styled away</div>
        <h1>Note from the chair</h1>
        <p>The congress met on 22 September 2007.</p>
        <table><tr><th>City</th><th>Year</th></tr><tr><td>Bonn</td><td>1949</td></tr></table>
        <footer>Contact the webmaster</footer>
        """,
        head="<script>var inHead = 1;</script><style>body { margin: 0 }</style>",
    ).encode()
    text = to_text(html, "text/html; charset=utf-8")
    assert text is not None
    for visible in ("Home", "Texts", "Note from the chair", "22 September 2007", "Contact the webmaster"):
        assert visible in text
    lines = text.splitlines()
    assert any("City" in line and "Year" in line for line in lines)
    assert any("Bonn" in line and "1949" in line for line in lines)
    for hidden in INVISIBLE:
        assert hidden not in text
    assert "Archive" not in text  # the <title> is the tab's label, not page text


def test_page_without_content_type_that_looks_like_html_is_rendered_as_html():
    assert to_text(b"\r\n<!doctype html><p>sniffed <b>page</b></p>", None) == "sniffed page"


@pytest.mark.parametrize("depth", [300, 1500])
def test_thousands_of_unclosed_tags_do_not_lose_the_rest_of_the_page(depth):
    html = "<body><nav>Menu</nav>" + "<font size=2>" * depth + "<p>deep text</p><p>after</p></body>"
    text = to_text(html.encode(), "text/html")
    assert text is not None
    assert "Menu" in text
    assert "deep text" in text
    assert "after" in text


def test_pages_rendered_by_parallel_workers_do_not_mix():
    pages = [page(f"<p>page {n}</p>").encode() for n in range(200)]
    alone = [to_text(body, "text/html") for body in pages]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so that a shared state shows
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            together = list(pool.map(lambda body: to_text(body, "text/html"), pages * 3))
    finally:
        sys.setswitchinterval(interval)
    assert together == alone * 3


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("a\r\nb\rc", "a\nb\nc", id="line-endings"),
        pytest.param("a   \nb\t\n", "a\nb", id="trailing-spaces"),
        pytest.param("a\n\n\n\n\n\nb", "a\n\n\nb", id="at-most-two-blank-lines"),
        pytest.param("\n\n  indented\nlast\n\n", "  indented\nlast", id="no-leading-or-trailing-blank-lines"),
        pytest.param("cafe\u0301", "caf\u00e9", id="unicode-nfc"),
    ],
)
def test_text_is_normalised_so_diffs_only_show_real_changes(raw, expected):
    assert normalise(raw) == expected
    assert to_text(raw.encode(), "text/plain; charset=utf-8") == expected


PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n"
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(40))
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        ("text/html; charset=utf-8", b"<p>hello</p>", True),
        ("application/xhtml+xml", b"<html><body>hi</body></html>", True),
        ("application/xml", b"<?xml version='1.0'?><urlset/>", True),
        ("application/rss+xml", b"<rss/>", True),
        ("application/json", b'{"a": 1}', True),
        ("text/plain", b"plain words", True),
        ("text/css", b"body { margin: 0 }", True),
        (None, b"plain words without a type", True),
        (None, codecs.BOM_UTF16_LE + "utf-16 text".encode("utf-16-le"), True),
        ("application/octet-stream", b"a README served as octet-stream\n", True),
        ("application/octet-stream", bytes(range(256)), False),
        (None, b"\x00\x01\x02binary", False),
        ("application/pdf", PDF, False),
        ("application/zip", ZIP, False),
        ("image/png", PNG, False),
        ("image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'/>", False),
        ("text/html", PDF, False),  # a PDF served with the wrong type is still a PDF
    ],
)
def test_only_text_documents_get_text(content_type, body, text):
    assert is_text(content_type, body) is text
    assert (to_text(body, content_type) is not None) is text


def test_a_figure_keeps_its_caption_and_an_image_shows_no_alt_text():
    # resiliparse drops a whole <figure> when told to leave alt texts out: its caption and
    # paragraphs were missing from every diff.
    page = (
        b"<p>Before.</p><figure><img src='form.jpg' alt='Denial form'>"
        b"<figcaption>Figure 1. A mailroom denial form.</figcaption></figure>"
        b"<p>After <img src='x.gif' alt='spacer'> the figure.</p>"
    )
    assert to_text(page, "text/html") == "Before.\n\nFigure 1. A mailroom denial form.\n\nAfter the figure."
