"""The errors `mirror` raises on purpose. Standard library only.

    MirrorError
    ├── ConfigError(file, key, problem)            bad config file or value      → exit 2
    ├── UsageError(problem)                        bad command-line input        → exit 2
    ├── NotFound                                                                  → exit 2
    │   ├── TargetNotFound(url)                    the URL is not in the store
    │   │   └── NotATarget(url, config_file)       `check URL` of a URL not configured
    │   ├── TargetNotWatched(url, since)           in the store, but removed from the config
    │   └── VersionNotFound(url, version)          no such version of that URL
    ├── NoStore(url, problem)                      no store a read-only command  → exit 2
    │                                              can read (none, or another schema)
    ├── StoreError(problem)                        the database misbehaved       → exit 3
    │   ├── DatabaseUnavailable(url, problem)      cannot connect / open
    │   └── StoreLocked(url, problem)              another daemon holds a SQLite store
    ├── FetchError(url, problem)                   one fetch failed; never leaves fetch.py
    │   ├── Timeout                                the deadline passed
    │   ├── ConnectFailed                          refused, reset, TLS
    │   ├── DnsFailed                              the host name does not resolve
    │   ├── TooLarge                               the body passed max_bytes
    │   ├── TooManyRedirects                       a loop or a long chain
    │   └── BadContent                             truncated body, broken encoding, no HTTP we
    │                                              can read, a bad redirect, a 304 never asked for
    └── RestoreError(path, problem)                                               → exit 2
        ├── UnsafePath                             a URL maps outside the target folder
        └── FileExists                             refusing to overwrite without --force

Each class builds its own one-line message from its fields, naming where the
problem is (file and key, URL, version, path). `cli.py` holds the one map from
class to exit code.
"""

from __future__ import annotations

from datetime import datetime


class MirrorError(Exception):
    """Base of every error `mirror` raises on purpose."""


class ConfigError(MirrorError):
    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


class UsageError(MirrorError):
    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class NotFound(MirrorError):
    """Something the user named is not in the store."""


class TargetNotFound(NotFound):
    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(f"{url}: not in the store (is it configured, and has it been checked?)")


class NotATarget(TargetNotFound):
    """`check URL` was given a URL that is neither configured nor found by a source."""

    def __init__(self, url: str, config_file: str) -> None:
        self.url, self.config_file = url, config_file
        NotFound.__init__(
            self,
            f"{url}: not a target; `mirror check URL` checks configured targets (and pages found by "
            f"[[sources]]): to watch it, add it to `targets` in {config_file}, then check it",
        )


class TargetNotWatched(NotFound):
    def __init__(self, url: str, since: datetime | None) -> None:
        self.url, self.since = url, since
        when = f" since {since.strftime('%Y-%m-%d %H:%M:%SZ')}" if since else ""
        super().__init__(
            f"{url}: no longer watched (removed from the config{when}); add it to `targets` "
            "in the config to check it again"
        )


class VersionNotFound(NotFound):
    def __init__(self, url: str, version: str, problem: str = "no such version") -> None:
        self.url, self.version, self.problem = url, version, problem
        super().__init__(f"{url}: version {version}: {problem}")


class NoStore(MirrorError):
    """The database holds no store this command can read: nothing there, or another schema revision.

    Only `check` and `run` create or migrate a store; the read-only commands say so instead.
    """

    def __init__(self, url: str, problem: str) -> None:
        self.url, self.problem = url, problem
        super().__init__(f"database {url}: {problem}")


class StoreError(MirrorError):
    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class DatabaseUnavailable(StoreError):
    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        super().__init__(f"database {url}: {problem}")


class StoreLocked(StoreError):
    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        super().__init__(f"database {url}: {problem}")


class FetchError(MirrorError):
    """A fetch failed. `kind` is the stable name stored in checks and events."""

    kind = "fetch"

    def __init__(self, url: str, problem: str) -> None:
        self.url, self.problem = url, problem
        super().__init__(f"{url}: {problem}")


class Timeout(FetchError):
    kind = "timeout"


class ConnectFailed(FetchError):
    kind = "connect"


class DnsFailed(FetchError):
    kind = "dns"


class TooLarge(FetchError):
    kind = "too_large"


class TooManyRedirects(FetchError):
    kind = "too_many_redirects"


class BadContent(FetchError):
    kind = "bad_content"


class RestoreError(MirrorError):
    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class UnsafePath(RestoreError):
    pass


class FileExists(RestoreError):
    pass
