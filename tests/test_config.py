"""The config file as a user writes it: what loads, what it means, and how a mistake is reported."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pydantic
import pytest

from mirror import PROJECT_URL, __version__
from mirror.config import DEFAULT_CONFIG_PATH, Config, config_path, load_config
from mirror.config_targets import DEFAULT_MAX_PAGES, Source
from mirror.config_values import parse_duration
from mirror.domain import DetectPolicy, FetchLimits, Target
from mirror.errors import ConfigError

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "mirror.toml"
A = "https://www.prisoncensorship.info/archive/etext/wim/cong/notefromchair092207.html"
B = "https://www.prisoncensorship.info/archive/etext/wim/"
C = "https://www.prisoncensorship.info/archive/etext/mt/"
SHOUTED_A = "HTTPS://WWW.PRISONCENSORSHIP.INFO:443/archive/etext/wim/cong/notefromchair092207.html#top"


@pytest.fixture
def write(tmp_path, monkeypatch):
    """Write files under tmp_path (e.g. "config/mirror.toml") and load relative paths from there."""
    monkeypatch.chdir(tmp_path)

    def write(files: dict[str, str]) -> None:
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text, encoding="utf-8")

    return write


def load(write, toml: str, **others: str) -> Config:
    write({"config/mirror.toml": toml, **{f"config/{name}": text for name, text in others.items()}})
    return load_config("config/mirror.toml", {})


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("1.5s", timedelta(seconds=1.5)),
        ("15m", timedelta(minutes=15)),
        ("6h", timedelta(hours=6)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("0", timedelta(0)),
        ("45", timedelta(seconds=45)),
        (45, timedelta(seconds=45)),
        (2.5, timedelta(seconds=2.5)),
    ],
)
def test_durations_read_the_way_people_write_them(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("soon", "expected a duration like '30s', got 'soon'"),
        ("", "expected a duration like '30s', got ''"),
        ("1x", "expected a duration like '30s', got '1x'"),
        ("1h30", "expected a duration like '30s', got '1h30'"),
        ("h", "expected a duration like '30s', got 'h'"),
        ("-5s", "expected a duration like '30s', got '-5s'"),
        (-5, "a duration cannot be negative, got -5"),
        (float("inf"), "expected a duration like '30s', got inf"),
        (True, "expected a duration like '30s', got True"),
    ],
)
def test_a_duration_that_is_not_one_is_refused_with_its_value(text, problem):
    with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
        parse_duration(text)


# --- valid configs ----------------------------------------------------------------------


def test_a_list_of_urls_is_a_whole_config_and_everything_else_takes_its_default(write):
    config = load(write, f'targets = ["{A}"]\n')

    assert config.path == "config/mirror.toml"
    assert config.targets == (Target(A, timedelta(hours=6), source="config"),)
    assert config.storage.database == "sqlite:///state/mirror.db"
    assert (config.schedule.interval, config.schedule.check_retention, config.schedule.tick) == (
        timedelta(hours=6),
        timedelta(days=90),
        timedelta(seconds=5),
    )
    assert config.fetch.limits() == FetchLimits(
        timeout=30.0,
        connect_timeout=10.0,
        max_bytes=104_857_600,
        max_redirects=10,
        retries=2,
        user_agent=f"mirror/{__version__} (+{PROJECT_URL})",
    )
    assert (config.fetch.concurrency, config.fetch.per_host_concurrency) == (8, 2)
    assert config.fetch.per_host_delay == timedelta(seconds=1)
    assert config.detect.policy() == DetectPolicy(missing_after=3)


def test_an_empty_config_is_a_daemon_with_nothing_to_do(write):
    assert load(write, "").targets == ()


def test_targets_from_tables_and_a_targets_file_are_all_watched_in_order(write):
    config = load(
        write,
        f'targets_file = "targets.txt"\n\n[[targets]]\nurl = "{A}"\n\n'
        f'[[targets]]\nurl = "{B}"\ninterval = "1d"\n',
        **{"targets.txt": f"# the MIM Theory index\n\n   \n{C}   # checked with the rest\n"},
    )

    assert config.targets == (
        Target(A, timedelta(hours=6)),
        Target(B, timedelta(days=1)),
        Target(C, timedelta(hours=6)),
    )


def test_a_plain_list_may_mix_urls_and_tables_and_add_a_targets_file(write):
    config = load(
        write,
        f'targets_file = "lists/more.txt"\ntargets = ["{A}", {{ url = "{B}", interval = "30m" }}]\n'
        '[schedule]\ninterval = "2h"\n',
        **{"lists/more.txt": f"{C}\n"},
    )

    assert [(t.url, t.interval) for t in config.targets] == [
        (A, timedelta(hours=2)),
        (B, timedelta(minutes=30)),
        (C, timedelta(hours=2)),
    ]


def test_urls_are_stored_in_their_normal_spelling(write):
    config = load(
        write, 'targets = ["HTTPS://WWW.PrisonCensorship.info:443/archive/etext/wim/#top", "http://x.org"]'
    )
    assert [t.url for t in config.targets] == [B, "http://x.org/"]


@pytest.mark.parametrize(
    ("section", "value", "attribute", "expected"),
    [
        ("fetch", 'timeout = "30s"', "timeout", timedelta(seconds=30)),
        ("fetch", 'timeout = "1.5s"', "timeout", timedelta(seconds=1.5)),
        ("fetch", "timeout = 12", "timeout", timedelta(seconds=12)),
        ("fetch", 'per_host_delay = "0"', "per_host_delay", timedelta(0)),
        ("fetch", "per_host_delay = 0", "per_host_delay", timedelta(0)),
        ("schedule", 'interval = "1h30m"', "interval", timedelta(minutes=90)),
        ("schedule", 'check_retention = "2w"', "check_retention", timedelta(weeks=2)),
        ("schedule", "tick = 0.5", "tick", timedelta(milliseconds=500)),
        ("fetch", 'max_bytes = "1 MiB"', "max_bytes", 1_048_576),
        ("fetch", 'max_bytes = "100MB"', "max_bytes", 100_000_000),
        ("fetch", 'max_bytes = "1 GiB"', "max_bytes", 1_073_741_824),
        ("fetch", "max_bytes = 5000", "max_bytes", 5000),
        ("fetch", "retries = 0", "retries", 0),
        ("fetch", "max_redirects = 0", "max_redirects", 0),
        ("fetch", 'user_agent = "archivist/1.0"', "user_agent", "archivist/1.0"),
        ("detect", "missing_after = 1", "missing_after", 1),
    ],
)
def test_a_value_in_the_file_reaches_the_program_as_a_typed_value(write, section, value, attribute, expected):
    config = load(write, f"[{section}]\n{value}\n")
    assert getattr(getattr(config, section), attribute) == expected


def test_limits_carry_durations_as_seconds_and_sizes_as_bytes(write):
    config = load(
        write, '[fetch]\ntimeout = "1m"\nconnect_timeout = "2.5s"\nmax_bytes = "2 KiB"\nretries = 5\n'
    )
    limits = config.fetch.limits()
    assert (limits.timeout, limits.connect_timeout, limits.max_bytes, limits.retries) == (60.0, 2.5, 2048, 5)
    assert type(limits.max_bytes) is int


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "sqlite:///from-file.db"),
        (
            {"MIRROR_DATABASE_URL": "postgresql+psycopg://root@127.0.0.1/test"},
            "postgresql+psycopg://root@127.0.0.1/test",
        ),
        ({"MIRROR_DATABASE_URL": ""}, "sqlite:///from-file.db"),  # set but empty: as if unset
    ],
)
def test_the_database_url_in_the_environment_wins_over_the_file(write, env, expected):
    write({"config/mirror.toml": '[storage]\ndatabase = "sqlite:///from-file.db"\n'})
    assert load_config("config/mirror.toml", env).storage.database == expected


def test_the_database_url_is_read_from_the_process_environment_by_default(write, monkeypatch):
    monkeypatch.setenv("MIRROR_DATABASE_URL", "sqlite:///elsewhere.db")
    write({"config/mirror.toml": ""})
    assert load_config(Path("config/mirror.toml")).storage.database == "sqlite:///elsewhere.db"


@pytest.mark.parametrize(
    ("cli", "env", "expected"),
    [
        ("cli.toml", {"MIRROR_CONFIG": "env.toml"}, "cli.toml"),
        (None, {"MIRROR_CONFIG": "env.toml"}, "env.toml"),
        (None, {}, DEFAULT_CONFIG_PATH),
        (None, {"MIRROR_CONFIG": ""}, DEFAULT_CONFIG_PATH),
    ],
)
def test_the_config_file_is_the_option_else_the_environment_else_the_default(cli, env, expected):
    assert config_path(cli, env) == expected
    assert DEFAULT_CONFIG_PATH == "config/mirror.toml"


def test_a_loaded_config_cannot_be_changed_by_accident(write):
    config = load(write, f'targets = ["{A}"]\n')
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.targets = ()  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        config.fetch.timeout = timedelta(0)


def test_the_shipped_config_loads_and_watches_the_mim_archive_politely():
    config = load_config(SHIPPED, {})

    assert config.storage.database == "sqlite:///state/mirror.db"
    assert config.schedule.interval == timedelta(hours=6)
    assert (config.fetch.per_host_concurrency, config.fetch.per_host_delay) == (2, timedelta(seconds=2))
    assert A in [t.url for t in config.targets]
    assert B in [t.url for t in config.targets]
    assert 3 <= len(config.targets) <= 8
    assert all(t.url.startswith("https://www.prisoncensorship.info/archive/etext/") for t in config.targets)


# --- broken configs: one line naming file, key and value ----------------------------------

BROKEN = [
    pytest.param(
        {"config/mirror.toml": "[fetch]\ntimeout = 'soon'\n"},
        "config/mirror.toml: fetch.timeout: expected a duration like '30s', got 'soon'",
        id="bad-duration",
    ),
    pytest.param(
        {"config/mirror.toml": "[schedule]\ninterval = '0s'\n"},
        "config/mirror.toml: schedule.interval: expected a duration longer than 0, got '0s'",
        id="zero-interval",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetch]\nper_host_delay = -1\n"},
        "config/mirror.toml: fetch.per_host_delay: a duration cannot be negative, got -1",
        id="negative-delay",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetch]\ntimout = '5s'\n"},
        "config/mirror.toml: fetch.timout: unknown key (did you mean 'timeout'?)",
        id="unknown-key-in-section",
    ),
    pytest.param(
        {"config/mirror.toml": "intervals = '6h'\n"},
        "config/mirror.toml: intervals: unknown key",
        id="unknown-key-at-top",
    ),
    pytest.param(
        {"config/mirror.toml": f"[fetch]\ntimeout = '5s'\n\ntargets = ['{A}']\n"},
        "config/mirror.toml: fetch.targets: unknown key (a top-level key: move it above the first [section])",
        id="top-level-key-below-a-section",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetcher]\ntimeout = '5s'\n"},
        "config/mirror.toml: fetcher: unknown key (did you mean 'fetch'?)",
        id="unknown-section",
    ),
    pytest.param(
        {"config/mirror.toml": f"[[targets]]\nurl = '{A}'\nintervl = '1h'\n"},
        "config/mirror.toml: targets[0].intervl: unknown key (did you mean 'interval'?)",
        id="unknown-key-in-target",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetch]\nconcurrency = 0\n"},
        "config/mirror.toml: fetch.concurrency: must be at least 1, got 0",
        id="zero-concurrency",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetch]\nper_host_concurrency = -2\n"},
        "config/mirror.toml: fetch.per_host_concurrency: must be at least 1, got -2",
        id="negative-per-host-concurrency",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetch]\nprocesses = 0\n"},
        "config/mirror.toml: fetch.processes: must be at least 1, got 0",
        id="zero-processes",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetch]\nprocesses = 'all'\n"},
        "config/mirror.toml: fetch.processes: expected an integer, got 'all'",
        id="processes-not-a-number",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetch]\nconcurrency = '8'\n"},
        "config/mirror.toml: fetch.concurrency: expected an integer, got '8'",
        id="quoted-number",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetch]\nmax_bytes = 'lots'\n"},
        "config/mirror.toml: fetch.max_bytes: expected a size like 104857600, '100MB' or '1 GiB', got 'lots'",
        id="bad-size",
    ),
    pytest.param(
        {"config/mirror.toml": "[storage]\ndatabase = 'state/mirror.db'\n"},
        "config/mirror.toml: storage.database: expected a database URL like 'sqlite:///state/mirror.db', "
        "got 'state/mirror.db'",
        id="database-not-a-url",
    ),
    pytest.param(
        {"config/mirror.toml": "fetch = 5\n"},
        "config/mirror.toml: fetch: expected a table, got 5",
        id="section-not-a-table",
    ),
    pytest.param(
        {"config/mirror.toml": f"targets = ['{A}', '{B}', '{C}', 'ftp://x']\n"},
        "config/mirror.toml: targets[3]: not an http(s) URL: 'ftp://x'",
        id="bad-url-in-list",
    ),
    pytest.param(
        {"config/mirror.toml": f"[[targets]]\nurl = '{A}'\n[[targets]]\nurl = 'ftp://x'\n"},
        "config/mirror.toml: targets[1].url: not an http(s) URL: 'ftp://x'",
        id="bad-url-in-table",
    ),
    pytest.param(
        {
            "config/mirror.toml": "targets_file = 'targets.txt'\n",
            "config/targets.txt": f"# archive\n{A}\n\nwww.prisoncensorship.info/archive/\n",
        },
        "config/targets.txt:4: not an http(s) URL: 'www.prisoncensorship.info/archive/'",
        id="bad-url-in-targets-file",
    ),
    pytest.param(
        {"config/mirror.toml": "[[targets]]\ninterval = '1h'\n"},
        "config/mirror.toml: targets[0].url: required key is missing",
        id="table-without-url",
    ),
    pytest.param(
        {"config/mirror.toml": "targets = [42]\n"},
        "config/mirror.toml: targets[0]: expected a URL or a table with url = ..., got 42",
        id="target-neither-url-nor-table",
    ),
    pytest.param(
        {"config/mirror.toml": f"targets = ['{A}', '{B}', '{SHOUTED_A}']\n"},
        f"config/mirror.toml: targets[2]: duplicate target {A} (also config/mirror.toml: targets[0])",
        id="duplicate-in-list-after-normalising",
    ),
    pytest.param(
        {"config/mirror.toml": f"[[targets]]\nurl = '{B}'\n[[targets]]\nurl = '{B}#top'\n"},
        f"config/mirror.toml: targets[1].url: duplicate target {B} (also config/mirror.toml: targets[0].url)",
        id="duplicate-in-tables",
    ),
    pytest.param(
        {
            "config/mirror.toml": "targets_file = 'targets.txt'\n",
            "config/targets.txt": f"{A}\n{C}\n# again\n{A}\n",
        },
        f"config/targets.txt:4: duplicate target {A} (also config/targets.txt:1)",
        id="duplicate-in-targets-file",
    ),
    pytest.param(
        {
            "config/mirror.toml": f"targets_file = 'targets.txt'\ntargets = ['{A}']\n",
            "config/targets.txt": f"{C}\n{A}\n",
        },
        f"config/targets.txt:2: duplicate target {A} (also config/mirror.toml: targets[0])",
        id="duplicate-across-forms",
    ),
    pytest.param(
        {"config/mirror.toml": "targets_file = 'targets.txt'\n"},
        "config/mirror.toml: targets_file: no such file: 'config/targets.txt'",
        id="missing-targets-file",
    ),
    pytest.param(
        {"config/mirror.toml": "[fetch]\ntimeout = '5s'\nretries = \n"},
        "config/mirror.toml: invalid TOML: Invalid value (at line 3, column 11)",
        id="toml-syntax-error",
    ),
    pytest.param(
        {"elsewhere.toml": ""},
        "config/mirror.toml: no such file (give one with --config FILE or $MIRROR_CONFIG)",
        id="missing-config-file",
    ),
]


@pytest.mark.parametrize(("files", "message"), BROKEN)
def test_a_broken_config_is_refused_in_one_line_naming_file_key_and_value(write, files, message):
    write(files)
    with pytest.raises(ConfigError) as caught:
        load_config("config/mirror.toml", {})
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_a_bad_database_url_in_the_environment_names_the_variable(write):
    write({"config/mirror.toml": ""})
    with pytest.raises(ConfigError) as caught:
        load_config("config/mirror.toml", {"MIRROR_DATABASE_URL": "mirror.db"})
    assert str(caught.value) == (
        "config/mirror.toml: storage.database: $MIRROR_DATABASE_URL: "
        "expected a database URL like 'sqlite:///state/mirror.db', got 'mirror.db'"
    )


def test_a_malformed_database_url_does_not_echo_its_password(write):
    write({"config/mirror.toml": ""})
    with pytest.raises(ConfigError) as caught:
        load_config("config/mirror.toml", {"MIRROR_DATABASE_URL": "postgres:s3cret@db.example/mirror"})
    assert "s3cret" not in str(caught.value)
    assert "'***@db.example/mirror'" in str(caught.value)


def test_a_config_error_carries_file_and_key_for_the_program(write):
    write({"config/mirror.toml": "[fetch]\ntimeout = 'soon'\n"})
    with pytest.raises(ConfigError) as caught:
        load_config("config/mirror.toml", {})
    assert (caught.value.file, caught.value.key) == ("config/mirror.toml", "fetch.timeout")


# --- [[sources]]: where more targets are found -----------------------------------------------

ETEXT = "https://www.prisoncensorship.info/archive/etext/"


def test_a_crawl_source_and_a_sitemap_source_load_with_their_bounds_and_defaults(write):
    config = load(
        write,
        f"""
        [schedule]
        interval = "12h"

        [[sources]]
        start = "{ETEXT}index.html"
        scope = "{ETEXT}"
        max_pages = 5000
        interval = "1d"
        robots = false

        [[sources]]
        sitemap = "HTTPS://Example.org/archive/sitemap.xml"
        """,
    )

    crawl, sitemap = config.sources
    assert crawl == Source("crawl", f"{ETEXT}index.html", ETEXT, 5000, timedelta(days=1), robots=False)
    assert sitemap == Source(
        "sitemap", "https://example.org/archive/sitemap.xml", "https://example.org/archive/",
        DEFAULT_MAX_PAGES, timedelta(hours=12), robots=True,
    )  # fmt: skip
    assert config.targets == ()  # what sources find is discovered, never configured


def test_a_crawl_without_a_scope_stays_in_its_start_pages_folder_and_honours_robots(write):
    config = load(write, f"[[sources]]\nstart = '{ETEXT}wim/../mt/index.html'\n")

    (source,) = config.sources
    assert (source.url, source.scope) == (f"{ETEXT}mt/index.html", f"{ETEXT}mt/")
    assert source.robots is True
    assert source.max_pages == DEFAULT_MAX_PAGES == 10_000


def test_the_start_pages_of_crawls_are_the_seeds_of_discovery(write):
    config = load(
        write,
        f"""
        targets = ["{A}"]
        [[sources]]
        start = "{ETEXT}"
        interval = "2h"
        [[sources]]
        sitemap = "https://example.org/sitemap.xml"
        """,
    )

    assert config.discovery_seeds() == (Target(ETEXT, timedelta(hours=2), source="crawl"),)
    assert config.targets == (Target(A, timedelta(hours=6), source="config"),)


def test_a_config_without_sources_has_none(write):
    assert load(write, f"targets = ['{A}']\n").sources == ()
    assert load(write, "").discovery_seeds() == ()


BROKEN_SOURCES = [
    pytest.param(
        "[[sources]]\nscope = 'https://x.org/'\n",
        "config/mirror.toml: sources[0]: has neither start nor sitemap: give exactly one "
        "(start = URL crawls, sitemap = URL reads)",
        id="neither-start-nor-sitemap",
    ),
    pytest.param(
        f"[[sources]]\nstart = '{ETEXT}'\n[[sources]]\nstart = '{ETEXT}'\nsitemap = '{ETEXT}sitemap.xml'\n",
        "config/mirror.toml: sources[1]: has both start and sitemap: give exactly one "
        "(start = URL crawls, sitemap = URL reads)",
        id="both-start-and-sitemap",
    ),
    pytest.param(
        "[[sources]]\nstart = 'ftp://x.org/pub/'\n",
        "config/mirror.toml: sources[0].start: not an http(s) URL: 'ftp://x.org/pub/'",
        id="start-not-http",
    ),
    pytest.param(
        "[[sources]]\nsitemap = 'example.org/sitemap.xml'\n",
        "config/mirror.toml: sources[0].sitemap: not an http(s) URL: 'example.org/sitemap.xml'",
        id="sitemap-not-a-url",
    ),
    pytest.param(
        f"[[sources]]\nstart = '{ETEXT}'\nscope = 'https://www.prisoncensorship.info/archive/etext/wim/'\n",
        f"config/mirror.toml: sources[0].start: the start page {ETEXT} is not under scope {ETEXT}wim/",
        id="start-outside-its-scope",
    ),
    pytest.param(
        f"[[sources]]\nstart = '{ETEXT}'\nmax_pages = 0\n",
        "config/mirror.toml: sources[0].max_pages: must be at least 1, got 0",
        id="zero-max-pages",
    ),
    pytest.param(
        f"[[sources]]\nstart = '{ETEXT}'\nrobots = 'no'\n",
        "config/mirror.toml: sources[0].robots: expected true or false, got 'no'",
        id="robots-not-a-boolean",
    ),
    pytest.param(
        f"[[sources]]\nstart = '{ETEXT}'\ninterval = '0s'\n",
        "config/mirror.toml: sources[0].interval: expected a duration longer than 0, got '0s'",
        id="zero-interval",
    ),
    pytest.param(
        f"[[sources]]\nstart = '{ETEXT}'\nmax_page = 10\n",
        "config/mirror.toml: sources[0].max_page: unknown key (did you mean 'max_pages'?)",
        id="misspelt-key",
    ),
    pytest.param(
        f"[[sources]]\nstart = '{ETEXT}'\ntargets_file = 'targets.txt'\n",
        "config/mirror.toml: sources[0].targets_file: unknown key "
        "(a top-level key: move it above the first [[sources]] table)",
        id="top-level-key-below-sources",
    ),
    pytest.param(
        f"sources = ['{ETEXT}']\n",
        f"config/mirror.toml: sources[0]: expected a table with start = URL or sitemap = URL, got '{ETEXT}'",
        id="source-not-a-table",
    ),
]


@pytest.mark.parametrize(("toml", "message"), BROKEN_SOURCES)
def test_a_broken_source_is_refused_in_one_line_naming_its_key(write, toml, message):
    write({"config/mirror.toml": toml})
    with pytest.raises(ConfigError) as caught:
        load_config("config/mirror.toml", {})
    assert str(caught.value) == message


# --- values that reach the wire are checked when the file is read (issue 11, points 6 and 7) ---


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        pytest.param(
            '[fetch]\nuser_agent = "mirror\\r\\nX-Evil: 1"\n',
            "config/mirror.toml: fetch.user_agent: a control character (U+000D) cannot be sent in a header, "
            "got 'mirror\\r\\nX-Evil: 1'",
            id="user-agent-with-crlf",
        ),
        pytest.param(
            '[fetch]\nuser_agent = "mirror\\u0000"\n',
            "config/mirror.toml: fetch.user_agent: a control character (U+0000) cannot be sent in a header, "
            "got 'mirror\\x00'",
            id="user-agent-with-nul",
        ),
        pytest.param(
            '[fetch]\nuser_agent = "mirror/1 ☃"\n',
            "config/mirror.toml: fetch.user_agent: '☃' (U+2603) cannot be sent in a header (Latin-1 only), "
            "got 'mirror/1 ☃'",
            id="user-agent-not-latin-1",
        ),
        pytest.param(
            '[fetch]\nuser_agent = " mirror/1"\n',
            "config/mirror.toml: fetch.user_agent: leading or trailing white space, got ' mirror/1'",
            id="user-agent-leading-space",
        ),
        pytest.param(
            '[fetch]\nuser_agent = "' + "m" * 1001 + '"\n',
            "config/mirror.toml: fetch.user_agent: longer than 1000 characters (1001)",
            id="user-agent-too-long",
        ),
        pytest.param(
            'targets = ["https://example.org/a\\u0000b"]\n',
            "config/mirror.toml: targets[0]: not a URL: 'https://example.org/a\\x00b' (a control character)",
            id="target-with-nul",
        ),
        pytest.param(
            'targets = ["https://example.org/a\\u007fb"]\n',
            "config/mirror.toml: targets[0]: not a URL: 'https://example.org/a\\x7fb' (a control character)",
            id="target-with-del",
        ),
        pytest.param(
            '[[targets]]\nurl = "https://admin:s3cretPW@example.org/private/"\n',
            "config/mirror.toml: targets[0].url: credentials in URL are not supported: "
            "'https://admin:***@example.org/private/'",
            id="target-with-a-password",
        ),
        pytest.param(
            '[[sources]]\nstart = "https://admin:s3cretPW@example.org/etext/"\n',
            "config/mirror.toml: sources[0].start: credentials in URL are not supported: "
            "'https://admin:***@example.org/etext/'",
            id="source-with-a-password",
        ),
    ],
)
def test_a_value_that_cannot_be_sent_is_refused_at_load(write, toml, message):
    write({"config/mirror.toml": toml})

    with pytest.raises(ConfigError) as caught:
        load_config("config/mirror.toml", {})

    assert str(caught.value) == message
    assert "s3cretPW" not in str(caught.value)


def test_a_target_in_a_targets_file_with_a_password_is_refused_without_it(write):
    write(
        {
            "config/mirror.toml": "targets_file = 'targets.txt'\n",
            "config/targets.txt": "http://u:s3cretPW@a.org/\n",
        }
    )

    with pytest.raises(ConfigError) as caught:
        load_config("config/mirror.toml", {})

    assert str(caught.value) == (
        "config/targets.txt:1: credentials in URL are not supported: 'http://u:***@a.org/'"
    )


@pytest.mark.parametrize(
    "agent", ["mirror/1.0 (+https://example.org/mirror; ops@example.org)", "Müller-Archiv/2"]
)
def test_a_user_agent_a_server_can_receive_is_kept_as_written(write, agent):
    config = load(write, f'[fetch]\nuser_agent = "{agent}"\n')

    assert config.fetch.limits().user_agent == agent


@pytest.mark.parametrize("command", [["check"], ["status"], ["run"]])
def test_mirror_refuses_a_header_injection_in_the_user_agent_with_exit_2_before_anything(tmp_path, command):
    config = tmp_path / "mirror.toml"
    config.write_text(
        'targets = ["http://127.0.0.1:9/etext/"]\n[fetch]\nuser_agent = "mirror\\r\\nX-Evil: 1"\n'
    )
    env = {**os.environ, "MIRROR_DATABASE_URL": f"sqlite:///{tmp_path / 'state' / 'mirror.db'}"}
    env.pop("MIRROR_CONFIG", None)

    proc = subprocess.run(
        [sys.executable, "-m", "mirror", "--config", str(config), *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )

    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"mirror: error: {config}: fetch.user_agent: "
        "a control character (U+000D) cannot be sent in a header, got 'mirror\\r\\nX-Evil: 1'"
    ]
    assert not (tmp_path / "state").exists()  # refused before any store was opened or any check ran


# --- [detect]: missing_after as a span, and the user's block rules ------------------------


def test_missing_after_takes_a_count_or_a_span(write):
    assert load(write, "[detect]\nmissing_after = 5\n").detect.policy() == DetectPolicy(missing_after=5)
    policy = load(write, '[detect]\nmissing_after = "2d"\n').detect.policy()
    assert policy.missing_for == timedelta(days=2)


@pytest.mark.parametrize("value", ["0", '"soon"', "true", '"0s"', "1.5"])
def test_a_missing_after_that_is_no_count_or_span_is_one_line_naming_the_key(write, value):
    with pytest.raises(ConfigError) as caught:
        load(write, f"[detect]\nmissing_after = {value}\n")
    assert caught.value.key == "detect.missing_after"
    assert "a count of checks like 3 or a duration like '2d'" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_block_rule_from_the_config_becomes_a_rule_of_the_policy(write):
    config = load(
        write,
        '[[detect.block_rules]]\nname = "sucuri"\nstatus = [403, 503]\n'
        'headers = { Server = "Sucuri" }\ntitle = "Sucuri WebSite Firewall.*"\n',
    )
    (rule,) = config.detect.policy().block_rules
    assert (rule.name, rule.statuses, rule.headers) == (
        "sucuri",
        frozenset({403, 503}),
        (("server", "Sucuri"),),
    )
    assert rule.title.fullmatch("sucuri website firewall - access denied")


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ('name = "all"', "detect.block_rules[0]", "matches every answer"),
        ('name = "t"\ntitle = "(unclosed"', "detect.block_rules[0].title", "not a regular expression"),
        (
            'name = "h"\nheaders = { x-powered-by = "" }',
            "detect.block_rules[0].headers.x-powered-by",
            "keeps",
        ),
        ('name = "s"\nstatus = [42]', "detect.block_rules[0].status", "100 to 599"),
        ("status = [403]", "detect.block_rules[0].name", "required key is missing"),
        ('name = "x"\ntitel = "a"', "detect.block_rules[0].titel", "did you mean 'title'"),
    ],
)
def test_a_bad_block_rule_is_one_line_naming_its_key(write, table, key, problem):
    with pytest.raises(ConfigError) as caught:
        load(write, f"[[detect.block_rules]]\n{table}\n")
    assert caught.value.key == key
    assert problem in str(caught.value) and "\n" not in str(caught.value)
