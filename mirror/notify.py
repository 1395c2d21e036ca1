"""Notifications: the outbox that follows the event log and delivers to each `[[notify]]` destination.

Delivery is at least once, in chain order, per destination:

- Each destination has a durable cursor in the store (`mirror.outbox`): the last event
  `seq` it acknowledged. A new destination starts at the chain's head (`register`).
- `Notifier.deliver(dest)` leases the cursor (so one process at a time delivers to a
  destination, however many daemons share a PostgreSQL store), reads the events after
  it (`Reader.events_after`), and sends each one its filters select. The cursor moves
  past an event only after the destination's 2xx (Apprise: its success), in its own
  transaction, so a crash resends only what was not acknowledged. Events the filters
  pass over move it too.
- A failure (an error, a timeout, a non-2xx) stops the pass for that destination and
  backs it off: 5 s, 10 s, 20 s, ... at most 1 h (`notify_text.backoff`), kept in the
  store; the next try resends from the cursor.
- A digest destination is sent one message per period listing every selected event.
- `integrity.head` is synthetic, not a chain event (an event about the head would move
  the head): once a day a destination that selects it gets the head's seq and hash.
- `integrity.damaged` follows the recorded `mirror verify` runs (`verify_runs`, not the
  chain: damage may be in the chain itself) with a second cursor, `verify_run`: each
  run that found damage is told once it is acknowledged, before the pass's events.

The daemon runs `Notifier.run` on a thread of its own with its own HTTP session: a slow
or dead receiver holds that thread only, never a check. `mirror check` leaves delivery to
the daemon (or to `mirror notify send`): a round never waits on a receiver.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import structlog

from mirror.archive import Archive
from mirror.clock import utcnow
from mirror.config import Config
from mirror.config_notify import Destination
from mirror.domain import FetchLimits, StoredEvent, Version
from mirror.errors import ConfigError, MirrorError
from mirror.events import (
    DOCUMENT_CHANGED,
    INTEGRITY_DAMAGED,
    INTEGRITY_HEAD,
    NOTIFY_CRASHED,
    NOTIFY_FAILED,
    NOTIFY_SENT,
)
from mirror.log import hide
from mirror.notify_send import Sender, supported
from mirror.notify_text import (
    Head,
    Message,
    backoff,
    damaged_document,
    damaged_message,
    digest_document,
    digest_due,
    digest_message,
    event_document,
    head_document,
    head_due,
    head_message,
    message,
    selects,
)
from mirror.outbox import Cursor
from mirror.reader import Reader
from mirror.webhook import Answer

logger = structlog.get_logger("mirror.notify")

BATCH = 200  # events read per query
DIGEST_MAX = 1000  # events listed in one digest message; more go in the next one at once
PASS_EVERY = 1.0  # seconds between two delivery passes of the daemon


def hide_secrets(destinations: Sequence[Destination]) -> None:
    """Keep every destination's secret and URLs out of every log line, whoever writes it (Apprise too)."""
    for dest in destinations:
        secret = dest.secret.reveal().decode("utf-8", "replace") if dest.secret is not None else ""
        hide(secret, *dest.to, *((dest.webhook,) if dest.webhook else ()))


def check_destinations(config: Config) -> None:
    """Refuse what a process that delivers cannot deliver with, naming its key: a secret or
    `to_env` missing from this process's environment, or unsafe; an Apprise URL Apprise cannot send to.

    Raises:
        ConfigError: `notify[N].secret_env` (`secret_file`, `to_env`) is unresolved, or
            `notify[N].to[M]` (or `to_env`) is not a URL Apprise supports.
    """
    for dest in config.notify:
        if dest.unresolved is not None:
            raise dest.unresolved
    for index, dest in enumerate(config.notify):
        for i, url in enumerate(dest.to):
            if not supported(url):
                key = f"notify[{index}].to[{i}]"  # (the URLs of `to_env` come after those of `to`)
                problem = f"not an Apprise URL Apprise supports, got {dest.shown()[i]!r}"
                raise ConfigError(config.path, key, problem)


class Notifier:
    """Delivers the event log to destinations, from one process: `deliver_all`, or `run` on a thread."""

    def __init__(
        self,
        archive: Archive,
        destinations: Sequence[Destination],
        limits: FetchLimits,
        owner: str,
        lease: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.archive = archive
        self.destinations = tuple(destinations)
        hide_secrets(self.destinations)
        self.owner = owner
        self.lease = max(lease, timedelta(seconds=2 * limits.timeout))  # a webhook send fits in its lease
        self.clock = clock
        self.sender = Sender(limits)
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0  # failed attempts in a row of the destination being delivered to

    # -- the daemon's worker -------------------------------------------------------------------
    def start(self) -> None:
        """Register the destinations and start delivering on a thread of its own (once)."""
        self.archive.register_destinations([d.name for d in self.destinations], self.clock())
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run, name="notify", daemon=True)
        self._thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.deliver_all()
            except Exception as exc:  # a store error, a bug: logged, and the next pass tries again
                logger.error(NOTIFY_CRASHED, error=f"{type(exc).__name__}: {exc}")
            self.stop.wait(PASS_EVERY)

    def close(self, wait: float = 5.0) -> None:
        """Stop after the send under way (its lease expires if it outlasts `wait`)."""
        self.stop.set()
        if self._thread is not None:
            self._thread.join(wait)
        self.sender.close()

    # -- one pass ------------------------------------------------------------------------------
    def deliver_all(self) -> dict[str, int]:
        """Deliver what each destination has not had; return how many messages each was sent."""
        return {dest.name: self.deliver(dest) for dest in self.destinations if not self.stop.is_set()}

    def deliver(self, dest: Destination) -> int:
        """Deliver `dest`'s backlog while it answers 2xx; return the messages sent.

        Sends nothing when another process holds the destination or it backs off.

        Raises:
            StoreError: the database failed.
        """
        cursor = self.archive.claim_destination(dest.name, self.owner, self.clock(), self.lease)
        if cursor is None:
            return 0
        self._failures = cursor.failures
        try:
            sent = 0
            if INTEGRITY_DAMAGED in dest.events:
                told = self._damage(dest, cursor)
                if told is None:
                    return 0
                sent += told
            if INTEGRITY_HEAD in dest.events and head_due(cursor.head_sent_at, self.clock()):
                if not self._head(dest, cursor):
                    return 0
                sent += 1
            if dest.digest is not None:
                return sent + self._digest(dest, cursor)
            return sent + self._each(dest, cursor)
        finally:
            self.archive.release_destination(dest.name, self.owner)

    def _each(self, dest: Destination, cursor: Cursor) -> int:
        sent, seq = 0, cursor.seq
        while not self.stop.is_set():
            events = self.archive.events_after(seq, limit=BATCH)
            if not events:
                return sent
            passed = seq
            for event in events:
                if self.stop.is_set():  # shutting down: what is not acknowledged waits for the next process
                    return sent
                if not selects(dest, event):
                    passed = event.seq
                    continue
                if passed > seq and not self._advance(dest, passed, sent=False):
                    return sent
                document = event_document(event)
                if not self._send(dest, cursor, self._message(dest, event), document, event.seq):
                    return sent
                sent += 1
                seq = passed = event.seq
            if passed > seq and not self._advance(dest, passed, sent=False):
                return sent
            seq = passed
        return sent

    def _digest(self, dest: Destination, cursor: Cursor) -> int:
        now = self.clock()
        if not digest_due(dest, cursor.digest_from, now):
            return 0
        since = cursor.digest_from or cursor.created_at
        chosen: list[StoredEvent] = []
        seq = cursor.seq
        while len(chosen) < DIGEST_MAX:
            events = self.archive.events_after(seq, limit=BATCH)
            if not events:
                break
            for event in events:
                if selects(dest, event):
                    chosen.append(event)
                seq = event.seq
                if len(chosen) >= DIGEST_MAX:
                    break
        if chosen:
            text = digest_message(chosen, since, now)
            if not self._send(dest, cursor, text, digest_document(chosen, since, now), seq):
                return 0
        elif seq > cursor.seq and not self._advance(dest, seq, sent=False):
            return 0
        if len(chosen) < DIGEST_MAX:  # all of the period was told: the next one starts now
            self.archive.mark_destination(dest.name, self.owner, digest_from=now)
        return 1 if chosen else 0

    def _damage(self, dest: Destination, cursor: Cursor) -> int | None:
        """Tell of each recorded `mirror verify` run since the last told that found damage; an
        intact run is passed over. Return the messages sent, or None when a send failed."""
        sent, last = 0, cursor.verify_run
        for run in self.archive.verify_runs_after(last):
            if not run.ok:
                answers = self.sender.send(dest, damaged_message(run), damaged_document(run))
                if not self._answered(dest, cursor, answers, INTEGRITY_DAMAGED, cursor.seq):
                    return None
                sent += 1
            last = run.id
            if not self.archive.mark_destination(dest.name, self.owner, verify_run=last):
                return None
        return sent

    def _head(self, dest: Destination, cursor: Cursor) -> bool:
        seq, digest = self.archive.chain_head()
        now = self.clock()
        head = Head(seq, digest, now)
        answers = self.sender.send(dest, head_message(head), head_document(head))
        if not self._answered(dest, cursor, answers, INTEGRITY_HEAD, seq):
            return False
        return self.archive.mark_destination(dest.name, self.owner, head_sent_at=now)

    def _send(
        self, dest: Destination, cursor: Cursor, text: Message, document: dict[str, object], seq: int
    ) -> bool:
        """Send one message; on success move the cursor to `seq`. Return whether to go on."""
        answers = self.sender.send(dest, text, document)
        if not self._answered(dest, cursor, answers, str(document.get("kind")), seq):
            return False
        return self._advance(dest, seq, sent=True)

    def _answered(
        self, dest: Destination, cursor: Cursor, answers: list[Answer], kind: str, seq: int
    ) -> bool:
        now = self.clock()
        failed = [a for a in answers if not a.ok]
        if not failed:
            self._failures = 0
            logger.info(NOTIFY_SENT, destination=dest.name, kind=kind, seq=seq, answer=answers[-1].summary())
            return True
        failures = self._failures = self._failures + 1
        wait = backoff(failures)
        problem = "; ".join(a.summary() for a in failed)
        self.archive.destination_failed(dest.name, self.owner, problem, now, now + wait)
        logger.warning(
            NOTIFY_FAILED,
            destination=dest.name,
            kind=kind,
            seq=seq,
            error=problem,
            failures=failures,
            retry_in=wait.total_seconds(),
        )
        return False

    def _advance(self, dest: Destination, seq: int, *, sent: bool) -> bool:
        return self.archive.advance_destination(
            dest.name, self.owner, seq, self.clock(), self.lease, sent=sent
        )

    def _message(self, dest: Destination, event: StoredEvent) -> Message:
        if dest.webhook is not None:
            return Message("", "")  # a webhook gets the event's JSON, never the text
        return message(event, previous_version(self.archive, event))


def deliver_now(config: Config, archive: Archive) -> dict[str, int]:
    """Deliver every destination's backlog once, from this process (`mirror notify send`).

    A destination another process is delivering to, or that is backing off, is left alone.

    Raises:
        ConfigError: an Apprise URL Apprise does not support.
        StoreError: the database failed.
    """
    from mirror.claims import lease_owner

    check_destinations(config)
    notifier = Notifier(archive, config.notify, config.fetch.limits(), lease_owner(), config.schedule.lease)
    try:
        archive.register_destinations([d.name for d in config.notify], notifier.clock())
        return notifier.deliver_all()
    finally:
        notifier.close()


def previous_version(reader: Reader, event: StoredEvent) -> Version | None:
    """Return the version a `document.changed` replaced (for its time), or None."""
    if event.kind != DOCUMENT_CHANGED or not event.old_sha256:
        return None
    try:
        return reader.version(event.url, event.old_sha256)
    except MirrorError:
        return None
