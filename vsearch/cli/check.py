"""``vsearch check``: verify every file of an index against what its commit recorded."""

from __future__ import annotations

from typing import Annotated

import typer

from vsearch.cli import render
from vsearch.cli.app import app, err, examples, user_errors
from vsearch.cli.options import IndexDir, Quiet
from vsearch.cli.render import Format
from vsearch.cli.wording import cli_words
from vsearch.errors import VsearchError


@app.command(epilog=examples(
    "vsearch check                       # the default index: each file, its status, its repair",
    "vsearch check --index-dir ~/idx/crop -f json",
    "Exits 1 when a file is damaged or missing. What each damage does, and its repair: docs/damage.md.",
))
@user_errors
def check(
    index_dir: IndexDir = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", metavar="FORMAT", help="table or json.")] = Format.table,
    quiet: Quiet = False,
) -> None:
    """Verify every file of an index: sizes and checksums recorded at each commit, vectors, manifest, marks, logs.

    Reads every byte (nothing is changed) and prints each file with its status (ok, damaged,
    missing, or unchecked: no checksum recorded) and the command that repairs it.
    """
    import dataclasses

    from vsearch import api  # numpy and the library: --help does not pay for them

    if fmt not in (Format.table, Format.json):
        raise VsearchError("check prints one report: use --format table or json")
    report = api.check(index_dir)
    files = [dataclasses.replace(f, problem=cli_words(f.problem), repair=cli_words(f.repair)) for f in report.files]
    notes = [cli_words(n) for n in report.notes]
    if fmt is Format.json:
        render.mapping({"index": report.index_dir, "generation": report.generation, "ok": report.ok,
                        "files": [dataclasses.asdict(f) for f in files], "notes": notes}, fmt)
    else:
        render.records(files, fmt, columns=["file", "role", "status", "problem", "repair"], title="vsearch check")
    for note in notes:
        err(f"note: {note}")
    bad = [f for f in files if f.status in ("damaged", "missing")]
    if bad:
        err(f"{len(bad)} of {len(files)} files damaged or missing; each row says what repairs it")
        raise typer.Exit(1)
    if not quiet:
        err(f"{len(files)} files checked: none damaged")
