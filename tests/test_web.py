"""The web page over a real store (SQLite file and PostgreSQL), through the WSGI application.

The browser and the real `mirror serve` process are in tests/test_serve.py; here each
page is asked for as a client would, and what it answers is read as a user reads it.
"""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser

import pytest
from requests.utils import parse_header_links

from mirror.archive import Archive
from mirror.domain import VerifyRun
from mirror.memento import http_date, timestamp14
from mirror.reader import Reader
from mirror.web import create_app
from tests.fixtures_store import HOUR, T0, save_failure, save_version, sha, watch

DOC = "http://archive.example/etext/note.html"
OTHER = "http://archive.example/news/list.html"
LEGACY = "http://archive.example/etext/old.html"
V1 = b"<html><head><title>Note &amp; Co</title></head><body><p>first line</p><p>kept line</p></body></html>"
V2 = b"<html><body><p>second line</p><p>kept line</p></body></html>"
V3 = b"<html><body><p>third line</p><p>kept line</p><p>a new paragraph</p></body></html>"
# windows-1252: curly quotes and an en dash, announced by the header only.
OLD1 = b"<html><body><p>\x93Quoted\x94 \x96 first</p></body></html>"
OLD2 = b"<html><body><p>\x93Quoted\x94 \x96 second</p></body></html>"
NOW = T0 + 4 * HOUR


class Texts(HTMLParser):
    """The text of each element with an id, and the rows of each table by id."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("meta", "link", "br", "input", "img"):
            return
        ident = dict(attrs).get("id")
        self._open.append(ident)
        if ident:
            self.by_id.setdefault(ident, "")

    def handle_endtag(self, tag):
        if tag not in ("meta", "link", "br", "input", "img") and self._open:
            self._open.pop()

    def handle_data(self, data):
        for ident in self._open:
            if ident:
                self.by_id[ident] += data


def texts(html: bytes) -> dict[str, str]:
    parser = Texts()
    parser.feed(html.decode())
    return {k: " ".join(v.split()) for k, v in parser.by_id.items()}


def populate(archive: Archive) -> None:
    watch(archive, DOC, OTHER, LEGACY)
    save_version(archive, DOC, V1, T0)
    save_version(archive, DOC, V2, T0 + HOUR, details={"significance": 0.4})
    save_version(
        archive,
        DOC,
        V3,
        T0 + 3 * HOUR,
        details={"significance": 0.6, "suspicious": True, "reasons": ["shrank"]},
        suspicious="text shrank by 80%",
    )
    save_version(archive, OTHER, b"<html><body>list</body></html>", T0)
    save_failure(archive, OTHER, T0 + HOUR, status=404)
    cp = "text/html; charset=windows-1252"
    save_version(archive, LEGACY, OLD1, T0, content_type=cp)
    save_version(archive, LEGACY, OLD2, T0 + HOUR, content_type=cp)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the page tests that only read (the paged queries run on both backends below)."""
    archive = Archive.open(f"sqlite:///{tmp_path_factory.mktemp('web')}/mirror.db")
    populate(archive)
    yield archive
    archive.close()


@pytest.fixture(scope="module")
def client(store):
    return create_app(store, now=lambda: NOW).test_client()


def test_the_paged_reads_filter_and_page_on_every_backend(archive):
    populate(archive)
    since = NOW - timedelta(days=7)

    def urls(**kw):
        return [r.url for r in archive.targets_page(since, **kw).items]

    assert urls() == [DOC, LEGACY, OTHER]
    assert urls(state="gone") == [OTHER]
    assert urls(state="suspicious") == [DOC]
    assert urls(state="changed") == [DOC, LEGACY]
    assert archive.targets_page(NOW + timedelta(days=8), state="changed").items == []
    assert urls(prefix="http://archive.example/etext/") == [DOC, LEGACY]
    first = archive.targets_page(since, limit=2)
    assert first.next_key == LEGACY and urls(after=first.next_key) == [OTHER]
    row = archive.targets_page(since, limit=1).items[0]
    assert (row.versions, row.last_change_at, row.significance) == (3, T0 + 3 * HOUR, 0.6)
    versions = archive.versions_page(DOC, limit=2)
    assert [v.number for v in versions.items] == [3, 2] and versions.next_key == 2
    assert [v.number for v in archive.versions_page(DOC, before=2, limit=2).items] == [1]
    events = archive.events_page(DOC, limit=2)
    assert [e.details["version"] for e in events.items] == [2, 3]
    assert [v.number for v in archive.neighbours(DOC, T0 + 2 * HOUR)] == [2, 3]
    assert [v.number for v in archive.neighbours(DOC, T0 - HOUR)] == [1]
    assert archive.last_verify() is None


def get(client, path: str, **headers: str):
    return client.get(path, headers=headers)


def test_the_index_lists_targets_with_state_versions_and_last_change(client):
    page = get(client, "/")
    assert page.status_code == 200
    html = page.data.decode()
    rows = html.split('<tr class="target">')[1:]
    assert len(rows) == 3  # by URL: note.html, old.html, list.html
    assert DOC in rows[0] and ">ok<" in rows[0] and '<td class="versions num">3</td>' in rows[0]
    assert ">0.6<" in rows[0] and "suspicious" in rows[0] and "2025-03-01 15:00:00Z" in rows[0]
    assert OTHER in rows[2] and ">gone<" in rows[2]


@pytest.mark.parametrize(
    ("query", "urls"),
    [
        ("state=gone", [OTHER]),
        ("state=suspicious", [DOC]),
        ("state=changed", [LEGACY, DOC]),  # changes in the 7 days before "now"
        ("state=blocked", []),
        ("prefix=http://archive.example/etext/", [LEGACY, DOC]),
        ("prefix=http://archive.example/etext/&state=gone", []),
    ],
)
def test_the_index_filters_by_state_and_url_prefix(client, query, urls):
    html = get(client, f"/?{query}").data.decode()
    shown = [u for u in (LEGACY, DOC, OTHER) if f">{u}</a>" in html]
    assert sorted(shown) == sorted(urls)


def test_the_index_pages_by_url(archive):
    urls = [f"http://many.example/{i:03d}.html" for i in range(120)]
    watch(archive, *urls)
    client = create_app(archive).test_client()
    seen: list[str] = []
    path = "/"
    while path:
        html = get(client, path).data.decode()
        seen += [u for u in urls if f">{u}</a>" in html]
        nxt = html.split('id="next" href="', 1)
        path = nxt[1].split('"', 1)[0].replace("&amp;", "&") if len(nxt) == 2 else ""
    assert seen == urls  # 3 pages of 50, each URL once, in order


def test_an_unknown_state_is_a_400(client):
    page = get(client, "/?state=lost")
    assert page.status_code == 400
    assert "expected one of changed, gone, blocked, suspicious" in page.data.decode()


def test_a_document_page_shows_versions_hashes_events_and_the_suspicious_flag(client):
    html = get(client, f"/doc?url={DOC}").data
    t = texts(html)
    assert t["version-count"] == "3"
    assert "text shrank by 80%" in t["suspicious"]
    for body in (V1, V2, V3):
        assert sha(body) in t["versions"]
    assert "document.new" in t["events"] and "suspicious: shrank" in t["events"]
    text = html.decode()
    assert f"/view/{timestamp14(T0)}/{DOC}" in text
    assert "from=2&amp;to=3" in text and "from=1&amp;to=2" in text


def test_a_document_with_many_versions_is_paged(archive):
    watch(archive, DOC)
    for i in range(55):
        save_version(archive, DOC, f"<p>version {i}</p>".encode(), T0 + i * HOUR)
    client = create_app(archive).test_client()
    html = get(client, f"/doc?url={DOC}").data.decode()
    assert html.count('<tr class="version"') == 50 and 'id="v55"' in html and 'id="v5"' not in html
    older = get(client, f"/doc?url={DOC}&before=6").data.decode()
    assert older.count('<tr class="version"') == 5 and 'id="v1"' in older
    assert 'id="earlier-events"' in html


def test_an_unknown_document_is_a_404(client):
    page = get(client, "/doc?url=http://nowhere.example/")
    assert page.status_code == 404
    assert "not in the store" in page.data.decode()


def test_archived_titles_are_escaped_on_our_pages(archive):
    url = "http://archive.example/x.html"
    watch(archive, url)
    save_version(archive, url, b"<p>a</p>", T0)
    save_version(archive, url, b"<p>b <script>alert(1)</script> &lt;b&gt;</p>", T0 + HOUR)
    client = create_app(archive).test_client()
    html = get(client, f"/diff?url={url}").data.decode()
    assert "<script>alert(1)" not in html
    view = get(client, f"/view/{timestamp14(T0 + HOUR)}/{url}").data.decode()
    assert "<script>" not in view and "&lt;b&gt;" in view


@pytest.mark.parametrize("layout", ["side", "inline"])
def test_a_diff_shows_both_hashes_times_and_the_changed_lines(client, layout):
    html = get(client, f"/diff?url={DOC}&from=1&to=3&view={layout}").data
    t = texts(html)
    assert t["from-sha256"] == sha(V1) and t["to-sha256"] == sha(V3)
    assert t["from-version"] == "v1" and t["to-version"] == "v3"
    text = html.decode()
    assert "2025-03-01 12:00:00Z" in text and "2025-03-01 15:00:00Z" in text
    removed = text.split('class="removed"') + text.split('class="changed"')
    assert "first line" in t["diff"] and "third line" in t["diff"] and "a new paragraph" in t["diff"]
    assert len(removed) > 2


def test_a_diff_of_legacy_charset_versions_reads_right(client):
    t = texts(get(client, f"/diff?url={LEGACY}").data)
    assert "“Quoted” – first" in t["diff"] and "“Quoted” – second" in t["diff"]


def test_a_version_is_served_as_its_exact_bytes_sandboxed_with_memento_headers(client):
    page = get(client, f"/{timestamp14(T0 + HOUR)}/{DOC}")
    assert page.status_code == 200
    assert page.data == V2
    h = page.headers
    assert h["Memento-Datetime"] == http_date(T0 + HOUR) == "Sat, 01 Mar 2025 13:00:00 GMT"
    assert h["Content-Security-Policy"] == "sandbox"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in h
    rels = {link["rel"]: link["url"] for link in parse_header_links(h["Link"])}
    assert rels["original"] == DOC
    assert rels["timegate"].endswith(f"/timegate/{DOC}") and rels["timemap"].endswith(f"/timemap/link/{DOC}")


def test_a_time_between_versions_redirects_to_the_closest_memento(client):
    page = get(client, f"/{timestamp14(T0 + 50 * timedelta(minutes=1))}/{DOC}")
    assert page.status_code == 302
    assert page.headers["Location"].endswith(f"/{timestamp14(T0 + HOUR)}/{DOC}")


def test_the_version_page_shows_its_text_beside_the_sandboxed_bytes(client):
    html = get(client, f"/view/{timestamp14(T0)}/{LEGACY}").data.decode()
    assert "“Quoted” – first" in texts(html.encode())["text"]
    assert f'<iframe id="archived" sandbox="" src="/{timestamp14(T0)}/{LEGACY}"' in html


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("Fri, 01 Jan 2021 00:00:00 GMT", T0),  # before the first
        ("Sat, 01 Mar 2025 13:20:00 GMT", T0 + HOUR),  # between the 2nd and 3rd, nearer the 2nd
        ("Sat, 01 Mar 2025 14:40:00 GMT", T0 + 3 * HOUR),  # nearer the 3rd
        ("Mon, 01 Jan 2културa", None),
        ("Wed, 01 Jan 2031 00:00:00 GMT", T0 + 3 * HOUR),  # after the last
    ],
)
def test_the_timegate_redirects_to_the_closest_version(client, accept, chosen):
    page = get(client, f"/timegate/{DOC}", **{"Accept-Datetime": accept.encode("utf-8").decode("latin-1")})
    assert page.headers["Vary"] == "accept-datetime"
    if chosen is None:
        assert page.status_code == 400
        assert "Accept-Datetime" in page.data.decode()
        return
    assert page.status_code == 302
    assert page.headers["Location"].endswith(f"/{timestamp14(chosen)}/{DOC}")
    rels = {link["rel"] for link in parse_header_links(page.headers["Link"])}
    assert rels == {"original", "timegate", "timemap", "memento"}


def test_the_timegate_without_accept_datetime_gives_the_latest_and_404s_an_unknown_url(client):
    assert (
        get(client, f"/timegate/{DOC}").headers["Location"].endswith(f"/{timestamp14(T0 + 3 * HOUR)}/{DOC}")
    )
    assert get(client, "/timegate/http://nowhere.example/").status_code == 404
    assert get(client, "/timemap/link/http://nowhere.example/").status_code == 404


def test_the_timemap_lists_every_version(client):
    page = get(client, f"/timemap/link/{DOC}")
    assert page.headers["Content-Type"] == "application/link-format"
    links = parse_header_links(page.data.decode().replace("\n", ""))
    mementos = [link for link in links if "memento" in link["rel"]]
    assert [m["datetime"] for m in mementos] == [http_date(T0 + h * HOUR) for h in (0, 1, 3)]


def test_only_get_is_answered(client):
    assert client.post("/").status_code == 405
    assert client.delete(f"/timegate/{DOC}").status_code == 405
    assert client.options("/").status_code == 405


def test_the_footer_shows_the_chain_head_and_the_last_verify(archive):
    populate(archive)
    client = create_app(archive).test_client()
    t = texts(get(client, "/").data)
    seq, digest = archive.chain_head()
    assert t["head-seq"] == str(seq) and t["head-hash"] == digest
    assert t["verify-result"] == "never verified"
    archive.record_verify(VerifyRun(T0 + 5 * HOUR, False, 2, seq, digest), T0 + 4 * HOUR)
    t = texts(get(client, "/").data)
    assert t["verify-result"] == "2 problem(s) found"
    assert "2025-03-01 17:00:00Z" in t["integrity"]


def test_a_read_only_store_cannot_write(archive, database_url):
    reader = Reader.open(database_url, read_only=True)
    try:
        assert reader.targets_page(T0, limit=5).items == []
        with pytest.raises(Exception, match=r"(?i)read.only|readonly|query_only|attempt to write"):
            reader._read(lambda conn: conn.exec_driver_sql("CREATE TABLE x (a int)"))
    finally:
        reader.close()
