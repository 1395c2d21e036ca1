"""The commands of the design's "Integrity & formats" part: restore (a file, or a whole site as a
BagIt bag) and verify (with repair from a second copy). `mirror.cli` registers them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mirror import render
from mirror.app import (
    EXIT_DAMAGED,
    AppContext,
    echo_lines,
    emit_json,
    json_option,
    one_of,
    parse_time,
    pass_app,
    published_head,
    record_verify_run,
    url_argument,
    version_options,
)
from mirror.errors import NoStore, UsageError
from mirror.progress import progress_bar

if TYPE_CHECKING:
    from mirror.integrity import VerifyReport
    from mirror.repair import RepairSource


@click.command()
@click.argument("url", required=False)
@version_options
@click.option(
    "--all", "whole_site", is_flag=True, help="Every document as it was at --at: a BagIt bag in DIR."
)
@click.option(
    "--to", "dest", required=True, type=click.Path(path_type=Path), help="File, or folder for --all."
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@json_option
@pass_app
def restore(
    app: AppContext,
    url: str | None,
    spec: str | None,
    at: str | None,
    whole_site: bool,
    dest: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Write a stored version of a URL to a file, or a whole site as it was at a time to a folder.

    Files are written atomically and their SHA-256 checked on disk. --all writes a BagIt
    1.0 bag: the documents under DIR/data/<host>/<path>, manifests (sha256, sha512),
    bag-info.txt with the chain head, restore-index.tsv and left-out.tsv (documents gone
    at that time). DIR must be new or empty; --force replaces a bag restored there before.

    Example:
        mirror restore https://www.prisoncensorship.info/archive/etext/wim/ --version -1 --to wim.html
        mirror restore --all --at 2026-11-01T00:00:00Z --to site-2026-11-01
    """
    from mirror.restore import restore_site, restore_version

    if whole_site:
        if url is not None or spec is not None or at is None:
            raise UsageError("restore --all takes --at TIME and --to DIR, and no URL or --version")
        when = parse_time(at)
        bar = progress_bar(sys.stderr.isatty() and not as_json, "restoring", "file")
        try:
            site = restore_site(app.reader(), when, dest, force=force, progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
        if as_json:
            emit_json(site)
        else:
            echo_lines(render.site_restore_text(site))
        return
    if url is None:
        raise UsageError("restore needs a URL, or --all --at TIME")
    wanted, spec, one_at = url_argument(url), one_of(spec, at), parse_time(at) if at else None  # input first
    done = restore_version(app.reader(), wanted, dest, spec=spec, at=one_at, force=force)
    if as_json:
        emit_json(done)
    else:
        click.echo(render.restored_text(done))


@click.command()
@click.option(
    "--head",
    "head_only",
    is_flag=True,
    help="Only print the chain head (seq and hash), to publish elsewhere.",
)
@click.option(
    "--published",
    metavar="SEQ:HASH",
    help="A head published earlier: also check that event SEQ still has HASH.",
)
@click.option(
    "--repair-from",
    "repair_from",
    metavar="SOURCE",
    help="Put back each damaged or missing blob found in SOURCE: another store (a database URL or "
    "SQLite file) or a folder of WARC files.",
)
@json_option
@pass_app
def verify(
    app: AppContext, head_only: bool, published: str | None, repair_from: str | None, as_json: bool
) -> None:
    """Re-hash every blob, check every snapshot and recompute the event chain; exit 1 on damage.

    With --repair-from, each damaged or missing blob whose SHA-256 the source holds is
    re-hashed and put back (a document.repaired event in the chain); then the store is
    verified again, and what could not be repaired is listed (exit 1).

    Example:
        mirror verify
        mirror verify --head
        mirror verify --published 1234:9f2c0e...
        mirror verify --repair-from postgresql://mirror@backup-host/mirror
        mirror verify --repair-from backups/
    """
    from mirror.repair import source_kind

    expected = published_head(published) if published else None  # bad input first, then the store
    source = source_kind(repair_from) if repair_from else None
    if head_only:
        if source is not None:
            raise UsageError("give --head or --repair-from, not both")
        seq, digest = app.reader().chain_head()
        if as_json:
            emit_json({"head_seq": seq, "head_hash": digest})
        else:
            click.echo(f"{seq} {digest}")
        return
    store = app.archive()  # each run is recorded (the web page's footer), and a repair writes

    def verified() -> VerifyReport:
        bar = None
        if sys.stderr.isatty() and not as_json:
            bar = progress_bar(True, "verifying", "B", total=store.blob_bytes(), unit_scale=True)
        started = datetime.now(UTC)
        try:
            report = store.verify(progress=bar.update if bar is not None else None, published=expected)
        finally:
            if bar is not None:
                bar.close()
        record_verify_run(store, report, started)
        return report

    if source is None:
        report = verified()
        if as_json:
            emit_json(render.verify_json(report))
        else:
            echo_lines(render.verify_text(report))
    else:
        report = _repair(app, *source, verified, as_json)
    if not report.ok:
        raise SystemExit(EXIT_DAMAGED)


def _repair(
    app: AppContext, kind: str, source: str, verified: Callable[[], VerifyReport], as_json: bool
) -> VerifyReport:
    """Repair the store from `source` (`kind` "store": a database URL; "warc": a folder); render;
    return the verification after."""
    from mirror.reader import Reader
    from mirror.repair import StoreSource, run

    with ExitStack() as stack:
        if kind == "warc":
            found: RepairSource = _warc_folder_source(Path(source))
        else:
            try:
                other = Reader.open(source, existing=True)
            except NoStore as exc:  # its own hint (run `mirror check`) would be wrong for a backup
                why = exc.problem.split("; ")[0]
                raise UsageError(f"--repair-from {exc.url}: {why}: no mirror store to repair from") from None
            stack.callback(other.close)
            if other.database == app.reader().database:
                raise UsageError(f"--repair-from {other.database}: that is this store; give another copy")
            found = StoreSource(other)
        bar = progress_bar(sys.stderr.isatty() and not as_json, "repairing", "blob")
        if bar is not None:
            stack.callback(bar.close)
        repaired = run(app.archive(), found, verify=verified, progress=bar.update if bar else None)
    if as_json:
        emit_json(render.repair_json(repaired))
    else:
        echo_lines(render.repair_text(repaired))
    return repaired.verify


def _warc_folder_source(folder: Path) -> RepairSource:
    """Return the repair source of a folder of WARC files (`mirror.warcsource.WarcFolder`).

    Raises:
        UsageError: the folder holds no WARC or ARC file.
    """
    from mirror.warcsource import WarcFolder

    found = WarcFolder(folder)
    if not found.files:
        raise UsageError(
            f"--repair-from {folder}: no WARC or ARC file (*.warc, *.warc.gz, *.arc, *.arc.gz) in it"
        )
    return found
