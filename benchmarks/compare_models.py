"""Which default model? EfficientNet-Lite0/1/2 x pooling (GeM p=3, average) x framing.

Embeds every image of a labelled folder (default: ../shared/datasets/flowers17) with each
variant, scores leave-one-out retrieval by exact search with the ``groups`` labels, and times
the model-only forward pass, all in one run so the figures compare.

    python benchmarks/compare_models.py [--labels PATH] [--variants lite0,lite1,lite2]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from vsearch.imaging import images
from vsearch.evaluation import metrics
from vsearch.vectors.nearest import exact_search
from vsearch.models.loading import l2_normalise, load_efficientnet_lite

HERE = Path(__file__).resolve().parent
DEFAULT_LABELS = HERE.parent.parent / "shared" / "datasets" / "flowers17" / "labels.csv"


def read_labels(path: Path) -> tuple[list[Path], list[str]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [path.parent / r["path"] for r in rows], [r["group"] for r in rows]


def score(vectors: np.ndarray, groups: list[str], ks=(1, 5, 10)) -> dict[str, float]:
    rows, _ = exact_search(vectors, vectors, 101)
    results = []
    for i, ranked in enumerate(rows):
        ranked = tuple(int(r) for r in ranked if r != i)[:100]
        gains = {j: 1.0 for j, g in enumerate(groups) if g == groups[i] and j != i}
        results.append(metrics.QueryResult(str(i), ranked, gains))
    return metrics.summarize(results, ks)


def forward_speed(embedder, batch: int = 16, repeats: int = 5) -> float:
    import torch

    size = embedder.id.preprocess.size
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        embedder._module.forward_features(x)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            embedder._module.forward_features(x)
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def features(embedder, paths: list[Path], framing: str, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(GeM p=3, average)-pooled unit vectors from one pass over the images."""
    import torch

    size = embedder.id.preprocess.size
    gem, avg = [], []
    with ThreadPoolExecutor(2) as pool:
        pixels = list(pool.map(lambda p: images.decode_for_model(p, size, framing), paths))
    with torch.inference_mode():
        for start in range(0, len(pixels), batch):
            x = embedder._to_input(np.stack(pixels[start:start + batch]))
            f = embedder._module.forward_features(x)
            gem.append(f.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3).numpy())
            avg.append(f.mean((2, 3)).numpy())
    return l2_normalise(np.concatenate(gem)), l2_normalise(np.concatenate(avg))


def copy_features(embedder, framing: str, paths: list[Path], n: int):
    """Edited copies (vsearch.imaging.augment, every kind) of ``n`` images, and their (GeM, avg) vectors."""
    import tempfile

    from vsearch.imaging import augment

    with tempfile.TemporaryDirectory() as tmp:
        copies = augment.make_copies(augment.pick(paths, n, seed=0), Path(tmp), seed=0)
        return copies, features(embedder, [c.copy for c in copies], framing)


def copy_recall(copies, vecs: np.ndarray, db: np.ndarray, paths: list[Path]) -> dict[str, float]:
    """Near-duplicate retrieval: each edited copy should find its original."""
    index_of = {p: i for i, p in enumerate(paths)}
    rows, _ = exact_search(db, vecs, 10)
    results = [metrics.QueryResult(str(c.copy), tuple(int(r) for r in ranked), {index_of[c.original]: 1.0})
               for c, ranked in zip(copies, rows)]
    m = metrics.summarize(results, (1, 10))
    return {"copy_r@1": m["recall@1"], "copy_r@10": m["recall@10"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--variants", default="lite0,lite1,lite2")
    parser.add_argument("--framings", default="squash,center_crop")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    parser.add_argument("--augment", type=int, default=0,
                        help="also score edited copies of N images (vsearch.imaging.augment, every kind) against the originals")
    args = parser.parse_args()
    paths, groups = read_labels(args.labels)
    if args.limit:
        paths, groups = paths[: args.limit], groups[: args.limit]
    print(f"{len(paths)} images, {len(set(groups))} groups from {args.labels}")
    print(f"{'variant':8} {'framing':12} {'pooling':7} {'map@10':>7} {'recall@10':>9} {'hit@1':>6} {'mrr':>6} "
          f"{'fwd img/s':>9}" + (f" {'copy_r@1':>8} {'copy_r@10':>9}" if args.augment else ""))
    for variant in args.variants.split(","):
        for framing in args.framings.split(","):
            embedder = load_efficientnet_lite(variant, "cpu", framing=framing)
            speed = forward_speed(embedder)
            gem, avg = features(embedder, paths, framing)
            if args.augment:
                copies, (copy_gem, copy_avg) = copy_features(embedder, framing, paths, args.augment)
            for pooling, vecs in (("gem3", gem), ("avg", avg)):
                m = score(vecs, groups)
                extra = ""
                if args.augment:
                    c = copy_recall(copies, copy_gem if pooling == "gem3" else copy_avg, vecs, paths)
                    extra = f" {c['copy_r@1']:8.4f} {c['copy_r@10']:9.4f}"
                print(f"{variant:8} {framing:12} {pooling:7} {m['map@10']:7.4f} {m['recall@10']:9.4f} "
                      f"{m['hit@1']:6.4f} {m['mrr']:6.4f} {speed:9.1f}{extra}", flush=True)


if __name__ == "__main__":
    main()
