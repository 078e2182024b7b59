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

``--sittings N`` asks whether verification picks the original of a crop or another frame of
the same sitting (see :func:`sittings`): crops of N flowers17 photos, indexed with two burst
frames of each, ranked by each rule of :data:`RULES`. Measured (2026-12-06, ``--sittings 100
--n 20``, seeds 0 and 1): recall@1 0.28 without verification, 0.49 / 0.50 ordered by inliers,
0.67 / 0.69 by agreement then inliers, 0.74 / 0.78 by agreement, correlation, inliers (now).

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
    python benchmarks/bench_verify.py --sittings 100 [--distractors 200] [--n 20] [--seed 1] [--work DIR]

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
from vsearch.imaging.verify import MIN_AGREEMENT, MIN_CELLS, Verdict, Verifier  # noqa: E402

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


#: How the verified results of a query are ordered, by rule: the verdicts are computed once per
#: query and each rule orders them (a rule's key sorts ascending; ties keep the search's order).
#: ``inliers`` is the order before issue 19 (most keypoint inliers first); ``agreement`` the
#: first fix (aligned pixels that agree best with the query first, then inliers);
#: ``agreement+correlation`` is verify_rerank's now (then the aligned pixels' mean correlation,
#: then inliers); ``agrees+correlation`` asks only whether the pixels agree (MIN_AGREEMENT), then
#: correlation.
def _correlation(v: Verdict) -> float:
    return v.correlation if v.correlation is not None else -1.0


def _agreement(v: Verdict) -> float:
    """A verdict's agreement as verify_rerank reads it: too few cells to tell counts as MIN_AGREEMENT."""
    return v.agreement if v.agreement is not None and v.cells >= MIN_CELLS else MIN_AGREEMENT


RULES = {
    "inliers": lambda v: (-v.inliers,),
    "agreement": lambda v: (-_agreement(v), -v.inliers),
    "agreement+correlation": lambda v: (-_agreement(v), -_correlation(v), -v.inliers),
    "agrees+correlation": lambda v: (-(_agreement(v) >= MIN_AGREEMENT), -_correlation(v), -v.inliers),
}


def sittings(count: int, seed: int, n: int, distractors: int, work: Path | None, dump_to: Path | None = None) -> None:
    """Crops whose index also holds other frames of the same sitting: does ``--verify`` pick the
    original, not a sibling frame?

    For ``count`` flowers17 photos (by ``seed``): the photo and two burst frames of it
    (bench_duplicates.burst_frame: the subject moved, the camera moved or the framing a few
    percent apart, a new exposure and sensor noise; JPEG q92), with ``distractors`` other
    flowers17 photos, indexed with the default model. A query is a crop of each photo
    (:func:`make_crop`: 10-40% of its area, rescaled, q50-90). The top ``n`` are verified once
    (fresh verifier per query) and ordered by each rule of :data:`RULES`; recall@1 is the share
    of queries whose first result is the photo itself. Also: how often a sibling frame verifies
    too, and, where the original and a sibling both verify, their agreement and inliers.
    ``dump_to``: every verified result of every query as JSON (rank, name, cosine, inliers,
    agreement, cells, overlap).
    """
    import json

    import shutil

    import numpy as np
    from PIL import ImageOps

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_duplicates as bd

    rng, photos = random.Random(seed), sorted(FLOWERS.glob("*.jpg"))
    picked = rng.sample(photos, count + distractors)
    originals, others = picked[:count], picked[count:]
    with tempfile.TemporaryDirectory(prefix="bench-sittings-") as tmp:
        base = work or Path(tmp)
        lib, queries, index_dir = base / "lib", base / "queries", base / "idx"
        if not (index_dir / "meta.json").exists():
            lib.mkdir(parents=True, exist_ok=True)
            for i, src in enumerate(originals):
                shutil.copy(src, lib / src.name)
                img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
                for j in range(2):
                    bd.burst_frame(img, np.random.default_rng([seed, i, 200 + j])).save(
                        lib / f"{src.stem}_frame{j}.jpg", quality=92)
            for src in others:
                shutil.copy(src, lib / src.name)
            t = time.perf_counter()
            vsearch.build_index(lib, index_dir).close()
            print(f"built {index_dir} ({count * 3 + distractors} photos) in {time.perf_counter() - t:.0f}s",
                  file=sys.stderr)
        queries.mkdir(parents=True, exist_ok=True)
        found = {rule: 0 for rule in ("off", *RULES)}
        in_top = sibling_verified = both = 0
        orig_agree: list[float] = []
        sib_agree: list[float] = []
        inlier_ratio: list[float] = []
        verify_ms: list[float] = []
        dump: list[dict] | None = [] if dump_to is not None else None
        with vsearch.open_index(index_dir) as index:
            for qi, src in enumerate(originals):
                query = make_crop(lib / src.name, queries / f"q{qi}.jpg", rng)
                hits = index.query(query, n, qe=0)  # the candidates `query --verify` verifies: no expansion
                found["off"] += hits[0].path.name == src.name
                in_top += any(h.path.name == src.name for h in hits)
                verifier = Verifier()
                t = time.perf_counter()
                verdicts = {}
                for i, hit in enumerate(hits):
                    v = verifier.verify(query, hit.path)
                    if v.same:
                        verdicts[i] = v
                verify_ms.append((time.perf_counter() - t) * 1000)
                for rule, key in RULES.items():
                    order = sorted(verdicts, key=lambda i: (*key(verdicts[i]), i))
                    first = hits[order[0]] if order else hits[0]
                    found[rule] += first.path.name == src.name
                if dump is not None:  # every verified result, for trying other rules without verifying again
                    dump.append({"query": src.name, "results": [
                        {"rank": i + 1, "name": hits[i].path.name, "cosine": hits[i].score, "inliers": v.inliers,
                         "agreement": v.agreement, "cells": v.cells, "correlation": v.correlation, "overlap": v.overlap}
                        for i, v in verdicts.items()]})
                mine = {hits[i].path.name: v for i, v in verdicts.items()}
                siblings = [v for name, v in mine.items() if name.startswith(f"{src.stem}_frame")]
                sibling_verified += bool(siblings)
                if src.name in mine and siblings:
                    both += 1
                    o = mine[src.name]
                    best = max(siblings, key=lambda v: v.inliers)
                    orig_agree.append(o.agreement if o.agreement is not None else float("nan"))
                    sib_agree.append(best.agreement if best.agreement is not None else float("nan"))
                    inlier_ratio.append(best.inliers / max(o.inliers, 1))
                print(f"\r{qi + 1}/{count}", end="", file=sys.stderr)
    print(file=sys.stderr)
    print(f"{count} crops (10-40% area, rescaled 0.6-1.4x, JPEG q50-90) of flowers17 photos indexed with two "
          f"burst frames each and {distractors} other photos; top {n} verified, seed {seed}")
    print(f"the original in the top {n}: {in_top}/{count}; a sibling frame verified: {sibling_verified}/{count}; "
          f"original and a sibling both verified: {both}/{count}")
    print(f"{'rule':>22} {'recall@1':>9}")
    for rule, hits_at_1 in found.items():
        print(f"{rule:>22} {hits_at_1 / count:>9.3f}")
    if both:
        print(f"where both verified: agreement median original {statistics.median(orig_agree):.2f}, "
              f"sibling {statistics.median(sib_agree):.2f}; sibling/original inliers median "
              f"{statistics.median(inlier_ratio):.2f} (sibling has more in {sum(r > 1 for r in inlier_ratio)}"
              f"/{both})")
    print(f"verification per query: median {statistics.median(verify_ms):.0f} ms")
    if dump_to is not None and dump is not None:
        dump_to.write_text(json.dumps(dump, indent=1))


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
    ap.add_argument("--sittings", type=int, default=0, metavar="N",
                    help="crops of N flowers17 photos, indexed with two burst frames of each: original or sibling?")
    ap.add_argument("--distractors", type=int, default=200, help="other photos in the --sittings index")
    ap.add_argument("--work", type=Path, help="keep the --sittings set and its index here (reused when built)")
    ap.add_argument("--dump", type=Path, help="--sittings: write every verified result to this JSON file")
    args = ap.parse_args()
    if args.sittings:
        sittings(args.sittings, args.seed, max(int(x) for x in args.n.split(",")), args.distractors, args.work,
                 args.dump)
        return
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
            hits = index.query(query, max(max(ns), 1), qe=0)  # the candidates `query --verify` verifies
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
