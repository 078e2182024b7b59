"""What an evaluation says, shaped for people: metric grids, JSON, a per-query CSV, an HTML report.

:func:`render_evaluation` prints what ``vsearch evaluate`` prints: one index's metrics as a
K x metric grid (table, csv) or flat keys (json); several indexes side by side, with their
differences; and the run's summary and notes on stderr.

The HTML report is one self-contained file (no external links): a table of the systems, the
metrics side by side with differences and the headline's confidence interval, a plot of recall
against K (a matplotlib PNG embedded as a data URI), and the worst queries as thumbnails beside
what came back instead of the expected images.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from vsearch.imaging.thumbnails import data_uri, load_thumbnail
from vsearch.cli import render
from vsearch.atomic import write_output
from vsearch.errors import VsearchError
from vsearch.api.records import EvalReport, Evaluation, Labels, QueryRecord
from vsearch.cli.render import EvalFormat, Format
from vsearch.cli.wording import cli_words

#: The metrics measured at each cut-off K: the columns of the grid, in order.
AT_K = ("recall", "hit", "precision", "map", "ndcg")
#: How concentrated the top K are (evaluate.concentration): columns after those, where measured.
SHARES = ("folder_share", "day_share")

#: Worst queries shown per system in the HTML report.
WORST_QUERIES = 10
#: Results and expected images shown per worst query.
SHOW_RETURNED = 5
SHOW_EXPECTED = 3
THUMB_SIDE = 112


# --- metric rows ---------------------------------------------------------------------------


def shown_metrics(report: EvalReport, ks: Sequence[int], *, augmented: bool, ann: bool,
                  missing: Any = None) -> dict[str, Any]:
    """The metrics one system's column shows, in order.

    Labelled runs show every metric; augmented runs recall@K and mrr (there is one relevant
    image, so hit@K equals recall@K). Then ``KIND/recall@K`` and ``KIND/mrr`` per augmentation
    kind, and with ``ann`` the ``ann_recall@K`` (``missing`` where there is no Annoy index).
    """
    if augmented:
        out: dict[str, Any] = {f"recall@{k}": report.metrics[f"recall@{k}"] for k in ks}
        out["mrr"] = report.metrics["mrr"]
        out["num_queries"] = report.metrics["num_queries"]
        out.update({f"{m}@{k}": report.metrics[f"{m}@{k}"] for m in shares(report) for k in ks})
    else:
        out = dict(report.metrics)
    for kind, values in report.by_kind.items():
        for key, value in values.items():
            if key != "num_queries":
                out[f"{kind}/{key}"] = value
    if ann:
        for k in ks:
            out[f"ann_recall@{k}"] = report.ann_recall[k] if report.ann_recall else missing
    return out


def shares(report: EvalReport) -> tuple[str, ...]:
    """The concentration columns a report has: ``folder_share`` (share of the top K from the
    most common folder), then ``day_share`` where results had EXIF dates."""
    return tuple(m for m in SHARES if any(key.startswith(f"{m}@") for key in report.metrics))


def metric_grid(report: EvalReport, ks: Sequence[int], *, augmented: bool, ann: bool,
                missing: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per K, one column per metric measured at K: ``k``, recall, hit, precision, map,
    ndcg (recall alone for augmented copies: with one relevant image, the others add nothing),
    the concentration shares (:func:`shares`), then ``ann_recall`` with ``ann`` (``missing`` where there is no Annoy index)."""
    names = (("recall",) if augmented else AT_K) + shares(report)
    rows = []
    for k in ks:
        row: dict[str, Any] = {"k": k, **{m: report.metrics[f"{m}@{k}"] for m in names}}
        if ann:
            row["ann_recall"] = report.ann_recall[k] if report.ann_recall else missing
        rows.append(row)
    return rows, ["k", *names, *(["ann_recall"] if ann else [])]


def kind_grid(report: EvalReport, ks: Sequence[int]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per augmentation kind: its recall@K, mrr and number of queries."""
    keys = [f"recall@{k}" for k in ks] + ["mrr"]
    rows = [{"edit": kind, **{key: values[key] for key in keys}, "queries": int(values["num_queries"])}
            for kind, values in report.by_kind.items()]
    return rows, ["edit", *keys, "queries"]


def _single_csv_rows(report: EvalReport, ks: Sequence[int], *, augmented: bool,
                     ann: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The grid as one rectangular CSV: the values that have no K (mrr, num_queries, each kind's
    mrr) repeat on every row, so each row stands alone in a spreadsheet or a data frame."""
    rows, columns = metric_grid(report, ks, augmented=augmented, ann=ann, missing="")
    whole = {"mrr": report.metrics["mrr"], "num_queries": int(report.metrics["num_queries"])}
    kinds = list(report.by_kind)
    for row, k in zip(rows, ks):
        row.update({f"{kind}/recall": report.by_kind[kind][f"recall@{k}"] for kind in kinds})
        row.update(whole)
        row.update({f"{kind}/mrr": report.by_kind[kind]["mrr"] for kind in kinds})
    extra = [f"{kind}/recall" for kind in kinds] + list(whole) + [f"{kind}/mrr" for kind in kinds]
    return rows, columns + extra


def render_evaluation(ev: Evaluation, fmt: EvalFormat | Format, *, ann_recall: bool = False,
                      source: str = "", labels: Labels | None = None, quiet: bool = False,
                      written: Sequence[Path] = (), out: IO[str] | None = None,
                      err: IO[str] | None = None) -> None:
    """Print an evaluation as ``vsearch evaluate`` does: results to ``out`` (stdout), notes and
    the summary to ``err`` (stderr, see :func:`_render_notes`).

    One index: table, a K x metric grid (:func:`metric_grid`), then mrr and num_queries, then
    a grid by augmentation kind when there is one (:func:`kind_grid`); csv, the same grid in
    one table (:func:`_single_csv_rows`); json, one object with flat keys (``recall@1``, ...,
    ``mrr``, ``num_queries``, ``KIND/recall@K``, ``ann_recall@K``: :func:`shown_metrics`).
    Several indexes: one row per metric, a column per index and per difference against the
    first, then the headline's interval (:func:`comparison_rows`); json, :func:`to_json`.
    ``ann_recall`` adds ann_recall@K for one index (side by side always has it).
    """
    if fmt not in set(EvalFormat):
        raise VsearchError(f"an evaluation prints as {', '.join(f.value for f in EvalFormat)}, not {fmt.value}")
    _render_results(ev, Format(fmt.value), ann_recall, out or sys.stdout)
    _render_notes(ev, source=source, labels=labels, quiet=quiet, written=written, err=err or sys.stderr)


def _render_results(ev: Evaluation, fmt: Format, ann_recall: bool, out: IO[str]) -> None:
    if len(ev.reports) > 1:
        if fmt is Format.json:
            render.mapping(to_json(ev), fmt, out=out)
        else:
            rows, columns = comparison_rows(ev, ann=True, missing="n/a")
            render.records(rows, fmt, columns=columns, title="retrieval quality, side by side", out=out)
        return
    (report,) = ev.reports
    if fmt is Format.json:
        render.mapping(shown_metrics(report, ev.ks, augmented=ev.augmented, ann=ann_recall), fmt, out=out)
        return
    if fmt is Format.csv:
        rows, columns = _single_csv_rows(report, ev.ks, augmented=ev.augmented, ann=ann_recall)
        render.records(rows, fmt, columns=columns, out=out)
        return
    rows, columns = metric_grid(report, ev.ks, augmented=ev.augmented, ann=ann_recall, missing="n/a")
    render.records(rows, fmt, columns=columns, title="retrieval quality", out=out)
    render.mapping({"mrr": report.metrics["mrr"], "num_queries": int(report.metrics["num_queries"])}, fmt, out=out)
    if report.by_kind:
        rows, columns = kind_grid(report, ev.ks)
        render.records(rows, fmt, columns=columns, title="by edit", out=out)


def _render_notes(ev: Evaluation, *, source: str, labels: Labels | None, quiet: bool,
                  written: Sequence[Path], err: IO[str]) -> None:
    """What the run used and took: labels, timings, ann_recall, the headline's interval and
    verdict, files written. Notes about the labels themselves (repeated rows, picked images no
    longer on disk) are shown even when ``quiet``."""
    if labels is not None and labels.duplicates:
        err.write(f"note: {labels.duplicates} repeated label row(s) counted once\n")
    if labels is not None and labels.skipped:
        shown = ", ".join(str(p) for p in labels.skipped[:3])
        more = f" and {len(labels.skipped) - 3} more" if len(labels.skipped) > 3 else ""
        err.write(f"skipped {len(labels.skipped)} picked image(s) no longer on disk: {shown}{more} "
                  "(run vsearch build-index to refresh)\n")
    for note in labels.notes if labels is not None else ():
        err.write(f"note: {cli_words(note)}\n")
    if quiet:
        return
    err.write(f"{source}; {ev.reports[0].metrics['num_queries']} queries in {ev.elapsed_s:.1f}s\n")
    for r in ev.reports:
        ann = (", ".join(f"ann_recall@{key} {v:.4f}" for key, v in r.ann_recall.items()) if r.ann_recall
               else "ann_recall n/a (no Annoy index)")
        err.write(f"{r.label}: {r.model}, {r.count} images, {r.mode} search, {r.elapsed_s:.1f}s; {ann}\n")
    for c in ev.comparisons:
        err.write(f"{c.metric}: {c.other} - {c.baseline} = {ci_text(c)} "
                  f"({round(c.ci.confidence * 100)}% paired bootstrap CI): {c.verdict}\n")
    for path in written:
        err.write(f"wrote {path}\n")


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def ci_text(comparison: Any) -> str:
    """``+0.0123 [+0.0040, +0.0200]``: mean difference and its interval."""
    ci = comparison.ci
    return f"{_signed(ci.mean_diff)} [{_signed(ci.low)}, {_signed(ci.high)}]"


def diff_label(a: str, b: str) -> str:
    """Column name of the difference ``b - a``."""
    return f"{b} - {a}"


def comparison_rows(ev: Evaluation, *, ann: bool, missing: Any = "n/a") -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per metric) and columns: metric, one per system, one difference per non-baseline.

    The last rows hold the headline's paired bootstrap interval and verdict in the difference
    columns.
    """
    columns = [r.label for r in ev.reports]
    shown = [shown_metrics(r, ev.ks, augmented=ev.augmented, ann=ann, missing=missing) for r in ev.reports]
    base = ev.reports[0].label
    diffs = [diff_label(base, r.label) for r in ev.reports[1:]]
    rows = []
    for key in shown[0]:
        row: dict[str, Any] = {"metric": key}
        for label, values in zip(columns, shown):
            row[label] = values.get(key, missing)
        for name, values in zip(diffs, shown[1:]):
            a, b = shown[0].get(key), values.get(key)
            numeric = isinstance(a, (int, float)) and isinstance(b, (int, float)) and key != "num_queries"
            row[name] = float(b) - float(a) if numeric else ""  # type: ignore[arg-type]  # numeric: both are numbers
        rows.append(row)
    if ev.comparisons:
        conf = round(ev.comparisons[0].ci.confidence * 100)
        ci_row: dict[str, Any] = {"metric": f"{ev.headline} {conf}% CI", **{c: "" for c in columns}}
        verdict: dict[str, Any] = {"metric": "verdict", **{c: "" for c in columns}}
        for name, comp in zip(diffs, ev.comparisons):
            ci_row[name] = ci_text(comp)
            verdict[name] = comp.verdict
        rows += [ci_row, verdict]
    return rows, ["metric", *columns, *diffs]


def to_json(ev: Evaluation, *, ann: bool = True) -> dict[str, Any]:
    """The whole side-by-side evaluation as one JSON-ready mapping."""
    base = ev.reports[0]
    shown = [shown_metrics(r, ev.ks, augmented=ev.augmented, ann=ann) for r in ev.reports]
    differences = {}
    for report, values in zip(ev.reports[1:], shown[1:]):
        differences[diff_label(base.label, report.label)] = {
            k: values[k] - v for k, v in shown[0].items()
            if k != "num_queries" and isinstance(v, (int, float)) and isinstance(values.get(k), (int, float))
        }
    return {
        "headline": ev.headline,
        "systems": [
            {"label": r.label, "index_dir": str(r.index_dir), "model": r.model, "mode": r.mode,
             "images": r.count, "annoy_trees": r.annoy_trees, "metrics": values,
             "elapsed_s": round(r.elapsed_s, 3)}
            for r, values in zip(ev.reports, shown)
        ],
        "differences": differences,
        "comparisons": [
            {"baseline": c.baseline, "other": c.other, "metric": c.metric, "mean_diff": c.ci.mean_diff,
             "low": c.ci.low, "high": c.ci.high, "confidence": c.ci.confidence,
             "n_resamples": c.ci.n_resamples, "num_queries": c.num_queries, "verdict": c.verdict}
            for c in ev.comparisons
        ],
        "elapsed_s": round(ev.elapsed_s, 3),
    }


# --- per-query CSV -------------------------------------------------------------------------


def per_query_rows(ev: Evaluation) -> list[dict[str, Any]]:
    """One row per system and query: its relevant images' ranks, what came first, every metric."""
    rows = []
    for report in ev.reports:
        for r in report.records:
            rows.append({
                "system": report.label,
                "query": str(r.query),
                "kind": r.kind or "",
                "num_relevant": len(r.expected),
                "first_rank": r.relevant_ranks[0] if r.relevant_ranks else "",
                "relevant_ranks": " ".join(str(x) for x in r.relevant_ranks),
                "top_result": str(r.returned[0]) if r.returned else "",
                **{k: round(v, 6) for k, v in r.scores.items()},
            })
    return rows


def write_per_query(path: Path, ev: Evaluation) -> int:
    """Write :func:`per_query_rows` as CSV at ``path`` (atomically); the number of rows.

    ``first_rank`` is empty when no relevant image came back within the ranking's depth
    (100, or the largest K if larger); ``relevant_ranks`` lists every one that did.
    """
    rows = per_query_rows(ev)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write(path, buf.getvalue(), write_output)
    return len(rows)


def _write(path: Path, text: str, writer: Any) -> None:
    # writer: atomic.write_output, which replaces a file but writes a FIFO or /dev/null in place
    writer(path, text.encode("utf-8"))


# --- HTML report ---------------------------------------------------------------------------


def recall_curve(report: EvalReport) -> np.ndarray:
    """Mean recall@K over queries for K = 1 .. the ranking's depth (index K-1)."""
    depth = max((r.depth for r in report.records), default=1)
    curve = np.zeros(depth, dtype=np.float64)
    for r in report.records:
        if not r.expected:
            continue
        found = np.zeros(depth, dtype=np.float64)
        np.add.at(found, np.asarray(r.relevant_ranks, dtype=np.int64) - 1, 1.0)
        curve += np.cumsum(found) / len(r.expected)
    return curve / max(1, len(report.records))


def recall_plot_png(ev: Evaluation) -> bytes:
    """A PNG of recall against K (log scale), one line per system."""
    from matplotlib.figure import Figure  # lazily: only the report needs matplotlib

    fig = Figure(figsize=(6.4, 3.8), dpi=100)
    ax = fig.subplots()
    for report in ev.reports:
        curve = recall_curve(report)
        ax.plot(np.arange(1, len(curve) + 1), curve, label=report.label, linewidth=1.8)
    for k in ev.ks:
        ax.axvline(k, color="#bbbbbb", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def worst_queries(report: EvalReport, metric: str, n: int = WORST_QUERIES) -> list[QueryRecord]:
    """The ``n`` queries that score lowest on ``metric`` (ties: lower mrr, then query path)."""
    return sorted(report.records, key=lambda r: (r.scores[metric], r.scores["mrr"], str(r.query)))[:n]


class _Thumbs:
    """Data-URI JPEG thumbnails, each file read once."""

    def __init__(self, side: int = THUMB_SIDE) -> None:
        self.side = side
        self._cache: dict[Path, str | None] = {}

    def uri(self, path: Path) -> str | None:
        if path not in self._cache:
            try:
                self._cache[path] = data_uri(load_thumbnail(path, self.side))
            except VsearchError:
                self._cache[path] = None
        return self._cache[path]

    def tag(self, path: Path, *, cls: str = "", note: str = "") -> str:
        uri = self.uri(path)
        name = html.escape(path.name)
        img = (f'<img src="{uri}" alt="{name}">' if uri else '<div class="missing">unreadable</div>')
        note_html = f"<span>{html.escape(note)}</span>" if note else ""
        return f'<figure class="{cls}" title="{html.escape(str(path))}">{img}<figcaption>{note_html}{name}</figcaption></figure>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f5f5f5}
.q{display:flex;gap:6px;align-items:flex-start;margin:10px 0;padding:8px;border:1px solid #eee}
.q .info{width:150px;font-size:.8em}.sep{width:1px;background:#ddd;align-self:stretch;margin:0 6px}
figure{margin:0;width:112px;font-size:.7em;text-align:center;word-break:break-all}
figure img{max-width:112px;max-height:112px;border:3px solid transparent}
figure.query img{border-color:#3b6fd8}figure.expected img{border-color:#2e9b4f}
figure.hit img{border-color:#2e9b4f}figure.miss img{border-color:#d8453b}
figcaption span{display:block;font-weight:bold}.missing{width:112px;height:80px;background:#eee}
.small{color:#666;font-size:.85em}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("" if value is None else str(value))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _query_block(r: QueryRecord, metric: str, thumbs: _Thumbs) -> str:
    first = r.relevant_ranks[0] if r.relevant_ranks else None
    where = f"first relevant at rank {first}" if first else f"no relevant image in the top {r.depth}"
    info = (f'<div class="info"><b>{html.escape(metric)} {r.scores[metric]:.3f}</b><br>{html.escape(where)}'
            + (f"<br>edit: {html.escape(r.kind)}" if r.kind else "") + "</div>")
    parts = [info, thumbs.tag(r.query, cls="query", note="query")]
    parts += [thumbs.tag(p, cls="expected", note="expected") for p in r.expected[:SHOW_EXPECTED]]
    if len(r.expected) > SHOW_EXPECTED:
        parts.append(f'<div class="small">+{len(r.expected) - SHOW_EXPECTED} more expected</div>')
    parts.append('<div class="sep"></div>')
    expected = set(r.expected)
    for i, p in enumerate(r.returned[:SHOW_RETURNED], start=1):
        hit = p in expected
        parts.append(thumbs.tag(p, cls="hit" if hit else "miss", note=f"#{i}" + (" ✓" if hit else "")))
    return f'<div class="q">{"".join(parts)}</div>'


def render_html(ev: Evaluation, *, title: str = "vsearch evaluation", source: str = "") -> str:
    """The self-contained HTML report as a string."""
    thumbs = _Thumbs()
    systems = [
        {"system": r.label, "index": str(r.index_dir), "model": r.model, "images": r.count,
         "search": r.mode, "annoy trees": r.annoy_trees if r.annoy_trees else "none",
         "embedded queries": r.embedded_queries, "seconds": f"{r.elapsed_s:.1f}"}
        for r in ev.reports
    ]
    rows, columns = comparison_rows(ev, ann=True)
    png = base64.b64encode(recall_plot_png(ev)).decode("ascii")
    n = int(ev.reports[0].metrics["num_queries"])
    out = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        (f'<p class="small">{html.escape(source)}{"; " if source else ""}{n} queries; '
         f"evaluated in {ev.elapsed_s:.1f} s. Headline metric: {html.escape(ev.headline)}.</p>"),
        "<h2>Systems</h2>", _table(systems, list(systems[0])),
        "<h2>Metrics</h2>", _table(rows, columns),
    ]
    for c in ev.comparisons:
        out.append(
            f"<p>{html.escape(c.metric)}: {html.escape(c.other)} − {html.escape(c.baseline)} = "
            f"{c.ci.mean_diff:+.4f}, {round(c.ci.confidence * 100)}% CI [{c.ci.low:+.4f}, {c.ci.high:+.4f}] "
            f"(paired bootstrap over {c.num_queries} queries, {c.ci.n_resamples} resamples): "
            f"<b>{html.escape(c.verdict)}</b></p>"
        )
    out += ["<h2>Recall against K</h2>",
            f'<img alt="recall@K for K = 1 to {len(recall_curve(ev.reports[0]))}" src="data:image/png;base64,{png}">']
    for report in ev.reports:
        out.append(f"<h2>Worst queries: {html.escape(report.label)}</h2>")
        out.append('<p class="small">Blue: the query. Green: expected images, and results that are expected. '
                   "Red: what came back instead.</p>")
        out += [_query_block(r, ev.headline, thumbs) for r in worst_queries(report, ev.headline)]
    out.append("</body></html>")
    return "\n".join(out)


def write_html(path: Path, ev: Evaluation, *, title: str = "vsearch evaluation", source: str = "") -> None:
    """Write :func:`render_html` to ``path`` (atomically)."""
    _write(path, render_html(ev, title=title, source=source), write_output)


# --- clicks ----------------------------------------------------------------------------------


def render_clicks(rep: Any, fmt: EvalFormat | Format, *, quiet: bool = False, out: IO[str] | None = None,
                  err: IO[str] | None = None) -> None:
    """Print ``vsearch evaluate --clicks``: click-through and estimated propensity by rank (table,
    csv; json adds the summary), then raw CTR@K against the debiased (IPW) estimate.

    ``rep``: a :class:`vsearch.learning.propensity.ClickReport`.
    """
    out, err = out or sys.stdout, err or sys.stderr
    if fmt not in set(EvalFormat):
        raise VsearchError(f"a click report prints as {', '.join(f.value for f in EvalFormat)}, not {fmt.value}")
    fmt = Format(fmt.value)
    rows = [{"rank": r.rank, "impressions": r.impressions, "clicks": r.clicks, "ctr": r.ctr, "swaps": r.swaps,
             "propensity": r.propensity if r.propensity is not None else "n/a"} for r in rep.by_rank]
    summary: dict[str, Any] = {"lists": rep.lists, "swapped_lists": rep.swapped_lists, "clicks": rep.clicks,
                               "k": rep.depth}
    if rep.depth:
        summary.update({f"ctr@{rep.depth}": rep.ctr, f"ipw@{rep.depth}": rep.ipw})
    from vsearch.cli.interleave import dwell_fields, dwell_text  # the same dwell columns as --interleaving

    arms = [{"arm": a.arm or "all lists", "lists": a.lists, "clicked_lists": a.clicked_lists, "clicks": a.clicks,
             "ctr": round(a.ctr, 4), "ctr_low": round(a.ci[0], 4), "ctr_high": round(a.ci[1], 4),
             **dwell_fields("dwell", a.dwell)} for a in rep.arms]
    if fmt is Format.json:
        render.mapping({**summary, "by_rank": [{**r, "propensity": r["propensity"] if r["propensity"] != "n/a"
                                                else None} for r in rows],
                        "arms": arms, "split_p_value": rep.split_p}, fmt, out=out)
    else:
        if rows:
            render.records(rows, fmt, title="clicks by rank", out=out)
        if fmt is Format.table or not rows:
            render.mapping(summary, fmt, out=out)
        if fmt is Format.table and arms:  # csv has one table: the ranks (json has everything)
            render.records([{"arm": a["arm"], "lists": a["lists"], "clicked lists": a["clicked_lists"],
                             "clicks": a["clicks"], "ctr [95% CI]": f"{a['ctr']:.3f} [{a['ctr_low']:.3f}, "
                                                                   f"{a['ctr_high']:.3f}]",
                             "dwell ms: median / mean (n)": dwell_text(arm.dwell)}
                            for a, arm in zip(arms, rep.arms)],
                           fmt, title="click-through and time on results, per split arm", out=out)
    if rep.split_p is not None and not quiet:
        first, second = [a for a in rep.arms if a.arm is not None][:2]
        verdict = (f"{first.arm if first.ctr > second.ctr else second.arm} has the higher click-through"
                   if rep.split_p < 0.05 else "no clear difference in click-through yet")
        err.write(f"split A/B {first.arm} vs {second.arm}: {verdict} (two-proportion test p = {rep.split_p:.3g}, "
                  f"{first.lists} and {second.lists} lists)\n")
    if rep.depth == 0:
        err.write("note: no propensity could be estimated yet: it needs lists with a swapped pair and clicks "
                  "(the logger swaps a pair on a fraction of queries); ctr and ipw are n/a until then\n")
    elif not quiet:
        err.write(f"{rep.lists} lists ({rep.swapped_lists} with a swapped pair), {rep.clicks} clicks; "
                  f"propensities estimated from the swaps for ranks 1-{rep.depth}, relative to rank 1; "
                  f"ipw@{rep.depth}: mean clicks per result in the top {rep.depth}, each weighted by "
                  "1/propensity (position-debiased)\n")
