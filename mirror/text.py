"""The text of a document, for diffs: bytes and a content type in, normalised text out. Pure.

- `is_text` says whether a body is text at all (HTML, XML, JSON, text/*, or sniffed as text).
- `decode` finds the charset the way a browser does: BOM, then the HTTP charset, then
  `<meta charset>` / `<meta http-equiv>` or the XML declaration, then detection. The
  WHATWG label mapping applies (latin-1 and ascii labels mean windows-1252).
- `to_text` renders HTML to ALL its visible text (menus, footers and tables included: on
  an archive every visible word counts) and normalises it so that diffs are stable.

Importing this module registers the few WHATWG labels Python lacks (x-mac-roman, x-cp1252,
...) as codec aliases; that is its one side effect.
"""

from __future__ import annotations

import codecs
import enum
import re
import threading
import unicodedata
from copy import copy

import charset_normalizer
import lxml.html  # lxml ships no type stubs
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.html_engine import Inscriptis
from inscriptis.html_properties import Display
from inscriptis.model.attribute import DEFAULT_ATTRIBUTE_MAP
from inscriptis.model.config import ParserConfig
from inscriptis.model.html_element import HtmlElement
from lxml import etree
from w3lib.encoding import (
    html_to_unicode,
    http_content_type_encoding,
    read_bom,
    resolve_encoding,
    to_unicode,
)

SNIFF_BYTES = 8192  # how much of a body without a usable content type is inspected
FALLBACK_ENCODING = "cp1252"  # the WHATWG default when nothing else speaks and UTF-8 failed

# WHATWG labels that Python's codec registry does not know (w3lib resolves a label through
# that registry, and gives up on these). Registering them as codec aliases lets every
# step of w3lib's order (header, meta, XML declaration) honour them.
_EXTRA_LABELS = {
    "x_mac_roman": "mac_roman",
    "csmacintosh": "mac_roman",
    "mac": "mac_roman",
    "x_mac_cyrillic": "mac_cyrillic",
    "x_mac_ukrainian": "mac_cyrillic",
    "x_cp1250": "cp1250",
    "x_cp1251": "cp1251",
    "x_cp1252": "cp1252",
    "x_cp1253": "cp1253",
    "x_cp1254": "cp1254",
    "x_cp1255": "cp1255",
    "x_cp1256": "cp1256",
    "x_cp1257": "cp1257",
    "x_cp1258": "cp1258",
}


def _search_extra_label(name: str) -> codecs.CodecInfo | None:
    target = _EXTRA_LABELS.get(name.lower().replace("-", "_").replace(" ", "_"))
    return codecs.lookup(target) if target else None


codecs.register(_search_extra_label)
resolve_encoding.cache_clear()  # forget any "unknown" answer given before the aliases existed


class _Kind(enum.Enum):
    HTML = "html"
    XML = "xml"
    PLAIN = "plain"  # text/*, JSON, JavaScript: the decoded text is the text
    BINARY = "binary"
    UNKNOWN = "unknown"  # no type, or one that does not say: sniff the bytes


_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/vnd.wap.xhtml+xml"})
_XML_TYPES = frozenset({"text/xml", "application/xml"})
_PLAIN_APPLICATION_TYPES = frozenset(
    {
        "application/json",
        "application/ld+json",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
    }
)
_BINARY_TYPES = frozenset(
    {
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-bzip2",
        "application/x-xz",
        "application/x-7z-compressed",
        "application/x-rar-compressed",
        "application/vnd.rar",
        "application/msword",
        "application/wasm",
    }
)
_BINARY_PREFIXES = ("image/", "audio/", "video/", "font/", "model/")
# Signatures of common binaries: they win over a declared text type, because servers of
# old archives do serve PDFs as text/html, and a text diff of a PDF is noise.
_BINARY_MAGIC = (
    b"%PDF-",
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"\xff\xd8\xff",
    b"\x1f\x8b\x08",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",  # OLE2: .doc, .xls
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"\xfd7zXZ\x00",
)
# WHATWG MIME sniffing: a body whose first tag is one of these is HTML.
_HTML_SNIFF_RE = re.compile(
    rb"\s*<(?:!doctype\s+html|html|head|body|script|iframe|h1|div|font|table|a|style|title|b|br|p|!--)[\s>]",
    re.IGNORECASE,
)
_XML_SNIFF_RE = re.compile(rb"\s*<\?xml\s")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _declared_kind(content_type: str | None) -> _Kind:
    media = _media_type(content_type)
    if not media or media == "application/octet-stream":
        return _Kind.UNKNOWN
    if media in _HTML_TYPES:
        return _Kind.HTML
    if media in _BINARY_TYPES or media.startswith(_BINARY_PREFIXES):
        return _Kind.BINARY
    if media in _XML_TYPES or media.endswith("+xml"):
        return _Kind.XML
    if media.startswith("text/") or media in _PLAIN_APPLICATION_TYPES or media.endswith("+json"):
        return _Kind.PLAIN
    return _Kind.UNKNOWN


def _sniff_markup(body: bytes) -> _Kind:
    head = body[:512]
    bom_encoding, bom = read_bom(head)
    if bom_encoding == "utf-8" and bom:
        head = head[len(bom) :]
    if _HTML_SNIFF_RE.match(head):
        return _Kind.HTML
    if _XML_SNIFF_RE.match(head):
        return _Kind.XML
    return _Kind.PLAIN


def _sniffs_as_text(body: bytes) -> bool:
    sample = body[:SNIFF_BYTES]
    if read_bom(sample)[0] is not None:
        return True
    if b"\x00" in sample:
        return False
    try:
        # A multi-byte character may straddle the end of the sample: decode incrementally.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=len(body) <= SNIFF_BYTES)
    except UnicodeDecodeError:
        return charset_normalizer.from_bytes(sample).best() is not None
    return True


def _classify(content_type: str | None, body: bytes) -> _Kind:
    if body.startswith(_BINARY_MAGIC):
        return _Kind.BINARY
    kind = _declared_kind(content_type)
    if kind is not _Kind.UNKNOWN:
        return kind
    return _sniff_markup(body) if _sniffs_as_text(body) else _Kind.BINARY


def is_text(content_type: str | None, body: bytes) -> bool:
    """Return True when the body is text worth diffing.

    HTML, XHTML, XML, JSON and text/* count as text; so does a body with no content type
    (or application/octet-stream) whose first 8 KB hold no NUL byte and decode cleanly.
    PDFs, archives, images and other binaries do not, whatever type they were served with.
    """
    return _classify(content_type, body) is not _Kind.BINARY


def _detect(body: bytes) -> str | None:
    """Return the encoding of an unlabelled body: UTF-8 when it decodes, else charset-normalizer's guess."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    best = charset_normalizer.from_bytes(body).best()
    if best is None:
        return None
    return resolve_encoding(best.encoding) or best.encoding


def _decode(body: bytes, content_type: str | None, kind: _Kind) -> str:
    if kind is _Kind.PLAIN or kind is _Kind.BINARY:
        # No <meta> prescan: a browser shows text/plain as it is, whatever markup it quotes.
        bom_encoding, bom = read_bom(body)
        if bom_encoding is not None and bom is not None:
            return to_unicode(body[len(bom) :], bom_encoding)
        encoding = http_content_type_encoding(content_type) or _detect(body) or FALLBACK_ENCODING
        if encoding in {"utf-16", "utf-32"}:
            encoding += "-le"  # WHATWG: the bare label means little-endian; Python would use the host order
        return to_unicode(body, encoding)
    return html_to_unicode(content_type, body, default_encoding=FALLBACK_ENCODING, auto_detect_fun=_detect)[1]


def decode(body: bytes, content_type: str | None) -> str:
    """Return the body decoded the way a browser decodes it; undecodable bytes become U+FFFD.

    Order: byte order mark, then the charset of `content_type`, then (HTML and XML only)
    `<meta charset>`, `<meta http-equiv>` or the XML declaration, then detection (UTF-8 if
    it decodes, else charset-normalizer), then windows-1252.
    """
    kind = _declared_kind(content_type)
    if kind is _Kind.UNKNOWN:
        kind = _sniff_markup(body)
    return _decode(body, content_type, kind)


def _hide(value: str, element: HtmlElement) -> None:
    element.display = Display.none


# Browsers render none of these: "strict" is inscriptis's Firefox profile, plus <noscript>
# (scripts are on), <template> (inert) and <iframe> (its content is never shown). <object>
# stays: its fallback text is what a browser shows now that plug-ins are gone.
_CSS = {
    **CSS_PROFILES["strict"],
    **{tag: HtmlElement(display=Display.none) for tag in ("noscript", "template", "iframe")},
}
_ATTRIBUTES = {**DEFAULT_ATTRIBUTE_MAP, "hidden": _hide}  # <div hidden> is display:none in browsers
_HIDDEN_TAGS = frozenset(tag for tag, element in _CSS.items() if element.display is Display.none)
_BLOCK_TAGS = frozenset(tag for tag, element in _CSS.items() if element.display is Display.block) | {
    "br",
    "tr",
    "table",
}
_CELL_TAGS = frozenset({"td", "th"})
_WHITESPACE_RE = re.compile(r"\s+")  # HTML collapses whitespace runs to one space
_XML_DECLARATION_RE = re.compile(r"^\s*<\?xml[^>]*\?>")
_local = threading.local()


def _html_parser() -> lxml.html.HTMLParser:
    # One parser per thread: an lxml parser serialises the threads that share it.
    # huge_tree lifts libxml2's nesting limit from 256 to 2048 elements: past the limit
    # the rest of the page is dropped, and old pages do leave hundreds of <font> unclosed.
    parser: lxml.html.HTMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = lxml.html.HTMLParser(huge_tree=True)
    return parser


def _config() -> ParserConfig:
    # Inscriptis writes its canvas into the profile's "body" element, so a profile shared
    # between worker threads would mix their pages: each call gets its own body element.
    css = dict(_CSS)
    css["body"] = copy(_CSS["body"])
    config = ParserConfig(css=css)
    config.attribute_handler.attribute_mapping = _ATTRIBUTES
    return config


def _flat_text(tree: lxml.html.HtmlElement) -> str:
    """Return the visible text of a tree too deep for inscriptis's recursion: one block per line."""
    parts: list[str] = []
    walker = etree.iterwalk(tree, events=("start", "end"))
    for event, element in walker:
        tag = element.tag if isinstance(element.tag, str) else ""  # comments have a function as tag
        if event == "start":
            if tag in _BLOCK_TAGS:
                parts.append("\n")
            elif tag in _CELL_TAGS:
                parts.append("\t")
            if tag in _HIDDEN_TAGS or "hidden" in element.attrib:
                walker.skip_subtree()
            elif tag and element.text:
                parts.append(_WHITESPACE_RE.sub(" ", element.text))
        else:
            if tag in _BLOCK_TAGS:
                parts.append("\n")
            if element.tail:
                parts.append(_WHITESPACE_RE.sub(" ", element.tail))
    lines = "".join(parts).split("\n")
    return "\n".join(line.strip().replace("\t", "  ") for line in lines)  # two spaces: inscriptis's cell gap


def _render_html(markup: str) -> str:
    # lxml refuses a str that carries an encoding declaration: the bytes are decoded already.
    markup = _XML_DECLARATION_RE.sub("", markup, count=1)
    if not markup.strip():
        return ""
    try:
        tree = lxml.html.document_fromstring(markup, parser=_html_parser())
    except etree.ParserError:
        return markup  # no element at all: the characters are the text
    try:
        text: str = Inscriptis(tree, _config()).get_text()
    except RecursionError:
        return _flat_text(tree)
    return text


_BLANK_RUN_RE = re.compile(r"\n{4,}")


def normalise(text: str) -> str:
    """Return `text` in the stable form diffs compare.

    Unicode NFC, every line ending as `\\n`, no trailing spaces, at most two blank lines
    in a row, no blank lines at the start or the end.
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # rstrip per line, not a regex anchored at "$": that one backtracks quadratically on long space runs.
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_RUN_RE.sub("\n\n\n", text)
    return text.strip("\n")


def to_text(body: bytes, content_type: str | None) -> str | None:
    """Return the normalised text of a document, or None for a binary (PDF, zip, image).

    HTML gives all its visible text, laid out (lists, tables) by inscriptis, without
    `<script>`, `<style>`, `<noscript>`, `<template>` or `hidden` content. Other text
    (plain text, XML, JSON) gives its decoded characters.
    """
    kind = _classify(content_type, body)
    if kind is _Kind.BINARY:
        return None
    text = _decode(body, content_type, kind)
    if kind is _Kind.HTML:
        text = _render_html(text)
    return normalise(text)
