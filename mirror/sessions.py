"""HTTP sessions for the fetchers: our User-Agent and codings, pooled connections, proxies only when set.

`Sessions` keeps one `requests.Session` per worker thread (a session is not thread-safe)
and closes them all at once; `make_session` makes one. Nothing below `fetch` retries or
follows redirects: the session's adapter is told not to.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from typing import Any

import requests
from requests.adapters import HTTPAdapter
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
