"""The ``vsearch`` command line: parse, call the library, render. Nothing here knows how."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer

from . import __version__
from .errors import VsearchError
from .render import Format

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help="Visual search over local image folders: index a folder, then find the pictures that look like a photo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def default_index_dir() -> Path:
    """``$VSEARCH_INDEX_DIR``, else ``$XDG_DATA_HOME/vsearch/index`` (~/.local/share/vsearch/index)."""
    env = os.environ.get("VSEARCH_INDEX_DIR")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "vsearch" / "index"


IndexDir = Annotated[
    Optional[Path],
    typer.Option("--index-dir", help="Index folder. Default: $VSEARCH_INDEX_DIR, else ~/.local/share/vsearch/index.",
                 file_okay=False, show_default=False),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary on stderr.")]
OutputFormat = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def user_errors(fn: F) -> F:
    """Turn a library error into one ``error: ...`` line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
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

    def __enter__(self) -> "progress_bar":
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

    def update(self, p: Any) -> None:
        """Take an ``indexer.Progress`` report."""
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task("embed", total=p.total, rate="-")
        task = self._bar.tasks[0]
        rate = f"{task.speed:.1f}" if task.speed else "-"
        self._bar.update(self._task, completed=p.done, total=p.total, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _update_index(folder: Path, index_dir: Path | None, model: str | None, batch_size: int, workers: int | None,
                  device: str, max_pixels: int, quiet: bool):
    from . import images, indexer
    from .store import Store

    with Store.open(index_dir or default_index_dir(), write=True) as store, progress_bar(quiet) as bar:
        summary = indexer.update(
            store, folder, model, batch_size=batch_size, workers=workers, device=device,
            max_pixels=max_pixels or images.DEFAULT_MAX_PIXELS, progress=bar.update,
        )
        return store.dir, summary


Folder = Annotated[Path, typer.Argument(help="Folder of images (searched recursively).", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="efficientnet-lite0 (default), efficientnet-lite1/2, or an open_clip ARCH:TAG or ARCH:/path/checkpoint.pt.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")]
Workers = Annotated[Optional[int], typer.Option("--workers", min=1, help="Decode threads (default: one per core, at least 2).")]
MaxPixels = Annotated[int, typer.Option("--max-pixels", min=1, help="Skip images larger than this many pixels (decompression bombs); JPEGs above it are decoded reduced.")]


@app.command()
@user_errors
def embed(
    folder: Folder,
    index_dir: IndexDir = None,
    model: ModelOpt = None,
    batch_size: BatchSize = 16,
    workers: Workers = None,
    device: Device = "auto",
    max_pixels: MaxPixels = 200_000_000,
    quiet: Quiet = False,
) -> None:
    """Embed every image under FOLDER (new and changed files only) into the index."""
    from . import render

    where, summary = _update_index(folder, index_dir, model, batch_size, workers, device, max_pixels, quiet)
    if not quiet:
        render.index_summary(summary, where)


@app.command("build-index")
@user_errors
def build_index(
    folder: Folder,
    index_dir: IndexDir = None,
    trees: Annotated[int, typer.Option("--trees", min=1, help="Annoy trees: more is more accurate and larger.")] = 50,
    model: ModelOpt = None,
    batch_size: BatchSize = 16,
    workers: Workers = None,
    device: Device = "auto",
    max_pixels: MaxPixels = 200_000_000,
    quiet: Quiet = False,
) -> None:
    """Embed what is missing under FOLDER, then build the Annoy index beside the embeddings."""
    from . import indexer, render
    from .store import Store

    where, summary = _update_index(folder, index_dir, model, batch_size, workers, device, max_pixels, quiet)
    with Store.open(where, write=True) as store:
        ann = indexer.build_ann(store, trees)
    if not quiet:
        render.index_summary(summary, where, ann=ann)


@app.command()
@user_errors
def query(
    queries: Annotated[list[str], typer.Argument(help="Image file(s); with a CLIP index, text.", show_default=False)],
    index_dir: IndexDir = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Number of results.")] = 10,
    fmt: OutputFormat = Format.table,
    exact: Annotated[bool, typer.Option("--exact", help="Brute-force search over all stored embeddings.")] = False,
    approximate: Annotated[bool, typer.Option("--approximate", help="Force the Annoy index.")] = False,
    device: Device = "auto",
) -> None:
    """Print the K images nearest to IMAGE: rank, cosine similarity and path."""
    from . import render
    from .search import Searcher
    from .store import Store

    if exact and approximate:
        raise VsearchError("--exact and --approximate exclude each other")
    store = Store.open(index_dir or default_index_dir())
    searcher = Searcher(store, device=device)
    vectors = [
        searcher.image_vector(Path(q)) if Path(q).expanduser().exists() else searcher.text_vector(q)
        for q in queries
    ]
    import numpy as np

    vector = np.mean([v.vector for v in vectors], axis=0)
    hits = searcher.search(vector, k, "exact" if exact else "approximate" if approximate else "auto")
    render.records(hits, fmt, columns=["rank", "score", "path"])


@app.command()
@user_errors
def evaluate(
    index_dir: IndexDir = None,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="CSV: query,positive[,relevance].", dir_okay=False)] = None,
    groups: Annotated[Optional[Path], typer.Option("--groups", help="CSV: path,group (extra columns ignored).", dir_okay=False)] = None,
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "1,5,10",
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
    exact: Annotated[bool, typer.Option("--exact", help="Brute-force search (default: as query).")] = False,
    device: Device = "auto",
) -> None:
    """Score retrieval on labelled pairs or groups: recall, hit, precision, mAP, nDCG at each K, and MRR."""
    from . import evaluate as ev
    from . import render
    from .search import Searcher
    from .store import Store

    if (pairs is None) == (groups is None):
        raise VsearchError("give exactly one of --pairs FILE or --groups FILE")
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        raise VsearchError(f"--k takes comma-separated integers, e.g. 1,5,10 (got {k!r})") from None
    labels = ev.read_pairs(pairs) if pairs is not None else ev.read_groups(groups)  # type: ignore[arg-type]
    searcher = Searcher(Store.open(index_dir or default_index_dir()), device=device)
    result = ev.evaluate(searcher, labels, ks, "exact" if exact else "auto")
    render.mapping(result.metrics, fmt, title="retrieval quality")
    _err(f"{result.metrics['num_queries']} queries in {result.elapsed_s:.1f}s")


def run() -> None:
    """Console-script entry point."""
    app(prog_name="vsearch")


if __name__ == "__main__":  # pragma: no cover
    run()
