"""Sending one notification: to people through Apprise, to a system through our signed webhook.

`Sender.send(dest, message, document)` returns one `Answer` per URL of the destination
(a webhook has one). Apprise is asked one URL at a time, so each answer is its own; what
it answered is the last line it logged (its own timeouts bound it: 4 s to connect and to
read, by default). The webhook body is `notify_text.webhook_body(document)`, signed at
the time of sending. Secrets never leave this module but in the signature header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from mirror.config_notify import Destination, mask_destination
from mirror.domain import FetchLimits
from mirror.notify_text import (
    EVENT_ID_HEADER,
    EVENT_KIND_HEADER,
    SIGNATURE_HEADER,
    Message,
    event_id,
    signature,
    webhook_body,
)
from mirror.sessions import make_session
from mirror.webhook import ANSWER_CHARS, Answer, post


class Sender:
    """Sends notifications; holds the webhook session (one thread uses one `Sender`)."""

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self._session: Any = None

    def send(self, dest: Destination, message: Message, document: Mapping[str, Any]) -> list[Answer]:
        """Return what each of `dest`'s URLs answered to `message` (people) or `document` (webhook)."""
        if dest.webhook is not None:
            return [self.webhook(dest, document)]
        return [scrubbed(dest, apprise_notify(url, message)) for url in dest.to]

    def webhook(self, dest: Destination, document: Mapping[str, Any]) -> Answer:
        if self._session is None:
            self._session = make_session(self.limits)
        body = webhook_body(document)
        secret = dest.secret.reveal() if dest.secret is not None else b""
        headers = {
            SIGNATURE_HEADER: signature(secret, int(time.time()), body),
            EVENT_ID_HEADER: event_id(document),
            EVENT_KIND_HEADER: str(document.get("kind")),
        }
        return scrubbed(dest, post(dest.webhook or "", body, headers, self._session, self.limits))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def apprise_notify(url: str, message: Message) -> Answer:
    """Send `message` to one Apprise URL; return whether it was accepted and Apprise's last word."""
    import apprise  # only a process that tells people pays for its import (~0.2 s)

    sender = apprise.Apprise()
    if not sender.add(url):
        return Answer(False, None, f"not an Apprise URL Apprise supports: {mask_destination(url)}", "config")
    capture = apprise.LogCapture(level=logging.INFO, fmt="%(levelname)s %(message)s")  # type: ignore[no-untyped-call]
    library = logging.getLogger(apprise.LOGGER_NAME)
    propagate, library.propagate = library.propagate, False  # its words go in the answer, not the log
    try:
        with capture as captured:
            accepted = bool(sender.notify(body=message.body, title=message.title))
    finally:
        library.propagate = propagate
    lines = [line for line in captured.getvalue().splitlines() if line.strip()]
    failures = [line for line in lines if not line.startswith("INFO")]
    said = (failures or lines or ["(nothing)"])[-1].split(" ", 1)[-1]
    return Answer(accepted, None, said[:ANSWER_CHARS], None if accepted else "apprise")


def supported(url: str) -> bool:
    """Return whether Apprise knows how to send to `url` (its scheme and form)."""
    import apprise

    return apprise.Apprise.instantiate(url) is not None


def scrubbed(dest: Destination, answer: Answer) -> Answer:
    """Return `answer` with every URL of `dest` in its text masked (an error may quote one)."""
    text = answer.text
    for url in (*dest.to, *((dest.webhook,) if dest.webhook else ())):
        text = text.replace(url, mask_destination(url))
    if text == answer.text:
        return answer
    return Answer(answer.ok, answer.status, text, answer.error)
