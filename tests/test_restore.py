"""Restoring to disk: crafted URLs cannot leave the folder; a whole site comes back as it was."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest
from sqlalchemy import text

from mirror.check import Checker
from mirror.domain import DetectPolicy, FetchLimits, Target
from mirror.errors import FileExists, RestoreError, StoreError
from mirror.politeness import HostGate
from mirror.restore import MANIFEST, plan_site, restore_site, restore_version, site_path
from tests.fixtures_store import engine_of, key
from tests.test_cli import Mirror, write_config


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://a.org/x/y.html", "a.org/x/y.html"),
        ("https://a.org/", "a.org/index.html"),
        ("https://a.org/dir/", "a.org/dir/index.html"),
        ("http://a.org:8080/p", "a.org_8080/p"),
        ("https://a.org/p.php?id=3&x=/../../etc", "a.org/p.php^3Fid=3^26x=^2F..^2F..^2Fetc"),
        ("https://a.org/%2e%2e/%2E%2E/etc/passwd", "a.org/^2E^2E/^2E^2E/etc/passwd"),
        ("https://a.org/a%2Fb", "a.org/a^2Fb"),
        ("https://a.org/..%2f..%2fx", "a.org/..^2F..^2Fx"),
        ("https://a.org/nul%00byte", "a.org/nul^00byte"),
        ("https://a.org//etc/passwd", "a.org/_/etc/passwd"),
        ("https://a.org/caf%C3%A9.html", "a.org/café.html"),
        ("https://a.org/back%5Cslash", "a.org/back^5Cslash"),
        ("https://a.org/100%25.html", "a.org/100^25.html"),
        ("https://a.org/cr%0Dlf%0A", "a.org/cr^0Dlf^0A"),
        ("https://a.org/caret%5E", "a.org/caret^5E"),
    ],
)
def test_a_url_maps_to_a_safe_path_under_its_host(url, path):
    assert str(site_path(url)) == path


@pytest.mark.parametrize(
    "url",
    [
        "https://a.org/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "https://a.org/..%2F..%2F..%2Fetc%2Fpasswd",
        "https://a.org/%00/../x",
        "https://a.org/" + "%2F" * 300,
        "https://a.org/" + "x" * 5000,
        "https://a.org/%2Fetc%2Fpasswd",
        "https://a.org/~/.ssh/authorized_keys",
        "https://a.org/%25%0D%0A/%250D.html?%0A=%25",
    ],
)
def test_no_crafted_url_leaves_the_folder(url, tmp_path):
    rel = site_path(url)
    assert not rel.is_absolute()
    assert ".." not in rel.parts
    assert all(part and "/" not in part and "\0" not in part for part in rel.parts)
    # BagIt validators disagree on how a manifest encodes these: no name has any.
    assert not any(c in str(rel) for c in "%\r\n")
    assert all(len(part.encode()) <= 255 for part in rel.parts)
    target = (tmp_path / Path(*rel.parts)).resolve()
    assert target.is_relative_to(tmp_path.resolve())


def test_a_file_that_is_also_a_folder_goes_inside_it_as_index_html():
    plan = plan_site([("u1", PurePosixPath("h/a")), ("u2", PurePosixPath("h/a/b"))])
    assert plan == {"u1": PurePosixPath("h/a/index.html"), "u2": PurePosixPath("h/a/b")}


def checker(archive) -> Checker:
    return Checker(archive, FetchLimits(timeout=5, retries=0), DetectPolicy(), HostGate(4, 0.0))


def test_a_whole_site_restores_as_it_was_at_two_times(site, archive, tmp_path):
    pages = {
        "/etext/": b"<html><body><a href='a.html'>A</a></body></html>",
        "/etext/a.html": b"<p>first essay, first words</p>",
        "/etext/b.html": b"<p>second essay</p>",
        "/etext/report.pdf?lang=en": b"%PDF-1.4 not really a pdf but bytes",
    }
    for path, body in pages.items():
        site.put(path, body, content_type="application/pdf" if "pdf" in path else "text/html")
    urls = {path: site.url(path) for path in pages}
    targets = [Target(u, timedelta(hours=1)) for u in urls.values()]
    archive.sync_targets(targets, datetime.now(UTC))
    c = checker(archive)
    for t in targets:
        c.check_one(t)
    first_time = datetime.now(UTC)
    served_first = dict(pages)

    site.put("/etext/a.html", b"<p>first essay, second words</p>")
    site.delete("/etext/b.html")
    for t in targets:
        c.check_one(t)
    c.close()
    second_time = datetime.now(UTC)

    def files_under(folder: Path) -> dict[str, str]:
        return {
            str(p.relative_to(folder)): sha(p.read_bytes())
            for p in folder.rglob("*")
            if p.is_file() and p.relative_to(folder).parts[0] == "data"
        }

    host = site_path(urls["/etext/"]).parts[0]
    early = restore_site(archive, first_time, tmp_path / "early")
    assert early.files == 4
    assert early.left_out == ()
    assert files_under(tmp_path / "early") == {
        f"data/{host}/etext/index.html": sha(served_first["/etext/"]),
        f"data/{host}/etext/a.html": sha(served_first["/etext/a.html"]),
        f"data/{host}/etext/b.html": sha(served_first["/etext/b.html"]),
        f"data/{host}/etext/report.pdf^3Flang=en": sha(served_first["/etext/report.pdf?lang=en"]),
    }
    manifest = (tmp_path / "early" / MANIFEST).read_text().splitlines()
    assert sorted(manifest) == sorted(f"{h}  {p}" for p, h in files_under(tmp_path / "early").items())

    late = restore_site(archive, second_time, tmp_path / "late")
    assert late.files == 3
    assert [u for u, _ in late.left_out] == [urls["/etext/b.html"]]
    assert files_under(tmp_path / "late")[f"data/{host}/etext/a.html"] == sha(
        b"<p>first essay, second words</p>"
    )
    assert f"data/{host}/etext/b.html" not in files_under(tmp_path / "late")


def test_restore_all_replaces_only_a_bag_and_follows_no_planted_link(site, archive, tmp_path):
    site.put("/doc.html", b"<p>doc</p>")
    url = site.url("/doc.html")
    archive.sync_targets([Target(url, timedelta(hours=1))], datetime.now(UTC))
    c = checker(archive)
    c.check_one(Target(url, timedelta(hours=1)))
    c.close()
    now = datetime.now(UTC)
    dest = tmp_path / "out"
    restore_site(archive, now, dest)
    before = (dest / "bag-info.txt").read_text()
    with pytest.raises(FileExists):
        restore_site(archive, now, dest)
    assert (dest / "bag-info.txt").read_text() == before
    again = restore_site(archive, now, dest, force=True, now=now + timedelta(days=1))
    assert not again.created
    assert (dest / "bag-info.txt").read_text() != before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nothing left aside

    # A symbolic link planted in the folder is never followed: the bag is built elsewhere.
    planted = tmp_path / "planted"
    outside = tmp_path / "outside"
    outside.mkdir()
    planted.mkdir()
    os.symlink(outside, planted / "data")
    with pytest.raises(FileExists):
        restore_site(archive, now, planted)
    with pytest.raises(RestoreError, match="holds no bag"):  # --force replaces a bag, nothing else
        restore_site(archive, now, planted, force=True)
    (planted / "bagit.txt").write_text("BagIt-Version: 1.0\n")
    restore_site(archive, now, planted, force=True)
    assert list(outside.iterdir()) == []
    assert not (planted / "data").is_symlink()


def test_a_restore_that_fails_half_way_leaves_no_half_bag(site, archive, tmp_path):
    for name in ("a", "b", "c"):
        site.put(f"/{name}.html", f"<p>{name}</p>".encode())
    targets = [Target(site.url(f"/{n}.html"), timedelta(hours=1)) for n in ("a", "b", "c")]
    archive.sync_targets(targets, datetime.now(UTC))
    c = checker(archive)
    for t in targets:
        c.check_one(t)
    c.close()
    with engine_of(archive).begin() as conn:  # the last document's bytes are damaged
        conn.execute(
            text("UPDATE blobs SET data = :d WHERE sha256 = :s"), {"d": b"junk", "s": key(sha(b"<p>c</p>"))}
        )
    (tmp_path / "out").mkdir()
    with pytest.raises(StoreError):
        restore_site(archive, datetime.now(UTC), tmp_path / "out" / "bag")
    assert list((tmp_path / "out").iterdir()) == []  # no bag, no hidden folder left behind


# -- names that clash: one file per document, whatever the spelling ----------------------------


def test_documents_whose_names_clash_get_distinct_names_whatever_the_order_of_rows():
    urls = [
        "http://h.org/",
        "http://h.org/index.html",
        "http://h.org/A",
        "http://h.org/%41",
        "http://h.org/x?y",
        "http://h.org/x%3Fy",
        "http://h.org/Case.html",
        "http://h.org/case.html",
        "http://h.org/f",
        "http://h.org/f/",
        "http://h.org/f/g",
        "http://h.org/f/?file",
        "http://h.org/F/index.html",
    ]
    entries = [(u, site_path(u)) for u in urls]
    plan = plan_site(entries)
    folded = [str(p).casefold() for p in plan.values()]
    assert len(set(folded)) == len(urls)  # distinct even on a case-insensitive file system
    folders = {str(parent).casefold() for p in plan.values() for parent in p.parents}
    assert not folders & set(folded)  # no file where a folder must go
    assert plan["http://h.org/"] == PurePosixPath("h.org/index.html")  # the shortest URL keeps the name
    assert plan["http://h.org/A"] == PurePosixPath("h.org/A")
    assert plan["http://h.org/x?y"] == PurePosixPath("h.org/x^3Fy")
    assert str(plan["http://h.org/index.html"]).startswith("h.org/index~")
    assert str(plan["http://h.org/index.html"]).endswith(".html")
    for seed in range(5):
        shuffled = list(entries)
        random.Random(seed).shuffle(shuffled)
        assert plan_site(shuffled) == plan


def test_a_site_of_clashing_names_restores_every_document_and_sha256sum_checks_it(
    site, tmp_path, database_url
):
    pages = {
        "/": b"<p>the root</p>",
        "/index.html": b"<p>index.html itself</p>",
        "/A": b"<p>capital A</p>",
        "/%41": b"<p>A, percent-encoded</p>",  # requests sends it as /A: the same bytes, a second document
        "/x?y": b"<p>x with a query</p>",
        "/x%3Fy": b"<p>x with an encoded question mark</p>",
        "/Case.html": b"<p>upper case</p>",
        "/case.html": b"<p>lower case</p>",
        "/f": b"<p>f, a file</p>",
        "/f/": b"<p>f, a folder</p>",
        "/f/g": b"<p>inside f</p>",
    }
    for path, body in pages.items():
        site.put(path, body)
    m = Mirror(write_config(tmp_path / "mirror.toml", [site.url(p) for p in pages]), database_url, tmp_path)
    assert m.json("check")["outcomes"]["new"] == len(pages)

    out = tmp_path / "site"
    report = m.json("restore", "--all", "--at", datetime.now(UTC).isoformat(), "--to", str(out))
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent != out)
    manifest = (out / MANIFEST).read_text().splitlines()
    assert report["files"] == len(pages) == len(written) == len(manifest)
    assert sorted(line.split("  ", 1)[1] for line in manifest) == written
    check = subprocess.run(["sha256sum", "--strict", "-c", MANIFEST], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    index = [line.split("\t") for line in (out / "restore-index.tsv").read_text().splitlines()[1:]]
    assert sorted(url for _, url, _, _ in index) == sorted(site.url(p) for p in pages)
    for path, url, _, _ in index:  # each file holds what `show` prints for its URL
        assert (out / path).read_bytes() == m("show", url).stdout

    again = tmp_path / "again"
    m("restore", "--all", "--at", datetime.now(UTC).isoformat(), "--to", str(again))
    assert (again / "restore-index.tsv").read_text() == (out / "restore-index.tsv").read_text()


# -- file modes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_restored_files_and_folders_get_the_modes_the_umask_gives(
    site, archive, tmp_path, umask, file_mode, folder_mode
):
    site.put("/etext/doc.html", b"<p>doc</p>")
    url = site.url("/etext/doc.html")
    archive.sync_targets([Target(url, timedelta(hours=1))], datetime.now(UTC))
    c = checker(archive)
    c.check_one(Target(url, timedelta(hours=1)))
    c.close()
    previous = os.umask(umask)
    try:
        one = restore_version(archive, url, tmp_path / "doc.html")
        whole = restore_site(archive, datetime.now(UTC), tmp_path / "site")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(one.path).st_mode) == file_mode
    folder = Path(whole.folder)
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) == 9  # the document and 8 tag files (bagit.txt, bag-info.txt, 4 manifests, 2 tsv)
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {file_mode}
    folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {folder_mode}
