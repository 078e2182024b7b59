"""``vsearch evaluate --interleaving``: print what the interleaving log says, one row per experiment."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import IO, Any

from vsearch.cli import render
from vsearch.cli.render import EvalFormat, Format
from vsearch.errors import VsearchError


def _number(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def dwell_fields(prefix: str, dwell: Any) -> dict[str, Any]:
    """A ``vsearch.api`` DwellStats as flat fields (csv, json): how many, median and mean ms."""
    return {f"{prefix}_n": dwell.count,
            f"{prefix}_median_ms": None if dwell.median_ms is None else round(dwell.median_ms, 1),
            f"{prefix}_mean_ms": None if dwell.mean_ms is None else round(dwell.mean_ms, 1)}


def dwell_text(dwell: Any) -> str:
    """A DwellStats for a table: ``median / mean ms (n)``, or ``-`` when nothing was timed."""
    if not dwell.count:
        return "-"
    return f"{dwell.median_ms:.0f} / {dwell.mean_ms:.0f} ({dwell.count})"


def render_report(reports: Sequence[Any], fmt: EvalFormat | Format, *, quiet: bool = False, out: IO[str] | None = None,
           err: IO[str] | None = None) -> None:
    """Print each experiment (a ``vsearch.learning.interleaving.InterleavingReport``): the
    configurations, lists, queries won by each, ties, unclicked lists, A's share of the decided
    queries with its 95% interval, the sign test p-value, which is better, and the time spent on
    each team's results (median and mean ms: the page's lightbox; table, csv, json)."""
    out, err = out or sys.stdout, err or sys.stderr
    if fmt not in set(EvalFormat):
        raise VsearchError(f"an interleaving report prints as {', '.join(f.value for f in EvalFormat)}, not {fmt.value}")
    fmt = Format(fmt.value)
    rows = [{"a": r.a, "b": r.b, "lists": r.lists, "a_wins": r.wins, "b_wins": r.losses, "ties": r.ties,
             "unclicked": r.unclicked, "clicks_a": r.clicks_a, "clicks_b": r.clicks_b,
             "a_share": _number(r.share), "a_share_low": _number(r.ci[0]), "a_share_high": _number(r.ci[1]),
             "p_value": round(r.p_value, 6), "better": r.better or "neither yet",
             **dwell_fields("dwell_a", r.dwell_a), **dwell_fields("dwell_b", r.dwell_b)} for r in reports]
    if not rows:
        if fmt is Format.json:
            out.write("[]\n")
        err.write("note: no interleaved list is logged in this index yet (the page logs them while it interleaves "
                  "two configurations)\n")
        return
    if fmt is Format.table:
        shown = [{"a": row["a"], "b": row["b"], "lists": row["lists"], "a wins": row["a_wins"],
                  "b wins": row["b_wins"], "ties": row["ties"], "no click": row["unclicked"],
                  "a share [95% CI]": "n/a" if row["a_share"] is None else
                  f"{row['a_share']:.3f} [{row['a_share_low']:.3f}, {row['a_share_high']:.3f}]",
                  "p (sign test)": f"{row['p_value']:.3g}", "better": row["better"],
                  "a dwell ms: median / mean (n)": dwell_text(r.dwell_a),
                  "b dwell ms: median / mean (n)": dwell_text(r.dwell_b)} for row, r in zip(rows, reports)]
        render.records(shown, fmt, title="interleaving (team draft)", out=out)
    else:
        render.records(rows, fmt, out=out)
    if not quiet:
        for r in reports:
            err.write(f"{r.a} vs {r.b}: {r.verdict}\n")
