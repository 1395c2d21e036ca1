"""The README and the program agree: every command, `--json` key, event and table."""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from mirror.cli import cli
from mirror.domain import OutcomeKind, Status
from tests.test_cli import Mirror, write_config

README = (Path(__file__).parent.parent / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_is_in_the_readme_and_has_help_with_an_example(name):
    assert f"mirror {name}" in README
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_readme_opens_with_the_two_setup_commands():
    head = README.split("\n## ", 1)[0]
    assert ".venv/bin/mirror run" in head
    assert ".venv/bin/pytest" in head


def test_ci_runs_exactly_the_readme_test_command():
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    test_line = next(line for line in README.splitlines() if line.strip().endswith(".venv/bin/pytest"))
    assert test_line.strip() in ci


# -- `--json` documents carry every key the README documents, and no other ----------------------


def documented_json(name: str) -> str:
    """Return the README's description of the `--json` document of `name` (its bullet)."""
    section = README.split("### `--json` documents", 1)[1].split("\n## ", 1)[0]
    bullet = next(line for line in section.splitlines() if line.startswith(f"- `{name}`: "))
    return bullet.split(": ", 1)[1]


def documented_keys(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Return the keys named outside parentheses, and per key the names in its parentheses.

    `outcomes` (count by outcome: `new`, ...) lists the keys of a dict; `item` (`blob`, ...)
    lists values; which it is, the document itself says (a dict or not).
    """
    keys: set[str] = set()
    inside: dict[str, set[str]] = {}
    depth, last = 0, ""
    for match in re.finditer(r"\(|\)|`([^`]+)`", text):
        if match[0] == "(":
            depth += 1
        elif match[0] == ")":
            depth -= 1
        elif depth == 0:
            keys.add(last := match[1])
        else:
            inside.setdefault(last, set()).add(match[1])
    return keys, inside


def json_keys(document) -> tuple[set[str], set[str]]:
    """Return every key at any depth (not inside free-form `details`), and the keys holding dicts."""
    found: set[str] = set()
    dicts: set[str] = set()

    def walk(value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                found.add(key)
                if key == "details":
                    continue
                if isinstance(inner, dict):
                    dicts.add(key)
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(document)
    return found, dicts


def assert_documented(document, text: str) -> None:
    keys, inside = documented_keys(text)
    found, dicts = json_keys(document)
    expected = keys | {k for key in dicts for k in inside.get(key, set())}
    assert found == expected, f"undocumented: {found - expected}; missing: {expected - found}"


def test_every_json_document_carries_exactly_the_keys_the_readme_documents(site, database_url, tmp_path):
    site.put("/doc.html", b"<p>the document</p>")
    url = site.url("/doc.html")
    m = Mirror(write_config(tmp_path / "mirror.toml", [url]), database_url, tmp_path)

    check = m.json("check")
    assert set(check["outcomes"]) == {str(k) for k in OutcomeKind}  # zero counts included
    assert check["outcomes"]["changed"] == 0 and check["outcomes"]["new"] == 1
    assert_documented(check, documented_json("check"))
    assert documented_keys(documented_json("check"))[1]["outcomes"] == {str(k) for k in OutcomeKind}

    status = m.json("status")
    assert set(status["targets_by_status"]) == {str(s) for s in Status}
    assert_documented(status, documented_json("status"))
    assert documented_keys(documented_json("status"))[1]["targets_by_status"] == {str(s) for s in Status}

    assert_documented(m.json("targets"), documented_json("targets"))
    assert_documented(m.json("history", url), documented_json("history"))

    one, whole = documented_json("restore").split("; with `--all`: ")
    assert_documented(m.json("restore", url, "--to", str(tmp_path / "doc.html")), one)
    now = datetime.now(UTC).isoformat()
    assert_documented(m.json("restore", "--all", "--at", now, "--to", str(tmp_path / "site")), whole)

    full, head = documented_json("verify").split(" `verify --head --json`: ")
    assert_documented(m.json("verify", "--head"), head)
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:  # damage, so that `problems` has an item to show its keys
            conn.execute(text("UPDATE blobs SET size = size + 1"))
    finally:
        engine.dispose()
    damaged = m("verify", "--json", check=False)
    assert damaged.returncode == 1
    report = json.loads(damaged.stdout)
    assert report["problems"]
    assert_documented(report, full)


# -- the README says what the program does ------------------------------------------------------


def test_no_table_in_the_readme_is_broken_by_a_blank_line():
    lines = README.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("|") and (n == 0 or not lines[n - 1].startswith("|")):
            # A table starts here: its second line must be the header separator.
            assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[n + 1]), f"README line {n + 1}: {line!r}"


EVENT_NAME = re.compile(r"[a-z_]+\.[a-z_]+")
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log", "msg"}


def documented_events() -> tuple[set[str], set[str]]:
    """Return the events in the first column of the README's event tables, and those of "Other events"."""
    section = README.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    tables = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", section, re.MULTILINE))
    other = section.split("\nOther events: ", 1)[1].split("\n", 1)[0]
    return tables, set(re.findall(r"`([a-z_]+\.[a-z_]+)`", other))


def events_the_code_uses() -> tuple[set[str], list[str]]:
    """Return the event names the code refers to (by their `mirror.events` constants), and its literal ones.

    A literal is a string constant equal to an event name, or any dotted name given to a
    logger as its event: both bypass the vocabulary.
    """
    from mirror import events

    values = {k: v for k, v in vars(events).items() if k.isupper() and isinstance(v, str)}
    vocabulary = set(values.values())
    used: set[str] = set()
    literals: list[str] = []
    for path in sorted((Path(__file__).parent.parent / "mirror").rglob("*.py")):
        if path.name == "events.py" and path.parent.name == "mirror":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.module == "mirror.events":
                used |= {values[a.name] for a in node.names if a.name in values}
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "events" and node.attr in values:
                    used.add(values[node.attr])
            elif isinstance(node, ast.Constant) and node.value in vocabulary:
                literals.append(f"{where}: {node.value!r}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                first = node.args[0]
                if (
                    node.func.attr in LOG_METHODS
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                    and EVENT_NAME.fullmatch(first.value)
                ):
                    literals.append(f"{where}: {first.value!r}")
    return used, literals


def test_the_vocabulary_the_readme_and_the_code_name_the_same_events():
    from mirror import events

    constants = [v for k, v in vars(events).items() if k.isupper() and isinstance(v, str)]
    vocabulary = events.vocabulary()
    assert len(constants) == len(vocabulary)  # no name twice under two constants
    assert {"document.changed", "check.crashed", "service.started", "library.log"} <= vocabulary
    tables, other = documented_events()
    assert tables & other == set(), "an event both in a table and among the other events"
    used, literals = events_the_code_uses()
    assert literals == [], "name events by their mirror.events constant"
    assert sorted(vocabulary - (tables | other)) == [], "in mirror.events, not in the README"
    assert sorted((tables | other) - vocabulary) == [], "in the README, not in mirror.events"
    assert sorted(vocabulary - used) == [], "in mirror.events, used by no code"
    assert set(events.DOCUMENT_EVENTS) <= tables
    for name in (events.INTEGRITY_DAMAGED, events.CHECK_SKIPPED, events.CHECK_FAILED):
        assert name in tables


def test_the_readme_names_the_folder_a_port_restores_to():
    from mirror.restore import site_path

    assert "`<host>_<port>` (`127.0.0.1_8080/`" in README
    assert site_path("http://127.0.0.1:8080/a.html").parts[0] == "127.0.0.1_8080"


def test_targets_counts_in_words(site, tmp_path):
    site.put("/one.html", b"<p>one</p>")
    m = Mirror(
        write_config(tmp_path / "m.toml", [site.url("/one.html")]), f"sqlite:///{tmp_path / 'm.db'}", tmp_path
    )
    m("check")
    assert m("targets").stdout.decode().splitlines()[-1] == "1 target"
    assert "in 1 blob" in m("status").stdout.decode()


def test_the_target_forms_the_readme_shows_load_and_the_forbidden_mix_is_one_line(tmp_path):
    from mirror.config import load_config
    from mirror.errors import ConfigError

    (tmp_path / "targets.txt").write_text("https://a.org/3.html\n")
    config = tmp_path / "mirror.toml"
    config.write_text(
        'targets = ["https://a.org/1.html", { url = "https://a.org/2.html", interval = "1d" }]\n'
        'targets_file = "targets.txt"\n'
    )
    loaded = load_config(config, {})
    assert [t.url for t in loaded.targets] == [f"https://a.org/{n}.html" for n in (1, 2, 3)]
    assert loaded.targets[1].interval.days == 1
    assert 'targets = ["https://...", { url = "https://...", interval = "1d" }]' in README

    config.write_text('targets = ["https://a.org/1.html"]\n\n[[targets]]\nurl = "https://a.org/2.html"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config, {})
    message = str(caught.value)
    assert caught.value.key == "targets" and "\n" not in message
    assert "[[targets]]" in message and "inline" in message
