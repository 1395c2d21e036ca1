"""A loopback receiver of notifications: webhook POSTs and Apprise's `json://` posts.

`receiver` (per test) records every POST it gets (`attempts`) and those it answered 2xx
(`accepted`). Tests script its answers: `answer = 500` (a status for every POST),
`script = [200, 200, 500]` (one status per POST in turn, then `answer`), `hang()` (hold
every POST without answering until `recover()`), `hang_from = N` (answer N POSTs, then
hang), `delay` (seconds before each answer).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int | None  # what the receiver answered; None: it hung up without answering

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self) -> None:
        self.attempts: list[Post] = []
        self.answer = 200
        self.script: list[int] = []
        self.delay = 0.0
        self.hang_from: int | None = None
        self._lock = threading.Lock()
        self._free = threading.Event()
        self._free.set()
        self.arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    if receiver.hang_from is not None and len(receiver.attempts) >= receiver.hang_from:
                        receiver._free.clear()
                        receiver.hang_from = None
                    hung = not receiver._free.is_set()
                    status = receiver.script.pop(0) if receiver.script else receiver.answer
                if hung:
                    receiver._record(Post(self.path, headers, body, None))
                    receiver._free.wait(30)
                    self.close_connection = True
                    return
                if receiver.delay:
                    time.sleep(receiver.delay)
                receiver._record(Post(self.path, headers, body, status))
                reply = b'{"received": true}' if status < 300 else b"receiver is down"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _record(self, post: Post) -> None:
        with self.arrived:
            self.attempts.append(post)
            self.arrived.notify_all()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def accepted(self) -> list[Post]:
        with self._lock:
            return [p for p in self.attempts if p.status is not None and 200 <= p.status < 300]

    def hang(self) -> None:
        self._free.clear()

    def recover(self) -> None:
        self.answer = 200
        self._free.set()

    def wait_for_attempts(self, count: int, timeout: float = 20.0) -> list[Post]:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.attempts) >= count, timeout):
                raise AssertionError(f"{len(self.attempts)} POSTs after {timeout}s, waited for {count}")
            return list(self.attempts)

    def close(self) -> None:
        self._free.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()
