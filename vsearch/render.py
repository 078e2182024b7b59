"""Output: every result list goes through :func:`records` (table / json / csv / paths).

Results go to stdout; summaries, warnings and progress go to stderr, so
``vsearch query x.jpg --format paths | xargs ...`` works.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any


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
        data = asdict(item) if is_dataclass(item) else dict(item)
        rows.append({k: _plain(v) for k, v in data.items()})
    return rows


def records(items: Sequence[Any], fmt: Format, *, columns: Sequence[str] | None = None,
            title: str | None = None, out: IO[str] | None = None) -> None:
    """Print dataclasses or mappings in one of the shared formats.

    ``columns`` picks and orders fields for table and csv; json keeps every field.
    ``paths`` prints the ``path`` field, one per line.
    """
    out = out or sys.stdout
    rows = _rows(items)
    if fmt is Format.json:
        out.write(json.dumps(rows, indent=2) + "\n")
        return
    if fmt is Format.paths:
        for row in rows:
            out.write(f"{row['path']}\n")
        return
    cols = list(columns or (rows[0].keys() if rows else []))
    if fmt is Format.csv:
        writer = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in cols:
        table.add_column(col, justify="right" if col in ("rank", "score") else "left", overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in cols))
    Console(file=out, width=max(100, Console().width)).print(table)


def mapping(data: Mapping[str, Any], fmt: Format, *, title: str | None = None,
            out: IO[str] | None = None) -> None:
    """Print one flat mapping (metrics, a summary): a two-column table, or one JSON object."""
    out = out or sys.stdout
    if fmt is Format.json:
        out.write(json.dumps({k: _plain(v) for k, v in data.items()}, indent=2) + "\n")
        return
    if fmt is Format.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["metric", "value"])
        writer.writerows((k, _plain(v)) for k, v in data.items())
        return
    records([{"metric": k, "value": v} for k, v in data.items()], Format.table, title=title, out=out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


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
        out.write(f"skipped {path}: {reason}\n")
    if len(summary.skipped) > 20:
        out.write(f"... and {len(summary.skipped) - 20} more skipped\n")
    for path, reason in summary.scan_problems[:20]:
        out.write(f"not scanned {path}: {reason}\n")
    if ann is not None:
        out.write(f"annoy index: {ann.trees} trees ({ann.file})\n")
