"""``query IMAGE --verify N``: does verifying the top N find the original of a crop, and at what cost?

For ``--queries`` indexed photos (by ``--seed``), a query is made from each: a random crop of
10-40% of its area, rescaled by 0.6-1.4 and recompressed as JPEG at quality 50-90, written to a
temporary folder (the dataset is only read). Each query is embedded once with the index's own
model and searched once; then, for each N of ``--n``, the top N are re-ranked by
:func:`vsearch.retrieval.search.verify_rerank` with a fresh verifier (no keypoints cached between
queries, as in a fresh ``vsearch query`` process). A query counts as found at rank 1 when the
top result has the original's content digest (flowers17 holds a few byte-identical files).

Prints, per N: recall@1, recall@N's ceiling (the original anywhere in the top N: what
verification could at best bring to rank 1), the median and p90 ms per query spent verifying,
and the median ms to embed and search (the same for every N). Also the mean ms per verified
pair with a cold cache (both images decoded) and a warm one (query keypoints cached).

``--bursts N`` measures the aligned-pixel agreement instead (see :func:`bursts`): how far
edited copies and burst frames lie apart, and what each threshold costs.

``--small N`` measures the small-image path instead, on N tiny-imagenet photos (64x64): each is
saved again at 80x80 JPEG q60 (a copy), and paired with another photo of its class (not a
copy); it prints how many copies are verified and how many non-copies are, and by which path
(ORB on the upscaled image, or aligned by pixels), with the near level's verifier.

Measured (2026-12-01, efficientnet-lite0, flowers17's 1,360 photos, 100 crops, seed 0, on a
shared 2-core machine with a load average of 7-9, so times are high)::

    100 crops (10-40% area, rescaled 0.6-1.4x, JPEG q50-90) of 1360 indexed photos; embed+search median 39 ms/query
       N  recall@1  in top N  verify ms median     p90
       0     0.490     0.490                 0       0
       5     0.610     0.710               209     312
      10     0.690     0.790               269     391
      20     0.720     0.830               542     781
      40     0.740     0.880              1064    1468
    per pair: cold 24.6 ms (both images decoded), warm 23.7 ms (query's keypoints cached)

With 1,000 keypoints per image instead of 500, recall@1 was 0.70 / 0.73 / 0.77 at N = 10 / 20 /
40, for about 3x the time per pair (68 ms): 500 it is (verify.FEATURES).

    --small 200: copy at 80x80 q60 verified 200/200 (197 by keypoints on the upscaled image,
    3 by the thumbnail fallback); another photo of the class verified 0/200; 42 ms per pair.

Usage::

    python benchmarks/bench_verify.py --index-dir /tmp/vs-flowers-lite0 \\
        [--folder /work/shared/datasets/flowers17/images] [--queries 100] [--n 0,5,10,20,40]
    python benchmarks/bench_verify.py --small 300 [--tiny /work/shared/datasets/tiny-imagenet-val]
    python benchmarks/bench_verify.py --bursts 120 [--seed 1]

The index is built from ``--folder`` first when ``--index-dir`` holds none (efficientnet-lite0,
about 2 minutes for flowers17 on 2 cores).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

import vsearch  # noqa: E402
from vsearch.retrieval.search import verify_rerank  # noqa: E402
from vsearch.storage.store import Store  # noqa: E402
from vsearch.imaging.verify import Verifier  # noqa: E402

#: ../shared/datasets beside the checkout (a worktree under wt/ looks one level further up).
FLOWERS = next((p for p in (Path(__file__).resolve().parents[n] / "shared" / "datasets" / "flowers17" / "images"
                            for n in (2, 3)) if p.is_dir()), Path("flowers17"))


def make_crop(src: Path, dest: Path, rng: random.Random) -> Path:
    """A 10-40% area crop of ``src`` (aspect 0.6-1.6), rescaled 0.6-1.4x, JPEG q50-90."""
    im = Image.open(src).convert("RGB")
    w, h = im.size
    area = rng.uniform(0.10, 0.40) * w * h
    aspect = rng.uniform(0.6, 1.6)
    cw = min(w, max(16, round((area * aspect) ** 0.5)))
    ch = min(h, max(16, round(area / cw)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = im.crop((x, y, x + cw, y + ch))
    scale = rng.uniform(0.6, 1.4)
    crop = crop.resize((max(16, round(cw * scale)), max(16, round(ch * scale))), Image.Resampling.BICUBIC)
    crop.save(dest, quality=rng.randint(50, 90))
    return dest


def small_images(tiny: Path, count: int, seed: int) -> None:
    """64 px photos: copies at 80 px q60 against other photos of the same class."""
    import csv

    from vsearch.duplicates.grouping import near_verifier

    with open(tiny / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_group: dict[str, list[str]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r["path"])
    rng = random.Random(seed)
    picked = rng.sample(rows, count)
    verifier = near_verifier()  # the near level's: overlap and aligned-pixel agreement
    copies: dict[str, int] = {}
    others: dict[str, int] = {}
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-small-") as tmp:
        for i, r in enumerate(picked):
            src = tiny / r["path"]
            copy = Path(tmp) / f"c{i}.jpg"
            Image.open(src).convert("RGB").resize((80, 80), Image.Resampling.BICUBIC).save(copy, quality=60)
            other = tiny / rng.choice([p for p in by_group[r["group"]] if p != r["path"]])
            t = time.perf_counter()
            v = verifier.verify(src, copy)
            times.append((time.perf_counter() - t) * 1000)
            copies[v.reason] = copies.get(v.reason, 0) + 1
            w = verifier.verify(src, other)
            others[w.reason] = others.get(w.reason, 0) + 1
    same = ("verified", "verified (pixels)", "verified (thumbnails)")
    print(f"{count} tiny-imagenet photos (64x64): copy at 80x80 q60 verified {sum(copies.get(k, 0) for k in same)}"
          f"/{count}; another photo of the class verified {sum(others.get(k, 0) for k in same)}/{count}")
    print(f"  copies by reason: {dict(sorted(copies.items()))}")
    print(f"  non-copies by reason: {dict(sorted(others.items()))}")
    print(f"  {statistics.mean(times):.1f} ms per pair (cold)")


def bursts(count: int, seed: int) -> None:
    """Aligned-pixel agreement of edited copies against burst frames, on ``count`` flowers17 photos.

    Per photo: the duplicates benchmark's three copies (half size q60; 5-10% crop +15%
    brightness q90; mirrored q90), one of each of vsearch.imaging.augment's colour, blur, jpeg,
    rotate and all edits, a small copy (the photo reduced to 150-300 px, then halved at q60) and
    two burst frames (bench_duplicates.burst_frame). Each pair is verified with min_overlap 0.5
    and no agreement asked; for the pairs whose keypoints fit, it prints the agreement's spread per
    kind, and at several thresholds how many copies would be lost and how many bursts kept.
    """
    import numpy as np
    from PIL import ImageOps

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_duplicates as bd
    from vsearch.imaging import augment

    rng, photos = random.Random(seed), sorted(FLOWERS.glob("*.jpg"))
    verifier = Verifier(min_overlap=0.5)
    agreement: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bursts-") as tmp:
        folder = Path(tmp)
        for i, src in enumerate(rng.sample(photos, count)):
            img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
            pairs = [(kind, src, folder / name) for kind, name in bd.make_copies(src, folder, rng).items()]
            for kind in ("colour", "blur", "jpeg", "rotate", "all"):
                dest = folder / f"{src.stem}_{kind}.png"
                augment.KINDS[kind](img, np.random.default_rng([seed, i, len(kind)])).save(dest)
                pairs.append((kind, src, dest))
            small = img.copy()
            small.thumbnail((rng.randint(150, 300),) * 2)
            small.save(folder / f"{src.stem}_s.jpg", quality=85)
            small.resize((small.width // 2, small.height // 2), Image.Resampling.LANCZOS).save(
                folder / f"{src.stem}_sh.jpg", quality=60)
            pairs.append(("small", folder / f"{src.stem}_s.jpg", folder / f"{src.stem}_sh.jpg"))
            for j in range(2):
                dest = folder / f"{src.stem}_burst{j}.jpg"
                bd.burst_frame(img, np.random.default_rng([seed, i, 100 + j])).save(dest, quality=92)
                pairs.append(("burst", src, dest))
            for kind, a, b in pairs:
                v = verifier.verify(a, b)
                if v.same and v.agreement is not None and v.cells >= 8:
                    agreement.setdefault(kind, []).append(v.agreement)
            print(f"\r{i + 1}/{count}", end="", file=sys.stderr)
    print(file=sys.stderr)
    print(f"{count} flowers17 photos, seed {seed}: aligned-pixel agreement of the pairs whose keypoints fit")
    print(f"{'kind':>8} {'pairs':>6} {'min':>6} {'p5':>6} {'median':>7} {'max':>6}")
    for kind, values in agreement.items():
        values.sort()
        print(f"{kind:>8} {len(values):>6} {values[0]:>6.2f} {percentile(values, 0.05):>6.2f} "
              f"{statistics.median(values):>7.2f} {values[-1]:>6.2f}")
    copies = [a for kind, values in agreement.items() if kind != "burst" for a in values]
    frames = agreement.get("burst", [])
    for t in (0.85, 0.88, 0.9, 0.92, 0.95):
        print(f"at {t:.2f}: copies lost {sum(a < t for a in copies)}/{len(copies)}, "
              f"burst frames kept {sum(a >= t for a in frames)}/{len(frames)}")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-dir", type=Path)
    ap.add_argument("--small", type=int, default=0, metavar="N")
    ap.add_argument("--bursts", type=int, default=0, metavar="N",
                    help="aligned-pixel agreement of copies against burst frames, on N flowers17 photos")
    ap.add_argument("--tiny", type=Path, default=FLOWERS.parent.parent / "tiny-imagenet-val")
    ap.add_argument("--folder", type=Path, default=FLOWERS)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--n", default="0,5,10,20,40")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.small:
        small_images(args.tiny, args.small, args.seed)
        return
    if args.bursts:
        bursts(args.bursts, args.seed)
        return
    if args.index_dir is None:
        ap.error("--index-dir is required (or --small N, or --bursts N)")
    ns = sorted({int(x) for x in args.n.split(",")})
    if not (args.index_dir / "meta.json").exists():
        t = time.perf_counter()
        vsearch.build_index(args.folder, args.index_dir).close()
        print(f"built {args.index_dir} in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    with Store.open(args.index_dir) as store:
        paths = store.paths_by_row()
        digests = [store.entry(p).digest for p in paths]
        root = Path(store.meta.root)
    rng = random.Random(args.seed)
    picked = rng.sample(range(len(paths)), args.queries)
    found = {n: 0 for n in ns}
    ceiling = {n: 0 for n in ns}
    verify_ms: dict[int, list[float]] = {n: [] for n in ns}
    search_ms: list[float] = []
    pairs_cold: list[float] = []
    pairs_warm: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp, vsearch.open_index(args.index_dir) as index:
        index.query(make_crop(root / paths[picked[0]], Path(tmp) / "warm.jpg", rng), 1)  # load the model
        for qi, row in enumerate(picked):
            query = make_crop(root / paths[row], Path(tmp) / f"q{qi}.jpg", rng)
            t = time.perf_counter()
            hits = index.query(query, max(max(ns), 1))
            search_ms.append((time.perf_counter() - t) * 1000)
            for n in ns:
                t = time.perf_counter()
                ranked = verify_rerank(query, hits, n, verifier=Verifier()) if n else hits
                verify_ms[n].append((time.perf_counter() - t) * 1000)
                found[n] += digests[ranked[0].row] == digests[row]
                ceiling[n] += any(digests[h.row] == digests[row] for h in hits[:max(n, 1)])
            if qi < 20 and len(hits) >= 2:  # per-pair cost: cold (both decoded), then warm (query cached)
                v = Verifier()
                t = time.perf_counter()
                v.verify(query, hits[0].path)
                pairs_cold.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                v.verify(query, hits[1].path)
                pairs_warm.append((time.perf_counter() - t) * 1000)
            print(f"\r{qi + 1}/{len(picked)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    q = len(picked)
    print(f"{q} crops (10-40% area, rescaled 0.6-1.4x, JPEG q50-90) of {len(paths)} indexed photos; "
          f"embed+search median {statistics.median(search_ms):.0f} ms/query")
    print(f"{'N':>4} {'recall@1':>9} {'in top N':>9} {'verify ms median':>17} {'p90':>7}")
    for n in ns:
        print(f"{n:>4} {found[n] / q:>9.3f} {ceiling[n] / q:>9.3f} {statistics.median(verify_ms[n]):>17.0f} "
              f"{percentile(verify_ms[n], 0.9):>7.0f}")
    print(f"per pair: cold {statistics.mean(pairs_cold):.1f} ms (both images decoded), "
          f"warm {statistics.mean(pairs_warm):.1f} ms (query's keypoints cached)")


if __name__ == "__main__":
    main()
