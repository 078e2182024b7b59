"""Run the CLI in-process and check how it ended: ``cli``, ``ok``, ``fails``; one copy for every test file."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from vsearch.cli.main import app

runner = CliRunner()


def cli(*args: object):
    """``vsearch ARGS`` in-process (typer's CliRunner); stdout and stderr are kept apart."""
    return runner.invoke(app, [str(a) for a in args])


def ok(result):
    """Assert the run succeeded; returns it, for ``ok(cli(...)).stdout``."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def fails(result, pattern: str) -> str:
    """Exit 1 with exactly one stderr line, ``error: ...`` matching ``pattern``; returns it."""
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert result.stdout == ""
    return lines[0]
