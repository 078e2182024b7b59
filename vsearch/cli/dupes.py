"""``vsearch duplicates`` and ``vsearch undo``: find copies, act on them safely, put them back."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from vsearch.cli import dupecheck, render
from vsearch.errors import VsearchError
from vsearch.cli.options import (
    Device,
    IndexDir,
    Null,
    OutputFormat,
    Quiet,
)
from vsearch.cli.render import Format

from vsearch.cli.app import AdapterOpt, AdapterSwitch, app, build_with_bar, err, examples, user_errors


class Level(str, Enum):
    """``duplicates --level``: how alike two files must be to share a group."""

    exact = "exact"
    near = "near"
    similar = "similar"


class KeepRule(str, Enum):
    """``duplicates --keep``: which copy of each group is kept."""

    default = "default"
    pixels = "pixels"
    largest = "largest"
    smallest = "smallest"
    oldest = "oldest"
    newest = "newest"
    shortest_path = "shortest-path"


#: Columns of a duplicates table or csv (json has every field of a member).
DUPLICATE_COLUMNS = ["group", "size", "keeper", "level", "score", "pixels", "bytes", "format", "mtime", "path"]


@app.command(epilog=examples(
    "vsearch duplicates                  # groups of copies in the default index, the keeper first",
    "vsearch duplicates --level exact    # byte-identical files only",
    "vsearch duplicates ~/Pictures -f paths --null | xargs -0 ls -l   # every copy but the keepers",
    "vsearch duplicates --html review.html --move-to ~/dupes   # look first: a dry run and a review page",
    "vsearch duplicates --move-to ~/dupes --yes   # then act; `vsearch undo` puts everything back",
    "vsearch duplicates --not-duplicate a.jpg b.jpg   # keep these two apart from now on",
    "vsearch duplicates --against ~/phone-import -f paths --null | xargs -0 cp -t ~/Pictures/new   # copy in the new ones",
    "vsearch duplicates --explain a.jpg b.jpg   # why two photos are (not) duplicates",
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
        help="exact: same bytes; near: copies verified by local features and their aligned pixels (rescaled, "
             "recompressed, cropped, edited, mirrored; not a burst frame); similar: cosine only (looks alike, "
             "bursts too).")] = Level.near,
    keep: Annotated[KeepRule, typer.Option(
        "--keep", case_sensitive=False,
        help="Which copy each group keeps. default: the original over its derivatives, by evidence in the files, "
             "in this order: a regular file over a symbolic link; a camera RAW; camera EXIF (make, model); the "
             "earliest EXIF capture time; most pixels; no trace of an earlier JPEG compression in the pixels (a "
             "re-save, an edit, a mirrored copy); the higher JPEG quality; a name that is no copy's (x (1).jpg); "
             "the oldest; the larger file; the path. pixels: most pixels, then largest file, then oldest, then "
             "path (the rule before). largest/smallest: file size first; oldest/newest: mtime first; "
             "shortest-path; each then the default order.")] = KeepRule.default,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", metavar="COSINE", help="near: cosine at which pairs are shortlisted for verification "
                            "(default 0.80); similar: cosine at which two images are grouped (default 0.92).")] = None,
    fmt: OutputFormat = Format.table,
    null: Null = False,
    exact: Annotated[bool, typer.Option("--exact", help="Compare every pair, even above 20,000 images (where a clustered search is used).")] = False,
    move_to: Annotated[str | None, typer.Option(  # a str: "" must be an error, not the current folder
        "--move-to", metavar="DIR", show_default=False,
        help="Move every copy that is not kept under DIR (made when missing), keeping its path relative to the "
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
    min_overlap: Annotated[float, typer.Option(
        "--min-overlap", metavar="F", min=0.0, max=1.0,
        help="near: the share of each image a copy must have in common with its keeper; lower finds heavier "
             "crops (0.3: a crop of a third of the picture).")] = 0.5,
    against: Annotated[Path | None, typer.Option(
        "--against", metavar="FOLDER", show_default=False,
        help="Check the photos of FOLDER (not added to the index) against the library: each one the library "
             "holds already (its copy, crop or edit, with the match and level) or new. -f paths prints the new "
             "ones.")] = None,
    present: Annotated[bool, typer.Option(
        "--present", help="With --against: list the photos the library holds already (for -f paths too).")] = False,
    explain: Annotated[tuple[Path, Path] | None, typer.Option(
        "--explain", metavar="A B", show_default=False,
        help="Explain why images A and B are (or are not) duplicates: cosine, keypoints matched, transform, "
             "overlap, aligned-pixel agreement, the level reached and the threshold passed or missed.")] = None,
    marks: Annotated[bool, typer.Option(
        "--marks", help="List the not-duplicate marks, with the two images' paths.")] = False,
    unmark: Annotated[tuple[Path, Path] | None, typer.Option(
        "--unmark", metavar="A B", show_default=False,
        help="Take back the not-duplicate mark of images A and B (kept by content, like the marks).")] = None,
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

    --against FOLDER (which photos of an import the library holds), --explain A B (why two photos are or are not duplicates) and --marks (the not-duplicate marks) list no groups.
    """
    from vsearch import api  # numpy and the library: --help does not pay for them

    question = dupecheck.check_modes(against=against, explain=explain, marks=marks, unmark=unmark,
                                     not_duplicate=not_duplicate, acting=move_to is not None or trash or yes,
                                     html=html_out is not None, present=present, fmt=fmt)
    if move_to is not None and trash:
        raise VsearchError("--move-to and --trash exclude each other; give one")
    if yes and move_to is None and not trash:
        raise VsearchError("--yes confirms --move-to DIR or --trash; give one of them")
    if folder is not None:
        with build_with_bar(folder, index_dir, quiet=quiet, device=device) as index:
            if not quiet:
                render.index_summary(index.summary, index.index_dir)
    with api.open_index(index_dir, device=device, adapter=adapter is AdapterSwitch.on) as index:
        if question is not None:
            _answer(question, index, against=against, explain=explain, level=level.value, threshold=threshold,
                    min_overlap=min_overlap, mode="exact" if exact else "auto", present=present, fmt=fmt,
                    null=null, quiet=quiet)
            return
        if unmark is not None:
            index.unmark(*unmark)
            if not quiet:
                err(f"taken back: {unmark[0]} and {unmark[1]} may be grouped again")
        if not_duplicate is not None:
            index.not_duplicate(*not_duplicate)
            if not quiet:
                err(f"recorded: {not_duplicate[0]} and {not_duplicate[1]} are not duplicates")
        groups = index.duplicates(threshold, level=level.value, keep=keep.value,
                                  mode="exact" if exact else "auto", min_overlap=min_overlap)
        acting = move_to is not None or trash
        actions = index.plan_actions(groups, move_to=move_to, trash=trash) if acting else []
        target = Path(move_to).expanduser().absolute() if move_to is not None else None
        if html_out is not None:  # before acting: the page shows the files where they are
            _review(html_out, groups, actions, index.index_dir, index_dir, target, trash, quiet)
        # Acting comes before the listing, so that a refusal is the one thing printed.
        done = index.apply_actions(actions) if acting and yes and actions else None
    render.duplicate_groups(groups, fmt, columns=DUPLICATE_COLUMNS, null=null)
    if not quiet:
        err(f"{len(groups)} groups, {sum(m.is_copy for g in groups for m in g)} copies beyond one kept per group")
    if acting:
        _report_actions(actions, done, target, yes, quiet)


def _answer(question: str, index: Any, *, against: Path | None, explain: tuple[Path, Path] | None, level: str,
            threshold: float | None, min_overlap: float, mode: str, present: bool, fmt: Format, null: bool,
            quiet: bool) -> None:
    """--against, --explain or --marks, which list no groups."""
    if question == "against":
        assert against is not None
        dupecheck.run_against(index, against, level=level, threshold=threshold, min_overlap=min_overlap, mode=mode,
                              present=present, fmt=fmt, null=null, quiet=quiet)
    elif question == "explain":
        assert explain is not None
        dupecheck.run_explain(index, *explain, level=level, threshold=threshold, min_overlap=min_overlap, fmt=fmt)
    else:
        dupecheck.run_marks(index, fmt, quiet)


def _report_actions(actions: list[Any], done: Any, move_to: Path | None, yes: bool, quiet: bool) -> None:
    """Say what --move-to/--trash did (--yes), or what they would do (a dry run)."""
    verb = f"moved to {move_to}" if move_to is not None else "sent to the trash"
    if not yes:
        if not quiet:
            if move_to is not None and not move_to.exists() and actions:
                err(f"would create {move_to}")
            for action in actions:
                err(f"would {action.describe()}")
        err(f"dry run: {_files(len(actions))} would be {verb}; add --yes to do it")
    elif done is None:
        err("nothing to do: no copies to act on")
    else:
        err(f"{_files(done.moved + done.trashed)} {verb}; undo with `vsearch undo {done.path}`")


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _review(out: Path, groups: list[Any], actions: list[Any], where: Path, index_dir: Path | None,
            move_to: Path | None, trash: bool, quiet: bool) -> None:
    """Write the review page, with the commands that act on the groups."""
    import shlex

    from vsearch.cli import review  # Pillow: only --html pays for it

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
        err(f"review page: {written}")


@app.command(epilog=examples(
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
    from vsearch import api  # numpy and the library: --help does not pay for them

    if index_dir is None and log is not None:
        index_dir = api.index_of_undo_log(log)  # a log inside an index folder belongs to that index
    with api.open_index(index_dir) as index:
        result = index.undo(log)
    if not quiet:
        extra = f" ({result.already} already in place)" if result.already else ""
        err(f"{_files(result.restored)} put back{extra}, from {result.log}")
