"""The store URL of a config file checked before: `status` and `history` skip pydantic for a file seen valid.

Checking a config file (`mirror.config.load_config`) costs ~0.1 s of CPU before anything else
runs, nearly all of it importing pydantic and building the config's models: a third of what
`mirror status` took. So a file that passed the check is remembered, and the next read-only
command that finds it unchanged takes the store URL from the TOML without checking it again.

"Unchanged" is a SHA-256 over everything the verdict depends on: the file's bytes, the
`$MIRROR_DATABASE_URL` that overrides its store, and the code that judged it (mirror's version,
the size and modification time of each of its modules, pydantic's and the interpreter's). Any
edit, another environment or an upgrade gives another digest, and the file is checked in full
again: a bad file is never remembered, so its error is the same one-line `ConfigError` every time.

The memo is one small file per config path in the user's cache folder (`$XDG_CACHE_HOME/mirror/`,
else `~/.cache/mirror/`) holding that digest, nothing from the file itself. A cache folder that
cannot be written only means every command checks the file in full, as before.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

from mirror import __version__

DEFAULT_CONFIG_PATH = "config/mirror.toml"
CONFIG_ENV = "MIRROR_CONFIG"
DATABASE_ENV = "MIRROR_DATABASE_URL"
DEFAULT_DATABASE = "sqlite:///state/mirror.db"
CACHE_ENV = "XDG_CACHE_HOME"
_FOLDER = "config-checked"  # under `mirror/` in the cache folder


def config_path(cli_value: str | None, env: Mapping[str, str]) -> str:
    """Return the config file to read: `--config`, else `$MIRROR_CONFIG`, else `config/mirror.toml`."""
    return cli_value or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def store_url(path: str, env: Mapping[str, str]) -> str:
    """Return the store URL of the config file at `path` (`$MIRROR_DATABASE_URL` in `env` applied).

    The file is checked as `load_config(path, env, targets=False)` checks it, unless this same
    file, environment and code passed that check before.

    Raises:
        ConfigError: as `load_config` raises it.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return _check(path, env)  # the full check words the error
    digest = _digest(data, env)
    memo = _memo(path, env)
    if memo is not None and _read(memo) == digest:
        database = _database(data, env)
        if database is not None:
            return database
    database = _check(path, env)
    if memo is not None:
        try:
            with open(path, "rb") as file:
                unchanged = file.read() == data  # what was checked is what the digest names
        except OSError:
            unchanged = False
        if unchanged:
            _write(memo, digest)
    return database


def _check(path: str, env: Mapping[str, str]) -> str:
    from mirror.config import load_config

    return load_config(path, env, targets=False).storage.database


def _database(data: bytes, env: Mapping[str, str]) -> str | None:
    """Return the store URL of a file that passed the check; None if it does not read as one."""
    override = env.get(DATABASE_ENV)
    if override:
        return override
    try:
        storage = tomllib.loads(data.decode()).get("storage", {})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    database = storage.get("database", DEFAULT_DATABASE) if isinstance(storage, dict) else None
    return database if isinstance(database, str) else None


def _digest(data: bytes, env: Mapping[str, str]) -> str:
    """Return the SHA-256 of the file's bytes, the environment it reads and the code that checks it."""
    h = hashlib.sha256()
    for part in (__version__, sys.version, env.get(DATABASE_ENV, ""), *_code()):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    h.update(data)
    return h.hexdigest()


def _code() -> list[str]:
    """Return a line per module of mirror, and pydantic's: name, size and modification time.

    An installed upgrade or an edit of a checkout changes one of them (a stat each: ~0.3 ms in all).
    """
    lines = []
    for entry in sorted(os.scandir(Path(__file__).parent), key=lambda e: e.name):
        if entry.name.endswith(".py"):
            st = entry.stat()
            lines.append(f"{entry.name} {st.st_size} {st.st_mtime_ns}")
    for package in ("pydantic", "pydantic_core"):
        spec = importlib.util.find_spec(package)
        origin = spec.origin if spec is not None else None
        if origin is not None:
            st = os.stat(origin)
            lines.append(f"{origin} {st.st_size} {st.st_mtime_ns}")
    return lines


def _memo(path: str, env: Mapping[str, str]) -> Path | None:
    """Return the memo file of the config at `path`; None without a cache folder."""
    base = env.get(CACHE_ENV) or ""
    if not os.path.isabs(base):  # the XDG spec: a relative value is to be ignored
        home = os.path.expanduser("~")
        if home == "~":
            return None
        base = os.path.join(home, ".cache")
    name = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return Path(base, "mirror", _FOLDER, name)


def _read(memo: Path) -> str | None:
    try:
        return memo.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _write(memo: Path, digest: str) -> None:
    """Write the memo (atomically: a reader sees the old digest or the new one); never fail a command."""
    try:
        memo.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        partial.write_text(digest + "\n", "ascii")
        os.replace(partial, memo)
    except OSError:
        pass
