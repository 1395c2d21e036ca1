"""The command line: parse, call one library function, render text or `--json`.

Exit codes, the app context and the one map from `MirrorError` classes to exit codes
are in `mirror.app`: 0 success; 1 verify found damage; 2 usage, config, unknown URL/version
or no store to read; 3 runtime failure; 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from mirror import __version__, render
from mirror.app import (
    EXIT_DAMAGED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    AppContext,
    catch_sigint,
    echo_lines,
    emit_json,
    errors_to_exit_codes,
    one_of,
    parse_time,
    published_head,
    url_argument,
    usage_line,
)
from mirror.domain import Status
from mirror.errors import UsageError
from mirror.progress import progress_bar


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mirror")
@click.option(
    "--config",
    "config_option",
    metavar="FILE",
    help="Config file (else $MIRROR_CONFIG, else config/mirror.toml).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="Log lines on stderr: JSON unless stderr is a terminal.",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@click.pass_context
def cli(ctx: click.Context, config_option: str | None, log_format: str, log_level: str) -> None:
    """mirror: watch archive pages and keep a verifiable, versioned record of them."""
    from mirror.log import configure_logging

    configure_logging(json={"auto": None, "json": True, "console": False}[log_format], level=log_level)
    app = AppContext(config_option, log_format, log_level)
    ctx.obj = app
    ctx.call_on_close(app.close)


pass_app = click.make_pass_decorator(AppContext)
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")


@cli.command()
@pass_app
def run(app: AppContext) -> None:
    """Run the daemon in the foreground (systemd runs it): check targets when they are due.

    Example:
        mirror --config config/mirror.toml run
    """
    from mirror.service import run_service

    run_service(app.config(), app.config_option)


@cli.command()
@click.argument("urls", nargs=-1, metavar="[URL ...]")
@json_option
@pass_app
def check(app: AppContext, urls: tuple[str, ...], as_json: bool) -> None:
    """Check all targets once now, or only the given URLs; print what each check found.

    Example:
        mirror check
        mirror check https://www.prisoncensorship.info/archive/etext/wim/ --json
    """
    from mirror.errors import NotATarget, TargetNotFound
    from mirror.rounds import check_round

    wanted = [url_argument(u) for u in urls]  # a typo is a usage error before any store is made
    try:
        report = check_round(
            app.config(), app.archive(create=True), wanted, progress=sys.stderr.isatty() and not as_json
        )
    except TargetNotFound as exc:
        raise NotATarget(exc.url, app.config().path) from None
    if as_json:
        emit_json(render.check_json(report))
    else:
        echo_lines(render.check_text(report))
    if report.crashed:
        raise SystemExit(EXIT_RUNTIME)


@cli.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show counts by state, the last and next check, checks in the last hour and the store's size.

    Example:
        mirror status --json
    """
    report = app.reader().status(datetime.now(UTC))
    if as_json:
        emit_json(report)
        return
    echo_lines(render.status_text(report))


@cli.command()
@click.option(
    "--state",
    "state",
    type=click.Choice([*map(str, Status), "suspicious"]),  # every state, then `targets.SUSPICIOUS`
    help="Only targets in this state; `suspicious`: flagged changes, whatever the state.",
)
@json_option
@pass_app
def targets(app: AppContext, state: str | None, as_json: bool) -> None:
    """List targets with their state, last check and number of versions.

    Example:
        mirror targets --state gone
    """
    rows = app.reader().each_target(state)  # a page at a time: a million targets stream
    chunks = render.targets_json_chunks(rows) if as_json else render.targets_text_chunks(rows)
    out: list[str] = []
    for chunk in chunks:  # written a thousand at a time: `click.echo` flushes each call
        out.append(chunk)
        if len(out) >= 1000:
            click.echo("".join(out), nl=False)
            out.clear()
    click.echo("".join(out))


@cli.command()
@click.argument("url")
@click.option(
    "--significant",
    is_flag=True,
    help="Hide changes weighed as noise (significance 0); versions stay listed.",
)
@json_option
@pass_app
def history(app: AppContext, url: str, significant: bool, as_json: bool) -> None:
    """Show the versions (number, sha256, size, first and last seen, status) and events of a URL.

    Each change shows its significance (0 to 1), and what it consisted of when it was noise.

    Example:
        mirror history https://www.prisoncensorship.info/archive/etext/wim/ --significant
    """
    from mirror.history import significant_only

    wanted = url_argument(url)
    h = app.reader().history(wanted)
    if significant:
        h = significant_only(h)
    if as_json:
        emit_json(render.history_json(h))
    else:
        echo_lines(render.history_text(h))


@cli.command()
@click.argument("url")
@click.option(
    "--from", "from_spec", metavar="V", help="Version number, -N from the latest, or sha256 prefix."
)
@click.option("--to", "to_spec", metavar="V", help="Version number, -N from the latest, or sha256 prefix.")
@pass_app
def diff(app: AppContext, url: str, from_spec: str | None, to_spec: str | None) -> None:
    """Print the unified diff of the text of two versions (default: the last two).

    A first line weighs the change: `# significance S`, with what it consisted of when S is 0
    (the target's ignore rules in the config now apply).

    Example:
        mirror diff https://www.prisoncensorship.info/archive/etext/wim/ --from 1 --to -1
    """
    from mirror.history import version_diff

    wanted = url_argument(url)
    rules = app.config().ignore.rules_for(wanted)
    click.echo(version_diff(app.reader(), wanted, from_spec, to_spec, rules), nl=False)


def _version_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--at", "at", metavar="TIME", help="The version current at this ISO 8601 time (UTC if no zone)."
    )(f)
    return click.option(
        "--version", "spec", metavar="V", help="Version number, -1 latest, or sha256 prefix."
    )(f)


@cli.command()
@click.argument("url")
@_version_options
@pass_app
def show(app: AppContext, url: str, spec: str | None, at: str | None) -> None:
    """Write the stored bytes of a version to stdout, exactly as fetched (default: the latest).

    Example:
        mirror show https://www.prisoncensorship.info/archive/etext/wim/ --version 1 > page.html
    """
    wanted, spec, when = url_argument(url), one_of(spec, at), parse_time(at) if at else None  # input first
    store = app.reader()
    version = store.version(wanted, spec, when)
    sys.stdout.buffer.write(store.read(version.sha256))
    sys.stdout.buffer.flush()


@cli.command()
@click.argument("url", required=False)
@_version_options
@click.option(
    "--all", "whole_site", is_flag=True, help="Every document as it was at --at, under DIR/<host>/<path>."
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

    Files are written atomically and their SHA-256 checked on disk; --all also writes
    manifest-sha256.txt, restore-index.tsv and left-out.tsv (documents gone at that time).

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


@cli.command()
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
@json_option
@pass_app
def verify(app: AppContext, head_only: bool, published: str | None, as_json: bool) -> None:
    """Re-hash every blob, check every snapshot and recompute the event chain; exit 1 on damage.

    Example:
        mirror verify
        mirror verify --head
        mirror verify --published 1234:9f2c0e...
    """
    expected = published_head(published) if published else None  # bad input first, then the store
    store = app.reader()
    if head_only:
        seq, digest = store.chain_head()
        if as_json:
            emit_json({"head_seq": seq, "head_hash": digest})
        else:
            click.echo(f"{seq} {digest}")
        return
    bar = None
    if sys.stderr.isatty() and not as_json:
        bar = progress_bar(True, "verifying", "B", total=store.blob_bytes(), unit_scale=True)
    try:
        report = store.verify(progress=bar.update if bar is not None else None, published=expected)
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        emit_json(render.verify_json(report))
    else:
        echo_lines(render.verify_text(report))
    if not report.ok:
        raise SystemExit(EXIT_DAMAGED)


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Look at N blobs at most.")
@json_option
@pass_app
def gc(app: AppContext, limit: int | None, as_json: bool) -> None:
    """Re-pack blobs stored at a cheap level: per site, against similar content, compressed hard.

    Checks may run meanwhile; each blob is its own short transaction. `mirror verify` proves the result.

    Example:
        mirror gc
        mirror gc --limit 1000 --json
    """
    import structlog

    from mirror.events import GC_FINISHED

    store = app.archive()
    bar = progress_bar(sys.stderr.isatty() and not as_json, "re-packing", "blob")
    try:
        report = store.repack(
            limit=limit, on_blob=(lambda: bar.update(1)) if bar is not None else lambda: None
        )
    finally:
        if bar is not None:
            bar.close()
    structlog.get_logger("mirror.gc").info(GC_FINISHED, **render.gc_json(report))
    if as_json:
        emit_json(render.gc_json(report))
    else:
        echo_lines(render.gc_text(report))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `mirror` command."""
    catch_sigint()
    with errors_to_exit_codes():
        try:
            code = cli.main(args=argv, prog_name="mirror", standalone_mode=False)
        except click.exceptions.Abort:  # Ctrl-C (the checks under way were written) or EOF at a prompt
            click.echo("mirror: interrupted", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except click.ClickException as exc:  # usage errors: one line, exit 2 (click says 3 lines)
            click.echo(f"mirror: error: {usage_line(exc)}", err=True)
            raise SystemExit(EXIT_USAGE) from None
        if isinstance(code, int) and code != EXIT_OK:  # `--help` and `--version` return 0 here
            raise SystemExit(code)
