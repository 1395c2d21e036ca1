"""The text of a document, for diffs: bytes and a content type in, normalised text out. Pure.

- `is_text` says whether a body is text at all (HTML, XML, JSON, text/*, or sniffed as text).
- `decode` finds the charset the way a browser does: BOM, then the HTTP charset, then
  `<meta charset>` / `<meta http-equiv>` or the XML declaration, then detection. The
  WHATWG label mapping applies (latin-1 and ascii labels mean windows-1252).
- `to_text` renders HTML to ALL its visible text (menus, footers and tables included: on
  an archive every visible word counts) with resiliparse, and normalises it so that diffs
  are stable.

Importing this module registers the few WHATWG labels Python lacks (x-mac-roman, x-cp1252,
...) as codec aliases; that is its one side effect.
"""

from __future__ import annotations

import codecs
import enum
import functools
import re
import unicodedata
from collections.abc import Sequence

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree
from w3lib.encoding import (
    html_body_declared_encoding,
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
        import charset_normalizer  # loaded for the rare body that is neither labelled nor UTF-8

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
    import charset_normalizer

    best = charset_normalizer.from_bytes(body).best()
    if best is None:
        return None
    return resolve_encoding(best.encoding) or best.encoding


@functools.lru_cache(maxsize=256)
def _text_encoding(name: str | None) -> str | None:
    """Return `name` when it is an encoding that turns any bytes into text, else None.

    A server or a page names the charset, and Python's registry also holds codecs that are no
    text encodings (base64, rot13, zlib: LookupError) or that refuse to replace bad bytes
    (idna, undefined: UnicodeError). A browser ignores a label it does not know; so do we.
    """
    if name is None:
        return None
    try:
        to_unicode(b"\xff\xfe<p>\x00\x80\xc3", name)
    except (LookupError, UnicodeError, TypeError, ValueError):
        return None
    return name


def _decode(body: bytes, content_type: str | None, kind: _Kind) -> str:
    """Return the body as text: BOM, HTTP charset, (markup only) declared charset, detection.

    w3lib's `html_to_unicode` in this order, with every named charset checked by `_text_encoding`.
    """
    bom_encoding, bom = read_bom(body)
    if bom_encoding is not None and bom is not None:
        return to_unicode(body[len(bom) :], bom_encoding)
    encoding = _text_encoding(http_content_type_encoding(content_type))
    if encoding is None and kind is not _Kind.PLAIN and kind is not _Kind.BINARY:
        # No <meta> prescan for plain text: a browser shows it as it is, whatever markup it quotes.
        encoding = _text_encoding(html_body_declared_encoding(body))
    encoding = encoding or _detect(body) or FALLBACK_ENCODING
    if encoding in {"utf-16", "utf-32"}:
        # WHATWG: the bare label means little-endian in plain text (Python would use the host
        # order); w3lib reads it as big-endian in markup, where a BOM is the rule anyway.
        encoding += "-le" if kind is _Kind.PLAIN or kind is _Kind.BINARY else "-be"
    return to_unicode(body, encoding)


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


# Browsers render none of these; resiliparse already leaves out <script>, <style>, <noscript>
# (scripts are on) and the <head>. <template> is inert, an <iframe>'s content is never shown,
# and `hidden` or an inline `display: none` hide an element and all it holds.
_SKIP_SELECTORS = [
    "template",
    "iframe",
    "[hidden]",
    "[style*='display:none' i]",
    "[style*='display: none' i]",
]
_XML_DECLARATION_RE = re.compile(r"^\s*<\?xml[^>]*\?>")


def _render_html(markup: str) -> str:
    # The bytes are decoded already: a leftover encoding declaration means nothing now.
    markup = _XML_DECLARATION_RE.sub("", markup, count=1)
    if not markup.strip():
        return ""
    # Lexbor's parser (C) and resiliparse's renderer (Rust): ~4 ms for a 90 KB page, no
    # recursion, so thousands of unclosed <font> tags lose nothing.
    tree = HTMLTree.parse(markup)
    # A browser shows an image, not its alt text; but resiliparse's `alt_texts=False` also
    # drops every <figure> with all it holds (captions, paragraphs). So the alt texts go,
    # and the figures stay.
    if tree.document is not None:
        for element in tree.document.query_selector_all("[alt]"):
            element.delattr("alt")
    text: str = extract_plain_text(
        tree,
        preserve_formatting=True,
        main_content=False,  # every visible word counts on an archive: menus, footers, tables
        list_bullets=True,
        alt_texts=True,  # keeps <figure>; there are no alt texts left to show
        links=False,
        form_fields=False,
        noscript=False,
        skip_elements=_SKIP_SELECTORS,
    )
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

    HTML gives all its visible text, laid out (blocks, lists, tables) by resiliparse,
    without `<script>`, `<style>`, `<noscript>`, `<template>`, `<iframe>` or hidden content. Other text
    (plain text, XML, JSON) gives its decoded characters.
    """
    kind = _classify(content_type, body)
    if kind is _Kind.BINARY:
        return None
    text = _decode(body, content_type, kind)
    if kind is _Kind.HTML:
        text = _render_html(text)
    return normalise(text)


def html_markup(body: bytes, content_type: str | None) -> str | None:
    """Return an HTML body decoded as `to_text` decodes it (no XML declaration), or None when not HTML."""
    kind = _classify(content_type, body)
    if kind is not _Kind.HTML:
        return None
    return _XML_DECLARATION_RE.sub("", _decode(body, content_type, kind), count=1)


def markup_text(markup: str) -> str:
    """Return the normalised text of decoded HTML, as `to_text` renders it."""
    return normalise(_render_html(markup))


def to_texts(sides: Sequence[tuple[bytes, str | None]]) -> list[str | None]:
    """Return `to_text` of each (body, content type), in order."""
    return [to_text(body, content_type) for body, content_type in sides]
