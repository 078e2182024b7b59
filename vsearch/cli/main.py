"""The ``vsearch`` command line: parse, call the library, render. Nothing here knows how.

Shared options are declared once in :mod:`vsearch.cli.options`; usage errors, closed pipes and
start-up time are handled under every command by :class:`vsearch.cli.base.VsearchGroup`.
Library modules that import numpy or Pillow are imported inside the commands that use them, so
``--help`` and ``--version`` stay quick.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from vsearch import __version__
from vsearch.cli import render
from vsearch.cli.base import VsearchGroup, stdout_closed
from vsearch.defaults import DEFAULT_BATCH_SIZE, DEFAULT_TREES
from vsearch.errors import VsearchError
from vsearch.locations import default_index_dir
from vsearch.cli.options import (
    K,
    Address,
    BatchSize,
    Device,
    EngineOpt,
    EvalMaxPerDay,
    EvalMaxPerFolder,
    Exclude,
    Folder,
    IndexDir,
    MaxPerDay,
    MaxPerFolder,
    MaxPixels,
    ModelOpt,
    Null,
    OutputFormat,
    Quiet,
    Rebuild,
    Refit,
    Vectors,
    Workers,
)
from vsearch.cli.render import EvalFormat, Format

F = TypeVar("F", bound=Callable[..., Any])


class AdapterSwitch(str, Enum):
    """Whether a search goes through the index's trained projection head (``vsearch train``)."""

    on = "on"
    off = "off"


AdapterOpt = Annotated[AdapterSwitch, typer.Option(
    "--adapter", case_sensitive=False,
    help="on: search through the head `vsearch train` fitted, when the index has one; off: the raw vectors.")]

app = typer.Typer(
    cls=VsearchGroup,
    help="Visual search over local image folders: index a folder, then find the pictures that look like a photo.",
    epilog="Start with `vsearch build-index ~/Pictures`, then `vsearch query ~/Pictures/cat.jpg`. "
           "Every command has --help, with examples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

__all__ = ["app", "default_index_dir", "run", "user_errors"]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _examples(*lines: str) -> str:
    """A command's epilog: examples, one per line (help shows them as written)."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def user_errors(fn: F) -> F:
    """Turn a library error into one ``error: ...`` line on stderr and exit status 1.

    A reader that closes stdout early (``| head -1``) ends the command quietly with status 0.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, where it can still be caught
            return result
        except BrokenPipeError:
            stdout_closed()
            raise typer.Exit(0) from None
        except VsearchError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _err("interrupted: work done so far is saved; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vsearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Visual search over local image folders."""


class progress_bar:
    """A rich progress bar on stderr (count, images/s, ETA); silent when quiet or not a TTY."""

    def __init__(self, quiet: bool) -> None:
        self._enabled = not quiet and sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> progress_bar:
        if self._enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("embedding"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} img/s"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )
            self._bar.start()
        return self

    def update(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` images."""
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task("embed", total=total, rate="-")
        task = self._bar.tasks[0]
        rate = f"{task.speed:.1f}" if task.speed else "-"
        self._bar.update(self._task, completed=done, total=total, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _build(folder: Path, index_dir: Path | None, *, quiet: bool, trees: int | None = None, dba: int = 0,
           **options: Any):
    """Bring the index up to date with ``folder`` (and build Annoy when ``trees``), with a progress bar."""
    from vsearch import api

    with progress_bar(quiet) as bar:
        return api.build_index(folder, index_dir, trees=trees, dba=dba, progress=lambda p: bar.update(p.done, p.total),
                               on_note=None if quiet else _err, **options)


@app.command(epilog=_examples(
    "vsearch embed ~/Pictures            # new and changed photos only; stop and rerun freely",
    "vsearch embed ~/Pictures --index-dir ~/idx/crop --model efficientnet-lite0-centrecrop",
))
@user_errors
def embed(
    folder: Folder,
    index_dir: IndexDir = None,
    model: ModelOpt = None,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    workers: Workers = None,
    device: Device = "auto",
    max_pixels: MaxPixels = None,
    quiet: Quiet = False,
    exclude: Exclude = None,
    rebuild: Rebuild = False,
    engine: EngineOpt = "local",
    address: Address = None,
) -> None:
    """Embed every image under FOLDER (new and changed files only) into the index."""
    with _build(folder, index_dir, quiet=quiet, model=model, batch_size=batch_size, workers=workers, device=device,
                max_pixels=max_pixels, exclude=exclude or (), rebuild=rebuild,
                engine=engine, address=address) as index:
        if not quiet:
            render.index_summary(index.summary, index.index_dir)


@app.command("build-index", epilog=_examples(
    "vsearch build-index ~/Pictures      # embed what is new, then build the Annoy index",
    "vsearch build-index ~/Pictures --index-dir ~/idx/browse --dba 5",
))
@user_errors
def build_index(
    folder: Folder,
    index_dir: IndexDir = None,
    trees: Annotated[int, typer.Option("--trees", metavar="N", min=1,
                                       help="Annoy trees: more is more accurate and larger.")] = DEFAULT_TREES,
    model: ModelOpt = None,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    workers: Workers = None,
    device: Device = "auto",
    max_pixels: MaxPixels = None,
    quiet: Quiet = False,
    dba: Annotated[int, typer.Option(
        "--dba", min=0, metavar="N",
        help="Database-side augmentation: store each image's vector averaged with its N nearest neighbours "
             "(0 = off, the default). Helps browsing by category, hurts finding one photo: on flowers17, "
             "--dba 5 with query --qe 10 raised mAP@10 from 0.778 to 0.827, but the first result was "
             "right less often (MRR 0.941 to 0.922), and scores become similarities to the averaged vectors.")] = 0,
    exclude: Exclude = None,
    rebuild: Rebuild = False,
    engine: EngineOpt = "local",
    address: Address = None,
    approximate: Annotated[str, typer.Option(
        "--index", metavar="KIND",
        help="The approximate index: annoy, ivfpq (faiss IVF-PQ, 64 bytes a vector; needs "
             "pip install 'vsearch[scale]'), or auto: Annoy below 250,000 images, IVF-PQ from there when faiss is "
             "installed (docs/scaling.md). Up to 100,000 images a query is exact anyway.")] = "auto",
    vectors: Vectors = None,
    refit: Refit = False,
) -> None:
    """Embed what is missing under FOLDER, then build the approximate index (Annoy or IVF-PQ) beside the embeddings."""
    with _build(folder, index_dir, quiet=quiet, trees=trees, dba=dba, model=model, batch_size=batch_size,
                workers=workers, device=device, max_pixels=max_pixels, exclude=exclude or (), rebuild=rebuild,
                engine=engine, address=address, approximate=approximate, vectors=vectors, refit=refit) as index:
        if not quiet:
            render.index_summary(index.summary, index.index_dir, ann=index.meta.ann)
            if index.meta.ivfpq is not None:
                info = index.meta.ivfpq
                _err(f"ivfpq index: {info.nlist} lists, {info.m} bytes a vector, {info.nprobe} probed ({info.file})")


@app.command(epilog=_examples(
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
    expand: Annotated[int, typer.Option("--qe", min=0, help="Average query expansion: re-query with the mean of the query and its top N results (0 = off).", metavar="N")] = 0,
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
    from vsearch import api

    if exact and approximate:
        raise VsearchError("--exact and --approximate exclude each other")
    _check_utf8(queries, negatives or [])
    with api.open_index(index_dir, device=device, adapter=adapter is AdapterSwitch.on) as index:
        stale = index.freshness().warning()  # a cheap, time-boxed look: an index is never silently stale
        if stale:
            _err(stale)
        dropped: list[Path] = []
        hits = index.query(queries, k, negatives=negatives or [], not_weight=not_weight, exclude_self=exclude_self,
                           min_score=min_score, path_glob=path_glob, dedupe=dedupe, diverse=diverse, qe=expand,
                           mode="exact" if exact else "approximate" if approximate else "auto",
                           on_missing=dropped.extend, verify=verify,
                           max_per_folder=max_per_folder, max_per_day=max_per_day)
    render.records(hits, fmt, columns=["rank", "score", "path"], null=null)
    if html_out or sheet_out:
        from vsearch.cli import gallery

        shown = [Path(q).expanduser() if Path(q).expanduser().exists() else q for q in queries]
        if html_out:
            written = gallery.write_html(html_out, hits, queries=shown, negatives=negatives or [])
            if not quiet:
                _err(f"gallery: {written}")
        if sheet_out:
            written = gallery.write_sheet(sheet_out, hits, queries=shown)
            if not quiet:
                _err(f"contact sheet: {written}")
    if dropped:
        _err(f"{len(dropped)} results dropped: files no longer on disk (run vsearch build-index to refresh)")
    if not hits and not quiet:
        _err("no results" + (" passed the filters" if min_score is not None or path_glob else ""))


def _check_utf8(queries: list[str], negatives: list[Path]) -> None:
    """Refuse a query file name that is not valid UTF-8 in one line (vsearch indexes only UTF-8 names)."""
    for name in [*queries, *map(str, negatives)]:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise VsearchError(f"file name is not valid UTF-8: {shown}; rename it "
                               "(vsearch reads only UTF-8 names)") from None


class Level(str, Enum):
    """``duplicates --level``: how alike two files must be to share a group."""

    exact = "exact"
    near = "near"
    similar = "similar"


class KeepRule(str, Enum):
    """``duplicates --keep``: which copy of each group is kept."""

    default = "default"
    largest = "largest"
    smallest = "smallest"
    oldest = "oldest"
    newest = "newest"
    shortest_path = "shortest-path"


#: Columns of a duplicates table or csv (json has every field of a member).
DUPLICATE_COLUMNS = ["group", "size", "keeper", "level", "score", "pixels", "bytes", "format", "mtime", "path"]


@app.command(epilog=_examples(
    "vsearch duplicates                  # groups of copies in the default index, the keeper first",
    "vsearch duplicates --level exact    # byte-identical files only",
    "vsearch duplicates ~/Pictures -f paths --null | xargs -0 ls -l   # every copy but the keepers",
    "vsearch duplicates --html review.html --move-to ~/dupes   # look first: a dry run and a review page",
    "vsearch duplicates --move-to ~/dupes --yes   # then act; `vsearch undo` puts everything back",
    "vsearch duplicates --not-duplicate a.jpg b.jpg   # keep these two apart from now on",
))
@user_errors
def duplicates(
    folder: Annotated[Path | None, typer.Argument(
        metavar="FOLDER",
        help="Bring the index up to date with this folder first (embeds new files); default: use the index as it is.",
        show_default=False)] = None,
    index_dir: IndexDir = None,
    level: Annotated[Level, typer.Option(
        "--level", case_sensitive=False,
        help="exact: same bytes; near: copies verified by local features (rescaled, recompressed, "
             "cropped, edited, mirrored); similar: cosine only (looks alike).")] = Level.near,
    keep: Annotated[KeepRule, typer.Option(
        "--keep", case_sensitive=False,
        help="Which copy each group keeps. default: most pixels, then largest file, then oldest, then path; "
             "largest/smallest: file size first; oldest/newest: mtime first; shortest-path.")] = KeepRule.default,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", metavar="COSINE", help="near: cosine at which pairs are shortlisted for verification "
                            "(default 0.80); similar: cosine at which two images are grouped (default 0.92).")] = None,
    fmt: OutputFormat = Format.table,
    null: Null = False,
    exact: Annotated[bool, typer.Option("--exact", help="Exact neighbours even above the Annoy size limit.")] = False,
    move_to: Annotated[Path | None, typer.Option(
        "--move-to", metavar="DIR", show_default=False,
        help="Move every copy that is not kept under DIR (an existing folder), keeping its path relative to the "
             "indexed folder. A dry run unless --yes; undo with `vsearch undo`.")] = None,
    trash: Annotated[bool, typer.Option(
        "--trash", help="Send every copy that is not kept to the trash. A dry run unless --yes; undo with "
                        "`vsearch undo`.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do what --move-to or --trash would do (each action is "
                                                          "logged first, for `vsearch undo`).")] = False,
    not_duplicate: Annotated[tuple[Path, Path] | None, typer.Option(
        "--not-duplicate", metavar="A B", show_default=False,
        help="Record that images A and B are not duplicates: this and later runs keep them apart (kept by "
             "content, so it survives renames and rebuilds).")] = None,
    html_out: Annotated[Path | None, typer.Option(
        "--html", dir_okay=False, show_default=False,
        help="Also write a review page: each group's thumbnails side by side, the keeper, sizes, level, and the "
             "commands that act on it.")] = None,
    device: Device = "auto",
    adapter: AdapterOpt = AdapterSwitch.on,
    quiet: Quiet = False,
) -> None:
    """Find groups of duplicate images: the same photo, copied, rescaled, recompressed or edited.

    Each group lists its keeper first (keeper = yes, score 1.0), then its copies, each verified against the keeper. Columns: pixels, file bytes, format, mtime, and level (exact = same bytes, near = verified copy, similar = cosine only). `--format paths` prints every copy but the keepers, one per line: the natural delete list.

    --move-to DIR or --trash acts on those copies: a dry run, unless --yes.
    """
    from vsearch import api

    if move_to is not None and trash:
        raise VsearchError("--move-to and --trash exclude each other; give one")
    if yes and move_to is None and not trash:
        raise VsearchError("--yes confirms --move-to DIR or --trash; give one of them")
    if folder is not None:
        with _build(folder, index_dir, quiet=quiet, device=device) as index:
            if not quiet:
                render.index_summary(index.summary, index.index_dir)
    with api.open_index(index_dir, device=device, adapter=adapter is AdapterSwitch.on) as index:
        if not_duplicate is not None:
            index.not_duplicate(*not_duplicate)
            if not quiet:
                _err(f"recorded: {not_duplicate[0]} and {not_duplicate[1]} are not duplicates")
        groups = index.duplicates(threshold, level=level.value, keep=keep.value,
                                  mode="exact" if exact else "auto")
        acting = move_to is not None or trash
        actions = index.plan_actions(groups, move_to=move_to, trash=trash) if acting else []
        if html_out is not None:  # before acting: the page shows the files where they are
            _review(html_out, groups, actions, index.index_dir, index_dir, move_to, trash, quiet)
        # Acting comes before the listing, so that a refusal is the one thing printed.
        done = index.apply_actions(actions) if acting and yes and actions else None
    render.duplicate_groups(groups, fmt, columns=DUPLICATE_COLUMNS, null=null)
    if not quiet:
        _err(f"{len(groups)} groups, {sum(len(g) - 1 for g in groups)} copies beyond one kept per group")
    if acting:
        _report_actions(actions, done, move_to, yes, quiet)


def _report_actions(actions: list[Any], done: Any, move_to: Path | None, yes: bool, quiet: bool) -> None:
    """Say what --move-to/--trash did (--yes), or what they would do (a dry run)."""
    verb = f"moved to {move_to}" if move_to is not None else "sent to the trash"
    if not yes:
        if not quiet:
            for action in actions:
                _err(f"would {action.describe()}")
        _err(f"dry run: {_files(len(actions))} would be {verb}; add --yes to do it")
    elif done is None:
        _err("nothing to do: no copies to act on")
    else:
        _err(f"{_files(done.moved + done.trashed)} {verb}; undo with `vsearch undo {done.path}`")


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _review(out: Path, groups: list[Any], actions: list[Any], where: Path, index_dir: Path | None,
            move_to: Path | None, trash: bool, quiet: bool) -> None:
    """Write the review page, with the commands that act on the groups."""
    import shlex

    from vsearch.cli import review

    base = "vsearch duplicates" + (f" --index-dir {shlex.quote(str(where))}" if index_dir is not None else "")
    if move_to is not None:
        act_command = f"{base} --move-to {shlex.quote(str(move_to.expanduser().absolute()))} --yes"
    elif trash:
        act_command = f"{base} --trash --yes"
    else:
        act_command = f"{base} --trash --yes      # or --move-to DIR --yes; without --yes, a dry run"
    written = review.write_review(out, groups, actions=actions, act_command=act_command,
                                  not_duplicate_command=f"{base} --not-duplicate")
    if not quiet:
        _err(f"review page: {written}")


@app.command(epilog=_examples(
    "vsearch undo                        # put back what the last --move-to/--trash --yes moved",
    "vsearch undo ~/.local/share/vsearch/index/undo/0002-20260101-120000.jsonl",
))
@user_errors
def undo(
    log: Annotated[Path | None, typer.Argument(
        metavar="LOG", dir_okay=False, show_default=False,
        help="The undo log to reverse (default: the newest one of the index not undone yet).")] = None,
    index_dir: IndexDir = None,
    quiet: Quiet = False,
) -> None:
    """Put back the files that `vsearch duplicates --move-to/--trash --yes` moved, and their index rows.

    Never overwrites a file: if anything is in the way, nothing is undone.
    """
    from vsearch import api

    if index_dir is None and log is not None:
        index_dir = api.index_of_undo_log(log)  # a log inside an index folder belongs to that index
    with api.open_index(index_dir) as index:
        result = index.undo(log)
    if not quiet:
        extra = f" ({result.already} already in place)" if result.already else ""
        _err(f"{_files(result.restored)} put back{extra}, from {result.log}")


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
    modes = _per_index("--mode", mode, n, "modes")
    bad = [m for m in modes if m not in ("auto", "exact", "approximate")]
    if bad:
        raise VsearchError(f"--mode {bad[0]!r}: choose auto, exact or approximate")
    return modes


def _expansions(qe: str | None, n: int) -> list[int]:
    """One query-expansion depth per --index-dir (0 = off)."""
    if qe is None:
        return [0] * n
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


@app.command(epilog=_examples(
    "vsearch evaluate --groups labels.csv    # a CSV of path,group",
    "vsearch evaluate --augment 200          # no labels: do edited copies find their originals?",
    "vsearch evaluate --index-dir A --index-dir B --groups labels.csv   # A/B, with a CI",
    "vsearch evaluate --judgments            # on verdicts recorded with vsearch judge",
    "vsearch evaluate --clicks               # the page's click log, position bias removed",
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
        help="Average query expansion with the top N results (0 = off); comma-separated, one per --index-dir, "
             "to compare (e.g. --index-dir X --index-dir X --qe 0,3).")] = None,
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
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Score retrieval on labelled pairs or groups, or on edited copies (--augment N).

    Recall, hit, precision, mAP and nDCG at each K, and MRR; side by side for several --index-dir.
    folder_share (day_share) is how concentrated the top K are: the share from the most common folder (EXIF day).
    """
    import tempfile

    from vsearch import api
    from vsearch.cli import report

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
    setups = [api.Setup(Path(d), m, e, f, day, a == "on")  # type: ignore[arg-type]
              for d, m, e, f, day, a in zip(dirs, modes, expands, folder_caps, day_caps, adapters)]
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


@app.command(epilog=_examples(
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
    from vsearch import api

    where = index_dir or default_index_dir()
    if remove:
        removed = api.remove_head(where)
        if not quiet:
            _err("trained head removed" if removed else "no trained head to remove")
        return
    with progress_bar(quiet) as bar:
        result = api.train(where, epochs=epochs, dim=dim, seed=seed, views=views, use_judgments=use_judgments,
                           device=device, progress=lambda stage, done, total: bar.update(done, total))
    if not quiet:
        a = result.adapter
        _err(f"trained a {a.dim_in} -> {a.dim_out} head on {a.trained_on} pairs ({result.view_pairs} views, "
             f"{result.judged_pairs} judged, {result.hard_negatives} hard negatives), {a.epochs} epochs: loss "
             f"{result.loss_start:.3f} -> {result.loss_end:.3f}; views {result.embed_s:.1f}s, fit {result.fit_s:.1f}s; "
             f"saved as {a.file}")


@app.command("make-pairs", epilog=_examples(
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
    from vsearch import api

    pairs, count = api.make_pairs(folder, augment, seed, out)
    if not quiet:
        _err(f"{count} copies of {augment} images in {out}")
    typer.echo(str(pairs))


@app.command(epilog=_examples(
    "vsearch info                        # the default index",
    "vsearch info --index-dir ~/idx/crop -f json",
    "An index is a folder: list yours with `ls ~/.local/share/vsearch` (or wherever --index-dir "
    "pointed), and remove one with `rm -r DIR`; nothing else refers to it.",
))
@user_errors
def info(
    index_dir: IndexDir = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", metavar="FORMAT", help="table or json.")] = Format.table,
) -> None:
    """Describe an index: model, folder, counts, sizes on disk, generation, last update, freshness."""
    import dataclasses

    from vsearch import api

    if fmt not in (Format.table, Format.json):
        raise VsearchError("info prints one record: use --format table or json")
    with api.open_index(index_dir, device="cpu") as index:
        details = dataclasses.asdict(index.details())
    if fmt is Format.json:
        render.mapping(details, fmt)
    else:
        shown = {k: _size_text(v) if k.endswith("_bytes") else v for k, v in details.items()}
        render.mapping(shown, fmt, title="vsearch index", key="field")


def _size_text(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


@app.command(epilog=_examples(
    "vsearch serve                       # http://127.0.0.1:8000, this machine only",
    "vsearch serve --index-dir ~/idx/crop --port 8080 --open",
    "Needs `pip install 'vsearch[serve]'`. Another --host needs --allow-remote: there is no login and no TLS.",
))
@user_errors
def serve(
    index_dir: IndexDir = None,
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=1, max=65535, help="Port.")] = 8000,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in a web browser.")] = False,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Allow a --host other machines can reach (prints a warning).")] = False,
) -> None:
    """Serve a local web page to search the index: by an uploaded photo, a result, or text (CLIP).

    Results can be marked relevant / not relevant (read them back with `vsearch judgments`).

    /duplicates reviews the groups of `vsearch duplicates`; its trash and move use the undo log.
    """
    try:
        from vsearch.serve import app as web
    except ImportError as exc:
        raise VsearchError(f"vsearch serve needs {exc.name}: pip install 'vsearch[serve]'") from None
    warning = web.check_host(host, allow_remote)
    if warning:
        _err(warning)
    from vsearch import api

    with api.open_index(index_dir, device="cpu") as index:
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
        _err(f"serving {index.count} images ({index.model}) at {url}; Ctrl-C stops")
        if open_browser:
            import threading
            import webbrowser

            opener = threading.Timer(1.0, webbrowser.open, (url,))  # once uvicorn listens
            opener.daemon = True
            opener.start()
        web.serve(index, host, port)


class JudgmentsAction(str, Enum):
    """What `vsearch judgments` does."""

    list = "list"
    export = "export"


@app.command(epilog=_examples(
    "vsearch judge cat.jpg photos/cat2.jpg photos/cat3.jpg --relevant",
    "vsearch judge cat.jpg photos/dog.jpg --irrelevant",
    "vsearch judge cat.jpg photos/cat-closeup.jpg --relevant --grade 2   # graded: nDCG's gain",
    "vsearch evaluate --judgments          # score the index on what was judged",
))
@user_errors
def judge(
    query: Annotated[str, typer.Argument(metavar="QUERY", show_default=False,
                                         help="The query: an image file, or text:WORDS for a text query.")],
    results: Annotated[list[Path], typer.Argument(metavar="RESULT...", show_default=False,
                                                  help="Indexed image files judged for QUERY.")],
    relevant: Annotated[bool | None, typer.Option(
        "--relevant/--irrelevant", show_default=False, help="The verdict on every RESULT (one is required).")] = None,
    grade: Annotated[int | None, typer.Option(
        "--grade", min=0, show_default=False,
        help="Graded relevance, the gain nDCG uses (default 1 with --relevant, 0 with --irrelevant).")] = None,
    index_dir: IndexDir = None,
    quiet: Quiet = False,
) -> None:
    """Record a person's verdict: each RESULT is (or is not) relevant to QUERY.

    Kept in the index folder (judgments.sqlite), keyed by the images' contents, so verdicts survive
    renames and rebuilds. `vsearch evaluate --judgments` scores the index on them.
    """
    if relevant is None:
        raise VsearchError("give the verdict: --relevant or --irrelevant")
    from vsearch import api

    with api.open_index(index_dir) as index:
        done = index.judge(query, results, relevant=relevant, grade=grade)
    if not quiet:
        _err(f"recorded {len(done)} verdict(s): {'relevant' if relevant else 'irrelevant'}"
             f" (grade {done[0].grade})")


@app.command(epilog=_examples(
    "vsearch judgments                   # every verdict, oldest first",
    "vsearch judgments -f csv > judged.csv",
    "vsearch judgments export --out pairs.csv && vsearch evaluate --pairs pairs.csv",
))
@user_errors
def judgments(
    action: Annotated[JudgmentsAction, typer.Argument(
        help="list: every verdict (images by content digest); export: a pairs CSV "
             "(query,positive,relevance, current paths) that `vsearch evaluate --pairs` reads.")] = JudgmentsAction.list,
    index_dir: IndexDir = None,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", metavar="FORMAT", show_default=False,
                                               help="list: table, json or csv; export: csv.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", dir_okay=False, show_default=False,
                                             help="export: write the CSV here (default: stdout).")] = None,
    quiet: Quiet = False,
) -> None:
    """List the relevance judgments recorded with `vsearch judge` or `vsearch serve`, or export them."""
    from vsearch import api

    if action is JudgmentsAction.export:
        if fmt not in (None, Format.csv):
            raise VsearchError("judgments export writes csv (a pairs file): --format csv")
        from vsearch import atomic

        found = api.judged_pairs(index_dir)
        text = api.pairs_csv(found)
        if out is None:
            typer.echo(text, nl=False)
        else:
            atomic.write_bytes(out.expanduser(), text.encode("utf-8"))
        if not quiet:
            for note in found.notes:
                _err(f"note: {note}")
            _err(f"{len(found.queries)} queries, {sum(len(q.gains) for q in found.queries)} pairs"
                 + (f" written to {out}" if out is not None else ""))
        return
    if out is not None:
        raise VsearchError("--out is for `vsearch judgments export`")
    fmt = fmt or Format.table
    if fmt is Format.paths:
        raise VsearchError("judgments are not paths: use --format table, json or csv")
    found_judgments = api.read_judgments(index_dir)
    render.records(found_judgments, fmt, columns=["time", "relevant", "grade", "rank", "source", "query", "result",
                                                  "result_path"], title="judgments")


def run() -> None:
    """Console-script entry point."""
    app(prog_name="vsearch")


if __name__ == "__main__":  # pragma: no cover
    run()
