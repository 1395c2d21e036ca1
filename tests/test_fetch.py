"""fetch() against a real loopback archive site: what a user of `mirror` would check after one fetch."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import time
import tracemalloc
import zlib
from datetime import UTC, datetime

import brotli
import pytest
import requests
import requests.adapters

from mirror import contentcoding
from mirror.domain import Conditional, FetchFailure, FetchLimits
from mirror.fetch import fetch, make_session
from tests.fixtures_http import GZIP_PAGE, MAC_ROMAN_PAGE, PDF_BYTES, WINDOWS_1252_PAGE, etag_of, response

MB = 1024 * 1024
FAST = FetchLimits(timeout=5.0, connect_timeout=2.0, retries=0, backoff=0.01, user_agent="mirror-test/1")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kind(result) -> str | None:
    """Return the failure kind of a result, None when it has none."""
    return result.error.kind if result.error else None


def message(result) -> str:
    return result.error.message if result.error else ""


def limits(**changes) -> FetchLimits:
    settings = {name: getattr(FAST, name) for name in FetchLimits.__slots__}
    return FetchLimits(**{**settings, **changes})


@pytest.fixture
def session():
    s = make_session(FAST)
    yield s
    s.close()


def raw_get(site, path: str) -> tuple[dict[str, str], bytes]:
    """Return the headers and undecoded body of a GET by the standard library's client."""
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Sleeps(list[float]):
    """A sleep that records how long it was asked to wait, and does not wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_page_fetched_has_its_sha256_and_etag(site, session):
    body = b"<html><body><p>Note from the chair, 22 September 2007.</p></body></html>"
    site.put("/etext/note.html", body)

    result = fetch(site.url("/etext/note.html"), session, FAST)

    assert result.error is None
    assert (result.status, result.body, result.body_sha256) == (200, body, sha(body))
    assert result.headers["etag"] == etag_of(body)
    assert result.content_type == "text/html; charset=utf-8"
    assert result.final_url == result.url == site.url("/etext/note.html")
    assert result.redirects == ()


def test_second_fetch_with_the_etag_gets_304_and_sent_if_none_match(site, session):
    site.put("/etext/stable.html", "<p>Unchanged for years.</p>")
    url = site.url("/etext/stable.html")
    first = fetch(url, session, FAST)

    second = fetch(url, session, FAST, Conditional(etag=first.headers["etag"]))

    assert (second.status, second.not_modified, second.body, second.error) == (304, True, None, None)
    assert site.requests[-1].headers["if-none-match"] == first.headers["etag"]
    assert "if-none-match" not in site.requests[0].headers


def test_one_connection_serves_pages_304s_redirects_and_errors_one_after_the_other(site, session):
    # Each new connection costs a handshake on both sides: a round of thousands of checks
    # must keep its connections open. A page, its 304, a 404 page, a redirect: all on one.
    site.put("/etext/kept.html", "<p>Read to the end.</p>")
    site.put("/etext/target.html", "<p>Where the redirect points.</p>")
    site.redirect("/etext/moved.html", "/etext/target.html")
    url = site.url("/etext/kept.html")
    first = fetch(url, session, FAST)
    for _ in range(3):
        assert fetch(url, session, FAST, Conditional(etag=first.headers["etag"])).status == 304
        assert fetch(site.url("/etext/missing.html"), session, FAST).status == 404
        assert (
            fetch(site.url("/etext/moved.html"), session, FAST).body == b"<p>Where the redirect points.</p>"
        )

    assert len(site.requests) == 13
    assert site.connections() == 1


def test_a_body_cut_off_by_the_size_cap_does_not_leave_its_connection_for_the_next_request(site, session):
    site.put("/etext/after.html", "<p>Asked after a refused body.</p>")
    assert kind(fetch(site.url("/big?bytes=3000000&chunked=1"), session, limits(max_bytes=MB))) == "too_large"

    after = fetch(site.url("/etext/after.html"), session, FAST)

    assert (after.status, after.body) == (200, b"<p>Asked after a refused body.</p>")
    assert site.connections() == 2  # the unread rest of the big body went with its connection


def test_second_fetch_with_last_modified_gets_304_and_sent_if_modified_since(site, session):
    site.put("/etext/dated.html", "<p>Dated page.</p>")
    url = site.url("/etext/dated.html")
    first = fetch(url, session, FAST)

    second = fetch(url, session, FAST, Conditional(last_modified=first.headers["last-modified"]))

    assert (second.status, second.body, second.error) == (304, None, None)
    assert site.requests[-1].headers["if-modified-since"] == first.headers["last-modified"]


def test_changed_page_comes_back_whole_despite_the_old_validators(site, session):
    site.put("/etext/essay.html", "<p>First draft.</p>")
    url = site.url("/etext/essay.html")
    first = fetch(url, session, FAST)
    site.put("/etext/essay.html", "<p>Second draft.</p>")

    validators = Conditional(first.headers["etag"], first.headers["last-modified"])
    second = fetch(url, session, FAST, validators)

    assert (second.status, second.body) == (200, b"<p>Second draft.</p>")
    assert second.headers["etag"] != first.headers["etag"]


@pytest.mark.parametrize(("status", "message"), [(404, "HTTP 404 Not Found"), (410, "HTTP 410 Gone")])
def test_missing_page_is_a_result_with_its_status_and_an_http_failure(site, session, status, message):
    site.put("/etext/censored.html", "<p>Soon gone.</p>")
    if status == 404:
        site.delete("/etext/censored.html")
    else:
        site.gone("/etext/censored.html")

    result = fetch(site.url("/etext/censored.html"), session, limits(retries=2))

    assert (result.status, result.body, result.body_sha256) == (status, None, None)
    assert result.error == FetchFailure("http", message)
    assert site.hits("/etext/censored.html") == 1  # a 4xx is an answer, not retried


def test_redirect_chain_is_recorded_with_its_final_url(site, session):
    result = fetch(site.url("/redirect-chain/3"), session, FAST)

    assert (result.status, result.error) == (200, None)
    assert result.redirects == tuple(site.url(f"/redirect-chain/{n}") for n in (3, 2, 1))
    assert result.final_url == site.url("/redirect-chain/0")
    assert result.headers["location"] == "/redirect-chain/0"  # where the last redirect pointed


def test_moved_page_is_followed_to_another_path_by_absolute_location(site, session):
    site.put("/etext/new-place.html", "<p>Same words, new address.</p>")
    site.redirect("/etext/old-place.html", site.url("/etext/new-place.html"), status=308)

    result = fetch(site.url("/etext/old-place.html"), session, FAST)

    assert result.body == b"<p>Same words, new address.</p>"
    assert result.redirects == (site.url("/etext/old-place.html"),)
    assert result.final_url == site.url("/etext/new-place.html")


def test_validators_go_only_to_the_hop_that_gave_them_so_a_moved_page_can_answer_304(site, session):
    site.put("/etext/new-place.html", "<p>Moved once, long ago.</p>")
    site.redirect("/etext/old-place.html", "/etext/new-place.html")
    first = fetch(site.url("/etext/old-place.html"), session, FAST)
    validators = Conditional(etag=first.headers["etag"], url=first.final_url)

    second = fetch(site.url("/etext/old-place.html"), session, FAST, validators)
    asked = Conditional(etag=first.headers["etag"])  # no url: the URL asked gave them
    elsewhere = fetch(site.url("/etext/old-place.html"), session, FAST, asked)

    assert (second.status, second.final_url) == (304, site.url("/etext/new-place.html"))
    assert (elsewhere.status, elsewhere.body) == (200, b"<p>Moved once, long ago.</p>")
    sent = [(r.path, r.headers.get("if-none-match")) for r in site.requests[-4:]]
    assert sent == [
        ("/etext/old-place.html", None),
        ("/etext/new-place.html", first.headers["etag"]),
        ("/etext/old-place.html", first.headers["etag"]),  # validators of the URL asked: to it alone
        ("/etext/new-place.html", None),
    ]


def test_redirect_loop_fails_as_too_many_redirects(site, session):
    result = fetch(site.url("/loop"), session, FAST)

    assert kind(result) == "too_many_redirects"
    assert "loop" in message(result)
    assert (result.status, result.body) == (302, None)
    assert site.hits("/loop") == 1


def test_chain_longer_than_max_redirects_fails(site, session):
    result = fetch(site.url("/redirect-chain/5"), session, limits(max_redirects=3))

    assert kind(result) == "too_many_redirects"
    assert len(result.redirects) == 4
    assert site.hits("/redirect-chain/1") == 0


def test_redirect_to_a_non_http_url_is_bad_content(site, session):
    site.redirect("/etext/ftp.html", "ftp://ftp.example.org/etext/ftp.html", status=302)

    result = fetch(site.url("/etext/ftp.html"), session, FAST)

    assert kind(result) == "bad_content"
    assert "ftp://" in message(result)


@pytest.mark.parametrize("route", ["/slow?seconds=4", "/drip?seconds=4"])
def test_slow_or_dripping_server_times_out_at_the_deadline(site, session, route):
    result = fetch(site.url(route), session, limits(timeout=1.0, retries=2))

    assert kind(result) == "timeout"
    assert result.body is None
    assert 0.9 <= result.elapsed < 2.0  # the drip must not hold a worker until it stops
    assert site.hits(route) == 1  # a passed deadline is not retried


def test_deadline_covers_the_whole_redirect_chain(site, session):
    site.redirect("/etext/flaky.html", "/slow?seconds=4", status=302)

    result = fetch(site.url("/etext/flaky.html"), session, limits(timeout=1.0))

    assert kind(result) == "timeout"
    assert result.final_url == site.url("/slow?seconds=4")
    assert result.elapsed < 2.0


def test_connection_refused_fails_as_connect_after_the_retries(refused_url, session):
    sleeps = Sleeps()

    result = fetch(refused_url, session, limits(retries=2, backoff=0.25), sleep=sleeps)

    assert kind(result) == "connect"
    assert "refused" in message(result).lower()
    assert (result.status, result.body) == (None, None)
    assert sleeps == [0.25, 0.5]  # two retries, doubling back-off


def test_server_that_hangs_up_is_retried_then_fails_as_connect(site, session):
    sleeps = Sleeps()

    result = fetch(site.url("/hang-up"), session, limits(retries=2), sleep=sleeps)

    assert kind(result) == "connect"
    assert site.hits("/hang-up") == 3
    assert len(sleeps) == 2


def test_unresolvable_host_fails_as_dns(session):
    # `.invalid` never resolves (RFC 6761); the local resolver answers at once here.
    result = fetch("http://archive.no-such-host.invalid/etext/", session, limits(retries=2))

    assert kind(result) == "dns"
    assert result.elapsed < 5.0


def test_body_declared_over_max_bytes_is_refused_before_reading(site, session):
    result = fetch(site.url("/big?bytes=200000000"), session, limits(max_bytes=MB))

    assert kind(result) == "too_large"
    assert "Content-Length" in message(result)
    assert (result.status, result.body) == (200, None)
    assert result.elapsed < 1.0


def test_streamed_body_over_max_bytes_fails_fast_without_holding_it_in_memory(site, session):
    tracemalloc.start()
    try:
        result = fetch(site.url("/big?bytes=200000000&chunked=1"), session, limits(max_bytes=MB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert kind(result) == "too_large"
    assert result.elapsed < 2.0
    assert peak < 16 * MB  # the 200 MB body was never held


def test_gzip_bomb_fails_as_too_large_without_inflating_in_memory(site, session):
    tracemalloc.start()
    try:
        result = fetch(site.url("/gzip-bomb"), session, limits(max_bytes=MB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert kind(result) == "too_large"
    assert peak < 16 * MB  # it inflates to 64 MB


def test_gzip_page_comes_back_decoded_and_hashed_decoded(site, session):
    result = fetch(site.url("/gzip"), session, FAST)

    assert result.error is None
    assert result.body == GZIP_PAGE
    assert result.body_sha256 == sha(GZIP_PAGE)
    assert result.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize("route", ["/bad-gzip", "/truncated"])
def test_broken_gzip_and_truncated_bodies_are_bad_content(site, session, route):
    result = fetch(site.url(route), session, limits(retries=2))

    assert kind(result) == "bad_content"
    assert (result.status, result.body) == (200, None)
    assert site.hits(route) == 1


@pytest.mark.parametrize(
    ("route", "served"),
    [("/pdf", PDF_BYTES), ("/windows-1252", WINDOWS_1252_PAGE), ("/mac-roman", MAC_ROMAN_PAGE)],
)
def test_bodies_come_back_as_the_exact_bytes_served(site, session, route, served):
    assert raw_get(site, route)[1] == served  # another client's view of the same bytes

    result = fetch(site.url(route), session, FAST)

    assert result.body == served
    assert result.body_sha256 == sha(served)


def test_retry_after_is_honoured_and_the_second_attempt_succeeds(site, session):
    result = fetch(site.url("/retry-after"), session, limits(retries=2, backoff=0.01))

    assert (result.status, result.error) == (200, None)
    assert site.hits("/retry-after") == 2
    assert 0.9 <= result.elapsed < 2.5  # waited Retry-After: 1, not the 0.01 s back-off


def test_retry_after_beyond_the_deadline_is_not_waited_for(site, session):
    sleeps = Sleeps()

    result = fetch(site.url("/retry-after"), session, limits(timeout=0.5, retries=2), sleep=sleeps)

    assert (result.status, result.error) == (503, FetchFailure("http", "HTTP 503 Service Unavailable"))
    assert result.headers["retry-after"] == "1"
    assert sleeps == []


def test_server_error_twice_then_recovered_is_retried_to_success(site, session):
    site.put("/etext/flaky.html", "<p>Hosted on a tired machine.</p>")
    site.fail("/etext/flaky.html", status=500, times=2)
    sleeps = Sleeps()

    result = fetch(site.url("/etext/flaky.html"), session, limits(retries=2, backoff=0.5), sleep=sleeps)

    assert (result.status, result.error, result.body) == (200, None, b"<p>Hosted on a tired machine.</p>")
    assert site.hits("/etext/flaky.html") == 3
    assert sleeps == [0.5, 1.0]


def test_server_error_that_persists_is_reported_after_the_retries(site, session):
    site.fail("/etext/down.html", status=502)

    result = fetch(site.url("/etext/down.html"), session, limits(retries=2), sleep=Sleeps())

    assert (result.status, result.error) == (502, FetchFailure("http", "HTTP 502 Bad Gateway"))
    assert site.hits("/etext/down.html") == 3


def test_back_off_never_sleeps_past_the_deadline(site, session):
    site.fail("/etext/down.html", status=503)
    sleeps = Sleeps()

    slow_backoff = limits(timeout=1.0, retries=3, backoff=5.0)

    result = fetch(site.url("/etext/down.html"), session, slow_backoff, sleep=sleeps)

    assert result.status == 503
    assert sleeps == []


def test_requests_carry_our_user_agent(site):
    with make_session(limits(user_agent="mirror/0.1 (+https://example.org/mirror)")) as own:
        fetch(site.url("/status/204"), own, FAST)

    assert site.requests[-1].headers["user-agent"] == "mirror/0.1 (+https://example.org/mirror)"


def test_a_request_carries_the_session_headers_and_the_conditional_ones(site, session):
    site.put("/h/page.html", "<p>Page.</p>")

    fetch(site.url("/h/page.html"), session, FAST, Conditional(etag='"abc"'))

    sent = site.requests[-1].headers
    assert sent["user-agent"] == "mirror-test/1"
    assert sent["accept"] == "*/*"
    assert sent["connection"] == "keep-alive"
    assert sent["if-none-match"] == '"abc"'
    assert "cookie" not in sent and "authorization" not in sent


def test_cookies_a_host_sets_are_sent_back_to_it(site, session):
    site.put("/c/first.html", "<p>First.</p>", headers={"Set-Cookie": "visit=1; Path=/"})
    site.put("/c/second.html", "<p>Second.</p>")

    fetch(site.url("/c/first.html"), session, FAST)
    fetch(site.url("/c/second.html"), session, FAST)

    assert "cookie" not in site.requests[-2].headers
    assert site.requests[-1].headers["cookie"] == "visit=1"


def test_credentials_in_the_url_go_as_basic_auth(site, session):
    site.put("/private/page.html", "<p>Members only.</p>")
    url = site.url("/private/page.html").replace("http://", "http://reader:s%40me@")

    result = fetch(url, session, FAST)

    assert result.status == 200
    assert site.requests[-1].headers["authorization"] == "Basic " + base64.b64encode(b"reader:s@me").decode()


def test_only_selected_headers_are_kept(site, session):
    site.put(
        "/etext/de.html",
        "<p>Deutsch.</p>",
        headers={"Content-Language": "de", "Set-Cookie": "session=secret", "X-Powered-By": "PHP/4"},
    )

    result = fetch(site.url("/etext/de.html"), session, FAST)

    assert result.headers["content-language"] == "de"
    assert set(result.headers) <= {
        "content-type", "etag", "last-modified", "content-length", "content-encoding", "content-language",
        "content-disposition", "date", "server", "retry-after", "location",
    }  # fmt: skip
    assert "set-cookie" not in result.headers


def test_start_time_comes_from_the_given_clock(site, session):
    at = datetime(2007, 9, 22, 12, 0, tzinfo=UTC)

    result = fetch(site.url("/status/200"), session, FAST, clock=lambda: at)

    assert result.started_at == at
    assert 0 < result.elapsed < 1


def test_many_fetches_reuse_one_session_without_leaking(site, session):
    # filterwarnings=error turns an unclosed socket (ResourceWarning) into a failure.
    site.put("/etext/a.html", "<p>A</p>")
    started = time.monotonic()
    paths = ["/etext/a.html", "/status/404", "/loop"] * 5
    statuses = [fetch(site.url(p), session, FAST).status for p in paths]

    assert statuses == [200, 404, 302] * 5
    assert time.monotonic() - started < 3


def test_a_bug_in_the_caller_is_not_reported_as_a_network_failure(site):
    with pytest.raises(AttributeError):
        fetch(site.url("/status/200"), None, FAST)  # type: ignore[arg-type]


def test_gzip_fixture_is_really_gzip_on_the_wire(site):
    headers, body = raw_get(site, "/gzip")

    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == GZIP_PAGE


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_ca_bundle_reaches_the_connection_pool_as_requests_would_pass_it(tmp_path, monkeypatch, kind):
    bundle = tmp_path / "ca"
    if kind == "folder":
        bundle.mkdir()
    else:
        bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    request = requests.Request("GET", "https://archive.example.org/etext/").prepare()
    with make_session(FAST) as session:
        ours = session.get_adapter(request.url).build_connection_pool_key_attributes(request, session.verify)

    stock = requests.adapters.HTTPAdapter().build_connection_pool_key_attributes(request, str(bundle))
    assert ours == stock
    assert ours[1]["ca_cert_dir" if kind == "folder" else "ca_certs"] == str(bundle)


def test_a_proxy_set_in_the_environment_is_used_and_none_set_costs_no_lookups(site, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    with make_session(FAST) as direct:
        assert direct.trust_env is False  # requests would read the environment on every request
        assert direct.verify == "/etc/ssl/certs/ca-certificates.crt"  # still honoured, read once

    monkeypatch.setenv("http_proxy", site.url("/"))
    site.requests.clear()
    with make_session(FAST) as proxied:
        result = fetch("http://archive.invalid/etext/via-proxy.html", proxied, FAST)
    assert result.error is None or result.error.kind != "dns"  # the proxy, not DNS, answered
    assert [r.path for r in site.requests] == ["http://archive.invalid/etext/via-proxy.html"]


# -- the deadline covers every byte, the status line and headers included (issue 11, point 1) --


def _slow_header_lines(sock):
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    for n in range(30):
        time.sleep(1.0)
        sock.sendall(b"X-Slow-%d: one line a second\r\n" % n)


def _one_byte_at_a_time(sock):
    for byte in response(headers=[(b"Content-Type", b"text/html")], body=b"<p>" + b"x" * 200 + b"</p>"):
        sock.sendall(bytes([byte]))
        time.sleep(0.1)


def _two_hundred_header_lines(sock):
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    for n in range(200):
        time.sleep(0.05)
        sock.sendall(b"X-Line-%d: slowly\r\n" % n)
    sock.sendall(b"Content-Length: 2\r\n\r\nok")


@pytest.mark.parametrize("script", [_slow_header_lines, _one_byte_at_a_time, _two_hundred_header_lines])
def test_a_server_dripping_its_status_line_and_headers_times_out_at_the_deadline(raw_server, session, script):
    server = raw_server(script)

    result = fetch(server.url(), session, limits(timeout=2.0, retries=2))

    assert kind(result) == "timeout"
    assert result.body is None
    assert 1.9 <= result.elapsed < 2.6  # not when the server stops: the deadline is for every byte
    assert f"after {result.elapsed:.1f}s" in message(result)  # the real time it held the worker
    assert len(server.requests) == 1  # a passed deadline is not retried


# -- a content encoding we cannot decode to its end is bad_content, never a body (point 2) --

PAGE = b"<html><body><p>" + b"The minutes of the meeting, in full. " * 400 + b"</p></body></html>"


def _gzip_cut_in_half() -> bytes:
    whole = gzip.compress(PAGE)
    return whole[: len(whole) // 2]


def _deflate_cut_in_half() -> bytes:
    whole = zlib.compress(PAGE)
    return whole[: len(whole) // 2]


BROKEN_ENCODINGS = {
    "gzip cut in half": ("gzip", _gzip_cut_in_half()),
    "gzip without its trailer": ("gzip", gzip.compress(PAGE)[:-8]),
    "garbage after the gzip member": ("gzip", gzip.compress(PAGE) + b"<html>garbage</html>"),
    "deflate cut in half": ("deflate", _deflate_cut_in_half()),
    "br over bytes that are not brotli": ("br", PAGE),
    "br over nothing": ("br", b""),
    "br cut in half": ("br", brotli.compress(PAGE)[: len(brotli.compress(PAGE)) // 2]),
    "garbage after the br stream": ("br", brotli.compress(PAGE) + b"garbage"),
    "garbage after the deflate stream": ("deflate", zlib.compress(PAGE) + b"garbage"),
    "an encoding we do not know": ("x-squeeze", PAGE),
    "compress (LZW), which we cannot decode": ("compress", PAGE),
    "gzip twice, one of them broken": ("gzip, gzip", gzip.compress(_gzip_cut_in_half())),
}


@pytest.mark.parametrize(("encoding", "served"), BROKEN_ENCODINGS.values(), ids=BROKEN_ENCODINGS.keys())
def test_a_body_whose_content_encoding_does_not_decode_to_its_end_is_bad_content(
    site, session, encoding, served
):
    site.put("/etext/minutes.html", served, headers={"Content-Encoding": encoding})

    result = fetch(site.url("/etext/minutes.html"), session, limits(retries=2))

    assert kind(result) == "bad_content"
    assert encoding.split(",")[0] in message(result)
    assert (result.status, result.body, result.body_sha256) == (200, None, None)
    assert site.hits("/etext/minutes.html") == 1


GOOD_ENCODINGS = {
    "gzip": ("gzip", gzip.compress(PAGE)),
    "x-gzip": ("x-gzip", gzip.compress(PAGE)),
    "two gzip members": ("gzip", gzip.compress(PAGE[:1000]) + gzip.compress(PAGE[1000:])),
    "deflate (zlib)": ("deflate", zlib.compress(PAGE)),
    "deflate (raw, as old servers send it)": ("deflate", zlib.compress(PAGE, wbits=-15)),
    "br": ("br", brotli.compress(PAGE)),
    "gzip over deflate": ("deflate, gzip", gzip.compress(zlib.compress(PAGE))),
    "identity": ("identity", PAGE),
    "upper case": ("GZIP", gzip.compress(PAGE)),
}


@pytest.mark.parametrize(("encoding", "served"), GOOD_ENCODINGS.values(), ids=GOOD_ENCODINGS.keys())
def test_a_body_in_an_encoding_we_can_decode_comes_back_decoded(site, session, encoding, served):
    site.put("/etext/minutes.html", served, headers={"Content-Encoding": encoding})

    result = fetch(site.url("/etext/minutes.html"), session, FAST)

    assert result.error is None
    assert (result.body, result.body_sha256) == (PAGE, sha(PAGE))


def test_we_ask_only_for_the_encodings_we_can_decode(site, session):
    fetch(site.url("/status/200"), session, FAST)

    asked = {e.strip() for e in site.requests[-1].headers["accept-encoding"].split(",")}
    assert asked == {"gzip", "deflate", "br"}  # not zstd: no decoder for it here


# -- a 304 answers a conditional request only (point 4) --


def _always_304(sock):
    sock.sendall(response(b"HTTP/1.1 304 Not Modified", [(b"ETag", b'"v1"')], length=False))


def test_a_304_to_a_request_without_validators_is_bad_content(raw_server, session):
    server = raw_server(_always_304)

    result = fetch(server.url(), session, limits(retries=2))

    assert kind(result) == "bad_content"
    assert "304" in message(result) and "validators" in message(result)
    assert (result.status, result.body, result.not_modified) == (304, None, True)
    assert len(server.requests) == 1


def test_a_304_to_a_request_with_validators_is_not_modified(raw_server, session):
    server = raw_server(_always_304)

    result = fetch(server.url(), session, FAST, Conditional(etag='"v1"'))

    assert (result.status, result.error) == (304, None)
    assert b'if-none-match: "v1"' in server.requests[0].lower()


# -- every value a server sends is hostile input: a documented kind, never a crash (point 5) --

OK_BODY = b"<html><body><p>Fine.</p></body></html>"


def redirect_to(location: bytes) -> bytes:
    return response(b"HTTP/1.1 302 Found", [(b"Location", location)])


HOSTILE_ANSWERS = {
    "Location with a broken IPv6 literal": (redirect_to(b"http://[::1"), "bad_content", "redirect"),
    "Location with a port out of range": (
        redirect_to(b"http://example.org:99999/"),
        "bad_content",
        "redirect",
    ),
    "Location in Latin-1, not UTF-8": (redirect_to(b"/caf\xe9.html"), "too_many_redirects", "/café.html"),
    "Location with a host IDNA refuses": (
        redirect_to("http://a\u200bb.example/".encode()),
        "bad_content",
        "IDNA",
    ),
    "Location to ftp": (redirect_to(b"ftp://example.org/"), "bad_content", "ftp://"),
    "Location with a NUL byte": (redirect_to(b"/etext/a\x00b.html"), "bad_content", "control character"),
    "Location with a password": (
        redirect_to(b"http://admin:s3cretPW@example.org/"),
        "bad_content",
        "admin:***@",
    ),
    "Retry-After in superscript digits": (
        response(b"HTTP/1.1 503 Busy", [(b"Retry-After", "²".encode("latin-1"))]),
        "http",
        "503",
    ),
    "Retry-After of 400 digits": (
        response(b"HTTP/1.1 503 Busy", [(b"Retry-After", b"9" * 400)]),
        "http",
        "503",
    ),
    "Retry-After negative": (response(b"HTTP/1.1 503 Busy", [(b"Retry-After", b"-5")]), "http", "503"),
    "Retry-After in the year 99999": (
        response(b"HTTP/1.1 503 Busy", [(b"Retry-After", b"Mon, 01 Jan 99999 00:00:00 GMT")]),
        "http",
        "503",
    ),
    "Retry-After in the year 9999": (
        response(b"HTTP/1.1 503 Busy", [(b"Retry-After", b"Fri, 31 Dec 9999 23:59:59 GMT")]),
        "http",
        "503",
    ),
    "two different Content-Lengths": (
        response(headers=[(b"Content-Length", b"9"), (b"Content-Length", b"20")], body=OK_BODY, length=False),
        "bad_content",
        "Content-Length",
    ),
    "a Content-Length of 40 digits": (
        response(headers=[(b"Content-Length", b"9" * 40)], body=OK_BODY, length=False),
        "too_large",
        "Content-Length",
    ),
    "a status that is not a number": (b"HTTP/1.1 abc OK\r\n\r\n", "bad_content", "abc"),
    "a status of two digits": (b"HTTP/1.1 42 OK\r\nContent-Length: 0\r\n\r\n", "bad_content", "42"),
    "a status of four digits": (b"HTTP/1.1 1000 OK\r\nContent-Length: 0\r\n\r\n", "bad_content", "1000"),
    "a status of 999": (response(b"HTTP/1.1 999 Weird", body=OK_BODY), "http", "HTTP 999"),
    "an interim 103 where the answer was due": (
        response(b"HTTP/1.1 103 Early Hints", [(b"Link", b"</s.css>")], length=False)
        + response(body=b"<p>the real answer</p>"),
        "bad_content",
        "103",
    ),
    "101 Switching Protocols, never asked for": (
        response(b"HTTP/1.1 101 Switching Protocols", [(b"Upgrade", b"h2c")], length=False),
        "bad_content",
        "101",
    ),
    "206 Partial Content, never asked for": (
        response(b"HTTP/1.1 206 Partial Content", [(b"Content-Range", b"bytes 0-9/100")], b"<p>Half of"),
        "bad_content",
        "206",
    ),
    "not HTTP at all": (b"SSH-2.0-OpenSSH_9.6\r\n", "bad_content", "SSH-2.0"),
    "an HTTP/0.9 answer": (b"<html><body>no status line</body></html>", "bad_content", ""),
    "a header line of 70,000 bytes": (
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
        "bad_content",
        "header",
    ),
    "150 headers": (
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-%d: a\r\n" % n for n in range(150))
        + b"Content-Length: 0\r\n\r\n",
        "bad_content",
        "headers",
    ),
    "a chunk size that is not hex": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "bad_content",
        "",
    ),
    "a Transfer-Encoding we cannot decode": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n" + OK_BODY,
        "bad_content",
        "Transfer-Encoding",
    ),
}


@pytest.mark.parametrize(("answer", "expected", "said"), HOSTILE_ANSWERS.values(), ids=HOSTILE_ANSWERS.keys())
def test_a_hostile_answer_is_a_documented_failure_kind_never_a_crash(
    raw_server, session, answer, expected, said
):
    server = raw_server(lambda sock: sock.sendall(answer))

    result = fetch(server.url(), session, limits(timeout=3.0, retries=1), sleep=Sleeps())

    assert kind(result) == expected
    assert said in message(result)
    assert result.body is None
    assert len(message(result)) <= 1000


def test_a_long_redirect_loop_url_does_not_make_a_long_message(raw_server, session):
    server = raw_server(lambda sock: sock.sendall(redirect_to(b"/" + b"a" * 60_000)))

    result = fetch(server.url(), session, FAST)

    assert kind(result) == "too_many_redirects"
    assert len(message(result)) <= 1000


def test_a_header_value_too_long_to_keep_is_not_kept(site, session):
    site.put(
        "/etext/long.html", "<p>Short page, long header.</p>", headers={"Content-Language": "de, " * 1000}
    )

    result = fetch(site.url("/etext/long.html"), session, FAST)

    assert result.body == b"<p>Short page, long header.</p>"
    assert "content-language" not in result.headers
    assert "etag" in result.headers


def test_without_the_brotli_module_br_is_neither_asked_for_nor_taken(site, monkeypatch):
    monkeypatch.setattr(contentcoding, "_BROTLI", False)  # as on a system without the brotli module
    site.put("/etext/minutes.html", brotli.compress(PAGE), headers={"Content-Encoding": "br"})

    with make_session(FAST) as own:
        result = fetch(site.url("/etext/minutes.html"), own, FAST)

    assert site.requests[-1].headers["accept-encoding"] == "gzip, deflate"
    assert kind(result) == "bad_content"
    assert "'br': a coding we cannot decode" in message(result)


def test_a_204_naming_a_coding_is_an_empty_answer(raw_server, session):
    server = raw_server(
        lambda sock: sock.sendall(b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n")
    )

    result = fetch(server.url(), session, FAST)

    assert (result.status, result.error, result.body) == (204, None, b"")
