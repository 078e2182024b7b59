"""Output: every result list goes through :func:`records` (table / json / csv / paths).

Results go to stdout; summaries, warnings and progress go to stderr, so
``vsearch query x.jpg --format paths | xargs ...`` works.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

from vsearch.cli.wording import cli_words


class Format(str, Enum):
    """Output formats shared by every command that prints records."""

    table = "table"
    json = "json"
    csv = "csv"
    paths = "paths"


class EvalFormat(str, Enum):
    """Formats of a metrics report (``evaluate``): no ``paths``, as a report has none to print."""

    table = "table"
    json = "json"
    csv = "csv"


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def _rows(items: Sequence[Any]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        data = asdict(item) if is_dataclass(item) and not isinstance(item, type) else dict(item)
        rows.append({k: _plain(v) for k, v in data.items()})
    return rows


def records(items: Sequence[Any], fmt: Format, *, columns: Sequence[str] | None = None,
            title: str | None = None, out: IO[str] | None = None, null: bool = False) -> None:
    """Print dataclasses or mappings in one of the shared formats.

    ``columns`` picks and orders fields for table and csv; json keeps every field.
    ``paths`` prints the ``path`` field, one per line, or NUL-terminated with ``null``
    (for ``xargs -0``: a file name may hold a newline).
    """
    out = out or sys.stdout
    rows = _rows(items)
    if fmt is Format.json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return
    if fmt is Format.paths:
        end = "\0" if null else "\n"
        for row in rows:
            out.write(f"{row['path']}{end}")
        return
    cols = list(columns or (rows[0].keys() if rows else []))
    if fmt is Format.csv:
        writer = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    right = {"rank", "score", "size", "pixels", "bytes"}
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    if not _is_tty(out):
        # A pipe or a file gets the same box without rich (about 40 ms of imports) and without
        # folding long paths, so a line stays one result for grep.
        out.write(_plain_table(cols, cells, right, title))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in cols:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row_cells in cells:
        table.add_row(*row_cells)
    Console(file=out, width=max(100, Console().width)).print(table)


def _is_tty(out: IO[str]) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _plain_table(cols: Sequence[str], cells: Sequence[Sequence[str]], right: set[str], title: str | None) -> str:
    """The box rich draws by default (heavy head), as plain text."""
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]

    def line(left: str, fill: str, mid: str, end: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + end + "\n"

    def row(values: Sequence[str], bar: str) -> str:
        parts = [(v.rjust(w) if c in right else v.ljust(w)) for v, w, c in zip(values, widths, cols)]
        return bar + bar.join(f" {p} " for p in parts) + bar + "\n"

    text = ""
    if title:
        text += title.center(sum(widths) + 3 * len(widths) + 1).rstrip() + "\n"
    text += line("┏", "━", "┳", "┓") + row(cols, "┃") + line("┡", "━", "╇", "┩")
    text += "".join(row(r, "│") for r in cells)
    return text + line("└", "─", "┴", "┘")


def mapping(data: Mapping[str, Any], fmt: Format, *, title: str | None = None,
            out: IO[str] | None = None, key: str = "metric") -> None:
    """Print one flat mapping (metrics, a summary): a two-column table (``key``, value), or one JSON object."""
    out = out or sys.stdout
    if fmt is Format.json:
        out.write(json.dumps({k: _plain(v) for k, v in data.items()}, indent=2) + "\n")
        return
    if fmt is Format.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([key, "value"])
        writer.writerows((k, _plain(v)) for k, v in data.items())
        return
    records([{key: k, "value": v} for k, v in data.items()], Format.table, title=title, out=out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else " ".join(str(value).splitlines())  # one row, one line


def index_summary(summary: Any, index_dir: Path, *, ann: Any = None, out: IO[str] | None = None) -> None:
    """What an embed / build-index run did, on stderr: counts, skips with reasons, time."""
    out = out or sys.stderr
    parts = [
        f"embedded {summary.embedded}",
        f"unchanged {summary.unchanged}",
        f"moved {summary.moved}",
        f"copies {summary.reused}",
        f"removed {summary.removed}",
        f"skipped {len(summary.skipped)}" + (f" (+{summary.skipped_before} known)" if summary.skipped_before else ""),
    ]
    out.write(f"{', '.join(parts)} in {summary.elapsed_s:.1f}s; index {index_dir} holds {summary.total} images"
              f" ({summary.model})\n")
    for path, reason in summary.skipped[:20]:
        out.write(f"skipped {path}: {cli_words(reason)}\n")
    if len(summary.skipped) > 20:
        out.write(f"... and {len(summary.skipped) - 20} more skipped\n")
    for path, reason in summary.scan_problems[:20]:
        out.write(f"not scanned {path}: {reason}\n")
    if ann is not None:
        out.write(f"annoy index: {ann.trees} trees ({ann.file})\n")


def duplicate_groups(groups: Sequence[Any], fmt: Format, *, columns: Sequence[str], out: IO[str] | None = None,
                     null: bool = False) -> None:
    """Duplicate groups as flat member records (one row each, ``group`` numbers them).

    json keeps every field (``keeper`` true/false, ``mtime`` in seconds since the epoch);
    table and csv show ``keeper`` as ``yes`` or blank and ``mtime`` as local time; ``paths``
    lists every member but the keepers and the keepers' own files under other paths (level
    ``same-file``): the copies a de-duplication would remove.
    """
    members = [m for g in groups for m in g]
    if fmt is Format.paths:
        records([m for m in members if m.is_copy], fmt, out=out, null=null)
        return
    if fmt is Format.json:
        records(members, fmt, out=out)
        return
    shown = []
    for m in members:
        row = _rows([m])[0]
        row["keeper"] = "yes" if m.keeper else ""
        row["mtime"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.mtime))
        shown.append(row)
    records(shown, fmt, columns=columns, out=out)
