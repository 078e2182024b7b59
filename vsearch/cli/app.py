"""The Typer app every command registers on, its one translation point from library errors
to one line on stderr (:func:`user_errors`), and the progress bar the commands share."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from vsearch import __version__
from vsearch.cli.base import VsearchGroup, stdout_closed
from vsearch.cli.wording import cli_words
from vsearch.errors import VsearchError



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

__all__ = ["AdapterOpt", "AdapterSwitch", "app", "build_with_bar", "err", "examples", "progress_bar", "user_errors"]


def err(message: str) -> None:
    typer.echo(message, err=True)


def examples(*lines: str) -> str:
    """A command's epilog: examples, one per line (help shows them as written)."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def user_errors(fn: F) -> F:
    """Turn a library error into one ``error: ...`` line on stderr, in the CLI's words
    (:func:`~vsearch.cli.wording.cli_words`), and exit status 1.

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
            err(f"error: {cli_words(str(exc))}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err("interrupted: work done so far is saved; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]  # same signature as fn (functools.wraps)


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


def build_with_bar(folder: Path, index_dir: Path | None, *, quiet: bool, trees: int | None = None, dba: int = 0,
           **options: Any):
    """Bring the index up to date with ``folder`` (and build Annoy when ``trees``), with a progress bar."""
    from vsearch import api  # numpy and the library: --help does not pay for them

    with progress_bar(quiet) as bar:
        return api.build_index(folder, index_dir, trees=trees, dba=dba, progress=lambda p: bar.update(p.done, p.total),
                               on_note=None if quiet else lambda note: err(cli_words(note)), **options)
