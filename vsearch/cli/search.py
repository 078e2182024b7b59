"""``vsearch query``: the online stage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from vsearch.defaults import DEFAULT_QE
from vsearch.cli import render
from vsearch.errors import VsearchError
from vsearch.cli.options import (
    K,
    Device,
    IndexDir,
    MaxPerDay,
    MaxPerFolder,
    Null,
    OutputFormat,
    Quiet,
)
from vsearch.cli.render import Format

from vsearch.cli.app import AdapterOpt, AdapterSwitch, app, err, examples, user_errors
from vsearch.cli.wording import cli_words


@app.command(epilog=examples(
    "vsearch query ~/Pictures/cat.jpg    # the 10 nearest: rank, similarity, path",
    "vsearch query a.jpg b.jpg --not dog.jpg -k 20 --html results.html",
    "vsearch query cat.jpg -f paths --null | xargs -0 ls -l",
))
@user_errors
def query(
    queries: Annotated[list[str], typer.Argument(
        metavar="IMAGE",
        help="Image file(s) to find more of (several are averaged); with a CLIP index, text such as "
             "\"a dog on the beach\".", show_default=False)],
    index_dir: IndexDir = None,
    k: Annotated[int, typer.Option("--k", "-k", metavar="N", min=1, help="Number of results.")] = K,
    fmt: OutputFormat = Format.table,
    null: Null = False,
    exact: Annotated[bool, typer.Option("--exact", help="Brute-force search over all stored embeddings.")] = False,
    approximate: Annotated[bool, typer.Option("--approximate", help="Force the Annoy index.")] = False,
    negatives: Annotated[list[Path] | None, typer.Option(
        "--not", help="An image to steer away from (repeatable).", show_default=False)] = None,
    not_weight: Annotated[float, typer.Option("--not-weight", min=0.0,
                                              help="Weight of the negatives' mean against the positives' mean.")] = 0.5,
    exclude_self: Annotated[bool, typer.Option("--exclude-self", help="Leave the query images themselves out of the results.")] = False,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Only results with at least this cosine similarity.")] = None,
    path_glob: Annotated[str | None, typer.Option("--path", help="Only results whose path (relative to the indexed folder) matches this glob, e.g. '*.png' or 'holiday/*'.")] = None,
    dedupe: Annotated[float | None, typer.Option("--dedupe", help="Collapse results whose cosine to a better result is at least THRESHOLD (e.g. 0.92).", metavar="THRESHOLD")] = None,
    diverse: Annotated[float | None, typer.Option("--diverse", min=0.0, max=1.0, help="Maximal marginal relevance re-ranking: LAMBDA 1 = relevance only, lower = more varied.", metavar="LAMBDA")] = None,
    expand: Annotated[int, typer.Option("--qe", min=0, help="Average query expansion: re-query with the mean of the query and its top N results (0 = off); the nearest photo by the query's own vector stays first (docs/defaults.md).", metavar="N")] = DEFAULT_QE,
    verify: Annotated[int, typer.Option("--verify", min=0, metavar="N", help="Re-rank the top N by local-feature verification against the query image: finds the original of a crop or edited copy first (0 = off; 10 is the measured trade, about 25 ms per result).")] = 0,
    html_out: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML gallery of the query and results.", dir_okay=False)] = None,
    sheet_out: Annotated[Path | None, typer.Option("--sheet", help="Also write a contact-sheet PNG of the query and results.", dir_okay=False)] = None,
    max_per_folder: MaxPerFolder = None,
    max_per_day: MaxPerDay = None,
    device: Device = "auto",
    adapter: AdapterOpt = AdapterSwitch.on,
    quiet: Quiet = False,
) -> None:
    """Print the K images nearest to the query: rank, cosine similarity and path.

    A query image already in the index reuses its stored vector (no model is loaded).
    """
    from vsearch import api  # numpy and the library: --help does not pay for them

    if exact and approximate:
        raise VsearchError("--exact and --approximate exclude each other")
    _check_utf8(queries, negatives or [])
    with api.open_index(index_dir, device=device, adapter=adapter is AdapterSwitch.on) as index:
        stale = index.freshness().warning()  # a cheap, time-boxed look: an index is never silently stale
        if stale:
            err(cli_words(stale))
        dropped: list[Path] = []
        hits = index.query(queries, k, negatives=negatives or [], not_weight=not_weight, exclude_self=exclude_self,
                           min_score=min_score, path_glob=path_glob, dedupe=dedupe, diverse=diverse, qe=expand,
                           mode="exact" if exact else "approximate" if approximate else "auto",
                           on_missing=dropped.extend, verify=verify,
                           max_per_folder=max_per_folder, max_per_day=max_per_day)
    if html_out or sheet_out:  # before the listing: a file that cannot be written is the one thing printed
        from vsearch.cli import gallery  # Pillow: only --html/--sheet pays for it

        # os.path.exists: a text query longer than a file name is text, not an OSError
        shown = [Path(q).expanduser() if os.path.exists(Path(q).expanduser()) else q for q in queries]
        if html_out:
            written = gallery.write_html(html_out, hits, queries=shown, negatives=negatives or [])
            if not quiet:
                err(f"gallery: {written}")
        if sheet_out:
            written = gallery.write_sheet(sheet_out, hits, queries=shown)
            if not quiet:
                err(f"contact sheet: {written}")
    render.records(hits, fmt, columns=["rank", "score", "path"], null=null)
    if dropped:
        err(f"{len(dropped)} results dropped: files no longer on disk (run vsearch build-index to refresh)")
    if not hits and not quiet:
        err("no results" + (" passed the filters" if min_score is not None or path_glob else ""))


def _check_utf8(queries: list[str], negatives: list[Path]) -> None:
    """Refuse a query file name that is not valid UTF-8 in one line (vsearch indexes only UTF-8 names)."""
    for name in [*queries, *map(str, negatives)]:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise VsearchError(f"file name is not valid UTF-8: {shown}; rename it "
                               "(vsearch reads only UTF-8 names)") from None
