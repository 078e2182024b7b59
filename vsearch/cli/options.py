"""Options that several ``vsearch`` commands share, declared once (the sqlite-utils habit).

Each alias carries the flag, its help and its checks; a command states only the default
(Typer takes defaults from the signature). ``embed`` and ``build-index`` share the whole
indexing set: Folder, IndexDir, ModelOpt, BatchSize, Workers, Device, MaxPixels, Quiet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


from vsearch.cli.render import Format

#: Defaults that more than one command states.
K = 10


IndexDir = Annotated[
    Path | None,
    typer.Option("--index-dir", metavar="DIR", file_okay=False, show_default=False,
                 help="Index folder. Default: $VSEARCH_INDEX_DIR, else ~/.local/share/vsearch/index."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Nothing on stderr but warnings and errors: no progress "
                                                           "bar, no summary.")]
OutputFormat = Annotated[Format, typer.Option("--format", "-f", metavar="FORMAT",
                                              help="table, json, csv or paths (one path per line).")]
Null = Annotated[bool, typer.Option("--null", "-0", help="With --format paths: end each path with a NUL byte "
                                                         "instead of a newline, for `xargs -0` (like find -print0).")]
Device = Annotated[str, typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda or mps.")]

Folder = Annotated[Path, typer.Argument(metavar="FOLDER", help="Folder of images (searched recursively).",
                                        show_default=False)]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", metavar="NAME", show_default=False,
    help="efficientnet-lite0 (default), efficientnet-lite1/2, or an open_clip ARCH:TAG or ARCH:/path/checkpoint.pt.")]
BatchSize = Annotated[int, typer.Option("--batch-size", metavar="N", min=1, help="Images per forward pass.")]
Workers = Annotated[int | None, typer.Option("--workers", metavar="N", min=1, show_default=False,
                                             help="Decode threads (default: one per core, at least 2).")]
MaxPixels = Annotated[int | None, typer.Option(
    "--max-pixels", metavar="N", min=1, show_default=False,
    help="Skip images larger than this many pixels (decompression bombs); JPEGs above it are decoded reduced. "
         "Default: 200,000,000.")]
Exclude = Annotated[list[str] | None, typer.Option(
    "--exclude", metavar="GLOB", show_default=False,
    help="Leave out files whose path under FOLDER, one of its folders, or (without '/') any name in it matches "
         "GLOB, e.g. '*.png', 'thumbs', '2019/raw' (repeatable; case-sensitive). Excluded files leave the index.")]
# --- compressed search vectors (issue 11): build-index --vectors / --refit ---
Vectors = Annotated[str | None, typer.Option(
    "--vectors", metavar="FORMAT", show_default=False,
    help="How search stores the vectors: fp32, fp16 (half the memory), pcaD (PCA to D dimensions, fitted on the "
         "collection) or pcaDw (whitened), e.g. pca256w; add -fp16 to store a PCA as float16. Default: the index's "
         "own, fp32 for a new one. A change remakes only the search copy (no re-embedding); the raw vectors stay.")]
Refit = Annotated[bool, typer.Option(
    "--refit", help="Fit the PCA of --vectors pcaD[w] again on the current vectors (it is fitted once, at the first "
                    "build with that format, and reused by later runs).")]

Rebuild = Annotated[bool, typer.Option(
    "--rebuild", help="Start the index afresh (e.g. when it is damaged), keeping the vectors of unchanged files "
                      "where they can be trusted.")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", metavar="ENGINE",
    help="Where images are read, decoded and embedded: local (this process) or ray (Ray Data model actors, "
         "needs pip install 'vsearch[ray]'; --workers is then the number of actors).")]
Address = Annotated[str | None, typer.Option(
    "--address", metavar="ADDR", show_default=False,
    help="With --engine ray: the Ray cluster to use (e.g. auto or ray://head:10001; every machine must see "
         "FOLDER at the same path). Default: start a local one.")]

# Re-ranking caps against concentration (query; evaluate takes one value per --index-dir).
_CAPS_HELP = ("The next best results from elsewhere fill in. Costs recall when a folder (day) really holds most "
              "of what matches: see docs/rules.md.")
MaxPerFolder = Annotated[int | None, typer.Option(
    "--max-per-folder", metavar="N", min=1, show_default=False,
    help="At most N results from one folder (a result's parent folder), so no album floods the results. "
         + _CAPS_HELP)]
MaxPerDay = Annotated[int | None, typer.Option(
    "--max-per-day", metavar="N", min=1, show_default=False,
    help="At most N results taken on one day (EXIF DateTimeOriginal, else DateTime, read from the file's "
         "header). Files without a date are not capped. " + _CAPS_HELP)]
EvalMaxPerFolder = Annotated[str | None, typer.Option(
    "--max-per-folder", metavar="N", show_default=False,
    help="Score the rankings `query --max-per-folder N` gives; comma-separated, one per --index-dir, 'off' for "
         "none, to measure the cost (e.g. --index-dir X --index-dir X --max-per-folder off,2).")]
EvalMaxPerDay = Annotated[str | None, typer.Option(
    "--max-per-day", metavar="N", show_default=False,
    help="Score the rankings `query --max-per-day N` gives (files without an EXIF date are not capped); "
         "comma-separated, one per --index-dir, 'off' for none.")]
