"""Candidate URLs from fetched bytes: links of an HTML page and entries of a sitemap. Pure.

Bytes in, canonical URLs out; no network, no store. `mirror.crawl` does the fetching and
decides which candidates become targets.

- `links` reads `<a>`, `<area>`, `<link rel=alternate>`, `<frame>` and `<iframe>` (archives
  of the 2000s are built of framesets), honours `<base href>`, and gives each http(s) URL
  once, in document order, in its canonical spelling (`canonical_url`).
- `in_scope` says whether a URL lies under a prefix, `..` and `%2e%2e` tricks resolved first.
- `sitemap_urls` reads a sitemap or a sitemap index (XML, gzip'd or not, any namespace, or
  the plain-text form), refusing entity expansion, network access and decompression bombs.
"""

from __future__ import annotations

import re
import threading
import zlib
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from mirror.urls import BadURL, mask_userinfo, normalize_url

# The sitemap protocol caps a sitemap at 50 MB uncompressed; a gzip'd one inflating past
# that is a bomb, not a sitemap.
MAX_SITEMAP_BYTES = 50 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/vnd.wap.xhtml+xml"})
# A body served without a useful type is read as HTML when it starts like HTML (WHATWG sniffing).
_UNTYPED = frozenset({"", "application/octet-stream", "text/plain"})
_HTML_SNIFF_RE = re.compile(
    rb"\s*(?:<\?xml[^>]*>\s*)?<(?:!doctype\s+html|html|head|body|frameset|a|p|!--)[\s>]", re.I
)
_XML_DECLARATION_RE = re.compile(r"^\s*<\?xml[^>]*\?>")
_LINK_TAGS = {"a": "href", "area": "href", "link": "href", "frame": "src", "iframe": "src"}
_URL_WHITESPACE_RE = re.compile(r"[\t\n\r]")  # WHATWG: removed from anywhere in a URL
_DOT_RE = re.compile(r"%2e", re.I)  # an encoded "." is a "." (RFC 3986 6.2.2.2)
_local = threading.local()


class SitemapError(ValueError):
    """The bytes are not a sitemap: not XML or text of URLs, a foreign root, or too large inflated."""


def canonical_url(url: str) -> str:
    """Return the one spelling of an absolute http(s) URL under which it is stored and compared.

    `normalize_url`, after escaping what a browser escapes (spaces, non-ASCII, `|`), and with
    the dot segments of the path resolved (`/a/./b/../c` is `/a/c`; `%2e` counts as `.`).

    Raises:
        BadURL: not an absolute http(s) URL with a host.
    """
    try:
        from w3lib.url import safe_url_string  # ~40 ms to import: only commands that discover pay it

        escaped = safe_url_string(_URL_WHITESPACE_RE.sub("", url.strip()))
    except ValueError as exc:  # a port out of range, a broken IPv6 literal
        raise BadURL(f"not a URL: {mask_userinfo(repr(url))} ({exc})") from None
    parts = urlsplit(normalize_url(str(escaped)))
    path = _remove_dot_segments(_DOT_RE.sub(".", parts.path))
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _remove_dot_segments(path: str) -> str:
    """Return an absolute path without `.` and `..` segments (RFC 3986 5.2.4); `..` stops at the root."""
    segments = path.split("/")
    out: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and len(out) > 1:
                out.pop()
            if index == last:
                out.append("")  # "/a/b/.." is the folder "/a/"
            continue
        out.append(segment)
    return "/".join(out) if len(out) > 1 else "/"


def in_scope(url: str, scope: str) -> bool:
    """Return True when `url` lies under the prefix `scope`: same scheme and host, its text starting so.

    Both are compared in their canonical spelling, so `/archive/../private/` is not under
    `/archive/`. Anything that is not an http(s) URL is in no scope.
    """
    try:
        return canonical_url(url).startswith(canonical_url(scope))
    except BadURL:
        return False


def folder_of(url: str) -> str:
    """Return the canonical URL of the folder holding `url` (up to the last `/`, no query).

    Raises:
        BadURL: not an absolute http(s) URL.
    """
    parts = urlsplit(canonical_url(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rpartition("/")[0] + "/", "", ""))


def _is_html(body: bytes, content_type: str | None) -> bool:
    from mirror.text import is_text  # here: the config reads scopes (`in_scope`) without the HTML stack

    if not body or not is_text(content_type, body):
        return False  # PDFs and zips have no links we can read, whatever type they were served as
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in _HTML_TYPES:
        return True
    return media in _UNTYPED and bool(_HTML_SNIFF_RE.match(body.removeprefix(b"\xef\xbb\xbf")[:1024]))


def _html_parser() -> Any:
    import lxml.html  # loaded on the first page whose links are read: most commands never need it

    # One parser per thread: threads sharing an lxml parser wait for each other. huge_tree lifts
    # libxml2's depth limit of 256, which old pages of unclosed <font> tags pass, losing their
    # later links; an HTML parser expands no entities, and the body is already size-capped.
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = lxml.html.HTMLParser(huge_tree=True, no_network=True)
    return parser


def links(body: bytes, content_type: str | None, base_url: str) -> list[str]:
    """Return the http(s) URLs an HTML page links to, canonical, each once, in document order.

    Reads `<a href>`, `<area href>`, `<link rel=alternate href>`, `<frame src>` and
    `<iframe src>`, relative to `<base href>` when the page has one, else to `base_url`
    (the URL that answered). Fragments are dropped; `mailto:`, `javascript:` and other
    schemes are skipped. A body that is not HTML (a PDF, a zip, plain text) has no links.
    """
    if not _is_html(body, content_type):
        return []
    from mirror.text import decode

    # lxml refuses a str that declares an encoding: `decode` has applied it already.
    markup = _XML_DECLARATION_RE.sub("", decode(body, content_type), count=1)
    if not markup.strip():
        return []
    import lxml.html
    from lxml import etree

    try:
        tree = lxml.html.document_fromstring(markup, parser=_html_parser())
    except etree.ParserError:
        return []
    base = base_url
    for element in tree.iter("base"):
        href = element.get("href")
        if href and href.strip():
            base = urljoin(base_url, _URL_WHITESPACE_RE.sub("", href.strip()))
            break  # HTML: the first <base href> counts
    found: dict[str, None] = {}  # an ordered set
    for element in tree.iter(*_LINK_TAGS):
        if element.tag == "link":
            rels = (element.get("rel") or "").lower().split()
            if "alternate" not in rels or "stylesheet" in rels:  # "alternate stylesheet" is CSS
                continue
        value = element.get(_LINK_TAGS[element.tag])
        url = _resolve(base, value) if value else None
        if url is not None:
            found.setdefault(url, None)
    return list(found)


def _resolve(base: str, reference: str) -> str | None:
    """Return the canonical absolute URL of a link, or None when it is not an http(s) link."""
    text = _URL_WHITESPACE_RE.sub("", reference.strip())
    if not text or text.startswith("#"):
        return None
    try:
        absolute = urljoin(base, text)
        if urlsplit(absolute).scheme.lower() not in ("http", "https"):
            return None
        return canonical_url(absolute)
    except (BadURL, ValueError):
        return None


def sitemap_urls(body: bytes) -> tuple[list[str], list[str]]:
    """Return (page URLs, nested sitemap URLs) of a sitemap, each canonical and once, in order.

    A `<urlset>` gives pages, a `<sitemapindex>` gives sitemaps, whatever their namespace.
    A body starting with the gzip signature is inflated first (a `.xml.gz` served as is);
    one that is not XML is read as the plain-text form, one URL a line. Entities are not
    expanded, no DTD or network is touched, and a URL that is not http(s) is skipped.

    Raises:
        SitemapError: inflates past MAX_SITEMAP_BYTES, or is XML with another root
            (an HTML error page, an RSS feed), or has no parsable content at all.
    """
    if body.startswith(GZIP_MAGIC):
        body = _gunzip(body)
    head = body.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"<"):
        return _text_sitemap(head), []
    from lxml import etree  # loaded when a sitemap is read

    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=True
    )
    try:
        root = etree.fromstring(head, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise SitemapError(f"not XML: {exc}") from None
    if root is None:
        raise SitemapError("not XML: no element found")
    if root.getroottree().docinfo.internalDTD is not None:
        # No sitemap needs a DTD; its entities are how XML bombs and external reads come in.
        raise SitemapError("refused: a sitemap with a DOCTYPE declaration")
    kind = etree.QName(root).localname if isinstance(root.tag, str) else ""
    if kind not in ("urlset", "sitemapindex"):
        raise SitemapError(f"not a sitemap: the root element is <{kind}>, not <urlset> or <sitemapindex>")
    entry = "url" if kind == "urlset" else "sitemap"
    found: dict[str, None] = {}
    for element in root:
        if isinstance(element.tag, str) and etree.QName(element).localname == entry:
            for loc in element:
                # A <loc> with children holds an entity reference (left unexpanded): no URL.
                if (
                    isinstance(loc.tag, str)
                    and etree.QName(loc).localname == "loc"
                    and loc.text
                    and not len(loc)
                ):
                    url = _resolve(loc.text, loc.text)
                    if url is not None:
                        found.setdefault(url, None)
    urls = list(found)
    return (urls, []) if kind == "urlset" else ([], urls)


def _gunzip(body: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=31)  # 31: a gzip container
    try:
        data = inflater.decompress(body, MAX_SITEMAP_BYTES)
    except zlib.error as exc:
        raise SitemapError(f"broken gzip: {exc}") from None
    if inflater.unconsumed_tail:
        raise SitemapError(f"inflates past {MAX_SITEMAP_BYTES} bytes (a sitemap holds at most 50 MB)")
    if not inflater.eof:
        raise SitemapError("broken gzip: the stream ends early")
    return data


def _text_sitemap(body: bytes) -> list[str]:
    found: dict[str, None] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        url = _resolve(line.strip(), line.strip()) if "://" in line else None
        if url is not None:
            found.setdefault(url, None)
    if body.strip() and not found:
        raise SitemapError("not a sitemap: neither XML nor lines of URLs")
    return list(found)
