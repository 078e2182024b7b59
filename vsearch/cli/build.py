"""``vsearch embed`` and ``vsearch build-index``: the offline stage."""

from __future__ import annotations

from typing import Annotated

import typer

from vsearch.cli import render
from vsearch.defaults import DEFAULT_BATCH_SIZE, DEFAULT_TREES
from vsearch.cli.options import (
    Address,
    BatchSize,
    Device,
    EngineOpt,
    Exclude,
    Folder,
    IndexDir,
    MaxPixels,
    ModelOpt,
    Quiet,
    Rebuild,
    Refit,
    Vectors,
    Workers,
)

from vsearch.cli.app import app, build_with_bar, err, examples, user_errors


@app.command(epilog=examples(
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
    with build_with_bar(folder, index_dir, quiet=quiet, model=model, batch_size=batch_size, workers=workers, device=device,
                max_pixels=max_pixels, exclude=exclude or (), rebuild=rebuild,
                engine=engine, address=address) as index:
        if not quiet:
            render.index_summary(index.summary, index.index_dir)


@app.command("build-index", epilog=examples(
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
             "(0 = off, the default). Helps browsing by category on larger collections (tiny-imagenet: --dba 10 "
             "with --qe 3, class mAP@10 +0.055), not on flowers17; query keeps the nearest photo by the query's "
             "own vector first, so copies still find their originals (docs/defaults.md).")] = 0,
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
    with build_with_bar(folder, index_dir, quiet=quiet, trees=trees, dba=dba, model=model, batch_size=batch_size,
                workers=workers, device=device, max_pixels=max_pixels, exclude=exclude or (), rebuild=rebuild,
                engine=engine, address=address, approximate=approximate, vectors=vectors, refit=refit) as index:
        if not quiet:
            render.index_summary(index.summary, index.index_dir, ann=index.meta.ann)
            if index.meta.ivfpq is not None:
                info = index.meta.ivfpq
                err(f"ivfpq index: {info.nlist} lists, {info.m} bytes a vector, {info.nprobe} probed ({info.file})")
