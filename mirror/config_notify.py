"""`[[notify]]` tables: where events go, which ones, and the secrets that sign them.

Each table is one destination (`Destination`), named by `name` (unique; the outbox keeps
its cursor under it). Either `to` (Apprise URLs, and/or `to_env`: an environment
variable holding more, comma- or space-separated) for people, or `webhook` (an http(s)
URL) with `secret_env` or `secret_file` for a system. Secrets never come from the config
file itself: `secret_env` names an environment variable, `secret_file` a file only the
service may read (no permission for group or others). `events` selects stored kinds
(`mirror.events.DOCUMENT_EVENTS`; `"*"` for all of them but `document.imported`, which a
`mirror import warc` of an old crawl makes by the thousand), `integrity.damaged` (a
`mirror verify` run that found damage; in `"*"`) and `integrity.head` (the daily head);
`document.imported` and `integrity.head` only when named. A problem is one `ConfigError` naming file and key.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError

from mirror.config_values import TOP_LEVEL_KEYS, PositiveDuration, Section, config_error
from mirror.errors import ConfigError
from mirror.events import DOCUMENT_EVENTS, DOCUMENT_IMPORTED, INTEGRITY_DAMAGED, INTEGRITY_HEAD

ALL = "*"
SELECTABLE = (*DOCUMENT_EVENTS, INTEGRITY_DAMAGED, INTEGRITY_HEAD)
EVERY = (frozenset(DOCUMENT_EVENTS) - {DOCUMENT_IMPORTED}) | {INTEGRITY_DAMAGED}  # what "*" selects
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


class NotifyTable(Section):
    name: str
    to: list[str] = Field(default_factory=list)
    to_env: str | None = None
    webhook: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    events: list[str] = Field(default_factory=lambda: [ALL])
    min_significance: float = Field(default=0.0, ge=0.0, le=1.0)
    only_suspicious: bool = False
    digest: PositiveDuration | None = None


class MissingSecret(ConfigError):
    """A secret or `to_env` that the environment of this process does not hold.

    Only the processes that deliver need it (the daemon, `notify test`, `notify send`): they
    raise it from `Destination.unresolved` (`mirror.notify.check_destinations`). The rest
    (`status`, `history`, `serve`, ...) run from a maintainer's shell without the service's
    secrets, so loading the config does not raise it.
    """


class Secret:
    """A secret that prints as `***`: in reprs, f-strings, log lines and `--json` alike."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Destination:
    """One `[[notify]]` table, checked. `to` holds Apprise URLs (secrets: show `shown()` only)."""

    name: str
    to: tuple[str, ...] = ()
    webhook: str | None = None
    secret: Secret | None = field(default=None, repr=False)
    events: frozenset[str] = EVERY
    min_significance: float = 0.0
    only_suspicious: bool = False
    digest: timedelta | None = None
    unresolved: MissingSecret | None = field(default=None, repr=False, compare=False)  # see MissingSecret

    @property
    def kind(self) -> str:
        return "webhook" if self.webhook is not None else "apprise"

    def shown(self) -> list[str]:
        """Return where it sends to, each URL masked (scheme and host only): for logs and `--json`."""
        return [mask_destination(u) for u in ((self.webhook,) if self.webhook else self.to)]


def mask_destination(url: str) -> str:
    """Return `scheme://host/…` of a destination URL: its user info, path and query may hold tokens."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not host:port (a Telegram bot token is `id:secret`): show the scheme only
        return f"{scheme}://…" if scheme.isalnum() else "***"
    if not parts.scheme:
        return "***"
    rest = "/…" if (parts.path.strip("/") or parts.query or parts.username) else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def destinations(file: str, entries: list[Any], env: Mapping[str, str]) -> tuple[Destination, ...]:
    """Return the destinations of the `[[notify]]` tables.

    Raises:
        ConfigError: a bad table, a name used twice. A missing or unsafe secret is kept in
        `Destination.unresolved` for the processes that deliver (`MissingSecret`).
    """
    found: dict[str, Destination] = {}
    for index, entry in enumerate(entries):
        dest = destination(file, index, entry, env)
        if dest.name in found:
            raise ConfigError(
                file, f"notify[{index}].name", f"{dest.name!r} is the name of another destination"
            )
        found[dest.name] = dest
    return tuple(found.values())


def destination(file: str, index: int, entry: Any, env: Mapping[str, str]) -> Destination:
    """Return the `Destination` of the `index`th `[[notify]]` table.

    Raises:
        ConfigError: naming `notify[N].key`.
    """
    key = f"notify[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(
            file, key, f"expected a table with name and to = [...] or webhook = URL, got {entry!r}"
        )
    try:
        table = NotifyTable.model_validate(entry)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        if error["type"] == "extra_forbidden" and error["loc"] and error["loc"][-1] in TOP_LEVEL_KEYS:
            problem = "unknown key (a top-level key: move it above the first [section])"
            raise ConfigError(file, f"{key}.{error['loc'][-1]}", problem) from None
        raise config_error(file, exc, NotifyTable, ("notify", index)) from None
    if not _NAME.fullmatch(table.name):
        raise ConfigError(
            file, f"{key}.name", f"expected letters, digits, '.', '_' or '-' (at most 64), got {table.name!r}"
        )
    people = bool(table.to or table.to_env)
    if people == (table.webhook is not None):
        which = "both to and webhook" if people else "neither to nor webhook"
        raise ConfigError(file, key, f"has {which}: give to = [Apprise URLs] or webhook = URL")
    unresolved: MissingSecret | None = None
    try:
        to = _apprise_urls(file, key, table, env)
    except MissingSecret as exc:  # only a process that delivers needs them (see MissingSecret)
        to, unresolved = tuple(table.to), exc
    try:
        secret = _secret(file, key, table, env)
    except MissingSecret as exc:
        secret, unresolved = None, exc
    return Destination(
        table.name,
        to=to,
        webhook=_webhook(file, key, table.webhook),
        secret=secret,
        events=_events(file, f"{key}.events", table.events),
        min_significance=table.min_significance,
        only_suspicious=table.only_suspicious,
        digest=table.digest,
        unresolved=unresolved,
    )


def _apprise_urls(file: str, key: str, table: NotifyTable, env: Mapping[str, str]) -> tuple[str, ...]:
    if table.webhook is not None:
        return ()
    if table.secret_env or table.secret_file:
        raise ConfigError(
            file,
            f"{key}.secret_env" if table.secret_env else f"{key}.secret_file",
            "a secret signs webhooks only; Apprise URLs carry their own credentials",
        )
    urls = list(table.to)
    for i, url in enumerate(urls):
        if not _SCHEME.fullmatch(url):
            raise ConfigError(
                file,
                f"{key}.to[{i}]",
                f"expected an Apprise URL like 'ntfy://host/topic', got {mask_destination(url)!r}",
            )
    if table.to_env is not None:
        value = env.get(table.to_env, "").strip()
        if not value:
            raise MissingSecret(file, f"{key}.to_env", f"${table.to_env} is not set (it holds Apprise URLs)")
        more = [u for u in re.split(r"[\s,]+", value) if u]
        for url in more:
            if not _SCHEME.fullmatch(url):
                raise ConfigError(
                    file, f"{key}.to_env", f"${table.to_env}: not an Apprise URL: {mask_destination(url)!r}"
                )
        urls.extend(more)
    return tuple(urls)


def _webhook(file: str, key: str, url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or c < " " for c in url)
    ):
        raise ConfigError(file, f"{key}.webhook", f"expected an http(s) URL, got {mask_destination(url)!r}")
    return url


def _secret(file: str, key: str, table: NotifyTable, env: Mapping[str, str]) -> Secret | None:
    if table.webhook is None:
        return None
    if (table.secret_env is None) == (table.secret_file is None):
        which = (
            "both secret_env and secret_file" if table.secret_env else "neither secret_env nor secret_file"
        )
        raise ConfigError(
            file, key, f"has {which}: a webhook is signed with one secret from the environment or a file"
        )
    if table.secret_env is not None:
        value = env.get(table.secret_env, "")
        if not value:
            raise MissingSecret(file, f"{key}.secret_env", f"${table.secret_env} is not set or empty")
        return Secret(value.encode())
    path = os.path.join(os.path.dirname(file), table.secret_file or "")
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MissingSecret(
                file,
                f"{key}.secret_file",
                f"{table.secret_file} can be read by others (mode {stat.S_IMODE(mode):04o}): chmod 600 it",
            )
        with open(path, "rb") as handle:
            value_bytes = handle.read().strip()
    except OSError as exc:
        raise MissingSecret(
            file, f"{key}.secret_file", f"cannot read {table.secret_file}: {exc.strerror or exc}"
        ) from None
    if not value_bytes:
        raise MissingSecret(file, f"{key}.secret_file", f"{table.secret_file} is empty")
    return Secret(value_bytes)


def _events(file: str, key: str, names: list[str]) -> frozenset[str]:
    if not names:
        raise ConfigError(file, key, f'selects nothing: give event names or "{ALL}"')
    chosen: set[str] = set()
    for i, name in enumerate(names):
        if name == ALL:
            chosen.update(EVERY)
        elif name in SELECTABLE:
            chosen.add(name)
        else:
            known = ", ".join(SELECTABLE)
            raise ConfigError(
                file, f"{key}[{i}]", f'not an event of the log: {name!r}; expected "{ALL}" or one of {known}'
            )
    return frozenset(chosen)
