"""``vsearch duplicates --against FOLDER``: how long checking an import against a library takes, and
whether it tells the photos the library holds from the new ones.

The library is an index of tiny-imagenet-val (10,100 photos of 64x64, built once into
``--cache``, as ``bench_duplicates.py --scale`` does). The import is ``--photos`` files made in a
temporary folder (the datasets are only read), by ``--seed``, in four kinds:

* ``exact`` (20%): indexed photos copied byte for byte (present, level exact);
* ``edited`` (30%): indexed photos edited, in turn: saved again at twice the size as JPEG q70,
  cropped by 8% on each side and brightened by 15% (q90), mirrored (q90), saved again as JPEG q60
  (present, level near);
* ``burst`` (25%): another frame of an indexed photo's scene (``bench_duplicates.burst_frame``:
  the subject moved, the camera moved or the framing a few percent apart, new noise; q90): new;
* ``new`` (25%): flowers17 photos the library does not hold, reduced to 64 px on the long side: new.

It times ``Index.against(folder)`` on an index opened fresh (the model load included, reported
apart), and prints per kind how many came out present and new.

Usage::

    python benchmarks/bench_against.py [--photos 1000] [--seed 0] [--cache /tmp/vsearch-bench-cache]
        [--tiny ../shared/datasets/tiny-imagenet-val] [--flowers ../shared/datasets/flowers17]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import vsearch  # noqa: E402
from bench_duplicates import burst_frame  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
SHARES = (("exact", 0.20), ("edited", 0.30), ("burst", 0.25), ("new", 0.25))


def edit(src: Path, dest: Path, turn: int) -> None:
    """One of four edits, by ``turn``: 2x at q70, an 8% crop brightened, a mirror, q60."""
    img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    w, h = img.size
    if turn % 4 == 0:
        img.resize((w * 2, h * 2), Image.Resampling.BICUBIC).save(dest, quality=70)
    elif turn % 4 == 1:
        box = (round(w * 0.08), round(h * 0.08), round(w * 0.92), round(h * 0.92))
        ImageEnhance.Brightness(img.crop(box)).enhance(1.15).save(dest, quality=90)
    elif turn % 4 == 2:
        ImageOps.mirror(img).save(dest, quality=90)
    else:
        img.save(dest, quality=60)


def make_import(folder: Path, indexed: list[Path], flowers: list[Path], photos: int, seed: int) -> dict[str, str]:
    """Write the import into ``folder``; file name -> kind."""
    rng = random.Random(seed)
    counts = {kind: round(photos * share) for kind, share in SHARES}
    counts["new"] = photos - sum(n for k, n in counts.items() if k != "new")
    sources = rng.sample(indexed, counts["exact"] + counts["edited"] + counts["burst"])
    kinds: dict[str, str] = {}
    n = 0
    for kind in ("exact", "edited", "burst"):
        for i in range(counts[kind]):
            src = sources[n]
            n += 1
            name = f"{kind}_{i:04d}_{src.stem}.jpg"
            if kind == "exact":
                shutil.copyfile(src, folder / name)
            elif kind == "edited":
                edit(src, folder / name, i)
            else:
                img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
                burst_frame(img, np.random.default_rng([seed, i])).save(folder / name, quality=90)
            kinds[name] = kind
    for i, src in enumerate(rng.sample(flowers, counts["new"])):
        img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
        img.thumbnail((64, 64), Image.Resampling.LANCZOS)
        name = f"new_{i:04d}_{src.stem}.jpg"
        img.save(folder / name, quality=90)
        kinds[name] = "new"
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vsearch-bench-cache")
    ap.add_argument("--tiny", type=Path, default=DATASETS / "tiny-imagenet-val")
    ap.add_argument("--flowers", type=Path, default=DATASETS / "flowers17")
    args = ap.parse_args()
    index_dir = args.cache / "tiny-imagenet-val-index"
    if not (index_dir / "meta.json").exists():
        print(f"building the index of {args.tiny} into {index_dir} (once; later runs reuse it)...", file=sys.stderr)
        vsearch.build_index(args.tiny, index_dir=index_dir).close()
    with vsearch.open_index(index_dir) as index:
        root, count = index.root, len(index)
        indexed = sorted(root / index.entry_of_row(r).path for r in range(count))  # type: ignore[union-attr]
    flowers = sorted((args.flowers / "images").glob("*.jpg"))
    with tempfile.TemporaryDirectory(prefix="bench-against-") as tmp:
        folder = Path(tmp) / "import"
        folder.mkdir()
        kinds = make_import(folder, indexed, flowers, args.photos, args.seed)
        t0 = time.perf_counter()
        with vsearch.open_index(index_dir) as index:
            opened = time.perf_counter()
            index.query(folder / sorted(kinds)[-1], k=1)  # loads the model: timed apart
            loaded = time.perf_counter()
            results = index.against(folder)
            done = time.perf_counter()
    outcome: Counter[tuple[str, str, str | None]] = Counter()
    for r in results:
        outcome[(kinds[r.path.name], r.status, r.level)] += 1
    print(f"{len(results)} photos checked against an index of {count:,} ({index_dir.name}); vsearch "
          f"{vsearch.__version__}, seed {args.seed}\n")
    print(f"open {opened - t0:.2f} s, model load {loaded - opened:.2f} s, against {done - loaded:.1f} s "
          f"({(done - loaded) / len(results) * 1000:.0f} ms per photo)\n")
    print("| kind | photos | present exact | present near | present similar | new | unreadable |")
    print("|---|---|---|---|---|---|---|")
    for kind, _ in SHARES:
        total = sum(n for (k, _, _), n in outcome.items() if k == kind)
        cells = [outcome[(kind, "present", lv)] for lv in ("exact", "near", "similar")]
        cells += [outcome[(kind, "new", None)], outcome[(kind, "unreadable", None)]]
        print(f"| {kind} | {total} | " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
