"""Notifications from real `mirror run` daemons: SIGKILL mid-delivery, two daemons, a hung receiver."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import pytest

from mirror.archive import Archive
from mirror.db import open_engine
from tests.test_service import all_due_now, checks_of, wait_for, write_config
from tests.test_service import (
    daemons as daemons,
)  # the fixture: `mirror run` processes, killed after the test

pytestmark = pytest.mark.slow


def with_webhook(config, receiver, *, lease: str = "2s", timeout: str = "1s"):
    text = config.read_text().replace('timeout = "5s"', f'timeout = "{timeout}"')
    text = text.replace('tick = "200ms"', f'tick = "200ms"\nlease = "{lease}"')
    table = f'[[notify]]\nname = "hook"\nwebhook = "{receiver.url()}"\nsecret_env = "TEST_MIRROR_SECRET"\n\n'
    config.write_text(text.replace("[schedule]", table + "[schedule]", 1))
    return config


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("TEST_MIRROR_SECRET", "s3cret")


def seqs(posts) -> list[int]:
    return [p.json()["seq"] for p in posts]


def test_a_daemon_killed_mid_delivery_resends_only_the_unacknowledged_events(
    site,
    tmp_path,
    daemons,
    receiver,
    secret_env,
):
    urls = [site.url(f"/status/200?n={i}") for i in range(6)]
    config = with_webhook(write_config(tmp_path / "mirror.toml", urls), receiver)
    database_url = f"sqlite:///{tmp_path / 'mirror.db'}"
    engine = open_engine(database_url)
    try:
        store = Archive(engine)
        store.register_destinations(["hook"], datetime.now(UTC))  # configured before the first event
        all_due_now(store, config, {"TEST_MIRROR_SECRET": "s3cret"})
        receiver.hang_from = 2  # takes two events, then holds the third without answering
        first = daemons(config, database_url)
        receiver.wait_for_attempts(3)
        first.proc.send_signal(signal.SIGKILL)
        first.kill()
        receiver.recover()
        assert seqs(receiver.accepted) == [1, 2]
        second = daemons(config, database_url)
        wait_for(lambda: len(receiver.accepted) == 6, what="the other four events")
        time.sleep(1.0)  # a duplicate would arrive now
        assert seqs(receiver.accepted) == [1, 2, 3, 4, 5, 6]  # 3 resent (never acknowledged), 1 and 2 not
        assert seqs(receiver.attempts) == [1, 2, 3, 3, 4, 5, 6]
        assert second.stop() == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_two_daemons_on_postgresql_deliver_each_event_once(
    site,
    tmp_path,
    daemons,
    receiver,
    postgres_database,
    secret_env,
):
    postgres_database.reset()
    database_url = postgres_database.url
    urls = [site.url(f"/status/200?n={i}") for i in range(30)]
    config = with_webhook(write_config(tmp_path / "mirror.toml", urls), receiver)
    engine = open_engine(database_url)
    try:
        store = Archive(engine)
        store.register_destinations(["hook"], datetime.now(UTC))
        all_due_now(store, config, {"TEST_MIRROR_SECRET": "s3cret"})
        receiver.delay = 0.05  # deliveries overlap the other daemon's passes
        running = [daemons(config, database_url), daemons(config, database_url)]
        wait_for(lambda: len(receiver.accepted) >= 30, what="30 events delivered")
        time.sleep(1.5)  # a second delivery would arrive now
        assert seqs(receiver.attempts) == list(range(1, 31))
        ids = [p.headers["x-mirror-event-id"] for p in receiver.attempts]
        assert len(set(ids)) == 30
        sent = [len(d.named("notify.sent")) for d in running]
        assert sum(sent) == 30
        for d in running:
            assert d.stop() == 0
        print(f"notify.sent per daemon: {sent}")
    finally:
        engine.dispose()


def test_a_round_of_checks_completes_while_the_receiver_hangs(site, tmp_path, daemons, receiver, secret_env):
    urls = [site.url(f"/slow?seconds=0.4&n={i}") for i in range(40)]  # 8 workers: about 2 s for all
    config = with_webhook(write_config(tmp_path / "mirror.toml", urls), receiver, timeout="15s")
    database_url = f"sqlite:///{tmp_path / 'mirror.db'}"
    engine = open_engine(database_url)
    try:
        store = Archive(engine)
        store.register_destinations(["hook"], datetime.now(UTC))
        all_due_now(store, config, {"TEST_MIRROR_SECRET": "s3cret"})
        receiver.hang()
        daemon = daemons(config, database_url)
        receiver.wait_for_attempts(1)  # the first event's POST is held, unanswered, for up to 15 s
        started = time.monotonic()
        assert sum(checks_of(store).values()) < 30  # most of the round is still to come
        wait_for(lambda: sum(checks_of(store).values()) == 40, what="40 checks with the receiver hanging")
        elapsed = time.monotonic() - started
        assert daemon.named("notify.failed") == []  # the POST still hangs: the round went on beside it
        assert receiver.accepted == [] and len(receiver.attempts) == 1
        receiver.recover()  # the held POST is dropped unanswered: a failed delivery, retried later
        wait_for(lambda: daemon.named("notify.failed"), what="the dropped delivery")
        assert daemon.stop() == 0
        print(f"40 checks in {elapsed:.1f}s while the receiver held a POST")
    finally:
        engine.dispose()
