"""The command line: parse, call one library function, render text or `--json`.

Exit codes, the app context and the one map from `MirrorError` classes to exit codes
are in `mirror.app`: 0 success; 1 verify found damage; 2 usage, config, unknown URL/version
or no store to read; 3 runtime failure; 130 interrupted.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from mirror import __version__, render
from mirror.app import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    AppContext,
    bind_address,
    catch_sigint,
    echo_lines,
    emit_json,
    errors_to_exit_codes,
    json_option,
    one_of,
    parse_time,
    pass_app,
    starting,
    url_argument,
    usage_line,
    version_options,
)
from mirror.cli_integrity import restore, verify
from mirror.cli_notify import notify
from mirror.domain import Status
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
    if report.crashed or report.lost_processes:
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
    wanted = url_argument(url)
    h = app.reader().history(wanted)
    if significant:
        from mirror.history import significant_only  # with the text tools: only for --significant

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


@cli.command()
@click.argument("url")
@version_options
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
@click.option("--bind", "bind", default="127.0.0.1:8070", show_default=True, metavar="HOST:PORT")
@click.option(
    "--public", is_flag=True, help="Allow a non-loopback --bind: anyone who reaches it reads the record."
)
@click.option(
    "--threads", default=4, show_default=True, type=click.IntRange(1, 64), help="Requests served at once."
)
@pass_app
def serve(app: AppContext, bind: str, public: bool, threads: int) -> None:
    """Serve a read-only web page of documents, versions and diffs, with Memento TimeMaps and TimeGates.

    Read-only beside the daemon: on SQLite its connections cannot write and take no lock.

    Example:
        mirror serve --bind 127.0.0.1:8070
    """
    import structlog

    from mirror.events import SERVE_STARTED
    from mirror.reader import Reader
    from mirror.web import serve as serve_web

    host, port = bind_address(bind, public=public)  # bad input first, then the store
    store = Reader.open(app.config().storage.database, read_only=True)
    app.adopt(store)
    log = structlog.get_logger("mirror.web")

    def listening(bound_host: str, bound_port: int) -> None:
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info(SERVE_STARTED, url=f"http://{shown}:{bound_port}/", public=public, database=store.database)

    try:
        serve_web(store, host, port, threads=threads, listening=listening)
    except OSError as exc:
        raise OSError(f"--bind {bind}: {exc.strerror or exc}") from None


for command in (restore, verify):
    cli.add_command(command)


cli.add_command(notify)  # `mirror notify test|send|status` (mirror/cli_notify.py)


def _add_format_commands() -> None:
    from mirror.cli_warc import export_group, import_group

    cli.add_command(export_group)
    cli.add_command(import_group)


_add_format_commands()


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
    if argv is None:  # the program itself, not a caller's own process
        starting()
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
