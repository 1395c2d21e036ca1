"""A config file checked once: the read-only commands skip the check while nothing it depends on changed.

`mirror status` and `history` take the store URL from a file that passed `load_config` before
(same bytes, same `$MIRROR_DATABASE_URL`, same code) without loading pydantic; every change is
checked in full again, with the same one-line errors as ever.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.config import load_config
from mirror.config_cache import store_url
from mirror.errors import ConfigError

BAD_AGENT = '[fetch]\nuser_agent = "mirror\\r\\nX-Evil: 1"\n'
BAD_AGENT_ERROR = (
    "fetch.user_agent: a control character (U+000D) cannot be sent in a header, got 'mirror\\r\\nX-Evil: 1'"
)


def mirror(folder: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -X importtime -m mirror --config mirror.toml ARGV` in `folder`."""
    base = {k: v for k, v in os.environ.items() if k not in ("MIRROR_CONFIG", "MIRROR_DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mirror", "--config", "mirror.toml", *argv],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**base, "XDG_CACHE_HOME": str(folder / "cache"), **(env or {})},
        timeout=60,
    )


def loaded_pydantic(proc: subprocess.CompletedProcess[str]) -> bool:
    assert "import time:" in proc.stderr  # the report is there: its absence would prove nothing
    return any(line.rpartition("|")[2].strip() == "pydantic" for line in proc.stderr.splitlines())


def errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]


@pytest.fixture
def store(tmp_path, archive_server):
    """A folder with `mirror.toml` and its SQLite store, one page checked once."""
    archive_server.put("/cached.html", b"<html><body><p>One version.</p></body></html>")
    config = (
        f'targets = ["{archive_server.url("/cached.html")}"]\n\n'
        f'[storage]\ndatabase = "sqlite:///{tmp_path / "mirror.db"}"\n\n'
        '[fetch]\nper_host_delay = "0"\nretries = 0\n'
    )
    (tmp_path / "mirror.toml").write_text(config)
    done = mirror(tmp_path, "check")
    assert done.returncode == 0, errors(done)
    return tmp_path, config


def test_status_checks_the_config_once_then_answers_without_pydantic(store):
    folder, _ = store

    first, second = mirror(folder, "status", "--json"), mirror(folder, "status", "--json")

    assert (first.returncode, second.returncode) == (0, 0)
    assert loaded_pydantic(first)
    assert not loaded_pydantic(second)
    assert second.stdout == first.stdout  # the same store, read the same way


def test_an_edit_that_breaks_a_checked_config_is_refused_with_the_usual_error(store):
    folder, config = store
    assert mirror(folder, "status").returncode == 0

    (folder / "mirror.toml").write_text(config + BAD_AGENT.replace("[fetch]\n", ""))
    refused = mirror(folder, "history", "http://example.org/")

    assert refused.returncode == 2
    assert errors(refused) == [f"mirror: error: mirror.toml: {BAD_AGENT_ERROR}"]

    (folder / "mirror.toml").write_text(config)  # mended: checked again, and it passes
    assert mirror(folder, "status").returncode == 0


def test_a_bad_store_url_in_the_environment_is_refused_though_the_file_was_checked(store):
    folder, _ = store
    assert mirror(folder, "status").returncode == 0

    refused = mirror(folder, "status", env={"MIRROR_DATABASE_URL": "mirror.db"})

    assert refused.returncode == 2
    assert errors(refused) == [
        "mirror: error: mirror.toml: storage.database: $MIRROR_DATABASE_URL: "
        "expected a database URL like 'sqlite:///state/mirror.db', got 'mirror.db'"
    ]


def test_a_cache_folder_that_cannot_be_written_only_means_checking_every_time(store):
    folder, _ = store
    (folder / "not-a-folder").write_text("a file where the cache folder would be")

    runs = [mirror(folder, "status", env={"XDG_CACHE_HOME": str(folder / "not-a-folder")}) for _ in range(2)]

    assert [r.returncode for r in runs] == [0, 0]
    assert [loaded_pydantic(r) for r in runs] == [True, True]


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("", {}, "sqlite:///state/mirror.db"),
        ('[storage]\ndatabase = "postgresql://archivist:s3cretPW@db.example/mirror"\n', {}, None),
        (
            '[storage]\ndatabase = "sqlite:///a.db"\n',
            {"MIRROR_DATABASE_URL": "sqlite:///b.db"},
            "sqlite:///b.db",
        ),
    ],
    ids=["default", "in-the-file", "from-the-environment"],
)
def test_a_checked_config_gives_the_store_url_the_full_check_gives_and_remembers_no_secret(
    tmp_path, toml, env, expected
):
    path = tmp_path / "mirror.toml"
    path.write_text(toml)
    env = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    full = load_config(str(path), env, targets=False).storage.database

    answers = [store_url(str(path), env) for _ in range(2)]  # checked, then remembered

    assert answers == [full, full]
    assert full == (expected or "postgresql://archivist:s3cretPW@db.example/mirror")
    memos = list((tmp_path / "cache" / "mirror").rglob("*"))
    assert [m for m in memos if m.is_file()]
    assert not any("s3cretPW" in m.read_text() for m in memos if m.is_file())


def test_a_missing_config_file_is_the_error_the_full_check_words(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}

    with pytest.raises(ConfigError) as caught:
        store_url(str(tmp_path / "nowhere.toml"), env)

    assert str(caught.value) == (
        f"{tmp_path / 'nowhere.toml'}: no such file (give one with --config FILE or $MIRROR_CONFIG)"
    )
