"""The redirect loop of one fetch: each hop asked, recorded, and checked as hostile input.

Redirects are followed by hand so the chain is recorded (`Trail.redirects`, the final
URL). A loop, or more than `max_redirects` hops, is `too_many_redirects`; a Location that
is not an http(s) URL, or cannot be parsed, is `bad_content`. Conditional headers go only
to the hop whose URL gave the validators: another URL's 304 says nothing of its content.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests

from mirror.answers import check_not_modified, conditional_headers, kept_headers, shown, status_line
from mirror.deadline import Deadline
from mirror.domain import Conditional, FetchFailure, FetchLimits
from mirror.errors import BadContent, TooManyRedirects
from mirror.transfer import read_body, read_head, release, send, time_left
from mirror.urls import BadURL, normalize_url, normalized

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass
class Trail:
    """What the fetch has learned so far; read at the edge when an error stops it."""

    url: str  # the URL asked last
    redirects: list[str] = field(default_factory=list)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error_head: bytes | None = None  # the start of the last error answer's body


def follow(
    trail: Trail,
    session: requests.Session,
    limits: FetchLimits,
    conditional: Conditional,
    deadline: Deadline,
    sleep: Callable[[float], None],
) -> tuple[bytes | None, str | None, FetchFailure | None]:
    """Return (body, sha256, failure) of the last hop, following redirects.

    Raises:
        FetchError: a network failure, a bad redirect, or a bad body.
    """
    validators = conditional_headers(conditional)
    validated_url = conditional.url or trail.url
    seen: set[str] = set()  # the URLs asked, normalised: a redirect back to one is a loop
    last_location: str | None = None
    answer: tuple[bytes | None, str | None, FetchFailure | None] | None
    while True:
        headers = validators if trail.url == validated_url else {}
        resp = send(trail.url, session, limits, headers, deadline, sleep)
        try:
            time_left(deadline, trail.url)  # headers cut short by the watchdog are no answer
            trail.status = resp.status_code
            trail.headers = kept_headers(resp, last_location)
            location = resp.headers.get("location")
            if resp.status_code < 200:
                # http.client skips 100 Continue only: another 1xx would leave the real answer
                # unread on a connection the pool would hand to the next request.
                raise BadContent(
                    trail.url, f"{status_line(resp)}: an interim answer where the answer was due"
                )
            if resp.status_code == 206:  # we never send Range: a part is no version of the document
                raise BadContent(trail.url, f"{status_line(resp)} to a request for the whole document")
            if resp.status_code in REDIRECT_STATUSES and location:
                if not seen:  # the first hop's URL, normalised only when a redirect comes (few do)
                    seen.add(normalized(trail.url))
                trail.url = next_hop(trail, location, limits.max_redirects, seen)
                last_location = location
                answer = None
            elif resp.status_code == 304:
                check_not_modified(resp, trail.url)
                answer = None, None, None
            elif not 200 <= resp.status_code < 300:
                trail.error_head = read_head(resp, trail.url, deadline)
                answer = None, None, FetchFailure("http", status_line(resp))
            else:
                answer = (*read_body(resp, trail.url, limits.max_bytes, deadline), None)
        except BaseException:
            resp.close()
            raise
        release(resp, trail.url, deadline)
        if answer is not None:
            return answer


def next_hop(trail: Trail, location: str, max_redirects: int, seen: set[str]) -> str:
    """Return the normalised URL a redirect points to, and record the hop.

    Raises:
        BadContent: the Location is not an http(s) URL.
        TooManyRedirects: a loop, or more than `max_redirects` hops.
    """
    # http.client gives header bytes as Latin-1; a browser reads a Location's bytes as UTF-8.
    # Not UTF-8: the characters as they came (requests percent-encodes them).
    with contextlib.suppress(UnicodeError):
        location = location.encode("latin-1").decode("utf-8")
    try:
        target = urljoin(trail.url, location.strip())
        scheme = urlsplit(target).scheme.lower()
    except ValueError as exc:  # a broken IPv6 literal, a bad port
        raise BadContent(trail.url, f"redirect to a bad URL: {shown(location)} ({exc})") from None
    if scheme not in ("http", "https"):
        raise BadContent(trail.url, f"redirect to a non-http(s) URL: {shown(location)}")
    try:
        target = normalize_url(target)
    except BadURL as exc:
        raise BadContent(trail.url, f"redirect to a bad URL: {exc}") from None
    trail.redirects.append(trail.url)
    if target in seen:
        raise TooManyRedirects(trail.url, f"redirect loop back to {target}")
    if len(trail.redirects) > max_redirects:
        raise TooManyRedirects(trail.url, f"more than {max_redirects} redirects")
    seen.add(target)
    return target
