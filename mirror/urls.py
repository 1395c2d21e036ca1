"""URL normalisation: one spelling per document, so a target is stored once."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
# A URL already in its normal spelling: lower-case scheme and host name (no IPv6 literal,
# no credentials), a port other than the scheme's own, a path, no fragment, no white space,
# no percent sign or backslash that urlsplit might read otherwise, no empty query. Config
# files and discovery give these by the thousand: they come back as they are, unparsed
# (1 µs instead of 9 µs; 100,000 targets are normalised twice at a daemon's start).
_NORMAL_RE = re.compile(
    r"(https?)://[a-z0-9.-]+(?::([1-9][0-9]{0,4}))?/[^\s#%\\@?\x00-\x1f\x7f]*(?:\?[^\s#%\\@\x00-\x1f\x7f]+)?"
)
# A control character has no place in a URL on the wire, and PostgreSQL cannot store a NUL.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


# The user info of a URL inside any text: from "scheme://" to the last "@" before the path.
# Bounded, so that a long run of letters (a diff, a page's text) costs linear time, not quadratic.
_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}://)([^/?#\s'\"<>]{0,1024})@")


class BadURL(ValueError):
    """The text is not an absolute http(s) URL. Its message quotes the URL with `mask_userinfo`."""


def mask_userinfo(text: str) -> str:
    """Return `text` with the user info of every URL in it masked, for logs, messages and rows.

    `user:password@` becomes `user:***@`; a user info without a colon (often a token) becomes
    `***@`. Works on text that is not a valid URL too: an error message must not leak either.
    """
    if "@" not in text:
        return text
    return _USERINFO_RE.sub(_masked, text)


def _masked(match: re.Match[str]) -> str:
    user, colon, _ = match[2].partition(":")
    return f"{match[1]}{user}:***@" if colon else f"{match[1]}***@"


def _quoted(url: str) -> str:
    return mask_userinfo(repr(url))


def normalize_url(url: str) -> str:
    """Return the canonical form of an absolute http(s) URL.

    Lower-cases scheme and host, drops the default port and the fragment, and
    gives an empty path as `/`. Query strings are kept as they are.

    Raises:
        BadURL: not an absolute http or https URL with a host.
    """
    normal = _NORMAL_RE.fullmatch(url)
    if normal is not None and normal[2] != str(_DEFAULT_PORTS[normal[1]]) and int(normal[2] or 1) < 65536:
        return url
    return _normalize_parsed(url)


def _normalize_parsed(url: str) -> str:
    """`normalize_url` the long way: parse, check, rebuild."""
    text = url.strip()
    if not text or any(c.isspace() for c in text):
        raise BadURL(f"not a URL: {_quoted(url)}")
    if _CONTROL_RE.search(text):
        raise BadURL(f"not a URL: {_quoted(url)} (a control character)")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise BadURL(f"not a URL: {_quoted(url)} ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise BadURL(f"not an http(s) URL: {_quoted(url)}")
    host = (parts.hostname or "").lower()
    if not host:
        raise BadURL(f"no host in URL: {_quoted(url)}")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if parts.username or parts.password:
        # Refused, not stripped: the URL is the document's identity in the store, and a
        # password in it would reach the logs and the rows. Nothing is fetched with it.
        raise BadURL(f"credentials in URL are not supported: {_quoted(url)}")
    return urlunsplit(SplitResult(scheme, netloc, parts.path or "/", parts.query, ""))


def host_of(url: str) -> str:
    """Return the host (with a non-default port) of a normalised URL."""
    return urlsplit(url).netloc


def normalized(url: str) -> str:
    """Return `url` normalised, or as given when it is not a URL (so an error quotes what was typed)."""
    try:
        return normalize_url(url)
    except BadURL:
        return url
