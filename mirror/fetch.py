"""One HTTP GET of a URL into a `FetchResult`: conditional, deadline-bound, capped, hashed.

`fetch()` never raises for a network problem: every failure comes back as a
`FetchResult` whose `error` names its kind. The rules:

- Redirects are followed by hand so the chain is recorded (`redirects`, `final_url`).
  A loop, or more than `max_redirects` hops, is `too_many_redirects`.
- `limits.timeout` is one deadline for the whole fetch, over every hop and retry,
  connect to last byte, the status line and headers included: `mirror.deadline`'s
  watchdog shuts the connection's socket down when it passes, and whatever that cut
  becomes is a `timeout` whose message gives the real time taken. The body is read with
  `read1` (at most one socket read per chunk) and the time left is checked between
  chunks and at its end, so a body cut by the watchdog is never taken for a whole one.
- The body is hashed while it streams and refused the moment it passes `max_bytes`
  (decoded bytes: a gzip bomb fails as `too_large` without inflating in memory).
- A Content-Encoding is decoded strictly (`mirror.contentcoding`): a stream cut short,
  data after its end, or a coding we cannot decode is `bad_content`, never a body.
  Accept-Encoding names only the codings we decode.
- A 304 to a request that carried no validators is `bad_content`: it cannot mean
  "unchanged" when nothing was named.
- Everything a server sends is hostile input. A status line that is not HTTP/1.x, an
  interim 1xx where the answer was due, a 206 never asked for, an oversized or
  duplicated header, a Location that cannot be parsed (or that carries a password or a
  control character), a transfer coding we cannot undo: `bad_content`, never an
  exception out of `fetch`. Messages are masked (`mask_userinfo`), control characters
  escaped, and cut at MAX_MESSAGE characters; a kept header value longer than
  MAX_KEPT_HEADER, or with a control character, is not kept.
- Transient failures (connection refused or reset; 429, 500, 502, 503, 504) are
  retried `limits.retries` times, waiting `backoff * 2**n` seconds or Retry-After,
  never past the deadline. Nothing else is retried.
- An error answer's (4xx, 5xx) body is read up to ERROR_HEAD_BYTES, decoded, within the
  deadline, and kept as `error_head` (a bot wall's title says what it is); a page we
  cannot read or decode leaves it None and the failure as it was.
- Conditional headers (If-None-Match, If-Modified-Since) go only to the hop whose URL
  gave the validators (`conditional.url`; None: the URL asked). A new redirect
  destination is asked unconditionally: another URL's 304 says nothing of its content.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import requests

from mirror.answers import printable
from mirror.clock import utcnow
from mirror.deadline import Deadline
from mirror.domain import Conditional, FetchFailure, FetchLimits, FetchResult
from mirror.errors import FetchError, Timeout
from mirror.redirects import Trail, follow
from mirror.sessions import Sessions, make_session
from mirror.urls import mask_userinfo

MAX_MESSAGE = 1000  # characters of a failure's message: it goes into logs and the checks table

__all__ = ["MAX_MESSAGE", "Sessions", "fetch", "make_session"]


def fetch(
    url: str,
    session: requests.Session,
    limits: FetchLimits,
    conditional: Conditional = Conditional(),  # noqa: B008 - frozen value, safe as a default
    clock: Callable[[], datetime] = utcnow,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Return what one GET of `url` found: the body and its sha256, a 304, or a failure.

    Network and HTTP failures are in `result.error` (`FetchFailure(kind, message)`);
    `status` is set whenever a response came. `sleep` is how retries wait (tests count it).
    """
    started_at = clock()
    trail = Trail(url)
    body: bytes | None = None
    sha256: str | None = None
    failure: FetchFailure | None = None
    deadline = Deadline(limits.timeout)
    try:
        with deadline.watching():
            body, sha256, failure = follow(trail, session, limits, conditional, deadline, sleep)
    except FetchError as exc:
        failure = FetchFailure(exc.kind, str(exc))
    elapsed = deadline.elapsed()
    if failure is not None:
        # Messages quote what servers and libraries said: a Location's password, a proxy's,
        # control characters (PostgreSQL cannot store a NUL; a log line must stay one line).
        message = printable(mask_userinfo(failure.message))
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        failure = FetchFailure(failure.kind, message)
    if failure is not None and failure.kind == Timeout.kind:
        # The real time the fetch held a worker, which a dripping server can make longer than the deadline.
        failure = FetchFailure(
            failure.kind, f"{failure.message} after {elapsed:.1f}s (fetch.timeout {limits.timeout:g}s)"
        )
    return FetchResult(
        url=url,
        final_url=trail.url,
        status=trail.status,
        headers=trail.headers,
        body=body,
        body_sha256=sha256,
        error=failure,
        started_at=started_at,
        elapsed=elapsed,
        redirects=tuple(trail.redirects),
        error_head=trail.error_head if failure is not None and failure.kind == "http" else None,
    )
