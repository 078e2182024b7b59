"""Compressed search vectors (``build-index --vectors``): quality, bytes and build times per format.

For each format, a private copy of an existing index gets that format's search copy (no image
is embedded again: only the copy, its PCA and the Annoy index over it are made, timed apart),
then ``vsearch evaluate`` scores every copy side by side on the same queries, exact search:

* ``groups``: every labelled image queries the collection (same group = relevant);
* ``augment``: ``--augment N`` edited copies (crop, flip, rotate, colour, blur, downscale, jpeg)
  of N indexed images, each embedded once and mapped into each copy's space; the original must
  come back.

Usage::

    python benchmarks/bench_compress.py --index-dir /work/cache/flowers17-index \
        --groups /work/shared/datasets/flowers17/labels.csv --work /tmp/bench-compress/flowers \
        [--formats fp32,fp16,pca128,pca128w,pca256,pca256w,pca512,pca512w] [--augment 200]

``--synthetic N`` instead times the PCA fit, the projection and Annoy (raw against 256-d) on N
clustered 1280-d unit vectors (1,000 clusters, seeded)::

    python benchmarks/bench_compress.py --synthetic 100000

It prints one JSON object: per format the copy's bytes, the seconds to make it (PCA fit
included) and to build Annoy (``--trees``) over it, and the evaluate figures (mrr, recall@10,
map@10, and the paired bootstrap CI of the headline metric against the first format).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vsearch.vectors import compress  # noqa: E402
from vsearch.indexing import derived  # noqa: E402
from vsearch.defaults import DEFAULT_TREES  # noqa: E402
from vsearch.storage.store import Store  # noqa: E402
from vsearch.vectors.space import SearchSpace  # noqa: E402


def make_copy(source: Path, target: Path, fmt: str, trees: int) -> dict:
    """``source`` copied to ``target`` with a ``fmt`` search copy and Annoy over it; timings."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    with Store.open(target, write=True) as store:
        store.set_ann(None)  # measure every Annoy build, fp32's too
        started = time.perf_counter()
        store.choose_format(compress.parse_format(fmt), refit=True)
        store.refresh_search_copy()
        copy_s = time.perf_counter() - started
        started = time.perf_counter()
        info = derived.build_ann(store, trees)
        ann_s = time.perf_counter() - started
        meta = store.meta
        assert meta is not None
        fmt_info = meta.vectors_format
        vectors = target / (fmt_info.file if fmt_info else meta.vectors)
        return {"format": fmt, "count": meta.count, "dim": SearchSpace.of(store).dim,
                "dtype": fmt_info.dtype if fmt_info else "float32", "bytes": vectors.stat().st_size,
                "copy_s": round(copy_s, 2), "annoy_s": round(ann_s, 2),
                "annoy_bytes": (target / info.file).stat().st_size}


def evaluate(dirs: list[Path], extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "vsearch", "evaluate", "-f", "json", "--mode", ",".join(["exact"] * len(dirs))]
    for d in dirs:
        cmd += ["--index-dir", str(d)]
    done = subprocess.run(cmd + extra, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"evaluate failed: {done.stderr}")
    return json.loads(done.stdout)


def synthetic(n: int, dim: int = 1280, d: int = 256, trees: int = DEFAULT_TREES) -> dict:
    """PCA fit / projection / Annoy build times on ``n`` clustered synthetic vectors."""
    import tempfile

    import numpy as np

    from vsearch.vectors import nearest

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    x = centres[rng.integers(0, 1000, n)] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out: dict = {"n": n, "dim": dim, "pca_dim": d}
    started = time.perf_counter()
    pca = compress.fit_pca(x, d, whiten=False)
    out["fit_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    y = pca.apply(x)
    out["apply_s"] = round(time.perf_counter() - started, 2)
    with tempfile.TemporaryDirectory() as tmp:
        for name, v in ((f"pca{d}", y), ("fp32", x)):
            path = Path(tmp) / f"{name}.ann"
            started = time.perf_counter()
            nearest.build_annoy(v, path, trees)
            out[f"annoy_{name}_s"] = round(time.perf_counter() - started, 2)
            out[f"annoy_{name}_bytes"] = path.stat().st_size
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", type=Path)
    ap.add_argument("--synthetic", type=int, default=0)
    ap.add_argument("--groups", type=Path)
    ap.add_argument("--augment", type=int, default=0)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--formats", default="fp32,fp16,pca128,pca128w,pca256,pca256w,pca512,pca512w")
    ap.add_argument("--trees", type=int, default=DEFAULT_TREES)
    args = ap.parse_args()
    if args.synthetic:
        print(json.dumps(synthetic(args.synthetic, trees=args.trees)))
        return
    if args.index_dir is None or args.work is None:
        ap.error("--index-dir and --work are needed (or --synthetic N)")
    formats = args.formats.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    out: dict = {"index": str(args.index_dir), "formats": []}
    dirs = []
    for fmt in formats:
        dirs.append(args.work / fmt)
        out["formats"].append(make_copy(args.index_dir, dirs[-1], fmt, args.trees))
        print(json.dumps(out["formats"][-1]), file=sys.stderr)
    if args.groups:
        out["groups"] = evaluate(dirs, ["--groups", str(args.groups)])
    if args.augment:
        out["augment"] = evaluate(dirs, ["--augment", str(args.augment), "--seed", "0"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
