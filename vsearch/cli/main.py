"""The ``vsearch`` command line: parse, call the library, render. Nothing here knows how.

Shared options are declared once in :mod:`vsearch.cli.options`; usage errors, closed pipes and
start-up time are handled under every command by :class:`vsearch.cli.base.VsearchGroup`.
Library modules that import numpy or Pillow are imported inside the commands that use them, so
``--help`` and ``--version`` stay quick.
"""

from __future__ import annotations

import contextlib
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vsearch.cli import render
from vsearch.errors import VsearchError
from vsearch.locations import default_index_dir
from vsearch.cli.options import (
    IndexDir,
    Quiet,
)
from vsearch.cli.render import Format

from vsearch.cli.app import app, err, examples, user_errors
from vsearch.cli.wording import cli_words

# The commands register on the app as their modules load, in the order --help lists them.
from vsearch.cli import build, search, dupes, scoring, check  # noqa: E402,F401,I001

__all__ = ["app", "default_index_dir", "run", "user_errors"]


@app.command(epilog=examples(
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

    from vsearch import api  # numpy and the library: --help does not pay for them

    if fmt not in (Format.table, Format.json):
        raise VsearchError("info prints one record: use --format table or json")
    with api.open_index(index_dir, device="cpu") as index:
        details = dataclasses.asdict(index.details())
    details["freshness"] = cli_words(details["freshness"])  # the library's remedy, as a command
    if fmt is Format.json:
        render.mapping(details, fmt)
    else:
        shown = {k: _size_text(v) if k.endswith("_bytes") else v for k, v in details.items()}
        render.mapping(shown, fmt, title="vsearch index", key="field")


def _size_text(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]  # a float from here on, shown with one decimal
    return str(n)  # pragma: no cover


@app.command(epilog=examples(
    "vsearch serve                       # http://127.0.0.1:8000, this machine only",
    "vsearch serve --index-dir ~/idx/crop --port 8080 --open",
    "vsearch serve --interleave 'qe=2' 'qe=0'    # each search: one list mixing both rankers",
    "vsearch serve --interleave adapter=on adapter=off   # the trained head against none",
    "vsearch serve --split 'qe=2' ~/idx/dba5   # classic A/B: each browser session sees one of the two",
    "vsearch evaluate --interleaving            # which configuration people preferred",
    "Needs `pip install 'vsearch[serve]'`. Another --host needs --allow-remote: there is no login and no TLS.",
))
@user_errors
def serve(
    index_dir: IndexDir = None,
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=0, max=65535,
                                      help="Port (0: a free one, which the address printed shows).")] = 8000,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in a web browser.")] = False,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Allow a --host other machines can reach (prints a warning).")] = False,
    interleave: Annotated[tuple[str, str] | None, typer.Option(
        "--interleave", metavar="A B", show_default=False,
        help="Run an interleaving experiment: every search shows one team-draft list of configurations A and B "
             "(each comma-separated settings: 'qe=N', 'adapter=on|off', 'copy-first=on|off', 'dba=N', 'index=DIR' or "
             "an index folder of the same photos), logs whose each result was, and credits clicks; "
             "`vsearch evaluate --interleaving` reports it.")] = None,
    split: Annotated[tuple[str, str] | None, typer.Option(
        "--split", metavar="A B", show_default=False,
        help="Run a classic A/B test instead: each browser session is assigned A or B at random and sees only "
             "that ranker; `vsearch evaluate --clicks` reports each arm's click-through.")] = None,
) -> None:
    """Serve a local web page to search the index: by an uploaded photo, a result, or text (CLIP).

    Results can be marked relevant / not relevant (read them back with `vsearch judgments`).

    /duplicates reviews the groups of `vsearch duplicates`; its trash and move use the undo log.
    """
    try:
        from vsearch.serve import app as web  # numpy and the library: --help does not pay for them
    except ImportError as exc:
        raise VsearchError(f"vsearch serve needs {exc.name}: pip install 'vsearch[serve]'") from None
    from vsearch.serve import experiment as experiments  # with the page: --help does not pay for it

    if interleave and split:
        raise VsearchError("give --interleave A B or --split A B, not both")
    kind, pair = ("interleave", interleave) if interleave else ("split", split)
    for text in pair or ():  # a typo is an error before anything is opened or printed
        experiments.parse_configuration(text)
    warning = web.check_host(host, allow_remote)
    if warning:
        err(warning)
    from vsearch import api  # numpy and the library: --help does not pay for them

    with api.open_index(index_dir, device="cpu") as index, contextlib.ExitStack() as stack:
        experiment = stack.enter_context(experiments.open_experiment(index, kind, *pair)) if pair else None
        def ready(url: str) -> None:
            """Called once the port is bound (a port in use was an error, and nothing printed):
            the address it is bound to, the real port with --port 0."""
            err(f"serving {index.count} images ({index.model}) at {url}; Ctrl-C stops")
            if experiment is not None:
                a, b = experiment.names
                how, report = ("interleaving", "--interleaving") if kind == "interleave" else \
                    ("split A/B test of", "--clicks")
                err(f"{how} {a} (A) and {b} (B); `vsearch evaluate {report}` reports it")
            if open_browser:
                import threading  # only --open needs them
                import webbrowser

                opener = threading.Timer(0.5, webbrowser.open, (url,))  # the socket listens already
                opener.daemon = True
                opener.start()

        web.serve(index, host, port, ready=ready, experiment=experiment)


class JudgmentsAction(str, Enum):
    """What `vsearch judgments` does."""

    list = "list"
    export = "export"


@app.command(epilog=examples(
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
    from vsearch import api  # numpy and the library: --help does not pay for them

    with api.open_index(index_dir) as index:
        done = index.judge(query, results, relevant=relevant, grade=grade)
    if not quiet:
        err(f"recorded {len(done)} verdict(s): {'relevant' if relevant else 'irrelevant'}"
             f" (grade {done[0].grade})")


@app.command(epilog=examples(
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
    from vsearch import api  # numpy and the library: --help does not pay for them

    if action is JudgmentsAction.export:
        if fmt not in (None, Format.csv):
            raise VsearchError("judgments export writes csv (a pairs file): --format csv")
        from vsearch import atomic  # only an export to a file needs it (a FIFO or /dev/null: written in place)

        found = api.judged_pairs(index_dir)
        text = api.pairs_csv(found)
        if out is None:
            typer.echo(text, nl=False)
        else:
            atomic.write_output(out, text.encode("utf-8"))
        if not quiet:
            for note in found.notes:
                err(f"note: {note}")
            err(f"{len(found.queries)} queries, {sum(len(q.gains) for q in found.queries)} pairs"
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
    """Console-script entry point.

    The program, not the library, chooses how OpenMP threads (torch's, faiss's) wait: passively,
    unless the user set ``OMP_WAIT_POLICY`` (measured in ``passive_openmp``'s docstring:
    3.9 against 6.0 img/s while indexing on 2 cores). libgomp reads it once, when it loads.
    """
    if "torch" not in sys.modules and "faiss" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app(prog_name="vsearch")


if __name__ == "__main__":  # pragma: no cover
    run()
