"""The rules for what a server's answer may carry: everything it sends is hostile input.

Which response headers are kept with a snapshot (none over MAX_KEPT_HEADER characters,
none with a control character; a Location's password masked), how a status line and a
server's values are shown in a message (control characters escaped, cut short), when a
304 can mean "unchanged", and the conditional headers a
request sends. Pure functions over a response's fields: no I/O.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import requests

from mirror.domain import KEPT_HEADERS, Conditional
from mirror.errors import BadContent
from mirror.urls import mask_userinfo

# Characters of a kept header value: a hostile server's 64 KB values would bloat every snapshot.
MAX_KEPT_HEADER = 2048
_DIGITS = re.compile(r"[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def conditional_headers(conditional: Conditional) -> dict[str, str]:
    headers = {}
    if conditional.etag:
        headers["If-None-Match"] = conditional.etag
    if conditional.last_modified:
        headers["If-Modified-Since"] = conditional.last_modified
    return headers


def kept_headers(resp: requests.Response, last_location: str | None) -> dict[str, str]:
    # A value with a control character is no header value (RFC 9110 5.5), and PostgreSQL
    # cannot store a NUL: one would stop the round's writer with a store error.
    kept = {
        name: value
        for name in KEPT_HEADERS
        if (value := resp.headers.get(name)) is not None
        and len(value) <= MAX_KEPT_HEADER
        and not _CONTROL.search(value.replace("\t", " "))
    }
    if last_location is not None:
        kept.setdefault("location", last_location)  # where the last redirect pointed
    if "location" in kept:
        kept["location"] = mask_userinfo(kept["location"])  # stored with the snapshot
    return kept


def status_line(resp: requests.Response) -> str:
    reason = resp.reason
    if not reason:
        try:
            reason = HTTPStatus(resp.status_code).phrase
        except ValueError:
            reason = ""
    return printable(f"HTTP {resp.status_code} {reason}".rstrip())


def check_not_modified(resp: requests.Response, url: str) -> None:
    """Accept a 304 only as the answer to a request that carried validators.

    Raises:
        BadContent: a 304 to an unconditional request: there is nothing it could mean.
    """
    sent = resp.request.headers
    if "If-None-Match" not in sent and "If-Modified-Since" not in sent:
        raise BadContent(url, "HTTP 304 Not Modified to a request that sent no validators")


def printable(text: str) -> str:
    """Return `text` with each control character written as an escape (\\x00)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def shown(text: str, limit: int = 200) -> str:
    """Return a value a server sent, quoted and cut short, for a message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
