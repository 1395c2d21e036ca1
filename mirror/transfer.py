"""One request and its answer's body, against the fetch's deadline: retries, streaming, errors mapped.

`send` GETs one URL (no redirect followed) and retries transient failures (connection
refused or reset; 429, 500, 502, 503, 504) `limits.retries` times, waiting `backoff * 2**n`
seconds or Retry-After, never past the deadline. `read_body` streams a body with `read1`,
hashed and capped while it comes, decoded strictly (`mirror.contentcoding`); `release`
gives a connection back to the pool. requests' and urllib3's exceptions are translated into
`mirror.errors` at one place (`map_requests_errors`, `_translate`).
"""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3.exceptions
import urllib3.util
from urllib3.response import HTTPResponse

from mirror import contentcoding, sessions
from mirror.answers import shown
from mirror.deadline import Deadline
from mirror.domain import FetchLimits, retry_after
from mirror.errors import (
    BadContent,
    ConnectFailed,
    DnsFailed,
    FetchError,
    Timeout,
    TooLarge,
    TooManyRedirects,
)

CHUNK_SIZE = 64 * 1024
ERROR_HEAD_BYTES = 64 * 1024  # of an error page, decoded, kept to read what a refusal says (`error_head`)
DRAIN_BYTES = 64 * 1024  # a redirect's or an error page's body read to keep its connection; longer: closed
MAX_RETRY_WAIT = 60.0  # seconds: a Retry-After of a day must not park a worker
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Raised while reading a body. Before the body, requests wraps a reset in ConnectionError instead.
_BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.DecodeError,
)


def expired(url: str) -> Timeout:
    return Timeout(url, "no complete answer within the deadline")


def time_left(deadline: Deadline, url: str) -> float:
    """Return the seconds left.

    Raises:
        Timeout: none are left, or the watchdog has cut the connection.
    """
    left = deadline.remaining()
    if left <= 0 or deadline.fired:
        raise expired(url)
    return left


def send(
    url: str,
    session: requests.Session,
    limits: FetchLimits,
    headers: dict[str, str],
    deadline: Deadline,
    sleep: Callable[[float], None],
) -> requests.Response:
    """Return the response (headers read, body not yet) to a GET of `url`, after retries.

    Raises:
        FetchError: the last attempt failed, or the deadline passed.
    """
    attempt = 0
    while True:
        left = time_left(deadline, url)
        try:
            # `total` caps connect + wait for the headers together. requests' adapter takes a
            # urllib3 Timeout as it is (adapters.py `isinstance(timeout, TimeoutSauce)`); its stubs
            # only list floats and tuples.
            timeout: Any = urllib3.util.Timeout(
                connect=min(limits.connect_timeout, left), read=left, total=left
            )
            with map_requests_errors(url, deadline):
                resp = sessions.get(session, url, headers, timeout)
        except ConnectFailed as exc:
            if not _transient(exc) or not _wait_to_retry(attempt, limits, None, deadline, sleep):
                raise
        else:
            if resp.status_code not in TRANSIENT_STATUSES:
                return resp
            wait = retry_after(resp.headers.get("retry-after"), datetime.now(UTC))
            asked = None if wait is None else wait.total_seconds()
            if not _wait_to_retry(attempt, limits, asked, deadline, sleep, before=resp.close):
                return resp
        attempt += 1


def _transient(exc: ConnectFailed) -> bool:
    # Refused and reset connections may come back; a failed TLS handshake will not.
    return not isinstance(exc.__cause__, requests.exceptions.SSLError)


def _wait_to_retry(
    attempt: int,
    limits: FetchLimits,
    retry_after: float | None,
    deadline: Deadline,
    sleep: Callable[[float], None],
    before: Callable[[], None] | None = None,
) -> bool:
    """Return True after waiting for the next attempt; False when none is due or time is short."""
    if attempt >= limits.retries:
        return False
    wait = min(retry_after if retry_after is not None else limits.backoff * 2**attempt, MAX_RETRY_WAIT)
    if wait >= deadline.remaining():
        return False
    if before is not None:
        before()
    sleep(wait)
    return True


def release(resp: requests.Response, url: str, deadline: Deadline) -> None:
    """Give the response's connection back to the pool once its body is read to the end; else close it.

    `Response.close` closes the socket of a body that was not read through `iter_content`,
    so every check would pay a new TCP (and TLS) handshake, and the server an accept. A
    body read to its end, a 304, or a short redirect or error page drained here (at most
    DRAIN_BYTES, within the deadline) leaves a connection the next request can use.
    """
    raw = resp.raw
    try:
        drained = 0
        for chunk in chunks(raw, url, deadline):
            drained += len(chunk)
            if drained > DRAIN_BYTES:
                raise TooLarge(url, "a body too long to drain")
    except FetchError:
        resp.close()
    else:
        raw.release_conn()


def read_body(resp: requests.Response, url: str, max_bytes: int, deadline: Deadline) -> tuple[bytes, str]:
    """Return the decoded body and its sha256, read against the deadline and the size cap.

    Raises:
        TooLarge: Content-Length or the decoded bytes passed `max_bytes`.
        Timeout: the deadline passed while reading.
        BadContent: truncated body, or a Content-Encoding that does not decode to its end.
    """
    declared = resp.headers.get("content-length", "")
    # A 204 has no body to decode, whatever coding it names.
    encoding = resp.headers.get("content-encoding", "") if resp.status_code != 204 else ""
    transfer = resp.headers.get("transfer-encoding", "").strip().lower()
    if transfer not in ("", "chunked", "identity"):
        # http.client undoes chunked only; any other transfer coding would be stored still coded.
        raise BadContent(url, f"Transfer-Encoding {shown(transfer)}: a coding we cannot decode")
    try:
        decoder = contentcoding.decoder(encoding)
    except contentcoding.EncodingError as exc:
        raise BadContent(url, f"Content-Encoding {exc}") from None
    if declared.isdigit() and not decoder.codings and int(declared) > max_bytes:
        raise TooLarge(url, f"Content-Length {declared} is over the limit of {max_bytes} bytes")
    digest = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in chunks(resp.raw, url, deadline):
            for piece in decoder.feed(chunk):
                size += len(piece)
                if size > max_bytes:
                    raise TooLarge(url, f"body passed the limit of {max_bytes} bytes")
                digest.update(piece)
                parts.append(piece)
        decoder.finish()
    except contentcoding.EncodingError as exc:
        raise BadContent(url, f"Content-Encoding {exc}") from None
    return b"".join(parts), digest.hexdigest()


def read_head(resp: requests.Response, url: str, deadline: Deadline) -> bytes | None:
    """Return the first ERROR_HEAD_BYTES of an error answer's decoded body; None when it cannot be read.

    What is left unread is drained or the connection closed by `release`.
    """
    parts: list[bytes] = []
    size = 0
    try:
        decoder = contentcoding.decoder(resp.headers.get("content-encoding", ""))
        for chunk in chunks(resp.raw, url, deadline):
            for piece in decoder.feed(chunk):
                parts.append(piece)
                size += len(piece)
                if size >= ERROR_HEAD_BYTES:
                    return b"".join(parts)[:ERROR_HEAD_BYTES]
        decoder.finish()
    except (FetchError, contentcoding.EncodingError):
        return None
    return b"".join(parts)


def chunks(raw: HTTPResponse, url: str, deadline: Deadline) -> Iterator[bytes]:
    """Yield the body's bytes as sent (not decoded), at most CHUNK_SIZE at a time, until it ends.

    Not `iter_content`: it blocks until a whole chunk has arrived, so a dripping
    server would hold us for as long as it likes. `read1` returns after one socket
    read, and each read may wait only for the time left.

    Raises:
        Timeout, BadContent: see `read_body`.
    """
    while True:
        left = time_left(deadline, url)
        conn = raw.connection
        if conn is not None and conn.sock is not None:
            conn.sock.settimeout(left)
        with map_requests_errors(url, deadline):
            chunk = raw.read1(CHUNK_SIZE, decode_content=False)
        if not chunk:
            time_left(deadline, url)  # an end cut by the watchdog is no end of the body
            return
        yield chunk


@contextmanager
def map_requests_errors(url: str, deadline: Deadline) -> Iterator[None]:
    """Translate requests and urllib3 exceptions into `mirror.errors` (httpx's map_httpcore_exceptions).

    Once the deadline has passed, whatever broke is a timeout: the watchdog's cut of the
    socket surfaces as a reset, a short read or a broken status line.

    Raises:
        FetchError: the translated failure, with the original as its cause.
    """
    try:
        yield
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        # A bare ValueError here is the library choking on what a server sent (a header, a
        # status line); the calls inside the block take nothing else that could be wrong.
        if deadline.passed():
            raise expired(url) from exc
        raise _translate(url, exc) from exc


def _translate(url: str, exc: BaseException) -> FetchError:
    """Return the `FetchError` for a requests/urllib3/socket exception. The order matters."""
    causes = list(_causes(exc))

    def wraps(*kinds: type[BaseException]) -> bool:
        return any(isinstance(c, kinds) for c in causes)

    reason = _reason(exc)
    if wraps(urllib3.exceptions.NameResolutionError):
        return DnsFailed(url, f"host name does not resolve ({reason})")
    # urllib3's NewConnectionError subclasses ConnectTimeoutError for old callers: a refusal is no timeout.
    if wraps(requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError) or (
        wraps(urllib3.exceptions.ConnectTimeoutError) and not wraps(urllib3.exceptions.NewConnectionError)
    ):
        connecting = wraps(requests.exceptions.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError)
        return Timeout(url, "timed out connecting" if connecting else "timed out waiting for the answer")
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return TooManyRedirects(url, str(exc))
    if isinstance(exc, _BODY_ERRORS):
        return BadContent(url, f"broken body ({reason})")
    # A status line that is no HTTP/1.x one, a header line too long, too many headers, two
    # Content-Lengths: the host answered, in something we cannot read. A hang-up before any
    # answer (RemoteDisconnected, a BadStatusLine too) is a connection failure.
    garbled = (http.client.HTTPException, urllib3.exceptions.InvalidHeader)
    if wraps(*garbled) and not wraps(http.client.RemoteDisconnected):
        return BadContent(url, f"an answer that is not HTTP we can read ({reason})")
    bad_request = (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, ValueError)
    if isinstance(exc, bad_request) and not isinstance(exc, requests.exceptions.ConnectionError):
        return BadContent(url, f"cannot request this URL ({shown(str(exc))})")
    return ConnectFailed(url, reason)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """Yield `exc`, then what it wraps, outermost first.

    requests puts urllib3's error in `args`, urllib3 its cause in `.reason` or `__cause__`.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [*current.args, getattr(current, "reason", None), current.__cause__]
        todo.extend(e for e in inner if isinstance(e, BaseException))


def _reason(exc: BaseException) -> str:
    """Return the innermost message: requests nests urllib3's, which nests the socket's."""
    text = ""
    for cause in _causes(exc):
        message = cause.args[0] if cause.args and isinstance(cause.args[0], str) else str(cause)
        if message:
            text = message
    text = text or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
