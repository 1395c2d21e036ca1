"""A real HTTP/1.1 archive site on loopback, with routes named for each fault (httpx's TestServer).

Fixtures:
- `archive_server` (session): the running `ArchiveServer`.
- `site`: the same server, `reset()` before the test.
- `refused_url`: an http URL on a loopback port nobody listens on.
- `raw_server`: starts a `RawServer`, a bare TCP server whose every byte a test writes
  (status lines, header values and pacing no HTTP library would produce).

Tests drive the site with `put`, `delete`, `gone`, `redirect`, `fail`, and read what
clients sent in `requests` / `hits()`. These routes are always there (a page put at
the same path wins):

    /status/<code>          that status, small body
    /slow?seconds=S         sleeps S seconds, then a page
    /drip?seconds=S         headers, then one byte every 0.2 s for S seconds
    /truncated              Content-Length 1000, 10 bytes, then the connection closes
    /gzip                   GZIP_PAGE, gzip-encoded
    /gzip-bomb              gzip that inflates to BOMB_SIZE bytes from a small stream
    /bad-gzip               Content-Encoding: gzip over garbage
    /loop                   redirects to itself
    /redirect-chain/<n>     n redirects, then a page
    /big?bytes=N            N bytes of text with Content-Length (add &chunked=1 for none)
    /windows-1252           WINDOWS_1252_PAGE, charset only in a <meta>
    /mac-roman              MAC_ROMAN_PAGE, Content-Type charset=macintosh
    /pdf                    PDF_BYTES, a tiny real PDF
    /retry-after            503 with Retry-After: 1 once (after each reset), then a page
    /hang-up                closes the connection without answering
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from requests.structures import CaseInsensitiveDict

GZIP_PAGE = b"<html><head><title>Compressed</title></head><body><p>Sent gzip-encoded.</p></body></html>"
BOMB_SIZE = 64 * 1024 * 1024
WINDOWS_1252_TEXT = "Straße, Grüße: 5 € – „Zitat“ — « café à l’été »"
WINDOWS_1252_PAGE = (
    '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
    f"<title>Archiv</title></head><body><p>{WINDOWS_1252_TEXT}</p></body></html>"
).encode("cp1252")
MAC_ROMAN_TEXT = "Café crème — “naïve” résumé • Übersicht"
MAC_ROMAN_PAGE = f"<html><body><p>{MAC_ROMAN_TEXT}</p></body></html>".encode("mac_roman")
DRIP_INTERVAL = 0.2
_BAD_GZIP = b"\x1f\x8b\x08\x00" + b"this is not deflate data at all" * 4  # a gzip header, then garbage
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def _tiny_pdf() -> bytes:
    """Return a minimal valid PDF (one page, one line of text) with a correct xref table."""
    stream = b"BT /F1 18 Tf 72 720 Td (Note from the chair) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


PDF_BYTES = _tiny_pdf()


@cache
def gzip_bomb() -> bytes:
    """Return a gzip stream (about 64 KB) that inflates to BOMB_SIZE zero bytes; built once, in pieces."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(BOMB_SIZE // len(block))]
    return b"".join([*parts, packer.flush()])


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # with the query string
    headers: CaseInsensitiveDict[str]  # `headers["if-none-match"]` and `headers.get("If-None-Match")` alike
    client_port: int = 0  # the client's end of the TCP connection: one port per connection


@dataclass
class _Page:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    fail_status: int = 0  # when set: answer this status `fail_left` more times (None: always)
    fail_left: int | None = None


class ArchiveServer:
    """A mutable archive site on 127.0.0.1, served by a ThreadingHTTPServer in a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[str, _Page] = {}
        self._last_modified: dict[str, float] = {}
        self._retry_after_served = False
        self.requests: list[RecordedRequest] = []
        self.pause = 0.0  # seconds each answer waits before it is sent: overlapping requests show
        self.in_flight = 0  # requests received and not yet answered
        self.most_in_flight = 0  # the most at once since the last reset
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.site = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def put(
        self,
        path: str,
        body: bytes | str,
        content_type: str = "text/html; charset=utf-8",
        headers: dict[str, str] | None = None,
        *,
        etag: bool = True,
    ) -> None:
        """Serve `body` at `path` (200, strong ETag, Last-Modified now; 304 to matching validators).

        `etag=False` leaves the ETag out: only If-Modified-Since then decides a 304.
        """
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            # Last-Modified has one-second resolution: a change within the same second must still
            # look newer, or If-Modified-Since would hide it.
            previous = self._last_modified.get(path)
            stamp = float(int(time.time()))
            old = self._pages.get(path)
            if previous is not None and stamp <= previous and (old is None or old.body != data):
                stamp = previous + 1
            self._last_modified[path] = stamp
            fixed = (
                ("Content-Type", content_type),
                *((("ETag", etag_of(data)),) if etag else ()),
                ("Last-Modified", formatdate(stamp, usegmt=True)),
            )
            extra = tuple((headers or {}).items())
            self._pages[path] = _Page(200, data, fixed + extra)

    def delete(self, path: str) -> None:
        with self._lock:
            self._pages.pop(path, None)

    def gone(self, path: str) -> None:
        with self._lock:
            self._pages[path] = _Page(
                410, b"<html><body>Gone</body></html>", (("Content-Type", "text/html"),)
            )

    def redirect(self, path: str, to_url_or_path: str, status: int = 301) -> None:
        with self._lock:
            self._pages[path] = _Page(status, b"", (("Location", to_url_or_path),))

    def answer(
        self, path: str, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        """Answer `status` with `body` and `headers` at `path` (a `Server` given replaces ours)."""
        with self._lock:
            self._pages[path] = _Page(status, body, tuple((headers or {}).items()))

    def fail(self, path: str, status: int = 500, times: int | None = None) -> None:
        """Answer `status` at `path` `times` times (None: always), then serve its page again."""
        with self._lock:
            page = self._pages.get(path) or _Page(404)
            self._pages[path] = _Page(page.status, page.body, page.headers, status, times)

    def reset(self) -> None:
        with self._lock:
            self._pages.clear()
            self._last_modified.clear()
            self._retry_after_served = False
            self.requests.clear()
            self.pause = 0.0
            self.in_flight = self.most_in_flight = 0

    def hits(self, path: str) -> int:
        """Return how many requests asked for `path` (exactly, or any query of it when it has none)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r.path == path or ("?" not in path and r.path.split("?")[0] == path)
            )

    def connections(self) -> int:
        """Return how many TCP connections the recorded requests came over."""
        with self._lock:
            return len({r.client_port for r in self.requests})

    # -- used by the handler ---------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _page(self, target: str) -> _Page | None:
        """Return the page put at `target` (or its path without query), counting down a failure."""
        with self._lock:
            page = self._pages.get(target) or self._pages.get(urlsplit(target).path)
            if page is None or not page.fail_status:
                return page
            if page.fail_left is None or page.fail_left > 0:
                if page.fail_left is not None:
                    page.fail_left -= 1
                return _Page(page.fail_status, b"<html><body>Server error</body></html>")
            return page

    def _take_retry_after(self) -> bool:
        with self._lock:
            first, self._retry_after_served = not self._retry_after_served, True
            return first


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    site: ArchiveServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (timeouts, size caps) is what half the tests do.
        if isinstance(sys.exc_info()[1], _CLIENT_GONE):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # an idle keep-alive connection frees its thread eventually

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silence the access log: pytest shows stderr of failing tests

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        site = self.server.site
        site._record(
            RecordedRequest(
                self.command, self.path, CaseInsensitiveDict(self.headers.items()), self.client_address[1]
            )
        )
        # Counted before the answer is sent: the client holds its request open all that time.
        with site._lock:
            site.in_flight += 1
            site.most_in_flight = max(site.most_in_flight, site.in_flight)
        try:
            if site.pause:
                time.sleep(site.pause)
        finally:
            with site._lock:
                site.in_flight -= 1
        self._answer_now(head)

    def _answer_now(self, head: bool) -> None:
        site = self.server.site
        try:
            page = site._page(self.path)
            if page is not None:
                self._serve_page(page, head)
            else:
                self._fault_route(head)
        except _CLIENT_GONE:
            self.close_connection = True

    def _send(self, status: int, body: bytes = b"", headers: Any = (), head: bool = False) -> None:
        if any(name.lower() == "server" for name, _ in headers):  # a CDN's Server, not ours beside it
            self.log_request(status)
            self.send_response_only(status)
            self.send_header("Date", self.date_time_string())
        else:
            self.send_response(status)
        names = set()
        for name, value in headers:
            self.send_header(name, value)
            names.add(name.lower())
        if "content-type" not in names and body:
            self.send_header("Content-Type", "text/html; charset=utf-8")
        if status not in (204, 304) and "content-length" not in names:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and status not in (204, 304):
            self.wfile.write(body)

    def _serve_page(self, page: _Page, head: bool) -> None:
        if page.status == 200 and self._not_modified(page):
            validators = [(k, v) for k, v in page.headers if k.lower() in ("etag", "last-modified")]
            self._send(304, b"", validators)
            return
        self._send(page.status, page.body, page.headers, head)

    def _not_modified(self, page: _Page) -> bool:
        headers = dict((k.lower(), v) for k, v in page.headers)
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:  # RFC 9110 13.1.3: when present, If-Modified-Since is ignored
            wanted = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
            return "*" in wanted or headers.get("etag", "").removeprefix("W/") in wanted
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since and "last-modified" in headers:
            try:
                since = parsedate_to_datetime(if_modified_since)
            except (TypeError, ValueError):
                return False
            return parsedate_to_datetime(headers["last-modified"]) <= since
        return False

    def _fault_route(self, head: bool) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        html = b"<html><body><p>%s</p></body></html>"
        if path.startswith("/status/") and path[8:].isdigit():
            code = int(path[8:])
            try:
                phrase = HTTPStatus(code).phrase.encode()
            except ValueError:
                phrase = b"status"
            self._send(code, html % phrase, (), head)
        elif path == "/slow":
            time.sleep(float(query.get("seconds", "2")))
            self._send(200, html % b"Slow but here.", (), head)
        elif path == "/drip":
            self._drip(float(query.get("seconds", "5")))
        elif path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"<html><bod")
            self.close_connection = True
        elif path == "/gzip":
            self._send(200, gzip.compress(GZIP_PAGE), [("Content-Encoding", "gzip")], head)
        elif path == "/gzip-bomb":
            self._send(200, gzip_bomb(), [("Content-Encoding", "gzip"), ("Content-Type", "text/html")], head)
        elif path == "/bad-gzip":
            self._send(200, _BAD_GZIP, [("Content-Encoding", "gzip")], head)
        elif path == "/loop":
            self._send(302, b"", [("Location", "/loop")], head)
        elif path.startswith("/redirect-chain/") and path[16:].isdigit():
            left = int(path[16:])
            if left > 0:
                self._send(302, b"", [("Location", f"/redirect-chain/{left - 1}")], head)
            else:
                self._send(200, html % b"End of the chain.", (), head)
        elif path == "/big":
            self._big(int(query.get("bytes", "1000000")), chunked=query.get("chunked") == "1", head=head)
        elif path == "/windows-1252":
            self._send(200, WINDOWS_1252_PAGE, [("Content-Type", "text/html")], head)
        elif path == "/mac-roman":
            self._send(200, MAC_ROMAN_PAGE, [("Content-Type", "text/html; charset=macintosh")], head)
        elif path == "/pdf":
            headers = [("Content-Type", "application/pdf"), ("ETag", etag_of(PDF_BYTES))]
            self._send(200, PDF_BYTES, headers, head)
        elif path == "/retry-after":
            if self.server.site._take_retry_after():
                self._send(503, html % b"Busy, come back.", [("Retry-After", "1")], head)
            else:
                self._send(200, html % b"Back after a pause.", (), head)
        elif path == "/hang-up":
            self.close_connection = True
        else:
            self._send(404, html % b"Not Found", (), head)

    def _drip(self, seconds: float) -> None:
        # No Content-Length: the body ends when the connection closes.
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.wfile.write(b".")
            self.wfile.flush()
            time.sleep(DRIP_INTERVAL)

    def _big(self, size: int, chunked: bool, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        if head:
            return
        line = b"All work and no play makes an archive a dull mirror.\n"
        block = (line * (64 * 1024 // len(line) + 1))[: 64 * 1024]
        left = size
        while left > 0:
            piece = block[: min(left, len(block))]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            left -= len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


class RawServer:
    """A loopback TCP server answering each connection with `script(sock)`, after reading the request head.

    The script writes whatever bytes it likes, as slowly as it likes; a client that hangs up ends
    it. `requests` holds each request head as received (bytes), in order.
    """

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self._script = script
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str = "/etext/page.html") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(10)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    data = sock.recv(65536)
                    if not data:
                        return
                    head += data
                self.requests.append(head)
                self._script(sock)
            except (OSError, *_CLIENT_GONE):
                return


def response(
    status_line: bytes = b"HTTP/1.1 200 OK", headers: Any = (), body: bytes = b"", length: bool = True
) -> bytes:
    """Return the bytes of an HTTP/1.1 response; Content-Length is added unless `length` is False."""
    lines = [status_line, *(name + b": " + value for name, value in headers)]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def unused_port() -> int:
    """Return a loopback port that was free a moment ago and has nothing listening (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def archive_server() -> Iterator[ArchiveServer]:
    server = ArchiveServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def site(archive_server: ArchiveServer) -> ArchiveServer:
    archive_server.reset()
    return archive_server


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    """Yield a function that starts a `RawServer` running a script; every one is closed after the test."""
    started: list[RawServer] = []

    def start(script: Callable[[socket.socket], None]) -> RawServer:
        server = RawServer(script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def refused_url() -> str:
    return f"http://127.0.0.1:{unused_port()}/etext/missing.html"
