"""Every command is documented in the README and has help."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mirror.cli import cli

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
