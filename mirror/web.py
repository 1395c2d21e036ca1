"""`mirror serve`: the record as a read-only web page, and Memento (RFC 7089) TimeMaps and TimeGates.

A Flask (WSGI) application served by waitress. Each view parses its request, calls the
store's read side (`mirror.reader.Reader`, short read-only transactions) and the pure
functions (`mirror.memento`, `mirror.diffview`, `mirror.history`), and renders a Jinja2
template (autoescaped: everything from archived pages is text here, never markup).

Pages (GET only; HEAD is GET without the body):
- `/` the targets, filtered by state and URL prefix, a page at a time;
- `/doc?url=U` a document: its versions and events, a page at a time;
- `/diff?url=U&from=N&to=M&view=side|inline` two versions compared;
- `/view/<14 digits>/<url>` one version: its record, its text, and its bytes in a sandboxed frame;
- `/<14 digits>/<url>` a memento: the version's exact bytes, with `Memento-Datetime` and `Link`;
- `/timemap/link/<url>` and `/timegate/<url>`.

Archived bytes are served so that they cannot act in our origin: `Content-Security-Policy:
sandbox` (an opaque origin: no scripts, no cookies, no storage, no forms, no navigation of
the top page), `X-Content-Type-Options: nosniff`, and no cookie is ever set. Our own pages
allow no script at all (`default-src 'none'`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from flask import Flask, Response, abort, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from mirror import diffview, memento
from mirror.browse import INDEX_STATES
from mirror.domain import Version
from mirror.errors import NotFound, StoreError, VersionNotFound
from mirror.history import compare_versions
from mirror.reader import Reader
from mirror.render import fmt_size, fmt_time
from mirror.text import to_text
from mirror.urls import normalized

PAGE = 50  # rows per page: targets, versions, events
RECENT = timedelta(days=7)  # the index's "changed recently"
PAGE_CSP = "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self'"
ARCHIVED_CSP = "sandbox"
_STAMPED = re.compile(r"/(?:view/)?(\d{14})/(.*)", re.S)


@dataclass(frozen=True, slots=True)
class Integrity:
    """The footer: the chain head and the last verify run."""

    head_seq: int
    head_hash: str
    verified_at: datetime | None
    verified_ok: bool | None
    problems: int


def _raw_uri() -> str:
    # waitress keeps the request line's URI as sent: the original URL's own query and
    # escapes stay as they were (PATH_INFO is decoded, and the query split off).
    return str(request.environ.get("REQUEST_URI") or request.full_path.rstrip("?"))


def _as_url(text: str) -> str:
    """Return the original URL written in a path: as sent, or percent-encoded whole."""
    if not re.match(r"(?i)https?:", text):
        text = unquote(text)
    text = re.sub(r"^(https?):/(?!/)", r"\1://", text)  # a client that merged the slashes
    return normalized(text)


def _original_url(prefix: str) -> str:
    """Return the original URL after `prefix` in the request's raw URI (its query included, as sent)."""
    raw = _raw_uri()
    return _as_url(raw[len(prefix) :] if raw.startswith(prefix) else raw.lstrip("/"))


def _stamped() -> tuple[datetime, str]:
    m = _STAMPED.match(_raw_uri())
    if m is None:
        abort(404)
    try:
        when = memento.parse_timestamp14(m[1])
    except memento.BadDatetime as exc:
        abort(400, str(exc))
    return when, _as_url(m[2])


def _int_arg(name: str) -> int | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        abort(400, f"{name}: expected a number, got {value[:40]!r}")
    return int(value)


def create_app(store: Reader, *, now: Callable[[], datetime] | None = None) -> Flask:
    """Return the web application over `store`'s read side. `now` (the clock) is for tests."""
    clock = now or (lambda: datetime.now(UTC))
    app = Flask(__name__)
    app.url_map.merge_slashes = False  # `http://` inside a path must stay as it is
    app.jinja_env.globals.update(fmt_time=fmt_time, fmt_size=fmt_size, stamp=memento.timestamp14)

    def integrity() -> Integrity:
        seq, digest = store.chain_head()
        run = store.last_verify()
        return Integrity(
            seq, digest, run.finished_at if run else None, run.ok if run else None, run.problems if run else 0
        )

    def page(template: str, **context: Any) -> str:
        return render_template(template, integrity=integrity(), **context)

    def memento_of(url: str, when: datetime) -> memento.Memento:
        return memento.Memento(request.host_url.rstrip("/") + memento.memento_path(when, url), when)

    def links(url: str) -> tuple[str, str]:
        base = request.host_url.rstrip("/")
        return f"{base}/timegate/{url}", f"{base}/timemap/link/{url}"

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.pop("Set-Cookie", None)
        return response

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound) -> tuple[str, int]:
        return page("error.html", status=404, message=str(exc)), 404

    @app.errorhandler(StoreError)
    def store_failed(exc: StoreError) -> tuple[str, int]:
        return render_template("error.html", integrity=None, status=503, message=str(exc)), 503

    @app.errorhandler(400)
    @app.errorhandler(404)
    @app.errorhandler(405)
    def http_error(exc: Any) -> tuple[str, int]:
        return render_template(
            "error.html", integrity=None, status=exc.code, message=exc.description
        ), exc.code

    @app.get("/", provide_automatic_options=False)
    def index() -> str:
        state = request.args.get("state") or None
        if state is not None and state not in INDEX_STATES:
            abort(400, f"state: expected one of {', '.join(INDEX_STATES)}, got {state[:40]!r}")
        prefix = request.args.get("prefix", "").strip()
        after = request.args.get("after", "")
        rows = store.targets_page(clock() - RECENT, state=state, prefix=prefix, after=after, limit=PAGE)
        return page("index.html", rows=rows, state=state, prefix=prefix, states=INDEX_STATES)

    @app.get("/doc", provide_automatic_options=False)
    def document() -> str:
        url = normalized(request.args.get("url", ""))
        target = store.target(url)
        versions = store.versions_page(target.url, _int_arg("before"), PAGE)
        events = store.events_page(target.url, _int_arg("events_before"), PAGE)
        return page("document.html", target=target, versions=versions, events=events)

    @app.get("/diff", provide_automatic_options=False)
    def diff() -> str:
        url = normalized(request.args.get("url", ""))
        layout = request.args.get("view", "side")
        if layout not in ("side", "inline"):
            abort(400, f"view: expected side or inline, got {layout[:40]!r}")
        d = compare_versions(store, url, request.args.get("from") or None, request.args.get("to") or None)
        rows = diffview.side_by_side(d.unified) if layout == "side" else diffview.inline(d.unified)
        return page("diff.html", d=d, rows=rows, layout=layout)

    @app.get("/view/<stamp>/<path:rest>", provide_automatic_options=False)
    def version_page(stamp: str, rest: str) -> Any:
        when, url = _stamped()
        version, exact = _version_at(store, url, when)
        if not exact:
            return redirect(f"/view/{memento.timestamp14(version.first_seen)}/{url}", 302)
        text = to_text(store.read(version.sha256), version.content_type)
        raw = memento.memento_path(version.first_seen, url)
        return page("version.html", url=url, version=version, text=text, raw=raw)

    @app.get("/timemap/link/<path:rest>", provide_automatic_options=False)
    def timemap(rest: str) -> Response:
        url = _original_url("/timemap/link/")
        versions = store.versions(url)
        if not versions:
            abort(404, f"{url}: no version stored yet")
        timegate, self_uri = links(url)
        body = memento.timemap(url, self_uri, timegate, [memento_of(url, v.first_seen) for v in versions])
        return Response(body, content_type=memento.LINK_FORMAT)

    @app.get("/timegate/<path:rest>", provide_automatic_options=False)
    def timegate(rest: str) -> BaseResponse:
        url = _original_url("/timegate/")
        asked = request.headers.get("Accept-Datetime")
        try:
            wanted = memento.parse_http_date(asked) if asked is not None else clock()
        except memento.BadDatetime as exc:
            response: BaseResponse = Response(
                f"Accept-Datetime: {exc}\n", 400, content_type="text/plain; charset=utf-8"
            )
            response.headers["Vary"] = "accept-datetime"
            return response
        candidates = store.neighbours(url, wanted)
        if not candidates:
            abort(404, f"{url}: no version stored yet")
        chosen = candidates[memento.choose([v.first_seen for v in candidates], wanted)]
        target = memento_of(url, chosen.first_seen)
        timegate_uri, timemap_uri = links(url)
        response = redirect(target.uri, 302)
        response.headers["Vary"] = "accept-datetime"
        response.headers["Link"] = memento.memento_links(url, timegate_uri, timemap_uri, target)
        return response

    @app.get("/<stamp>/<path:rest>", provide_automatic_options=False)
    def archived(stamp: str, rest: str) -> BaseResponse:
        if not stamp.isdigit() or len(stamp) != 14:
            abort(404)
        when, url = _stamped()
        version, exact = _version_at(store, url, when)
        if not exact:
            return redirect(memento.memento_path(version.first_seen, url), 302)
        body = store.read(version.sha256)
        response = Response(_chunks(body), content_type=version.content_type or "application/octet-stream")
        timegate_uri, timemap_uri = links(url)
        response.headers["Memento-Datetime"] = memento.http_date(version.first_seen)
        response.headers["Link"] = memento.memento_links(url, timegate_uri, timemap_uri)
        response.headers["Content-Security-Policy"] = ARCHIVED_CSP
        response.headers["Content-Length"] = str(len(body))
        return response

    return app


def _chunks(body: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def _version_at(store: Reader, url: str, when: datetime) -> tuple[Version, bool]:
    """Return the version of `url` whose memento time is `when` (exact), else the closest one (not exact).

    Raises:
        TargetNotFound, VersionNotFound: no such URL, or it has no version.
    """
    candidates = store.neighbours(url, when + timedelta(seconds=1) - timedelta(microseconds=1))
    if not candidates:
        raise VersionNotFound(url, memento.timestamp14(when), "no version stored yet")
    exact = [v for v in candidates if memento.same_second(v.first_seen, when)]
    if exact:
        return exact[0], True
    return candidates[memento.choose([v.first_seen for v in candidates], when)], False


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(
    store: Reader,
    host: str,
    port: int,
    *,
    threads: int = 4,
    listening: Callable[[str, int], object] | None = None,
) -> None:
    """Serve the web page on `host`:`port` with waitress until interrupted or terminated.

    `listening(host, port)` is called once the socket is bound (port 0 gets a free one).
    SIGTERM (systemd's stop) ends it with exit 0: it holds nothing that needs finishing.

    Raises:
        OSError: the address cannot be bound (in use, not ours).
    """
    import signal

    import waitress

    server = waitress.create_server(create_app(store), host=host, port=port, threads=threads, ident="mirror")
    signal.signal(signal.SIGTERM, _stop)
    if listening is not None:
        listening(str(server.effective_host), int(server.effective_port))
    server.run()
