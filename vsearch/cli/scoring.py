"""``vsearch evaluate``, ``vsearch train`` and ``vsearch make-pairs``: measure and improve retrieval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vsearch.defaults import DEFAULT_QE
from vsearch.errors import VsearchError
from vsearch.locations import default_index_dir
from vsearch.cli.options import (
    Device,
    EvalMaxPerDay,
    EvalMaxPerFolder,
    Folder,
    IndexDir,
    Quiet,
)
from vsearch.cli.render import EvalFormat

from vsearch.cli.app import app, err, examples, progress_bar, user_errors


def _parse_ks(text: str) -> list[int]:
    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise VsearchError(f"--k takes comma-separated integers, e.g. 1,5,10 (got {text!r})") from None


def _per_index(option: str, text: str, n: int, noun: str) -> list[str]:
    """A comma-separated option value with one item per --index-dir, or one item for all."""
    items = [m.strip() for m in text.split(",")]
    if len(items) == 1:
        return items * n
    if len(items) != n:
        raise VsearchError(f"{option} lists {len(items)} {noun} for {n} --index-dir; give one per index, or one for all")
    return items


def _search_modes(mode: str | None, exact: bool, n: int) -> list[str]:
    """One search mode per --index-dir: --mode lists them (or one for all); --exact means exact."""
    if mode is None:
        return ["exact" if exact else "auto"] * n
    if exact:
        raise VsearchError("--exact and --mode exclude each other; use --mode exact")
    from vsearch import api  # numpy comes with it: --help does not pay for it

    modes = _per_index("--mode", mode, n, "modes")
    bad = [m for m in modes if m not in api.MODES]
    if bad:
        raise VsearchError(f"--mode {bad[0]!r}: choose auto, exact or approximate")
    return modes


def _expansions(qe: str | None, n: int) -> list[int]:
    """One query-expansion depth per --index-dir (0 = off; default: query's)."""
    if qe is None:
        return [DEFAULT_QE] * n
    try:
        values = [int(v) for v in _per_index("--qe", qe, n, "depths")]
    except ValueError:
        raise VsearchError(f"--qe takes whole numbers, e.g. 3 or 0,3 (got {qe!r})") from None
    if any(v < 0 for v in values):
        raise VsearchError("--qe takes numbers of 0 or more")
    return values


def _caps(option: str, text: str | None, n: int) -> list[int | None]:
    """One re-ranking cap per --index-dir (None = off): ``2``, or ``off,2`` to compare."""
    if text is None:
        return [None] * n
    out: list[int | None] = []
    for item in _per_index(option, text, n, "caps"):
        if item.lower() in ("off", "none"):
            out.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            value = 0
        if value < 1:
            raise VsearchError(f"{option} takes a whole number, 1 or more, or 'off' (got {item!r})")
        out.append(value)
    return out


@app.command(epilog=examples(
    "vsearch evaluate --groups labels.csv    # a CSV of path,group",
    "vsearch evaluate --augment 200          # no labels: do edited copies find their originals?",
    "vsearch evaluate --index-dir A --index-dir B --groups labels.csv   # A/B, with a CI",
    "vsearch evaluate --judgments            # on verdicts recorded with vsearch judge",
    "vsearch evaluate --clicks               # the page's click log, position bias removed",
    "vsearch evaluate --interleaving         # the page's interleaving experiments: which ranker won",
    "vsearch evaluate --index-dir A --index-dir A --groups labels.csv --max-per-folder off,3   # what a cap costs",
))
@user_errors
def evaluate(
    index_dirs: Annotated[list[Path] | None, typer.Option(
        "--index-dir", file_okay=False, show_default=False,
        help="Index folder; repeat it to score several indexes on the same labels, side by side, with the "
             "differences against the first. Default: $VSEARCH_INDEX_DIR, else ~/.local/share/vsearch/index.")] = None,
    pairs: Annotated[Path | None, typer.Option("--pairs", help="CSV: query,positive[,relevance[,augmentation]].", dir_okay=False)] = None,
    groups: Annotated[Path | None, typer.Option("--groups", help="CSV: path,group (extra columns ignored).", dir_okay=False)] = None,
    augment: Annotated[int | None, typer.Option(
        "--augment", min=1, show_default=False,
        help="No labels needed: pick N indexed images, query with edited copies of each (crop, flip, rotate, colour, "
             "blur, downscale, jpeg, all; made in a temporary folder, never indexed) and score whether the "
             "original comes back.")] = None,
    judged: Annotated[bool, typer.Option(
        "--judgments", help="Score on the verdicts recorded with `vsearch judge` or the page (in the first "
                            "--index-dir), graded: nDCG uses the grades.")] = False,
    clicks: Annotated[bool, typer.Option(
        "--clicks", help="Report the page's click log instead: click-through by rank, per-rank propensities "
                         "estimated from its swapped pairs, and the position-debiased (IPW) click metric.")] = False,
    interleaving: Annotated[bool, typer.Option(
        "--interleaving", help="Report the page's interleaving experiments instead: for each pair of configurations, "
                               "the queries each won by clicks (team-draft), the ties, the share of wins with a 95% "
                               "interval, a sign test p-value and which is better.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --augment's picks and edits, and the bootstrap.")] = 0,
    k: Annotated[str | None, typer.Option("--k", help="Cut-offs, comma-separated. Default: 1,5,10; 1,10 with --augment.",
                                             show_default=False)] = None,
    fmt: Annotated[EvalFormat, typer.Option("--format", "-f", help="Output format.")] = EvalFormat.table,
    exact: Annotated[bool, typer.Option("--exact", help="Brute-force search (default: as query).")] = False,
    mode: Annotated[str | None, typer.Option(
        "--mode", help="Search mode: auto, exact or approximate; comma-separated, one per --index-dir, to compare "
                       "modes (e.g. --index-dir X --index-dir X --mode exact,approximate).", show_default=False)] = None,
    headline: Annotated[str | None, typer.Option(
        "--headline", help="Metric whose difference gets the paired bootstrap 95% CI. Default: map@10 (or the "
                           "largest K's map); recall@1 with --augment.", show_default=False)] = None,
    qe: Annotated[str | None, typer.Option(
        "--qe", metavar="N", show_default=False,
        help=f"Average query expansion with the top N results (0 = off; default {DEFAULT_QE}, as query); "
             "comma-separated, one per --index-dir, to compare (e.g. --index-dir X --index-dir X --qe 0,3).")] = None,
    ann_recall: Annotated[bool, typer.Option(
        "--ann-recall", help="Add ann_recall@K (Annoy top K against exact top K, same queries) to the results; "
                             "side-by-side runs and reports always have it.")] = False,
    html_report: Annotated[Path | None, typer.Option(
        "--report", dir_okay=False, help="Write a self-contained HTML report: metrics, a recall@K plot, the worst "
                                         "queries beside what came back.", show_default=False)] = None,
    per_query: Annotated[Path | None, typer.Option(
        "--per-query", dir_okay=False, help="Write each query's ranks and metrics as CSV.", show_default=False)] = None,
    max_per_folder: EvalMaxPerFolder = None,
    max_per_day: EvalMaxPerDay = None,
    adapter: Annotated[str, typer.Option(
        "--adapter", metavar="on|off", help="Search through the index's trained head (`vsearch train`) when it has one; "
                                           "comma-separated, one per --index-dir, to compare (e.g. --index-dir X "
                                           "--index-dir X --adapter off,on).")] = "on",
    copy_first: Annotated[str, typer.Option(
        "--copy-first", metavar="on|off", help="Keep the nearest photo by the query's own vector first when --qe or "
                                               "--dba change the order (as query does); comma-separated, one per "
                                               "--index-dir, to compare (e.g. --copy-first off,on).")] = "on",
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Score retrieval on labelled pairs or groups, or on edited copies (--augment N).

    Recall, hit, precision, mAP and nDCG at each K, and MRR; side by side for several --index-dir.
    folder_share (day_share) is how concentrated the top K are: the share from the most common folder (EXIF day).
    """
    import tempfile

    from vsearch import api  # numpy and the library: --help does not pay for them
    from vsearch.cli import report  # matplotlib and Pillow: only evaluate pays for them

    if interleaving:
        if sum(x is not None for x in (pairs, groups, augment)) or judged or clicks or len(index_dirs or []) > 1:
            raise VsearchError("--interleaving reports one index's interleaving log: give no labels, no --clicks "
                               "and one --index-dir")
        from vsearch.cli import interleave  # the report's renderer: only this report pays for it

        where = index_dirs[0] if index_dirs else None
        interleave.render_report(api.interleaving_reports(where), fmt, quiet=quiet)
        split = [a.arm for a in api.click_report(where).arms if a.arm is not None]
        if split and not quiet:  # a split A/B test is in the click log, not the interleaving log
            err(f"note: the click log also holds a split A/B test ({', '.join(split)}): "
                "`vsearch evaluate --clicks` reports each arm's click-through and time on results")
        return
    if clicks:
        if sum(x is not None for x in (pairs, groups, augment)) or judged or len(index_dirs or []) > 1:
            raise VsearchError("--clicks reports one index's click log: give no labels and one --index-dir")
        report.render_clicks(api.click_report(index_dirs[0] if index_dirs else None), fmt, quiet=quiet)
        return
    if sum(x is not None for x in (pairs, groups, augment)) + judged != 1:
        raise VsearchError("give exactly one of --pairs FILE, --groups FILE or --augment N "
                          "(or --judgments: the verdicts recorded with vsearch judge)")
    ks = _parse_ks(k or ("1,10" if augment else "1,5,10"))
    dirs = index_dirs or [default_index_dir()]
    modes = _search_modes(mode, exact, len(dirs))
    expands = _expansions(qe, len(dirs))
    folder_caps = _caps("--max-per-folder", max_per_folder, len(dirs))
    day_caps = _caps("--max-per-day", max_per_day, len(dirs))
    adapters = _per_index("--adapter", adapter, len(dirs), "settings")
    if any(a not in ("on", "off") for a in adapters):
        raise VsearchError(f"--adapter takes on or off, comma-separated (got {adapter!r})")
    pinned = _per_index("--copy-first", copy_first, len(dirs), "settings")
    if any(c not in ("on", "off") for c in pinned):
        raise VsearchError(f"--copy-first takes on or off, comma-separated (got {copy_first!r})")
    setups = [api.Setup(Path(d), m, e, f, day, a == "on", c == "on")
              for d, m, e, f, day, a, c in zip(dirs, modes, expands, folder_caps, day_caps, adapters, pinned)]
    with tempfile.TemporaryDirectory(prefix="vsearch-augment-") as tmp, progress_bar(quiet) as bar:
        done = api.evaluate_side_by_side(setups, pairs=pairs, groups=groups, augment=augment, judged=judged, ks=ks,
                                         scratch=Path(tmp), headline=headline, seed=seed, device=device,
                                         progress=bar.update)
        # Written before the temporary copies go: the report shows them as thumbnails.
        if per_query is not None:
            report.write_per_query(per_query, done.evaluation)
        if html_report is not None:
            report.write_html(html_report, done.evaluation, source=done.source)
    result, source, labelled = done.evaluation, done.source, done.labels
    report.render_evaluation(result, fmt, ann_recall=ann_recall, source=source, labels=labelled, quiet=quiet,
                             written=[p for p in (per_query, html_report) if p is not None])


@app.command(epilog=examples(
    "vsearch train                        # a head from edited views of the collection's own photos",
    "vsearch train --use-judgments        # and from the judged pairs (relevant: positives; irrelevant: hard negatives)",
    "vsearch evaluate --index-dir X --index-dir X --adapter off,on --groups labels.csv   # did it help? (A/B, CI)",
    "vsearch train --remove               # back to the raw vectors",
))
@user_errors
def train(
    index_dir: IndexDir = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, metavar="N", help="Passes over the pairs.")] = 10,
    dim: Annotated[int | None, typer.Option("--dim", min=1, metavar="D", show_default=False,
                                            help="Length of the projected vectors (default 256).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, metavar="S", help="Seed for the views' edits and the fit: the same seed "
                                                           "gives the same head.")] = 0,
    views: Annotated[int, typer.Option("--views", min=0, metavar="V",
                                       help="Edited views of each photo used as positives (0: judgments only).")] = 2,
    use_judgments: Annotated[bool, typer.Option(
        "--use-judgments", help="Add judged pairs: relevant ones as positives, irrelevant ones as hard negatives.")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Drop the trained head from the index instead.")] = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Fit a small projection head on the index's vectors (contrastive, InfoNCE) and save it in the index.

    Queries, duplicates and evaluate then search through it (--adapter off: the raw vectors).
    Nothing changes until you train: measure with `vsearch evaluate --adapter off,on` before you keep it.
    """
    from vsearch import api  # numpy and the library: --help does not pay for them

    where = index_dir or default_index_dir()
    if remove:
        removed = api.remove_head(where)
        if not quiet:
            err("trained head removed" if removed else "no trained head to remove")
        return
    with progress_bar(quiet) as bar:
        result = api.train(where, epochs=epochs, dim=dim, seed=seed, views=views, use_judgments=use_judgments,
                           device=device, progress=lambda stage, done, total: bar.update(done, total))
    if not quiet:
        a = result.adapter
        err(f"trained a {a.dim_in} -> {a.dim_out} head on {a.trained_on} pairs ({result.view_pairs} views, "
             f"{result.judged_pairs} judged, {result.hard_negatives} hard negatives), {a.epochs} epochs: loss "
             f"{result.loss_start:.3f} -> {result.loss_end:.3f}; views {result.embed_s:.1f}s, fit {result.fit_s:.1f}s; "
             f"saved as {a.file}")


@app.command("make-pairs", epilog=examples(
    "vsearch make-pairs ~/Pictures --augment 100 --out ~/eval-set",
    "vsearch evaluate --pairs ~/eval-set/pairs.csv   # then score any index on them",
))
@user_errors
def make_pairs(
    folder: Folder,
    augment: Annotated[int, typer.Option("--augment", min=1, help="How many images to make edited copies of.")],
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="New or empty folder for the copies and pairs.csv.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed for the picks and the edits.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Write edited copies of N images under FOLDER and a pairs CSV, for `vsearch evaluate --pairs`."""
    from vsearch import api  # numpy and the library: --help does not pay for them

    pairs, count = api.make_pairs(folder, augment, seed, out)
    if not quiet:
        err(f"{count} copies of {augment} images in {out}")
    typer.echo(str(pairs))
