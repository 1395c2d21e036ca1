"""What a change is weighed on: a page's text, its link targets and images, ignore rules applied. Pure.

The text of a version (`mirror.text`, what `mirror diff` shows) leaves out where links
point and which images a page shows, yet a removed link to a dataset or a removed
photograph is what an archive must notice. `view` returns the text, then one line per
link and image:

    link: https://example.org/data/2024.csv
    image: /img/cell-block.jpg "Cell block C, 2019"

Elements chosen by the target's `ignore_selectors` are left out of both, and kept apart
as lines starting with `IGNORED`, so that `significance` can say a change was only in
them. Link and image lines keep their attribute values as written (relative or not):
both sides of a change come from one page.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from mirror.ignore import IgnoreRules
from mirror.text import html_markup, markup_text, normalise

IGNORED = "\x1f"  # first character of a line an ignore selector set aside
# Elements whose links and images nobody sees (as `mirror.text` leaves out their text).
_UNSEEN_TAGS = frozenset({"script", "style", "noscript", "template", "iframe", "head", "title"})
_local = threading.local()


@functools.cache
def _styled_xpath() -> Any:
    """Return the compiled XPath of the elements under (and at) a node with `hidden` or `style`."""
    from lxml import etree

    return etree.XPath("descendant-or-self::*[@hidden or @style]")


def _unseen_under(root: Any) -> set[Any]:
    """Return the elements under (and at) `root` that nobody sees: `_UNSEEN_TAGS`, `hidden`, `display:none`.

    The tags by lxml's own iteration (in C) and the attributes by one XPath, then tested here as
    `_unseen` tests them: measured on the corpus's pages, 0.8 ms a page where one XPath over
    tags, `hidden` and a translated `style` took 2.0 ms (libxml2 walks the tree once per branch
    of a union, and translates every element's style).
    """
    found = set(root.iter(*_UNSEEN_TAGS))
    found.update(element for element in _styled_xpath()(root) if _unseen(element))
    return found


def _parser() -> Any:
    import lxml.html  # loaded with the first change of an HTML page

    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = lxml.html.HTMLParser(huge_tree=True, no_network=True)
    return parser


def view(body: bytes, content_type: str | None, text: str | None, rules: IgnoreRules) -> str | None:
    """Return the lines a change of this document is weighed on, or None for a binary.

    `text` is the document's text as `mirror.text.to_text` gives it (None: a binary). For
    HTML, link (`<a href>`, `<area href>`) and image (`<img src>`, with its `alt`) lines
    follow the text, then the text of the elements `rules.selectors` chose, each line
    marked with `IGNORED` (they are left out of the text, which is rendered again then).
    Other text documents are their text.
    """
    if text is None:
        return None
    text = text.replace(IGNORED, " ")
    markup = html_markup(body, content_type)
    if markup is None or not markup.strip():
        return text
    import lxml.html
    from lxml import etree

    try:
        tree = lxml.html.document_fromstring(markup, parser=_parser())
    except (etree.ParserError, ValueError):
        return text
    ignored: list[str] = []
    if rules.xpaths:
        for xpath in rules.xpaths:
            for element in tree.xpath(xpath):
                if not isinstance(element, lxml.html.HtmlElement) or element.getparent() is None:
                    continue
                content = normalise(element.text_content())
                lines = [line for line in content.split("\n") if line.strip()] + _media_lines(element)
                ignored += [IGNORED + line for line in lines]
                element.drop_tree()  # keeps the text that follows it
        text = markup_text(lxml.html.tostring(tree, encoding="unicode")).replace(IGNORED, " ")
    return "\n".join([text, *_media_lines(tree), *ignored])


def _unseen(element: Any) -> bool:
    if element.tag in _UNSEEN_TAGS or element.get("hidden") is not None:
        return True
    return "display:none" in (element.get("style") or "").replace(" ", "").lower()


def _media_lines(root: Any) -> list[str]:
    """Return the link and image lines of `root` and all it holds, leaving out what nobody sees."""
    if any(_unseen(node) for node in (root, *root.iterancestors())):
        return []
    # Found in C, not by a walk per link; the tree is ours, and is not rendered again. An element
    # inside one dropped before it goes with that one (dropping it again changes nothing).
    for element in _unseen_under(root):
        if element.getparent() is not None:
            element.drop_tree()
    lines = []
    for element in root.iter("a", "area", "img"):
        if element.tag == "img":
            src = (element.get("src") or "").strip()
            alt = " ".join((element.get("alt") or "").split())
            if src or alt:
                lines.append(f'image: {src} "{alt}"' if alt else f"image: {src}")
        else:
            href = (element.get("href") or "").strip()
            if href and not href.startswith(("#", "javascript:")):
                lines.append(f"link: {href}")
    return [line.replace(IGNORED, " ").replace("\n", " ") for line in lines]
