"""`mirror notify`: send a sample, deliver now, see each destination. A skin over `mirror.notify`."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from mirror import render
from mirror.app import EXIT_RUNTIME, AppContext, echo_lines, emit_json, json_option, pass_app


@click.group()
def notify() -> None:
    """Notifications ([[notify]] in the config): send a sample, deliver now, see each destination.

    Example:
        mirror notify test
        mirror notify status --json
    """


@notify.command("test")
@click.argument("name", required=False)
@json_option
@pass_app
def notify_test(app: AppContext, name: str | None, as_json: bool) -> None:
    """Send a sample message to every destination (or NAME); print what each answered. Exit 3 if one failed.

    Example:
        mirror notify test maintainers
    """
    from mirror.notify_commands import send_test

    results = send_test(app.config(), name, datetime.now(UTC))
    if as_json:
        emit_json(render.notify_test_json(results))
    else:
        echo_lines(render.notify_test_text(results))
    if not all(answer.ok for _dest, _url, answer in results):
        raise SystemExit(EXIT_RUNTIME)


@notify.command("send")
@json_option
@pass_app
def notify_send(app: AppContext, as_json: bool) -> None:
    """Deliver what each destination has not had yet, now, once (without a daemon); exit 3 if one failed.

    Example:
        mirror notify send
    """
    from mirror.notify import deliver_now
    from mirror.notify_commands import status

    config = app.config()
    archive = app.archive()
    deliver_now(config, archive)
    rows = status(archive, config.notify)
    head = archive.chain_head()[0]
    if as_json:
        emit_json(render.notify_status_json(rows, head))
    else:
        echo_lines(render.notify_status_text(rows, head))
    if any(row.failures for row in rows if row.configured):
        raise SystemExit(EXIT_RUNTIME)


@notify.command("status")
@json_option
@pass_app
def notify_status(app: AppContext, as_json: bool) -> None:
    """Show each destination's last delivered event, its backlog and its last error.

    Example:
        mirror notify status --json
    """
    from mirror.notify_commands import status

    reader = app.reader()
    rows = status(reader, app.config().notify)
    head = reader.chain_head()[0]
    if as_json:
        emit_json(render.notify_status_json(rows, head))
    else:
        echo_lines(render.notify_status_text(rows, head))
