"""URL normalisation: the fast path for URLs already normal gives what parsing them gives."""

from __future__ import annotations

import itertools
import time

import pytest

from mirror.urls import BadURL, _normalize_parsed, mask_userinfo, normalize_url

SCHEMES = ["http", "https", "HTTP", "ftp"]
HOSTS = [
    "archive.example.org",
    "Archive.Example.ORG",
    "127.0.0.1",
    "[::1]",
    "xn--bcher-kva.example",
    "bücher.de",
    "user:pw@host.org",
    "a_b.org",
    "host.org.",
]
PORTS = ["", ":80", ":443", ":8080", ":080", ":0", ":65535", ":65536", ":99999", ":"]
PATHS = [
    "",
    "/",
    "/etext/wim/",
    "/a b",
    "/%7Euser/",
    "/a\\\\b",
    "/x?y=1&z=2",
    "/x#frag",
    "/x?",
    "/é/ü.html",
    "/a@b",
    "/tab\\there",
    "/../up",
    "//double",
]


def outcome(function, url):
    try:
        return function(url)
    except BadURL as exc:
        return ("BadURL", str(exc))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_spelling_normalises_as_the_full_parse_does(scheme):
    urls = [f"{scheme}://{h}{p}{path}" for h, p, path in itertools.product(HOSTS, PORTS, PATHS)]
    for url in urls:
        assert outcome(normalize_url, url) == outcome(_normalize_parsed, url), url


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTP://Archive.Example.org:80/etext/", "http://archive.example.org/etext/"),
        ("https://archive.example.org:443", "https://archive.example.org/"),
        ("http://archive.example.org:8080/a?b=1#top", "http://archive.example.org:8080/a?b=1"),
        ("http://127.0.0.1:39455/c001/library/index.html", "http://127.0.0.1:39455/c001/library/index.html"),
    ],
)
def test_a_url_comes_back_in_its_one_normal_spelling(url, normal):
    assert normalize_url(url) == normal == normalize_url(normal)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://admin:s3cretPW@host.org/x", "http://admin:***@host.org/x"),
        ("https://ghp_token123@github.com/repo", "https://***@github.com/repo"),
        ("redirect to 'http://a:p@b:p2@host/'; loop", "redirect to 'http://a:***@host/'; loop"),
        ("no URL here, mail me at a@b.org", "no URL here, mail me at a@b.org"),
        (
            "http://host.org/path@version?x=http://u:pw@inner/",
            "http://host.org/path@version?x=http://u:***@inner/",
        ),
        (
            "not a URL: 'http://u:pw@[::1' (Invalid IPv6 URL)",
            "not a URL: 'http://u:***@[::1' (Invalid IPv6 URL)",
        ),
    ],
)
def test_user_info_in_any_text_is_masked(text, masked):
    assert mask_userinfo(text) == masked


@pytest.mark.parametrize(
    "url", ["http://admin:s3cretPW@host.org/", "http://admin:s3cretPW@[::1/", "ftp://admin:s3cretPW@host/"]
)
def test_a_refused_url_is_quoted_without_its_password(url):
    with pytest.raises(BadURL) as refused:
        normalize_url(url)

    assert "s3cretPW" not in str(refused.value)
    assert "admin:***@" in str(refused.value)


@pytest.mark.parametrize(
    "text", ["a" * 200_000 + "@", "a." * 100_000 + "@", ("http://" + "a" * 50) * 4000 + "@"]
)
def test_masking_a_long_text_takes_linear_time(text):
    started = time.process_time()  # CPU time: a busy machine does not stretch it

    mask_userinfo(text)

    assert time.process_time() - started < 0.5  # a quadratic scan of these takes minutes
