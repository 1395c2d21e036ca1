"""Notifications delivered from the event log: a real store, a real loopback receiver, real Apprise."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest

from mirror.archive import Archive
from mirror.config import load_config
from mirror.config_notify import Destination, Secret
from mirror.domain import FetchLimits
from mirror.events import DOCUMENT_CHANGED, DOCUMENT_DISAPPEARED, DOCUMENT_EVENTS, DOCUMENT_NEW
from mirror.notify import Notifier
from mirror.notify_commands import status
from tests.fixtures_store import HOUR, T0, save_failure, save_version, watch
from tests.test_cli import Mirror, write_config
from tests.test_docs import assert_documented, documented_json

SECRET = b"s3cret-for-tests"
README = (Path(__file__).parent.parent / "README.md").read_text()
LIMITS = FetchLimits(
    timeout=1.0, connect_timeout=1.0, max_bytes=1 << 20, max_redirects=0, retries=0, user_agent="mirror/test"
)


def readme_verify():
    """Return the receiver's `verify` function, exactly as the README shows it."""
    section = README.split("\n## Notifications\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 -- the README's own snippet, run as a receiver would
    return scope["verify"]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self):
        return self.now


def hook(receiver, **kw) -> Destination:
    return Destination("hook", webhook=receiver.url(), secret=Secret(SECRET), **kw)


def notifier(archive: Archive, dest: Destination, clock=None, owner: str = "me") -> Notifier:
    n = Notifier(archive, [dest], LIMITS, owner, timedelta(minutes=5), clock=clock or Clock())
    archive.register_destinations([dest.name], n.clock())
    return n


def four_events(archive: Archive) -> list:
    """A page is new, changes twice, and disappears: seq 1 to 4."""
    url = "https://example.org/a.html"
    watch(archive, url)
    events = save_version(archive, url, b"<p>one</p>", T0)
    events += save_version(archive, url, b"<p>two</p>", T0 + HOUR, diff="-one\n+two")
    events += save_version(archive, url, b"<p>three</p>", T0 + 2 * HOUR, diff="-two\n+three")
    events += save_failure(archive, url, T0 + 3 * HOUR, status=404)
    assert [e.kind for e in events] == [
        DOCUMENT_NEW,
        DOCUMENT_CHANGED,
        DOCUMENT_CHANGED,
        DOCUMENT_DISAPPEARED,
    ]
    return events


def test_a_webhook_gets_exactly_one_signed_post_per_chosen_event(archive, receiver):
    n = notifier(archive, hook(receiver, events=frozenset({DOCUMENT_CHANGED, DOCUMENT_DISAPPEARED})))
    events = four_events(archive)
    assert n.deliver_all() == {"hook": 3}
    assert n.deliver_all() == {"hook": 0}  # acknowledged: never sent again
    verify = readme_verify()
    posts = receiver.attempts
    assert [p.json()["seq"] for p in posts] == [e.seq for e in events[1:]]
    for post, event in zip(posts, events[1:], strict=True):
        assert verify(SECRET, post.body, post.headers["x-mirror-signature"])
        assert not verify(b"another secret", post.body, post.headers["x-mirror-signature"])
        assert not verify(SECRET, post.body + b" ", post.headers["x-mirror-signature"])
        body = post.json()
        assert (body["kind"], body["url"], body["hash"]) == (event.kind, event.url, event.hash)
        assert (body["old_sha256"], body["new_sha256"]) == (event.old_sha256, event.new_sha256)
        assert post.headers["x-mirror-event-id"] == f"{event.seq}-{event.hash[:16]}"
        assert post.headers["x-mirror-event"] == event.kind
        assert post.headers["user-agent"] == "mirror/test"  # as the fetches say who we are
    assert posts[0].json()["diff"] == "-one\n+two"
    (row,) = status(archive, [n.destinations[0]])
    assert (row.cursor, row.last_delivered_seq, row.backlog, row.failures) == (4, 4, 0, 0)
    n.close()


def test_the_readmes_webhook_example_is_signed_as_the_readme_says():
    section = README.split("\n## Notifications\n", 1)[1]
    example = re.search(r"```\nPOST /hook HTTP/1.1\n(.*?)```", section, re.DOTALL)[1]
    head, body = example.split("\n\n", 1)
    header = re.search(r"X-Mirror-Signature: (\S+)", head)[1]
    verify = readme_verify()
    assert verify(b"demo-secret-please-change", body.rstrip("\n").encode(), header, tolerance=10**10)
    assert f"Content-Length: {len(body.rstrip(chr(10)).encode())}" in head


def test_an_old_signature_is_refused_by_the_readme_receiver():
    from mirror.notify_text import signature

    verify = readme_verify()
    body = b'{"seq":1}'
    assert verify(SECRET, body, signature(SECRET, int(time.time()), body))
    assert not verify(SECRET, body, signature(SECRET, int(time.time()) - 3600, body))


def test_a_receiver_answering_500_gets_the_rest_after_it_recovers_in_order_none_twice(archive, receiver):
    clock = Clock()
    n = notifier(archive, hook(receiver), clock)
    events = four_events(archive)
    receiver.script = [200, 500]  # the first is taken, the second refused: the receiver goes down
    receiver.answer = 500
    assert n.deliver_all() == {"hook": 1}
    (row,) = status(archive, n.destinations)
    assert (row.cursor, row.failures, row.backlog) == (1, 1, 3)
    assert row.last_error == "http: receiver is down" or row.last_error.startswith("500")
    assert row.retry_at == T0 + timedelta(seconds=5)
    clock.now = T0 + timedelta(seconds=4)
    assert n.deliver_all() == {"hook": 0}  # backing off: not even tried
    assert len(receiver.attempts) == 2
    clock.now = T0 + timedelta(seconds=5)
    assert n.deliver_all() == {"hook": 0}
    (row,) = status(archive, n.destinations)
    assert (row.failures, row.retry_at) == (2, clock.now + timedelta(seconds=10))  # doubled
    receiver.recover()
    clock.now += timedelta(seconds=10)
    assert n.deliver_all() == {"hook": 3}
    accepted = [p.json()["seq"] for p in receiver.accepted]
    assert accepted == [e.seq for e in events]  # in order, each once after its 2xx
    (row,) = status(archive, n.destinations)
    assert (row.cursor, row.failures, row.backlog) == (4, 0, 0)


def test_a_hanging_receiver_times_out_and_gets_the_events_once_it_answers(archive, receiver):
    clock = Clock()
    n = notifier(archive, hook(receiver), clock)
    events = four_events(archive)
    receiver.hang()
    started = time.monotonic()
    assert n.deliver_all() == {"hook": 0}
    assert time.monotonic() - started < LIMITS.timeout + 1.5  # the deadline cut it
    (row,) = status(archive, n.destinations)
    assert row.last_error.startswith("timeout") and row.failures == 1
    receiver.recover()
    clock.now += timedelta(minutes=1)
    assert n.deliver_all() == {"hook": 4}
    assert [p.json()["seq"] for p in receiver.accepted] == [e.seq for e in events]


def test_two_notifiers_on_one_store_deliver_each_event_once(archive, receiver):
    dest = hook(receiver)
    clock = Clock()
    one = notifier(archive, dest, clock, owner="one")
    two = notifier(archive, dest, clock, owner="two")
    events = four_events(archive)
    held = archive.claim_destination("hook", "one", clock.now, timedelta(minutes=5))
    assert held is not None
    assert two.deliver_all() == {"hook": 0}  # "one" holds the cursor
    archive.release_destination("hook", "one")
    assert two.deliver_all() == {"hook": 4}
    assert one.deliver_all() == {"hook": 0}
    assert [p.json()["seq"] for p in receiver.attempts] == [e.seq for e in events]


def test_a_new_destination_starts_at_the_head_of_the_log(archive, receiver):
    four_events(archive)
    n = notifier(archive, hook(receiver))
    assert n.deliver_all() == {"hook": 0}
    save_version(archive, "https://example.org/a.html", b"<p>four</p>", T0 + 4 * HOUR)
    assert n.deliver_all() == {"hook": 1}
    assert receiver.attempts[0].json()["seq"] == 5


def test_apprise_json_to_a_loopback_server_brings_a_person_the_message(archive, receiver):
    dest = Destination(
        "people", to=(f"json://127.0.0.1:{receiver.port}/apprise",), events=frozenset(DOCUMENT_EVENTS)
    )
    n = notifier(archive, dest)
    events = four_events(archive)
    assert n.deliver_all() == {"people": 4}
    changed = receiver.attempts[2].json()
    event = events[2]
    assert changed["title"] == f"Changed: {event.url}"
    text = changed["message"]
    assert f"Old: v2 sha256 {event.old_sha256}, first seen 2025-03-01 13:00:00 UTC" in text
    assert f"New: v3 sha256 {event.new_sha256}, 12 bytes, first seen 2025-03-01 14:00:00 UTC" in text
    assert "-two\n+three" in text
    assert f"mirror diff {event.url} --from 2 --to 3" in text
    assert f"Event #3, chain hash {event.hash}" in text
    print(f"\n--- title: {changed['title']}\n{text}")


def test_a_digest_lists_every_event_of_its_period_in_one_message(archive, receiver):
    clock = Clock()
    dest = Destination(
        "daily", to=(f"json://127.0.0.1:{receiver.port}/d",), events=frozenset(DOCUMENT_EVENTS), digest=HOUR
    )
    n = notifier(archive, dest, clock)
    events = four_events(archive)
    assert n.deliver_all() == {"daily": 0}  # the period is not over
    clock.now = T0 + HOUR
    assert n.deliver_all() == {"daily": 1}
    (post,) = receiver.attempts
    lines = [line for line in post.json()["message"].splitlines() if line.startswith("#")]
    assert [line.split()[0] for line in lines] == [f"#{e.seq}" for e in events]
    clock.now = T0 + 2 * HOUR
    assert n.deliver_all() == {"daily": 0}  # nothing new: no empty digest


def test_integrity_head_is_published_once_a_day(archive, receiver):
    clock = Clock()
    n = notifier(archive, hook(receiver, events=frozenset({"integrity.head"})), clock)
    four_events(archive)
    assert n.deliver_all() == {"hook": 1}
    (post,) = receiver.attempts
    head = archive.chain_head()
    assert post.json() == {"kind": "integrity.head", "seq": head[0], "hash": head[1], "at": T0.isoformat()}
    assert post.headers["x-mirror-event-id"] == f"head-{head[0]}-2025-03-01"
    clock.now = T0 + timedelta(hours=23)
    assert n.deliver_all() == {"hook": 0}
    clock.now = T0 + timedelta(days=1)
    assert n.deliver_all() == {"hook": 1}
    (row,) = status(archive, n.destinations)
    assert row.cursor == 4  # the document events it does not select were passed over


def verified(archive: Archive, at) -> None:
    """Run a real verify of the store and record it, as `mirror verify` does."""
    from mirror.domain import VerifyRun

    report = archive.verify()
    archive.record_verify(
        VerifyRun(at, report.ok, len(report.problems), report.head_seq, report.head_hash), at
    )


def test_a_verify_run_that_found_damage_is_told_once_and_intact_runs_are_not(archive, receiver):
    from sqlalchemy import text

    from tests.fixtures_store import engine_of

    four_events(archive)
    pick = text("SELECT sha256, data FROM blobs ORDER BY sha256 LIMIT 1")
    with engine_of(archive).begin() as conn:  # damage one blob, as an intruder with the file would
        key, whole = conn.execute(pick).one()
        conn.execute(text("UPDATE blobs SET data = :d WHERE sha256 = :k"), {"d": b"x", "k": key})  # as read
    verified(archive, T0)  # before the destination existed: not owed to it
    clock = Clock()
    n = notifier(archive, hook(receiver, events=frozenset({"integrity.damaged"})), clock)
    assert n.deliver_all() == {"hook": 0}

    verified(archive, T0 + HOUR)
    assert n.deliver_all() == {"hook": 1}
    (post,) = receiver.attempts
    body = post.json()
    assert (body["kind"], body["problems"], body["at"]) == ("integrity.damaged", 1, (T0 + HOUR).isoformat())
    assert post.headers["x-mirror-event-id"] == f"verify-{body['verify_run']}"
    assert n.deliver_all() == {"hook": 0}  # told once

    with engine_of(archive).begin() as conn:  # put back: the next run is intact, and not told
        conn.execute(text("UPDATE blobs SET data = :d WHERE sha256 = :k"), {"d": whole, "k": key})
    verified(archive, T0 + 2 * HOUR)
    assert n.deliver_all() == {"hook": 0}
    assert len(receiver.attempts) == 1


# -- the command line ------------------------------------------------------------------------------


def notify_config(tmp_path, site, receiver, extra: str = "") -> Path:
    tables = f"""
[[notify]]
name = "people"
to = ["json://127.0.0.1:{receiver.port}/people"]

[[notify]]
name = "system"
webhook = "{receiver.url("/system")}"
secret_env = "TEST_MIRROR_SECRET"
events = ["document.new", "document.changed"]
{extra}"""
    config = write_config(tmp_path / "mirror.toml", [site.url("/doc.html")])
    config.write_text(config.read_text().replace("[fetch]", tables.lstrip() + "\n[fetch]", 1))
    return config


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """The command-line tests run on SQLite only: the outbox's behaviour on both stores is tested above."""
    return f"sqlite:///{tmp_path / 'store' / 'mirror.db'}"


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("TEST_MIRROR_SECRET", SECRET.decode())


def test_notify_test_prints_what_each_destination_answered(site, receiver, tmp_path, sqlite_url, secret_env):
    m = Mirror(notify_config(tmp_path, site, receiver), sqlite_url, tmp_path)
    out = m("notify", "test").stdout.decode().splitlines()
    assert out == [
        f"people  json://127.0.0.1:{receiver.port}/…  ok  Sent JSON POST notification.",
        f'system  http://127.0.0.1:{receiver.port}/…  ok  200: {{"received": true}}',
    ]
    assert [p.path for p in receiver.attempts] == ["/people", "/system"]
    assert readme_verify()(
        SECRET, receiver.attempts[1].body, receiver.attempts[1].headers["x-mirror-signature"]
    )
    receiver.answer = 503
    failed = m("notify", "test", "system", "--json", check=False)
    assert failed.returncode == 3
    document = json.loads(failed.stdout)
    assert document["ok"] is False
    assert document["answers"][0]["status"] == 503 and document["answers"][0]["error"] == "http"
    unknown = m("notify", "test", "nobody", check=False)
    assert unknown.returncode == 2 and b"no [[notify]] destination 'nobody'" in unknown.stderr


def test_check_leaves_events_to_the_outbox_and_notify_send_delivers_them(
    site, receiver, tmp_path, sqlite_url, secret_env
):
    site.put("/doc.html", b"<p>first</p>")
    m = Mirror(notify_config(tmp_path, site, receiver), sqlite_url, tmp_path)
    m("check")
    assert receiver.attempts == []  # `check` never waits on a receiver
    before = m.json("notify", "status")
    assert [(d["name"], d["backlog"], d["last_delivered_seq"]) for d in before["destinations"]] == [
        ("people", 1, None),
        ("system", 1, None),
    ]
    site.put("/doc.html", b"<p>second</p>")
    m("check")
    sent = m.json("notify", "send")
    assert [(d["name"], d["backlog"], d["last_delivered_seq"]) for d in sent["destinations"]] == [
        ("people", 0, 2),
        ("system", 0, 2),
    ]
    assert (
        sorted((p.path, p.status) for p in receiver.attempts)
        == [("/people", 200)] * 2 + [("/system", 200)] * 2
    )
    assert m("notify", "status").stdout.decode().splitlines()[-1] == "chain head #2; 2 destinations"
    assert_documented(sent, documented_json("notify status"))
    receiver.answer = 500
    failed = json.loads(m("notify", "test", "--json", check=False).stdout)
    assert_documented(failed, documented_json("notify test"))


def test_secrets_stay_out_of_logs_status_and_json(site, receiver, tmp_path, sqlite_url, secret_env):
    site.put("/doc.html", b"<p>first</p>")
    config = notify_config(tmp_path, site, receiver)
    config.write_text(
        config.read_text().replace(
            f"json://127.0.0.1:{receiver.port}/people",
            f"json://user:hunter2@127.0.0.1:{receiver.port}/people/tok3n",
        )
    )
    m = Mirror(config, sqlite_url, tmp_path)
    m("check")
    receiver.answer = 500
    runs = [
        m("notify", "send", "--json", check=False),
        m("notify", "status"),
        m("notify", "test", check=False),
    ]
    assert runs[0].returncode == 3
    for run in runs:
        for secret in (b"hunter2", b"tok3n", SECRET):
            assert secret not in run.stdout and secret not in run.stderr
    assert b"json://127.0.0.1:" in runs[1].stdout


@pytest.mark.parametrize(
    ("table", "env", "key", "problem"),
    [
        (
            'name = "a"\nwebhook = "https://h.example/x"',
            {},
            "notify[0]",
            "neither secret_env nor secret_file",
        ),
        (
            'name = "a"\nwebhook = "https://h.example/x"\nsecret_env = "NOPE"',
            {},
            "notify[0].secret_env",
            "$NOPE is not set",
        ),
        (
            'name = "a"\nto = ["ntfy://h/t"]\nwebhook = "https://h.example/x"',
            {},
            "notify[0]",
            "both to and webhook",
        ),
        (
            'name = "a"\nto = ["ntfy://h/t"]\nevents = ["document.chnged"]',
            {},
            "notify[0].events[0]",
            "not an event of the log: 'document.chnged'",
        ),
        (
            'name = "a"\nto = ["ntfy://h/t"]\nmin_significance = 2',
            {},
            "notify[0].min_significance",
            "must be at most 1",
        ),
        (
            'name = "a"\nto = ["ntfy://h/t"]\ndigest = "soon"',
            {},
            "notify[0].digest",
            "expected a duration like '30s', got 'soon'",
        ),
        ('name = "a"\nto = ["not a url"]', {}, "notify[0].to[0]", "expected an Apprise URL"),
        (
            'name = "a"\nto = ["ntfy://h/t"]\nsecret_env = "S"',
            {"S": "x"},
            "notify[0].secret_env",
            "signs webhooks only",
        ),
        ('name = "a b"\nto = ["ntfy://h/t"]', {}, "notify[0].name", "expected letters"),
        ('name = "a"\nto_env = "URLS"', {}, "notify[0].to_env", "$URLS is not set"),
        (
            'name = "a"\nwebhook = "ftp://h/x"\nsecret_env = "S"',
            {"S": "x"},
            "notify[0].webhook",
            "expected an http(s) URL",
        ),
        ('name = "a"\nto = ["ntfy://h/t"]\ntimeout = "1s"', {}, "notify[0].timeout", "unknown key"),
    ],
)
def test_a_bad_notify_table_is_one_line_naming_file_and_key(tmp_path, table, env, key, problem):
    from mirror.errors import ConfigError
    from mirror.notify import check_destinations

    config = tmp_path / "mirror.toml"
    config.write_text(f"[[notify]]\n{table}\n")
    with pytest.raises(ConfigError) as caught:  # a missing secret: when a process must deliver
        check_destinations(load_config(config, env))
    assert (caught.value.file, caught.value.key) == (str(config), key)
    assert problem in caught.value.problem and "\n" not in str(caught.value)


def test_a_secret_file_others_may_read_is_refused_and_one_only_the_service_reads_is_used(tmp_path):
    from mirror.errors import ConfigError
    from mirror.notify import check_destinations

    (tmp_path / "secret").write_text("from-a-file\n")
    config = tmp_path / "mirror.toml"
    config.write_text('[[notify]]\nname = "a"\nwebhook = "https://h.example/x"\nsecret_file = "secret"\n')
    os.chmod(tmp_path / "secret", 0o644)
    with pytest.raises(
        ConfigError, match=r"notify\[0\].secret_file: secret can be read by others \(mode 0644\)"
    ):
        check_destinations(load_config(config, {}))
    os.chmod(tmp_path / "secret", 0o600)
    (dest,) = load_config(config, {}).notify
    assert dest.secret.reveal() == b"from-a-file"
    assert "from-a-file" not in repr(dest) and "from-a-file" not in str(dest.secret)


def test_two_destinations_with_one_name_and_an_unknown_apprise_scheme_are_refused(tmp_path):
    from mirror.errors import ConfigError
    from mirror.notify import check_destinations

    config = tmp_path / "mirror.toml"
    config.write_text(
        '[[notify]]\nname = "a"\nto = ["ntfy://h/t"]\n[[notify]]\nname = "a"\nto = ["ntfy://h/u"]\n'
    )
    with pytest.raises(ConfigError, match=r"notify\[1\].name: 'a' is the name of another destination"):
        load_config(config, {})
    config.write_text('[[notify]]\nname = "a"\nto = ["ntfy://h/t", "nosuch://h/t"]\n')
    with pytest.raises(
        ConfigError, match=r"notify\[0\].to\[1\]: not an Apprise URL Apprise supports, got 'nosuch://h/…'"
    ):
        check_destinations(load_config(config, {}))


def test_commands_that_do_not_deliver_run_without_the_services_secrets(
    tmp_path, site, receiver, sqlite_url, monkeypatch
):
    """A maintainer's shell has no $MIRROR_WEBHOOK_SECRET: check, status and history work; notify send
    says why it cannot."""
    monkeypatch.delenv("TEST_MIRROR_SECRET", raising=False)
    m = Mirror(notify_config(tmp_path, site, receiver), sqlite_url, tmp_path)
    assert m("check").returncode == 0
    assert m("status").returncode == 0
    assert m("history", site.url("/doc.html")).returncode == 0
    refused = m("notify", "send", check=False)
    assert refused.returncode == 2
    assert (
        refused.stderr.decode()
        .strip()
        .endswith("notify[1].secret_env: $TEST_MIRROR_SECRET is not set or empty")
    )


@pytest.mark.parametrize(
    ("events", "imported", "head"),
    [
        ('["*"]', False, False),
        ('["*", "document.imported"]', True, False),
        ('["integrity.head"]', False, True),
    ],
)
def test_star_selects_every_document_event_but_imports_which_like_the_head_must_be_named(
    tmp_path, events, imported, head
):
    from mirror.events import DOCUMENT_IMPORTED, DOCUMENT_REPAIRED, INTEGRITY_HEAD

    config = tmp_path / "mirror.toml"
    config.write_text(f'[[notify]]\nname = "a"\nto = ["ntfy://h/t"]\nevents = {events}\n')
    (dest,) = load_config(config, {}).notify
    assert (DOCUMENT_IMPORTED in dest.events, INTEGRITY_HEAD in dest.events) == (imported, head)
    assert (DOCUMENT_REPAIRED in dest.events) == (events != '["integrity.head"]')
    assert set(DOCUMENT_EVENTS) - {DOCUMENT_IMPORTED} <= dest.events or head
