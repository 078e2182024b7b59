"""The README's promises that a test can keep: its Python examples are the tested ones, and the
commands and options it names exist."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from vsearch.cli.main import app

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
API_DOC = (REPO / "docs" / "api.md").read_text(encoding="utf-8")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_every_readme_python_example_is_one_that_test_api_runs():
    readme, tested = python_blocks(README), python_blocks(API_DOC)
    assert readme, "the README shows the Python API"
    for block in readme:
        assert block in tested, f"README example not in docs/api.md (so not run by test_api):\n{block}"


def test_every_command_and_option_in_the_readme_exists():
    runner = CliRunner()
    commands = set(re.findall(r"^\| `vsearch ([a-z-]+)", README, flags=re.M))
    assert {"embed", "build-index", "query", "duplicates", "evaluate", "make-pairs", "info"} <= commands
    helps = {c: runner.invoke(app, [c, "--help"], terminal_width=200).stdout for c in commands}
    for command, text in helps.items():
        assert "Usage:" in text, command
    every_help = "\n".join(helps.values())
    for option in set(re.findall(r"`(--[a-z][a-z-]+)", README)):
        assert option in every_help, f"{option} is in the README but in no command's help"


def test_readme_points_at_no_file_users_do_not_have():
    assert "../shared" not in README
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert (REPO / target).exists(), target
