"""WARC export and import end to end: a loopback site's history out through warcio, checked by
the reference tools (`warcio check`, `cdxj-indexer`), and real crawlers' files back in."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from mirror.errors import VersionNotFound
from mirror.reader import Reader
from mirror.warcsource import WarcFolder
from tests.test_cli import Mirror, write_config

DATA = Path(__file__).parent / "data" / "warc"
BIN = Path(sys.executable).parent
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def build_history(site, m: Mirror, pause: float = 0.0) -> dict[str, str]:
    """A page that changed twice and was re-checked unchanged, a redirect, a PDF, a disappearance.

    `pause` seconds between rounds: replay addresses captures to the second.
    """
    import time

    def check() -> None:
        time.sleep(pause)
        m("check")

    site.put("/w/page.html", "<html><body><p>first words</p></body></html>")
    site.put("/w/target.html", "<html><body><p>where old.html went</p></body></html>")
    site.redirect("/w/old.html", "/w/target.html")
    site.put("/w/report.pdf", PDF, "application/pdf")
    site.put("/w/gone.html", "<html><body><p>soon gone</p></body></html>")
    check()
    site.put("/w/page.html", "<html><body><p>second words</p></body></html>")
    site.gone("/w/gone.html")
    check()
    check()  # unchanged: 304s, re-checks that become revisit records
    site.put("/w/page.html", "<html><body><p>third words, and more</p></body></html>")
    check()
    check()
    return {name: site.url(f"/w/{name}") for name in ("page.html", "old.html", "report.pdf", "gone.html")}


def test_a_sites_history_exports_to_warc_that_reference_tools_accept_and_imports_back(
    site, database_url, tmp_path
):
    urls = [site.url(f"/w/{n}") for n in ("page.html", "old.html", "report.pdf", "gone.html")]
    m = Mirror(write_config(tmp_path / "mirror.toml", urls), database_url, tmp_path)
    build_history(site, m)
    out = tmp_path / "warcs"
    summary = m.json("export", "warc", "--to", str(out))
    versions = {u: versions_of(database_url, u) for u in urls}
    exported = m, out, summary, versions
    # One history built per backend (five rounds of checks), read by each tool in turn.
    warcio_check_passes_every_response_and_fails_a_flipped_byte(exported, tmp_path)
    every_version_is_a_response_identical_to_show_and_the_history_is_told(exported)
    cdxj_indexer_lists_one_line_per_capture_with_the_versions_hashes(exported)
    a_warc_folder_yields_the_wanted_payloads_once(exported)
    import_into_a_fresh_store_gives_equal_versions_times_and_hashes(exported, tmp_path)


def versions_of(database_url: str, url: str) -> list[dict]:
    """`history --json`'s versions, read in-process (a subprocess per read would cost a second each)."""
    from mirror import render
    from mirror.reader import Reader

    store = Reader.open(database_url, existing=True)
    try:
        return json.loads(render.to_json(render.history_json(store.history(url))))["versions"]
    finally:
        store.close()


def shown(database_url: str, url: str, number: int) -> bytes:
    """The bytes `mirror show URL --version N` prints (the same two reads, in-process)."""
    from mirror.reader import Reader

    store = Reader.open(database_url, existing=True)
    try:
        return store.read(store.version(url, str(number)).sha256)
    finally:
        store.close()


def run(*args: str | Path, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc


def records(path: Path) -> list[tuple[str, str, dict[str, str], bytes]]:
    with path.open("rb") as stream:
        return [
            (
                r.rec_type,
                r.rec_headers.get_header("WARC-Target-URI") or "",
                dict(r.rec_headers.headers),
                r.content_stream().read(),
            )
            for r in ArchiveIterator(stream)
        ]


def warcio_check_passes_every_response_and_fails_a_flipped_byte(exported, tmp_path):
    _m, out, summary, versions = exported
    files = sorted(out.glob("*.warc.gz"))
    assert [f.name for f in files] == summary["files"] and summary["bytes"] == sum(
        f.stat().st_size for f in files
    )
    responses = summary["records"]["response"]
    assert responses == sum(len(v) for v in versions.values()) == 6  # page 3, target 1, pdf 1, gone 1
    assert summary["records"]["revisit"] >= 4 and summary["records"]["warcinfo"] == len(files)
    checked = run(BIN / "warcio", "check", "-v", *files)
    # A record without digests passes silently: count the passes of response records.
    passes = checked.stdout.count("response\n    digest pass")
    assert passes == responses, checked.stdout
    assert "failed" not in checked.stdout

    # One flipped byte in a payload fails it (the record left whole, so it is the digest that fails).
    plain = tmp_path / "flipped.warc"
    data = bytearray(gzip.decompress(files[0].read_bytes()))
    at = data.index(b"third words")
    data[at] ^= 0x01
    plain.write_bytes(bytes(data))
    flipped = run(BIN / "warcio", "check", "-v", plain, check=False)
    assert flipped.returncode == 1 and "digest failed" in flipped.stdout


def every_version_is_a_response_identical_to_show_and_the_history_is_told(exported):
    m, out, _summary, versions = exported
    found = [r for f in sorted(out.glob("*.warc.gz")) for r in records(f)]
    assert found[0][0] == "warcinfo"
    for url, kept in versions.items():
        responses = [r for r in found if r[0] == "response" and r[1] == url]
        assert [r[2]["WARC-Payload-Digest"] for r in responses] == [f"sha256:{v['sha256']}" for v in kept]
        for (_, _, head, body), v in zip(responses, kept, strict=True):
            assert body == shown(m.database_url, url, v["number"])
            assert head["WARC-Date"].startswith(v["first_seen"][:19])
            assert head["WARC-Block-Digest"].startswith("sha256:")
    page_url = next(u for u in versions if u.endswith("page.html"))
    page = versions[page_url]
    latest = [r for r in found if r[0] == "response" and r[1] == page_url][-1]
    assert m("show", page_url).stdout == latest[3]  # the command itself, once
    revisits = [r for r in found if r[0] == "revisit" and r[1].endswith("page.html")]
    refers = {r[2]["WARC-Refers-To"] for r in revisits}
    ids = {r[2]["WARC-Payload-Digest"]: r[2]["WARC-Record-ID"] for r in found if r[0] == "response"}
    assert refers <= set(ids.values()) and len(revisits) >= 2
    assert {r[2]["WARC-Payload-Digest"] for r in revisits} <= {f"sha256:{v['sha256']}" for v in page}
    meta = [json.loads(r[3]) for r in found if r[0] == "metadata"]
    assert any(d["event_kind"] == "document.disappeared" and d["url"].endswith("gone.html") for d in meta)
    moved = next(d for d in meta if d["url"].endswith("old.html") and d.get("version") == 1)
    assert moved["redirects"][0].endswith("old.html") and moved["redirects"][-1].endswith("target.html")
    assert all(len(d["event_hash"]) == 64 and d["event_seq"] > 0 for d in meta)


def cdxj_indexer_lists_one_line_per_capture_with_the_versions_hashes(exported):
    _m, out, summary, versions = exported
    indexed = run(BIN / "cdxj-indexer", *sorted(out.glob("*.warc.gz"))).stdout.splitlines()
    lines = [json.loads(line.split(" ", 2)[2]) for line in indexed]
    captures = [d for d in lines if "status" in d]  # response and revisit lines; metadata has none
    assert len(captures) == summary["records"]["response"] + summary["records"]["revisit"]
    shas = {v["sha256"] for kept in versions.values() for v in kept}
    assert {d["digest"] for d in captures} == {f"sha256:{s}" for s in shas}


def import_into_a_fresh_store_gives_equal_versions_times_and_hashes(exported, tmp_path):
    _m, out, summary, versions = exported
    fresh = Mirror(write_config(tmp_path / "fresh.toml", []), f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)
    report = fresh.json("import", "warc", *map(str, sorted(out.glob("*.warc.gz"))))
    assert report["refused"] == [] and report["imported"] == summary["records"]["response"]
    for url, kept in versions.items():
        back = versions_of(fresh.database_url, url)
        assert [(v["sha256"], v["first_seen"], v["size"]) for v in back] == [
            (v["sha256"], v["first_seen"], v["size"]) for v in kept
        ]
    assert fresh("verify").returncode == 0
    again = fresh.json("import", "warc", *map(str, sorted(out.glob("*.warc.gz"))))
    assert again["imported"] == 0


def a_warc_folder_yields_the_wanted_payloads_once(exported):
    _m, out, summary, versions = exported
    shas = [v["sha256"] for kept in versions.values() for v in kept]
    folder = WarcFolder(out)
    assert (
        folder.describe()
        == f"WARC folder warcs/ ({len(summary['files'])} file{'s' if len(summary['files']) > 1 else ''})"
    )
    found = dict(folder.find([*shas, "0" * 64]))
    assert sorted(found) == sorted(set(shas))
    assert all(hashlib.sha256(body).hexdigest() == sha for sha, body in found.items())


def warcio_payloads(path: Path) -> dict[tuple[str, str], str]:
    """(URL, WARC-Date) -> SHA-256 of warcio's reading of each 2xx response's payload."""
    out = {}
    with path.open("rb") as stream:
        for r in ArchiveIterator(stream, arc2warc=True):
            if (
                r.rec_type == "response"
                and r.http_headers
                and r.http_headers.get_statuscode().startswith("2")
            ):
                uri = r.rec_headers.get_header("WARC-Target-URI")
                out[(uri, r.rec_headers.get_header("WARC-Date"))] = hashlib.sha256(
                    r.content_stream().read()
                ).hexdigest()
    return out


def test_a_real_crawl_with_revisits_and_redirects_imports_once(site, database_url, tmp_path):
    m = Mirror(write_config(tmp_path / "mirror.toml", [site.url("/configured.html")]), database_url, tmp_path)
    files = [DATA / "dupes.warc.gz", DATA / "example.arc.gz"]
    report = m.json("import", "warc", *map(str, files))
    expected = {**warcio_payloads(files[0]), **warcio_payloads(files[1])}
    # example.com: a response, its revisit 51 s later and the ARC's capture three weeks later, all of
    # one payload: one version (the revisit resolved to it, the others repeats of it).
    example = m.json("history", "http://example.com/")
    assert example["status"] == "unwatched"  # unscheduled: source warc, never checked
    assert [v["sha256"] for v in example["versions"]] == [
        expected[("http://example.com", "2014-01-27T17:12:00Z")]
    ]
    assert expected[("http://example.com/", "2014-02-16T05:02:21Z")] == example["versions"][0]["sha256"]
    js = versions_of(database_url, "http://www.iana.org/_js/2013.1/iana.js")
    assert [v["sha256"] for v in js] == [
        expected[("http://www.iana.org/_js/2013.1/iana.js", "2014-01-27T17:12:39Z")]
    ]
    assert js[0]["first_seen"].startswith("2014-01-27T17:12:39")
    # The revisits of a crawl not in these files repeat nothing we hold: refused and listed, never stored.
    assert {r["reason"] for r in report["refused"]} == {
        "a revisit of a payload in none of the files given, nor in the store"
    }
    assert len(report["refused"]) == 8 and report["imported"] == 2 and report["repeats"] == 2
    assert report["records"] == 27 and report["targets_added"] == 2
    events = [e for e in example["events"] if e["kind"] == "document.imported"]
    assert [(e["details"]["file"], e["details"]["offset"]) for e in events] == [("dupes.warc.gz", 334)]
    assert m("verify").returncode == 0
    again = m.json("import", "warc", *map(str, files))
    assert again["imported"] == 0 and again["targets_added"] == 0
    assert m.json("history", "http://example.com/")["events"] == example["events"]


@pytest.fixture(scope="session")
def pywb():
    from tests.pywb_env import pywb_bin

    return pywb_bin()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pywb_replays_every_capture_with_the_versions_bytes_and_lists_them_all(site, tmp_path, pywb):
    # One backend: the files are the same from either (the export test runs on both).
    database_url = f"sqlite:///{tmp_path / 'm.db'}"
    import time
    import urllib.request

    urls = [site.url(f"/w/{n}") for n in ("page.html", "old.html", "report.pdf", "gone.html")]
    m = Mirror(write_config(tmp_path / "mirror.toml", urls), database_url, tmp_path)
    build_history(site, m, pause=1.0)
    out = tmp_path / "warcs"
    m.json("export", "warc", "--to", str(out))
    home = tmp_path / "pywb"
    home.mkdir()
    run(pywb / "wb-manager", "init", "mirror", cwd=home)
    run(pywb / "wb-manager", "add", "mirror", *sorted(out.glob("*.warc.gz")), cwd=home)
    port = free_port()
    server = subprocess.Popen(
        [str(pywb / "wayback"), "-p", str(port), "-b", "127.0.0.1"],
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/mirror"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        found = [r for f in sorted(out.glob("*.warc.gz")) for r in records(f)]
        replayed = 0
        for url in urls:
            versions = versions_of(database_url, url)
            by_sha = {v["sha256"] for v in versions}
            captures = [r for r in found if r[0] in ("response", "revisit") and r[1] == url]
            for _, _, head, _ in captures:
                stamp = "".join(c for c in head["WARC-Date"] if c.isdigit())[:14]
                body = urllib.request.urlopen(f"{base}/{stamp}id_/{url}", timeout=30).read()
                assert f"sha256:{hashlib.sha256(body).hexdigest()}" == head["WARC-Payload-Digest"], (
                    url,
                    stamp,
                    body[:300],
                )
                assert hashlib.sha256(body).hexdigest() in by_sha
                replayed += 1
            timemap = urllib.request.urlopen(f"{base}/timemap/link/{url}", timeout=30).read().decode()
            mementos = {line.split("datetime=")[1] for line in timemap.split("\n") if "datetime=" in line}
            assert len(mementos) == len({r[2]["WARC-Date"][:19] for r in captures}), timemap
        assert replayed == len([r for r in found if r[0] in ("response", "revisit")])
        print(f"pywb replayed {replayed} captures")
    finally:
        server.terminate()
        server.wait(timeout=30)


def write_warc(path: Path, url: str, body: bytes, date: str) -> None:
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=True)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.0")
        writer.write_record(
            writer.create_warc_record(
                url,
                "response",
                payload=BytesIO(body),
                length=len(body),
                http_headers=http,
                warc_headers_dict={"WARC-Date": date},
            )
        )


def test_an_import_older_than_the_current_version_keeps_the_latest_and_answers_at_its_time(
    site, database_url, tmp_path
):
    url = site.url("/w/now.html")
    now_body = b"<html><body><p>as it is today</p></body></html>"
    site.put("/w/now.html", now_body)
    m = Mirror(write_config(tmp_path / "mirror.toml", [url]), database_url, tmp_path)
    m("check")
    old_body = b"<html><body><p>as it was in 2019</p></body></html>"
    write_warc(tmp_path / "old.warc.gz", url, old_body, "2019-05-01T10:00:00Z")
    assert m.json("import", "warc", str(tmp_path / "old.warc.gz"))["imported"] == 1
    versions = versions_of(database_url, url)
    assert [v["number"] for v in versions] == [1, 2]
    assert versions[1]["first_seen"].startswith("2019-05-01T10:00:00")
    assert m("show", url).stdout == now_body  # the latest captured, not the latest numbered
    assert shown(database_url, url, -2) == old_body  # counted back in capture order
    store = Reader.open(database_url, existing=True)
    try:  # `--at`: the latest captured by then
        assert store.version(url, at=datetime(2020, 1, 1, tzinfo=UTC)).number == 2
        with pytest.raises(VersionNotFound):
            store.version(url, at=datetime(2018, 1, 1, tzinfo=UTC))
    finally:
        store.close()
    assert m("verify").returncode == 0
    assert m.json("check")["outcomes"]["unchanged"] == 1  # an old capture is no change to the next check
    assert m.json("import", "warc", str(tmp_path / "old.warc.gz"))["imported"] == 0


def test_bad_input_is_one_line_and_exit_2_before_any_store_is_made(tmp_path):
    m = Mirror(write_config(tmp_path / "mirror.toml", []), f"sqlite:///{tmp_path / 'm.db'}", tmp_path)
    cases = [
        (("import", "warc", "missing.warc.gz"), "missing.warc.gz: no such file"),
        (("export", "warc", "--max-size", "lots", "--to", "out"), "--max-size: expected a size like '1GB'"),
        (("export", "warc", "--since", "yesterday", "--to", "out"), "--since: expected an ISO 8601 time"),
    ]
    for args, message in cases:
        proc = m(*args, check=False)
        assert proc.returncode == 2 and proc.stderr.decode().startswith(f"mirror: error: {message}"), (
            proc.stderr
        )
        assert len(proc.stderr.decode().strip().splitlines()) == 1
    assert not (tmp_path / "m.db").exists()
