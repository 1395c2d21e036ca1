"""The command line of the archive world's formats: `mirror export warc` and `mirror import warc`.

Each command parses its arguments, calls one library function (`mirror.warcexport.export_warc`,
`mirror.warcimport.import_warc`) and renders text or `--json`, like the commands in `mirror.cli`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mirror.app import AppContext, echo_lines, emit_json, parse_time, url_argument
from mirror.errors import UsageError
from mirror.progress import progress_bar

pass_app = click.make_pass_decorator(AppContext)


@click.group("export")
def export_group() -> None:
    """Write the record in an archive format: `warc`.

    Example:
        mirror export warc --to backups/
    """


@click.group("import")
def import_group() -> None:
    """Seed history from files of an archive format: `warc`.

    Example:
        mirror import warc crawl-2019.warc.gz
    """


def _size(text: str) -> int:
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        size = int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise UsageError(f"--max-size: expected a size like '1GB' or '500 MiB', got {text!r}") from None
    if size <= 0:
        raise UsageError(f"--max-size: expected a size above 0, got {text!r}")
    return size


@export_group.command("warc")
@click.argument("urls", nargs=-1, metavar="[URL ...]")
@click.option("--since", metavar="TIME", help="Only captures and events at or after this ISO 8601 time.")
@click.option("--until", metavar="TIME", help="Only captures and events at or before this ISO 8601 time.")
@click.option(
    "--to", "dest", required=True, type=click.Path(path_type=Path), help="Folder for the WARC files."
)
@click.option("--max-size", default="1GB", show_default=True, help="Start a new file past this size.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
def export_warc(
    app: AppContext,
    urls: tuple[str, ...],
    since: str | None,
    until: str | None,
    dest: Path,
    max_size: str,
    as_json: bool,
) -> None:
    """Write every version (or those of URLs) as record-gzipped WARC 1.1 files in a folder.

    Versions are response records, later checks that found the same content revisit
    records, the events that made them and disappearances metadata records.

    Example:
        mirror export warc --to backups/ --max-size 500MB
        mirror export warc https://www.prisoncensorship.info/archive/etext/wim/ --since 2026-01-01 --to wim/
    """
    from mirror.warcexport import export_warc as export

    wanted = [url_argument(u) for u in urls] or None
    start = parse_time(since, "--since") if since else None
    end = parse_time(until, "--until") if until else None
    size = _size(max_size)
    store = app.reader()
    bar = progress_bar(sys.stderr.isatty() and not as_json, "exporting", "doc")
    try:
        report = export(
            store,
            dest,
            urls=wanted,
            since=start,
            until=end,
            max_size=size,
            progress=bar.update if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()
    _log_done("export", report.files, report.bytes, report.seconds)
    document: dict[str, Any] = {
        "folder": report.folder,
        "files": report.files,
        "records": report.records,
        "bytes": report.bytes,
        "seconds": report.seconds,
    }
    if as_json:
        emit_json(document)
        return
    records = ", ".join(f"{n} {kind}" for kind, n in report.records.items())
    mb = report.payload_bytes / 1e6
    echo_lines(
        [
            f"exported {report.documents} documents to {report.folder}: {len(report.files)} files, "
            f"{report.bytes} bytes in {report.seconds:.1f}s ({mb / max(report.seconds, 1e-3):.1f} MB/s)",
            f"records: {records}",
            *[f"  {name}" for name in report.files],
        ]
    )


@import_group.command("warc")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="FILE ...")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_app
def import_warc(app: AppContext, files: tuple[Path, ...], as_json: bool) -> None:
    """Seed history from WARC and ARC files: each capture a version at its original time.

    Response, resource and revisit records become versions (revisits resolved to the
    payload they repeat); a record whose payload digest fails is refused and listed.
    URLs not in the config become unwatched targets of source `warc`.

    Example:
        mirror import warc crawl-2019.warc.gz old/*.arc.gz
    """
    from mirror.targets import seconds_of
    from mirror.warcimport import import_warc as run_import

    for path in files:  # input first: a typo makes no store
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    config = app.config()
    archive = app.archive(create=True)
    bar = progress_bar(sys.stderr.isatty() and not as_json, "importing", "record")
    try:
        report = run_import(
            archive,
            list(files),
            interval_seconds=seconds_of(config.schedule.interval),
            progress=bar.update if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()
    _log_done("import", report.files, report.bytes, report.seconds)
    refused = [
        {"file": r.source.file, "offset": r.source.offset, "url": r.url, "reason": r.reason}
        for r in report.refused
    ]
    if as_json:
        emit_json(
            {
                "files": report.files,
                "records": report.records,
                "imported": report.imported,
                "repeats": report.repeats,
                "skipped": report.skipped,
                "targets_added": report.targets_added,
                "refused": refused,
                "bytes": report.bytes,
                "seconds": report.seconds,
            }
        )
        return
    mb = report.bytes / 1e6
    echo_lines(
        [
            f"read {report.records} records from {len(report.files)} files in {report.seconds:.1f}s "
            f"({mb / max(report.seconds, 1e-3):.1f} MB/s): {report.imported} new versions, "
            f"{report.repeats} already stored or repeats, {report.skipped} skipped (requests, metadata, "
            f"redirects, errors), {len(refused)} refused; {report.targets_added} new targets (source warc)",
            *[f"refused: {r['file']} at offset {r['offset']}: {r['url']}: {r['reason']}" for r in refused],
        ]
    )


def _log_done(kind: str, files: list[str], size: int, seconds: float) -> None:
    import structlog

    from mirror.events import WARC_EXPORTED, WARC_IMPORTED

    name = WARC_EXPORTED if kind == "export" else WARC_IMPORTED
    structlog.get_logger("mirror.warc").info(name, files=len(files), bytes=size, seconds=seconds)
