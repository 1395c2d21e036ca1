"""One signed POST to a webhook, under the same deadline, User-Agent and error mapping as a fetch.

`post(url, body, headers, session, limits)` sends the exact bytes given and returns an
`Answer`: the status and the head of what the receiver said, or the error kind a fetch
would report (`timeout`, `connect`, `dns`, `bad_content`, ...). It never raises for what
the receiver does. One `fetch.timeout` deadline spans connect to the answer's last byte
(the watchdog of `mirror.deadline` cuts a receiver that hangs or drips); no redirect is
followed (a 3xx is a failed delivery: the signed body must not go elsewhere) and no retry
happens here: the outbox retries with its back-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
import urllib3.util

from mirror.deadline import Deadline
from mirror.domain import FetchLimits
from mirror.errors import FetchError
from mirror.transfer import map_requests_errors, read_head, release, time_left
from mirror.urls import mask_userinfo

ANSWER_CHARS = 200  # of the receiver's answer, kept for `notify status` and `notify test`


@dataclass(frozen=True, slots=True)
class Answer:
    """What a destination answered: `ok` for a 2xx (or Apprise's success)."""

    ok: bool
    status: int | None = None
    text: str = ""  # the head of the answer's body, or the error message
    error: str | None = None  # the failure kind, as a fetch names it

    def summary(self) -> str:
        """Return the answer in one line: `200 OK: {"received":true}` or `timeout: ...`."""
        if self.status is not None:
            return f"{self.status}{': ' + self.text if self.text else ''}"
        return f"{self.error}: {self.text}" if self.error else self.text


def post(
    url: str, body: bytes, headers: dict[str, str], session: requests.Session, limits: FetchLimits
) -> Answer:
    """POST `body` to `url` with `headers`; return what the receiver answered, or how it failed."""
    deadline = Deadline(limits.timeout)
    shown = mask_userinfo(url)
    with deadline.watching():
        try:
            left = time_left(deadline, shown)
            timeout: Any = urllib3.util.Timeout(
                connect=min(limits.connect_timeout, left), read=left, total=left
            )
            with map_requests_errors(shown, deadline):
                resp = session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json", **headers},
                    allow_redirects=False,
                    stream=True,
                    timeout=timeout,
                )
            head = read_head(resp, shown, deadline) or b""
            release(resp, shown, deadline)
        except FetchError as exc:
            return Answer(False, None, exc.problem, exc.kind)
    text = " ".join(head.decode("utf-8", "replace").split())[:ANSWER_CHARS]
    ok = 200 <= resp.status_code < 300
    return Answer(ok, resp.status_code, text, None if ok else "http")
