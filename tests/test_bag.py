"""`restore --all` writes a BagIt 1.0 bag that the Library of Congress validator accepts; damage fails it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mirror import bag
from mirror.reader import Reader
from tests.test_cli import Mirror, write_config

BAGIT_PY = Path(sys.executable).parent / "bagit.py"  # installed by the `bagit` test dependency

PAGES = {
    "/": b"<p>the root</p>",
    "/index.html": b"<p>index.html itself</p>",
    "/100%25.html": b"<p>a percent sign in the name</p>",
    "/cr%0Dlf%0A.html": b"<p>CR and LF in the name</p>",
    "/report.pdf?lang=en&x=%2F..%2F": b"%PDF-1.4 a query with encoded slashes",
    "/caf%C3%A9.html": b"<p>caf\xc3\xa9</p>",
    "/Case.html": b"<p>upper case</p>",
    "/case.html": b"<p>lower case</p>",
    "/gone.html": b"<p>soon gone</p>",
}


def validate(folder: Path) -> subprocess.CompletedProcess[str]:
    """Run the Library of Congress `bagit.py --validate` on `folder`, as a separate process."""
    return subprocess.run(
        [sys.executable, str(BAGIT_PY), "--validate", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def bagged(archive_server, tmp_path_factory) -> tuple[Mirror, Path, dict]:
    """One whole-site restore (SQLite: `restore` reads the store's read side, tested on both elsewhere)."""
    archive_server.reset()
    site, tmp_path = archive_server, tmp_path_factory.mktemp("bag")
    for path, body in PAGES.items():
        site.put(path, body, content_type="application/pdf" if "pdf" in path else "text/html")
    urls = [site.url(p) for p in PAGES]
    m = Mirror(write_config(tmp_path / "mirror.toml", urls), f"sqlite:///{tmp_path / 'm.db'}", tmp_path)
    assert m.json("check")["outcomes"]["new"] == len(PAGES)
    site.delete("/gone.html")
    assert m.json("check", site.url("/gone.html"))["outcomes"]["disappeared"] == 1
    out = tmp_path / "bag"
    report = m.json("restore", "--all", "--at", datetime.now(UTC).isoformat(), "--to", "bag")  # in cwd
    return m, out, report


@pytest.fixture
def restored(bagged, tmp_path) -> tuple[Mirror, Path, dict]:
    """A copy of the module's bag, to damage."""
    m, out, report = bagged
    copy = tmp_path / "bag"
    shutil.copytree(out, copy)
    return m, copy, report


def test_a_whole_site_restore_is_a_bag_the_library_of_congress_validator_accepts(bagged, archive_server):
    m, out, report = bagged
    site = archive_server
    done = validate(out)
    assert done.returncode == 0, done.stderr
    assert "is valid" in done.stderr

    assert (out / "bagit.txt").read_text() == "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    payload = sorted(p for p in (out / "data").rglob("*") if p.is_file())
    assert report["files"] == len(payload) == len(PAGES) - 1  # the gone page is left out
    assert (report["folder"], report["created"]) == ("bag", True)
    info = dict(line.split(": ", 1) for line in (out / "bag-info.txt").read_text().splitlines())
    assert info["Payload-Oxum"] == f"{sum(p.stat().st_size for p in payload)}.{len(payload)}"
    assert info["Bagging-Date"] == datetime.now(UTC).date().isoformat()
    head_seq, head_hash = m("verify", "--head").stdout.decode().split()
    assert (info["Mirror-Chain-Head-Seq"], info["Mirror-Chain-Head-Hash"]) == (head_seq, head_hash)
    assert (report["head_seq"], report["head_hash"]) == (int(head_seq), head_hash)
    assert m("verify", "--published", f"{head_seq}:{head_hash}").returncode == 0

    # Each manifest line is a file under data/ with its hash; no name needs percent-encoding.
    for algorithm in ("sha256", "sha512"):
        lines = (out / f"manifest-{algorithm}.txt").read_text().splitlines()
        listed = {path: digest for digest, path in (line.split("  ", 1) for line in lines)}
        assert sorted(listed) == sorted(str(p.relative_to(out)) for p in payload)
        for path, digest in listed.items():
            assert hashlib.new(algorithm, (out / path).read_bytes()).hexdigest() == digest
    assert not any(c in str(p) for p in payload for c in "%\r\n")
    tags = (out / "tagmanifest-sha256.txt").read_text()
    for name in ("bagit.txt", "bag-info.txt", "manifest-sha256.txt", "restore-index.tsv", "left-out.tsv"):
        assert f"  {name}\n" in tags

    # The index says which URL each file holds, and each holds what `show` prints.
    index = [line.split("\t") for line in (out / "restore-index.tsv").read_text().splitlines()[1:]]
    assert sorted(url for _, url, _, _ in index) == sorted(site.url(p) for p in PAGES if p != "/gone.html")
    store = Reader.open(m.database_url, existing=True)
    try:
        for path, url, version, _ in index:  # what `show URL --version N` prints
            assert (out / path).read_bytes() == store.read(store.version(url, version).sha256)
    finally:
        store.close()
    assert (out / "left-out.tsv").read_text().splitlines()[1].split("\t")[0] == site.url("/gone.html")


def test_one_changed_byte_in_the_bag_fails_validation(restored):
    _, out, _ = restored
    victim = next(p for p in sorted((out / "data").rglob("*")) if p.is_file())
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    done = validate(out)
    assert done.returncode != 0
    assert "invalid" in done.stderr and str(victim.relative_to(out)) in done.stderr


def test_an_edited_tag_file_fails_validation(restored):
    _, out, _ = restored
    index = out / "restore-index.tsv"
    index.write_text(index.read_text().replace("\t1\t", "\t2\t", 1))
    done = validate(out)
    assert done.returncode != 0
    assert "restore-index.tsv" in done.stderr


def test_manifest_lines_encode_what_rfc_8493_asks_and_list_files_by_path():
    files = [
        bag.Payload("data/b", 1, "2" * 64, "b" * 128),
        bag.Payload("data/a%\r\n", 1, "1" * 64, "a" * 128),
    ]
    assert bag.manifest(files, "sha256") == f"{'1' * 64}  data/a%25%0D%0A\n{'2' * 64}  data/b\n"
    assert bag.manifest(files, "sha512").startswith("a" * 128)
