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

import contextlib
import hashlib
import http.client
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
import urllib3.util
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager
from urllib3.response import HTTPResponse
from urllib3.util.retry import Retry

from mirror import contentcoding
from mirror.clock import utcnow
from mirror.deadline import Deadline
from mirror.deadline import current as current_deadline
from mirror.domain import KEPT_HEADERS, Conditional, FetchFailure, FetchLimits, FetchResult
from mirror.errors import (
    BadContent,
    ConnectFailed,
    DnsFailed,
    FetchError,
    Timeout,
    TooLarge,
    TooManyRedirects,
)
from mirror.urls import BadURL, mask_userinfo, normalize_url

CHUNK_SIZE = 64 * 1024
ERROR_HEAD_BYTES = 64 * 1024  # of an error page, decoded, kept to read what a refusal says (`error_head`)
DRAIN_BYTES = 64 * 1024  # a redirect's or an error page's body read to keep its connection; longer: closed
MAX_RETRY_WAIT = 60.0  # seconds: a Retry-After of a day must not park a worker
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_MESSAGE = 1000  # characters of a failure's message: it goes into logs and the checks table
# Characters of a kept header value: a hostile server's 64 KB values would bloat every snapshot.
MAX_KEPT_HEADER = 2048
_DIGITS = re.compile(r"[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Raised while reading a body. Before the body, requests wraps a reset in ConnectionError instead.
_BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.DecodeError,
)


class Sessions:
    """One session per thread (a `requests.Session` is not thread-safe), all closed at once. Thread-safe."""

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        """Return the calling thread's session, made on its first use."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = make_session(self.limits)
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        """Close every thread's session."""
        with self._lock:
            for session in self._all:
                session.close()
            self._all.clear()


def make_session(limits: FetchLimits) -> requests.Session:
    """Return a session for one worker thread: our User-Agent, no retries or redirects below us."""
    session = _Session()
    session.headers["User-Agent"] = limits.user_agent
    session.headers["Accept-Encoding"] = contentcoding.accept_encoding()  # what we decode, strictly
    session.max_redirects = limits.max_redirects
    # With trust_env, requests reads the proxy variables again on every request (~3.5% of a
    # check's time): only when a proxy is set (no_proxy needs trust_env too). Otherwise the one
    # other setting it would take from the environment, a CA bundle, is read here once.
    bundle = None
    if not _proxy_set():
        session.trust_env = False
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    # Retries and redirects are fetch()'s job: it records the chain and keeps the deadline.
    adapter = _Adapter(bundle, max_retries=Retry(total=0, read=False, redirect=False, raise_on_status=False))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _Session(requests.Session):
    """requests' session, minus its reading of redirects: `_follow` reads them (and survives them).

    Even with `allow_redirects=False`, `Session.send` works out the next request of every
    redirect (`Response.next`), decoding the Location as UTF-8 and parsing it: a Location
    in Latin-1 or with a broken IPv6 literal raised out of `session.get` as a crash.
    """

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


class _Adapter(HTTPAdapter):
    """requests' adapter, told once whether the CA bundle is a file or a folder.

    With `verify` a path, requests stats it on every request to tell which
    (`_urllib3_request_context`): a system call that lets go of the GIL, and each time a
    worker must wait for it to come back while the other workers run Python.
    """

    def __init__(self, ca_bundle: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ca_bundle = ca_bundle
        self._ca_key = "ca_cert_dir" if ca_bundle and os.path.isdir(ca_bundle) else "ca_certs"

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> Any:
        if self._ca_bundle is None or verify != self._ca_bundle:
            return super().build_connection_pool_key_attributes(request, verify, cert)
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, cert)
        if self._ca_key == "ca_cert_dir":
            pool_kwargs["ca_cert_dir"] = verify
        else:
            pool_kwargs["ca_certs"] = verify
        return host_params, pool_kwargs

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _watch_pools(manager)
        return manager


class _WatchedHTTPPool(HTTPConnectionPool):
    """A pool that puts each connection it hands out under the running fetch's deadline."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watched(super()._get_conn(timeout))


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watched(super()._get_conn(timeout))


def _watched(conn: Any) -> Any:
    deadline = current_deadline()
    if deadline is not None:
        deadline.watch(conn)
    return conn


_STOCK_POOLS = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


def _watch_pools(manager: PoolManager) -> None:
    """Make `manager` build watched pools; a SOCKS proxy's own pools are left as they are."""
    if manager.pool_classes_by_scheme == _STOCK_POOLS:
        manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def _proxy_set() -> bool:
    """Return True when a proxy variable (http_proxy, HTTPS_PROXY, all_proxy, ...) is set."""
    return any(scheme != "no" for scheme in urllib.request.getproxies_environment())


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
    trail = _Trail(url)
    body: bytes | None = None
    sha256: str | None = None
    failure: FetchFailure | None = None
    deadline = Deadline(limits.timeout)
    try:
        with deadline.watching():
            body, sha256, failure = _follow(trail, session, limits, conditional, deadline, sleep)
    except FetchError as exc:
        failure = FetchFailure(exc.kind, str(exc))
    elapsed = deadline.elapsed()
    if failure is not None:
        # Messages quote what servers and libraries said: a Location's password, a proxy's,
        # control characters (PostgreSQL cannot store a NUL; a log line must stay one line).
        message = _printable(mask_userinfo(failure.message))
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


@dataclass
class _Trail:
    """What the fetch has learned so far; read at the edge when an error stops it."""

    url: str  # the URL asked last
    redirects: list[str] = field(default_factory=list)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error_head: bytes | None = None  # the start of the last error answer's body


def _expired(url: str) -> Timeout:
    return Timeout(url, "no complete answer within the deadline")


def _check(deadline: Deadline, url: str) -> float:
    """Return the seconds left.

    Raises:
        Timeout: none are left, or the watchdog has cut the connection.
    """
    left = deadline.remaining()
    if left <= 0 or deadline.fired:
        raise _expired(url)
    return left


def _follow(
    trail: _Trail,
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
    validators = _conditional_headers(conditional)
    validated_url = conditional.url or trail.url
    seen = {_normalized(trail.url)}
    last_location: str | None = None
    answer: tuple[bytes | None, str | None, FetchFailure | None] | None
    while True:
        headers = validators if trail.url == validated_url else {}
        resp = _send(trail.url, session, limits, headers, deadline, sleep)
        try:
            _check(deadline, trail.url)  # headers cut short by the watchdog are no answer
            trail.status = resp.status_code
            trail.headers = _kept_headers(resp, last_location)
            location = resp.headers.get("location")
            if resp.status_code < 200:
                # http.client skips 100 Continue only: another 1xx would leave the real answer
                # unread on a connection the pool would hand to the next request.
                raise BadContent(
                    trail.url, f"{_status_line(resp)}: an interim answer where the answer was due"
                )
            if resp.status_code == 206:  # we never send Range: a part is no version of the document
                raise BadContent(trail.url, f"{_status_line(resp)} to a request for the whole document")
            if resp.status_code in REDIRECT_STATUSES and location:
                trail.url = _next_hop(trail, location, limits.max_redirects, seen)
                last_location = location
                answer = None
            elif resp.status_code == 304:
                _check_not_modified(resp, trail.url)
                answer = None, None, None
            elif not 200 <= resp.status_code < 300:
                trail.error_head = _read_head(resp, trail.url, deadline)
                answer = None, None, FetchFailure("http", _status_line(resp))
            else:
                answer = (*_read_body(resp, trail.url, limits.max_bytes, deadline), None)
        except BaseException:
            resp.close()
            raise
        _release(resp, trail.url, deadline)
        if answer is not None:
            return answer


def _check_not_modified(resp: requests.Response, url: str) -> None:
    """Accept a 304 only as the answer to a request that carried validators.

    Raises:
        BadContent: a 304 to an unconditional request: there is nothing it could mean.
    """
    sent = resp.request.headers
    if "If-None-Match" not in sent and "If-Modified-Since" not in sent:
        raise BadContent(url, "HTTP 304 Not Modified to a request that sent no validators")


def _release(resp: requests.Response, url: str, deadline: Deadline) -> None:
    """Give the response's connection back to the pool once its body is read to the end; else close it.

    `Response.close` closes the socket of a body that was not read through `iter_content`,
    so every check would pay a new TCP (and TLS) handshake, and the server an accept. A
    body read to its end, a 304, or a short redirect or error page drained here (at most
    DRAIN_BYTES, within the deadline) leaves a connection the next request can use.
    """
    raw = resp.raw
    try:
        drained = 0
        for chunk in _chunks(raw, url, deadline):
            drained += len(chunk)
            if drained > DRAIN_BYTES:
                raise TooLarge(url, "a body too long to drain")
    except FetchError:
        resp.close()
    else:
        raw.release_conn()


def _next_hop(trail: _Trail, location: str, max_redirects: int, seen: set[str]) -> str:
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
        raise BadContent(trail.url, f"redirect to a bad URL: {_shown(location)} ({exc})") from None
    if scheme not in ("http", "https"):
        raise BadContent(trail.url, f"redirect to a non-http(s) URL: {_shown(location)}")
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


def _send(
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
        left = _check(deadline, url)
        try:
            # `total` caps connect + wait for the headers together. requests' adapter takes a
            # urllib3 Timeout as it is (adapters.py `isinstance(timeout, TimeoutSauce)`); its stubs
            # only list floats and tuples.
            timeout: Any = urllib3.util.Timeout(
                connect=min(limits.connect_timeout, left), read=left, total=left
            )
            with _map_requests_errors(url, deadline):
                resp = session.get(url, headers=headers, allow_redirects=False, stream=True, timeout=timeout)
        except ConnectFailed as exc:
            if not _transient(exc) or not _wait_to_retry(attempt, limits, None, deadline, sleep):
                raise
        else:
            if resp.status_code not in TRANSIENT_STATUSES:
                return resp
            retry_after = _retry_after(resp.headers.get("retry-after"))
            if not _wait_to_retry(attempt, limits, retry_after, deadline, sleep, before=resp.close):
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


def _retry_after(value: str | None) -> float | None:
    """Return the seconds a Retry-After header asks for (delta or HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if _DIGITS.fullmatch(text):  # not str.isdigit: "²" is a digit to it, and float() refuses it
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _read_body(resp: requests.Response, url: str, max_bytes: int, deadline: Deadline) -> tuple[bytes, str]:
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
        raise BadContent(url, f"Transfer-Encoding {_shown(transfer)}: a coding we cannot decode")
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
        for chunk in _chunks(resp.raw, url, deadline):
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


def _read_head(resp: requests.Response, url: str, deadline: Deadline) -> bytes | None:
    """Return the first ERROR_HEAD_BYTES of an error answer's decoded body; None when it cannot be read.

    What is left unread is drained or the connection closed by `_release`.
    """
    parts: list[bytes] = []
    size = 0
    try:
        decoder = contentcoding.decoder(resp.headers.get("content-encoding", ""))
        for chunk in _chunks(resp.raw, url, deadline):
            for piece in decoder.feed(chunk):
                parts.append(piece)
                size += len(piece)
                if size >= ERROR_HEAD_BYTES:
                    return b"".join(parts)[:ERROR_HEAD_BYTES]
        decoder.finish()
    except (FetchError, contentcoding.EncodingError):
        return None
    return b"".join(parts)


def _chunks(raw: HTTPResponse, url: str, deadline: Deadline) -> Iterator[bytes]:
    """Yield the body's bytes as sent (not decoded), at most CHUNK_SIZE at a time, until it ends.

    Not `iter_content`: it blocks until a whole chunk has arrived, so a dripping
    server would hold us for as long as it likes. `read1` returns after one socket
    read, and each read may wait only for the time left.

    Raises:
        Timeout, BadContent: see `_read_body`.
    """
    while True:
        left = _check(deadline, url)
        conn = raw.connection
        if conn is not None and conn.sock is not None:
            conn.sock.settimeout(left)
        with _map_requests_errors(url, deadline):
            chunk = raw.read1(CHUNK_SIZE, decode_content=False)
        if not chunk:
            _check(deadline, url)  # an end cut by the watchdog is no end of the body
            return
        yield chunk


@contextmanager
def _map_requests_errors(url: str, deadline: Deadline) -> Iterator[None]:
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
            raise _expired(url) from exc
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
        return BadContent(url, f"cannot request this URL ({_shown(str(exc))})")
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


def _conditional_headers(conditional: Conditional) -> dict[str, str]:
    headers = {}
    if conditional.etag:
        headers["If-None-Match"] = conditional.etag
    if conditional.last_modified:
        headers["If-Modified-Since"] = conditional.last_modified
    return headers


def _kept_headers(resp: requests.Response, last_location: str | None) -> dict[str, str]:
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


def _status_line(resp: requests.Response) -> str:
    reason = resp.reason
    if not reason:
        try:
            reason = HTTPStatus(resp.status_code).phrase
        except ValueError:
            reason = ""
    return _printable(f"HTTP {resp.status_code} {reason}".rstrip())


def _printable(text: str) -> str:
    """Return `text` with each control character written as an escape (\\x00)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _shown(text: str, limit: int = 200) -> str:
    """Return a value a server sent, quoted and cut short, for a message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _normalized(url: str) -> str:
    try:
        return normalize_url(url)
    except BadURL:
        return url
