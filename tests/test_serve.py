"""`mirror serve` as a real process on loopback: headless Chromium reads its pages, Memento clients
its TimeMaps and TimeGates, and a daemon writes to the same SQLite store meanwhile.

The browser is Debian's chromium, driven by Selenium through Debian's chromedriver (never a
downloaded build): `tests/install_browser.sh` installs both when missing (as root, with apt-get).
Where no browser can be installed the browser tests skip, saying why; under CI=true they fail.
Screenshots are kept in tests/artifacts/ (git ignores it).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from email.utils import format_datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from requests.utils import parse_header_links

from mirror.archive import Archive
from mirror.memento import timestamp14
from tests.fixtures_http import unused_port
from tests.fixtures_store import HOUR, T0, save_version, sha, watch
from tests.test_service import Daemon, wait_for, write_config

ARTIFACTS = Path(__file__).parent / "artifacts"
DOC = "http://archive.example/etext/note.html"
EVIL = "http://archive.example/etext/evil.html"
QUERY = "http://archive.example/cgi/show?id=7&lang=en%20GB"  # its own query and escapes, in our paths
V1 = b"<html><head><title>Note</title></head><body><p>first line</p><p>kept line</p></body></html>"
V2 = b"<html><body><p>second line</p><p>kept line</p></body></html>"
V3 = b"<html><body><p>third line</p><p>kept line</p><p>a new paragraph</p></body></html>"
EVIL_PAGE = b"""<html><head><meta http-equiv="refresh" content="1; url=/?refreshed=1">
<title>Archived</title></head>
<body><p>An archived page with a script.</p>
<script>document.cookie = "stolen=1; path=/"; localStorage.setItem("stolen", "1");
document.title = "RAN";</script>
</body></html>"""
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,800",
)


class Server:
    """A `mirror serve` subprocess on a free loopback port."""

    def __init__(self, config: Path, database_url: str, log: Path) -> None:
        self.port = unused_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log.open("wb")
        env = {**os.environ, "MIRROR_DATABASE_URL": database_url}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mirror",
                "--config",
                str(config),
                "serve",
                "--bind",
                f"127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=env,
        )
        wait_for(self._answers, 20, f"mirror serve on port {self.port}")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mirror serve exited {self.proc.returncode}")
        try:
            return self.get("/")[0] == 200
        except OSError:
            return False

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        """GET without following redirects."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers)
            answer = conn.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            conn.close()

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        finally:
            self.log.close()


def write_serve_config(path: Path) -> Path:
    path.write_text("targets = []\n")
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Server, str, Path]]:
    folder = tmp_path_factory.mktemp("serve")
    database_url = f"sqlite:///{folder}/mirror.db"
    archive = Archive.open(database_url)
    watch(archive, DOC, EVIL, QUERY)
    save_version(archive, QUERY, V1, T0)
    save_version(archive, QUERY, V2, T0 + 2 * HOUR, details={"significance": 0.3})
    save_version(archive, DOC, V1, T0)
    save_version(archive, DOC, V2, T0 + HOUR, details={"significance": 0.5})
    save_version(archive, DOC, V3, T0 + 3 * HOUR, details={"significance": 0.6})
    save_version(archive, EVIL, EVIL_PAGE, T0)
    archive.close()
    config = write_serve_config(folder / "mirror.toml")
    server = Server(config, database_url, folder / "serve.log")
    yield server, database_url, config
    assert server.stop() == 0  # SIGTERM: a clean stop


def mirror_json(config: Path, database_url: str, *args: str):
    env = {**os.environ, "MIRROR_DATABASE_URL": database_url}
    proc = subprocess.run(
        [sys.executable, "-m", "mirror", "--config", str(config), *args, "--json"],
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_the_timemap_lists_exactly_the_versions_of_history_json(served):
    server, database_url, config = served
    status, headers, body = server.get(f"/timemap/link/{DOC}")
    assert status == 200 and headers["Content-Type"] == "application/link-format"
    # requests' parser (what `Response.links` uses) reads it: ours is not asked to read ourselves.
    links = parse_header_links(body.decode().replace("\n", ""))
    mementos = [link for link in links if "memento" in link["rel"].split()]
    history = mirror_json(config, database_url, "history", DOC)
    expected = [
        format_datetime(datetime.fromisoformat(v["first_seen"]), usegmt=True) for v in history["versions"]
    ]
    assert [m["datetime"] for m in mementos] == expected
    assert len(mementos) == len(history["versions"]) == 3
    assert mementos[0]["rel"] == "first memento" and mementos[-1]["rel"] == "last memento"
    for link, version in zip(mementos, history["versions"], strict=True):
        status, headers, content = server.get(link["url"].removeprefix(server.base))
        assert status == 200 and sha(content) == version["sha256"]
        assert headers["Memento-Datetime"] == link["datetime"]


@pytest.mark.slow
def test_a_url_with_its_own_query_is_a_memento_url_as_sent(served):
    server = served[0]
    status, _, body = server.get(f"/timemap/link/{QUERY}")
    assert status == 200
    links = parse_header_links(body.decode().replace("\n", ""))
    assert links[0] == {"url": QUERY, "rel": "original"}
    mementos = [link["url"].removeprefix(server.base) for link in links if "memento" in link["rel"]]
    assert mementos == [f"/{timestamp14(T0)}/{QUERY}", f"/{timestamp14(T0 + 2 * HOUR)}/{QUERY}"]
    assert server.get(mementos[1])[2] == V2
    status, headers, _ = server.get(
        f"/timegate/{QUERY}", **{"Accept-Datetime": "Sat, 01 Mar 2025 12:30:00 GMT"}
    )
    assert (status, headers["Location"]) == (302, server.base + mementos[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("accept", "hours"),
    [
        ("Fri, 28 Feb 2025 12:00:00 GMT", 0),  # before the first
        ("Sat, 01 Mar 2025 13:50:00 GMT", 1),  # between the 2nd (13:00) and 3rd (15:00), nearer the 2nd
        ("Sat, 01 Mar 2025 14:10:00 GMT", 3),  # nearer the 3rd
        ("Sun, 01 Mar 2026 00:00:00 GMT", 3),  # after the last
    ],
)
def test_the_timegate_picks_the_closest_version(served, accept, hours):
    server = served[0]
    status, headers, _ = server.get(f"/timegate/{DOC}", **{"Accept-Datetime": accept})
    assert status == 302 and headers["Vary"] == "accept-datetime"
    assert headers["Location"] == f"{server.base}/{timestamp14(T0 + hours * HOUR)}/{DOC}"


@pytest.mark.slow
def test_the_timegate_refuses_a_malformed_date_and_an_unknown_url(served):
    server = served[0]
    assert server.get(f"/timegate/{DOC}", **{"Accept-Datetime": "2025-03-01"})[0] == 400
    assert server.get("/timegate/http://nowhere.example/")[0] == 404


def test_serve_refuses_a_non_loopback_address_without_public(tmp_path):
    config = write_serve_config(tmp_path / "mirror.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "mirror", "--config", str(config), "serve", "--bind", "0.0.0.0:8070"],
        capture_output=True,
        timeout=30,
        env={**os.environ, "MIRROR_DATABASE_URL": f"sqlite:///{tmp_path}/none.db"},
    )
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == (
        "mirror: error: --bind 0.0.0.0:8070: not a loopback address; the page has no authentication, "
        "so binding it elsewhere needs --public"
    )


# -- in a browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    installer = Path(__file__).parent / "install_browser.sh"
    done = subprocess.run(["bash", str(installer)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        reason = f"no browser for the web page tests: {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chrome')}")
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def texts(driver, selector: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def click_through(driver, element) -> None:
    """Click a link or button that loads another page; return once the page it was on is gone.

    A form's submission can return before the next page replaces this one: an element found
    at once may belong to the old page, and then goes stale under the test.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.wait import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 30).until(staleness_of(page))


@pytest.mark.slow
def test_a_browser_reads_the_index_a_document_and_a_diff(served, chrome):
    from selenium.webdriver.common.by import By

    server = served[0]
    chrome.get(server.base + "/")
    assert texts(chrome, "#targets tr.target td.url a") == [QUERY, EVIL, DOC]
    assert texts(chrome, "#targets tr.target td.versions") == ["2", "1", "3"]
    assert texts(chrome, "#targets tr.target td:last-child") == ["0.3", "-", "0.6"]  # of the last change
    chrome.save_screenshot(str(ARTIFACTS / "serve-index.png"))

    click_through(chrome, chrome.find_element(By.LINK_TEXT, DOC))
    assert chrome.find_element(By.ID, "version-count").text == "3"
    assert texts(chrome, "#versions code.sha256") == [sha(V3), sha(V2), sha(V1)]
    chrome.save_screenshot(str(ARTIFACTS / "serve-document.png"))

    click_through(chrome, chrome.find_element(By.CSS_SELECTOR, "#v2 a.diff"))
    assert chrome.find_element(By.ID, "from-sha256").text == sha(V1)
    assert chrome.find_element(By.ID, "to-sha256").text == sha(V2)
    assert texts(chrome, "#diff tr.changed td.old") == ["first line"]
    assert texts(chrome, "#diff tr.changed td.new") == ["second line"]
    chrome.save_screenshot(str(ARTIFACTS / "serve-diff.png"))

    click_through(chrome, chrome.find_element(By.ID, "inline-link"))
    assert texts(chrome, "#diff tr.removed td.text") == ["-first line"]
    assert texts(chrome, "#diff tr.added td.text") == ["+second line"]

    # Any two versions, through the page's form (a plain GET: no script).
    to = chrome.find_element(By.CSS_SELECTOR, "#compare input[name=to]")
    to.clear()
    to.send_keys("3")
    click_through(chrome, chrome.find_element(By.CSS_SELECTOR, "#compare button[type=submit]"))
    assert chrome.find_element(By.ID, "to-sha256").text == sha(V3)
    added = [t for t in texts(chrome, "#diff tr.added td.text") if t != "+"]  # blank lines between paragraphs
    assert added == ["+third line", "+a new paragraph"]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.mark.slow
def test_an_archived_pages_script_and_refresh_run_none_of_it_in_our_origin(served, chrome, tmp_path):
    server = served[0]
    # The control: the same bytes from a plain server do run (title, cookie, storage), and this
    # browser would show it; so a page that shows none of it through ours was stopped by ours.
    # It is another site (`localhost`): cookies are shared between ports of one host.
    (tmp_path / "evil.html").write_bytes(EVIL_PAGE)
    plain = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(tmp_path)))
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        chrome.get(f"http://localhost:{plain.server_port}/evil.html")
        assert chrome.title == "RAN"
        assert chrome.execute_script("return localStorage.getItem('stolen')") == "1"
        assert "stolen=1" in chrome.execute_script("return document.cookie")
    finally:
        plain.shutdown()
        plain.server_close()

    stamp = timestamp14(T0)
    for path in (f"/view/{stamp}/{EVIL}", f"/{stamp}/{EVIL}"):
        chrome.get(server.base + path)
        time.sleep(1.8)  # the meta refresh asks for 1 s
        assert chrome.current_url == server.base + path  # no refresh, no navigation
        assert chrome.title != "RAN"
        if path.startswith("/view/"):
            chrome.save_screenshot(str(ARTIFACTS / "serve-version.png"))
        chrome.get(server.base + "/")
        assert chrome.execute_script("return document.cookie") == ""
        assert chrome.execute_script("return localStorage.length") == 0
        assert chrome.get_cookies() == []


# -- beside a daemon -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_page_answers_while_a_daemon_writes_to_the_same_sqlite_store(site, tmp_path):
    urls = [site.url(f"/busy/{i}.html") for i in range(30)]
    for i, url in enumerate(urls):
        site.put(url.removeprefix(site.url("")), f"<p>page {i} round 0</p>")
    database_url = f"sqlite:///{tmp_path}/mirror.db"
    config = write_config(tmp_path / "mirror.toml", urls, interval="1s")
    daemon = Daemon(config, database_url, tmp_path / "daemon.log")
    server: Server | None = None
    try:
        wait_for(
            lambda: (tmp_path / "mirror.db").exists() and daemon.named("service.started"), 30, "the daemon"
        )
        server = Server(config, database_url, tmp_path / "serve.log")

        def first_versions() -> bool:  # the pages asked for below among them: no 404 for a URL not yet seen
            new = daemon.named("document.new")
            return len(new) >= 10 and urls[0] in {e.get("url") for e in new}

        wait_for(first_versions, 30, "first versions")
        checks_before = len(daemon.named("check.done"))
        answers, slowest, rounds = [], 0.0, 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            rounds += 1
            for i, url in enumerate(urls[:5]):
                site.put(url.removeprefix(site.url("")), f"<p>page {i} round {rounds}</p>")
            for path in ("/", f"/doc?url={urls[0]}", f"/timemap/link/{urls[0]}", "/?state=changed"):
                started = time.monotonic()
                answers.append(server.get(path)[0])
                slowest = max(slowest, time.monotonic() - started)
        checks_during = len(daemon.named("check.done")) - checks_before
    finally:
        if server is not None:
            server.stop()
        daemon.stop()
    assert set(answers) == {200}, answers
    assert slowest < 2.0
    assert checks_during >= 30  # the daemon went on checking (and writing) all along
    assert len(daemon.named("document.changed")) >= 5
    assert daemon.named("store.retry") == [] and daemon.named("store.failed") == []


def test_a_held_read_of_the_read_only_store_never_makes_a_writer_wait(tmp_path):
    """What `mirror serve` does to the daemon: a read transaction held open does not delay a write."""
    from mirror.reader import Reader

    database_url = f"sqlite:///{tmp_path}/mirror.db"
    archive = Archive.open(database_url)
    watch(archive, DOC)
    save_version(archive, DOC, V1, T0)
    reader = Reader.open(database_url, read_only=True)
    inside, release = threading.Event(), threading.Event()

    def hold(conn):
        conn.exec_driver_sql("SELECT count(*) FROM snapshots").scalar()  # the read snapshot is taken
        inside.set()
        release.wait(10)
        return conn.exec_driver_sql("SELECT count(*) FROM snapshots").scalar()

    holder_result: list[int] = []
    holder = threading.Thread(target=lambda: holder_result.append(reader._read(hold)))
    holder.start()
    try:
        assert inside.wait(10)
        started = time.monotonic()
        save_version(archive, DOC, V2, T0 + HOUR)
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join(10)
        reader.close()
        archive.close()
    assert took < 1.0  # a writer waiting on the reader would wait for `release` (10 s)
    assert holder_result == [1]  # the reader saw its own snapshot throughout


def test_verify_records_its_run_and_the_footer_shows_it(tmp_path):
    from mirror.reader import Reader

    database_url = f"sqlite:///{tmp_path}/mirror.db"
    archive = Archive.open(database_url)
    watch(archive, DOC)
    save_version(archive, DOC, V1, T0)
    archive.close()
    config = write_serve_config(tmp_path / "mirror.toml")
    report = mirror_json(config, database_url, "verify")
    reader = Reader.open(database_url, read_only=True)
    try:
        run = reader.last_verify()
    finally:
        reader.close()
    assert run is not None and run.ok and run.problems == 0
    assert (run.head_seq, run.head_hash) == (report["head_seq"], report["head_hash"])
