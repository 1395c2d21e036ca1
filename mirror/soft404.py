"""Soft 404s: a document that answers with a body that is not it. Pure: no I/O, no logging.

`evidence(state, result, policy, shared)` returns what shows that an answer (a body,
or a 304 at the end of a redirect) is a soft 404, or None (the rules are
`mirror.judge`'s; `judge` decides what follows):

- a redirect to a home page (a URL whose path is `/`), from a URL that is not one;
- a redirect to the page `policy.soft_404_shared` other targets already redirect to
  (`shared`, counted by the caller in the store);
- a 200 page whose title says it is not found (`NOT_FOUND_TITLE`), with content other
  than the latest version.

Only for a document that had a version; a redirect home only when it is new (not the
destination the target already moved to) or the document is already gone. A shared
destination counts whenever it is shared: the targets that moved there before the
others did are soft 404s at their next check.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from mirror import blocking
from mirror.domain import DetectPolicy, FetchResult, Status, TargetState

# A title that says the page is not the document: "Page Not Found | Agency", "Error 404", ...
NOT_FOUND_TITLE = re.compile(
    r"\b(?:not found|page (?:does not|doesn't|no longer) exists?|no longer (?:available|exists))\b|"
    r"^\W*(?:error\W*)?404\b|\b404\W*(?:error|page)\b",
    re.IGNORECASE,
)


_ROOT_INDEX = re.compile(r"/(?:index|default|home)\.[a-z]{2,5}", re.IGNORECASE)


def evidence(
    state: TargetState, result: FetchResult, policy: DetectPolicy, shared: int
) -> dict[str, object] | None:
    """Return the evidence that an answer with a body is a soft 404 (see the rules), or None."""
    if state.current_version == 0:
        return None  # a document that never appeared cannot disappear
    to = result.final_url
    if to != result.url:
        if is_home(to) and not is_home(result.url) and (state.status is Status.GONE or to != state.moved_to):
            return {"reason": "redirect to the home page", "to": to}
        if shared >= policy.soft_404_shared:  # also for a target that moved there before the others
            return {
                "reason": f"redirect to a page {shared} other targets redirect to",
                "to": to,
                "shared": shared,
            }
    if result.status == 200 and result.body is not None and result.body_sha256 != state.current_sha256:
        title = blocking.title_of(blocking.head_of(result))
        if title is not None and NOT_FOUND_TITLE.search(title):
            return {"reason": "a not-found page served with 200", "title": title}
    return None


def is_home(url: str) -> bool:
    """Return whether `url` is a site's home page: `/`, or an index file at the root (`/index.html`)."""
    parts = urlsplit(url)
    return not parts.query and (parts.path in ("", "/") or _ROOT_INDEX.fullmatch(parts.path) is not None)
