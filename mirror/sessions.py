"""HTTP sessions for the fetchers: our User-Agent and codings, pooled connections, proxies only when set.

`Sessions` keeps one `requests.Session` per worker thread (a session is not thread-safe)
and closes them all at once; `make_session` makes one. Nothing below `fetch` retries or
follows redirects: the session's adapter is told not to. `get` is the one GET of a
fetch: through the session's own adapter, without the settings it merges per request
when a session of ours has none to merge.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager
from urllib3.util.retry import Retry

from mirror import contentcoding
from mirror.deadline import current as current_deadline
from mirror.domain import FetchLimits


class Sessions:
    """One session per thread (a `requests.Session` is not thread-safe), all closed at once. Thread-safe."""

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        """Return the calling thread's session, made on its first use."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = make_session(self.limits)
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        """Close every thread's session."""
        with self._lock:
            for session in self._all:
                session.close()
            self._all.clear()


def make_session(limits: FetchLimits) -> requests.Session:
    """Return a session for one worker thread: our User-Agent, no retries or redirects below us."""
    session = _Session()
    session.headers["User-Agent"] = limits.user_agent
    session.headers["Accept-Encoding"] = contentcoding.accept_encoding()  # what we decode, strictly
    session.max_redirects = limits.max_redirects
    # With trust_env, requests reads the proxy variables again on every request (~3.5% of a
    # check's time): only when a proxy is set (no_proxy needs trust_env too). Otherwise the one
    # other setting it would take from the environment, a CA bundle, is read here once.
    bundle = None
    if not _proxy_set():
        session.trust_env = False
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    # Retries and redirects are fetch()'s job: it records the chain and keeps the deadline.
    adapter = _Adapter(bundle, max_retries=Retry(total=0, read=False, redirect=False, raise_on_status=False))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def get(session: requests.Session, url: str, headers: Mapping[str, str], timeout: Any) -> requests.Response:
    """Return the response (headers read, body not yet) to one GET of `url`, no redirect followed.

    What `session.get(url, headers=headers, allow_redirects=False, stream=True,
    timeout=timeout)` sends and returns, through the same adapter, pools and deadline
    watch: the session's headers under `headers`, its cookies sent and the answer's kept,
    credentials in the URL sent as Basic auth, its `verify`, `cert` and `proxies`.
    For a session of ours with nothing else to merge (no proxy variables, auth, params
    or hooks) it skips what `Session.request` spends on merging them per request (a
    `Request`, its settings merged key by key, a copy of the cookie jar, hooks
    dispatched): ~8% of a round's CPU. `Response.elapsed` is left at zero (fetch times itself).
    """
    if not _plain(session):
        return session.get(url, headers=headers, allow_redirects=False, stream=True, timeout=timeout)
    merged: CaseInsensitiveDict[str | bytes] = CaseInsensitiveDict()
    merged.update(session.headers)
    merged.update(headers)
    prepared = requests.PreparedRequest()
    prepared.prepare_method("GET")
    prepared.prepare_url(url, None)
    prepared.prepare_headers({k: v for k, v in merged.items() if v is not None})
    if session.cookies:  # an empty jar adds no Cookie header
        prepared.prepare_cookies(session.cookies)
    prepared.prepare_body(None, None)
    prepared.prepare_auth(None, url)  # user:password@ in the URL
    prepared.prepare_hooks(None)
    verify: Any = session.verify  # as `Session.request` passes it, None included
    adapter = session.get_adapter(url=url)
    resp = adapter.send(
        prepared, stream=True, timeout=timeout, verify=verify, cert=session.cert, proxies=session.proxies
    )
    fields = resp.raw.headers
    if "set-cookie" in fields or "set-cookie2" in fields:  # what `Session.send` reads them from
        extract_cookies_to_jar(session.cookies, prepared, resp.raw)  # type: ignore[no-untyped-call]
    return resp


def _plain(session: requests.Session) -> bool:
    """Return True when `session.get` would merge nothing into a request but headers and cookies."""
    return (
        isinstance(session, _Session)
        and not session.trust_env
        and session.auth is None
        and not session.params
        and not any(session.hooks.values())
    )


class _Session(requests.Session):
    """requests' session, minus its reading of redirects: `_follow` reads them (and survives them).

    Even with `allow_redirects=False`, `Session.send` works out the next request of every
    redirect (`Response.next`), decoding the Location as UTF-8 and parsing it: a Location
    in Latin-1 or with a broken IPv6 literal raised out of `session.get` as a crash.
    """

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


class _Adapter(HTTPAdapter):
    """requests' adapter, told once whether the CA bundle is a file or a folder.

    With `verify` a path, requests stats it on every request to tell which
    (`_urllib3_request_context`): a system call that lets go of the GIL, and each time a
    worker must wait for it to come back while the other workers run Python.
    """

    def __init__(self, ca_bundle: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ca_bundle = ca_bundle
        self._ca_key = "ca_cert_dir" if ca_bundle and os.path.isdir(ca_bundle) else "ca_certs"

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> Any:
        if self._ca_bundle is None or verify != self._ca_bundle:
            return super().build_connection_pool_key_attributes(request, verify, cert)
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, cert)
        if self._ca_key == "ca_cert_dir":
            pool_kwargs["ca_cert_dir"] = verify
        else:
            pool_kwargs["ca_certs"] = verify
        return host_params, pool_kwargs

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _watch_pools(manager)
        return manager


class _WatchedHTTPPool(HTTPConnectionPool):
    """A pool that puts each connection it hands out under the running fetch's deadline."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watched(super()._get_conn(timeout))


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        return _watched(super()._get_conn(timeout))


def _watched(conn: Any) -> Any:
    deadline = current_deadline()
    if deadline is not None:
        deadline.watch(conn)
    return conn


_STOCK_POOLS = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


def _watch_pools(manager: PoolManager) -> None:
    """Make `manager` build watched pools; a SOCKS proxy's own pools are left as they are."""
    if manager.pool_classes_by_scheme == _STOCK_POOLS:
        manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def _proxy_set() -> bool:
    """Return True when a proxy variable (http_proxy, HTTPS_PROXY, all_proxy, ...) is set."""
    return any(scheme != "no" for scheme in urllib.request.getproxies_environment())
