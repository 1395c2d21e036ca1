"""Restoring to disk: crafted URLs cannot leave the folder; a whole site comes back as it was."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

import pytest

from mirror.check import Checker
from mirror.domain import DetectPolicy, FetchLimits, Target
from mirror.errors import FileExists, UnsafePath
from mirror.politeness import HostGate
from mirror.restore import MANIFEST, plan_site, restore_site, site_path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://a.org/x/y.html", "a.org/x/y.html"),
        ("https://a.org/", "a.org/index.html"),
        ("https://a.org/dir/", "a.org/dir/index.html"),
        ("http://a.org:8080/p", "a.org_8080/p"),
        ("https://a.org/p.php?id=3&x=/../../etc", "a.org/p.php%3Fid=3%26x=%2F..%2F..%2Fetc"),
        ("https://a.org/%2e%2e/%2E%2E/etc/passwd", "a.org/%2E%2E/%2E%2E/etc/passwd"),
        ("https://a.org/a%2Fb", "a.org/a%2Fb"),
        ("https://a.org/..%2f..%2fx", "a.org/..%2F..%2Fx"),
        ("https://a.org/nul%00byte", "a.org/nul%00byte"),
        ("https://a.org//etc/passwd", "a.org/_/etc/passwd"),
        ("https://a.org/caf%C3%A9.html", "a.org/café.html"),
        ("https://a.org/back%5Cslash", "a.org/back%5Cslash"),
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
    ],
)
def test_no_crafted_url_leaves_the_folder(url, tmp_path):
    rel = site_path(url)
    assert not rel.is_absolute()
    assert ".." not in rel.parts
    assert all(part and "/" not in part and "\0" not in part for part in rel.parts)
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
            if p.is_file() and p.name not in (MANIFEST, "restore-index.tsv", "left-out.tsv")
        }

    host = site_path(urls["/etext/"]).parts[0]
    early = restore_site(archive, first_time, tmp_path / "early")
    assert early.files == 4
    assert early.left_out == ()
    assert files_under(tmp_path / "early") == {
        f"{host}/etext/index.html": sha(served_first["/etext/"]),
        f"{host}/etext/a.html": sha(served_first["/etext/a.html"]),
        f"{host}/etext/b.html": sha(served_first["/etext/b.html"]),
        f"{host}/etext/report.pdf%3Flang=en": sha(served_first["/etext/report.pdf?lang=en"]),
    }
    manifest = (tmp_path / "early" / MANIFEST).read_text().splitlines()
    assert sorted(manifest) == sorted(f"{h}  {p}" for p, h in files_under(tmp_path / "early").items())

    late = restore_site(archive, second_time, tmp_path / "late")
    assert late.files == 3
    assert [u for u, _ in late.left_out] == [urls["/etext/b.html"]]
    assert files_under(tmp_path / "late")[f"{host}/etext/a.html"] == sha(b"<p>first essay, second words</p>")
    assert f"{host}/etext/b.html" not in files_under(tmp_path / "late")


def test_restore_all_overwrites_nothing_without_force_and_follows_no_planted_link(site, archive, tmp_path):
    site.put("/doc.html", b"<p>doc</p>")
    url = site.url("/doc.html")
    archive.sync_targets([Target(url, timedelta(hours=1))], datetime.now(UTC))
    c = checker(archive)
    c.check_one(Target(url, timedelta(hours=1)))
    c.close()
    now = datetime.now(UTC)
    dest = tmp_path / "out"
    restore_site(archive, now, dest)
    with pytest.raises(FileExists):
        restore_site(archive, now, dest)
    restore_site(archive, now, dest, force=True)

    # A symbolic link planted where the host folder goes must not be followed out of the folder.
    planted = tmp_path / "planted"
    outside = tmp_path / "outside"
    outside.mkdir()
    planted.mkdir()
    os.symlink(outside, planted / site_path(url).parts[0])
    with pytest.raises(UnsafePath):
        restore_site(archive, now, planted)
    assert list(outside.iterdir()) == []
