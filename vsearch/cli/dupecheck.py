"""``vsearch duplicates --against FOLDER``, ``--explain A B`` and ``--marks``: the duplicates
command's questions that list no groups (``dupes.py`` hands them here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vsearch.cli import render
from vsearch.cli.app import err, progress_bar
from vsearch.cli.render import Format
from vsearch.cli.wording import cli_words
from vsearch.errors import VsearchError

#: Columns of ``--against``'s table or csv (json has every field).
AGAINST_COLUMNS = ["status", "level", "score", "path", "match"]
#: Columns of ``--explain``'s table or csv: one row per test.
EXPLAIN_COLUMNS = ["test", "value", "needs", "result"]
#: Columns of ``--marks``' table or csv.
MARKS_COLUMNS = ["time", "a", "b", "indexed"]


def check_modes(*, against: Path | None, explain: Any, marks: bool, unmark: Any, not_duplicate: Any,
                acting: bool, html: bool, present: bool, fmt: Format) -> str | None:
    """The one question asked (``against``, ``explain``, ``marks``), or None for the groups;
    a usage error for options that do not go together."""
    asked = [name for name, given in (("--against", against is not None), ("--explain", explain is not None),
                                      ("--marks", marks)) if given]
    if len(asked) > 1:
        raise VsearchError(f"{asked[0]} and {asked[1]} exclude each other; give one")
    if present and against is None:
        raise VsearchError("--present goes with --against FOLDER: it lists the photos the library holds already")
    if not asked:
        return None
    others = [name for name, given in (("--move-to/--trash", acting), ("--html", html),
                                       ("--not-duplicate", not_duplicate is not None), ("--unmark", unmark is not None))
              if given]
    if others:
        raise VsearchError(f"{asked[0]} lists no groups: it does not go with {others[0]}")
    if fmt is Format.paths and asked[0] != "--against":
        raise VsearchError(f"{asked[0]} prints a table, json or csv, not paths")
    return asked[0].lstrip("-")


def run_against(index: Any, folder: Path, *, level: str, threshold: float | None, min_overlap: float, mode: str,
                present: bool, fmt: Format, null: bool, quiet: bool) -> None:
    """Print, for every photo under ``folder``, whether the library holds it; ``-f paths``: the
    new ones (``present``: the ones it holds), for ``xargs cp``."""
    with progress_bar(quiet) as bar:
        results = index.against(folder, level=level, threshold=threshold, min_overlap=min_overlap, mode=mode,
                                progress=bar.update)
    held = [r for r in results if r.status == "present"]
    new = [r for r in results if r.status == "new"]
    unread = [r for r in results if r.status == "unreadable"]
    if fmt is Format.paths:
        render.records(held if present else new, fmt, null=null)
    else:
        render.records(held if present else results, fmt, columns=AGAINST_COLUMNS, null=null)
    if not quiet:
        for r in unread[:20]:
            err(f"not read: {r.path}: {cli_words(r.reason or '')}")
        if len(unread) > 20:
            err(f"... and {len(unread) - 20} more not read")
        levels = ", ".join(f"{sum(r.level == lv for r in held)} {lv}" for lv in ("exact", "near", "similar")
                           if any(r.level == lv for r in held))
        err(f"{len(results)} photos in {folder}: {len(held)} in the library already" + (f" ({levels})" if levels else "")
            + f", {len(new)} new" + (f", {len(unread)} not read" if unread else ""))


def run_explain(index: Any, a: Path, b: Path, *, level: str, threshold: float | None, min_overlap: float,
                fmt: Format) -> None:
    """Print every test of the pair, then the level it reaches and why (json: every field)."""
    why = index.explain(a, b, level=level, threshold=threshold, min_overlap=min_overlap)
    if fmt is Format.json:
        render.records([why], fmt)
        return
    rows = [{"test": c.test, "value": c.value, "needs": c.needs,
             "result": "" if c.passed is None else "pass" if c.passed else "miss"} for c in why.checks]
    rows.append({"test": "level", "value": why.level or "none", "needs": "", "result": cli_words(why.why)})
    render.records(rows, fmt, columns=EXPLAIN_COLUMNS, title=f"{a} ~ {b}" if fmt is Format.table else None)


def run_marks(index: Any, fmt: Format, quiet: bool) -> None:
    """Print the standing not-duplicate marks with their paths."""
    found = index.marks()
    if fmt is Format.json:
        render.records(found, fmt)
    else:
        rows = [{"time": m.time, "a": m.a, "b": m.b, "indexed": "yes" if m.indexed else "no"} for m in found]
        render.records(rows, fmt, columns=MARKS_COLUMNS)
    if not quiet:
        err(f"{len(found)} not-duplicate mark{'' if len(found) == 1 else 's'}; `vsearch duplicates --unmark A B` "
            "takes one back")
