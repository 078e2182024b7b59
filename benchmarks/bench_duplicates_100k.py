"""Grouping 100,000 photos, measured (not extrapolated): time and peak memory at each level.

The set: 10,000 tiny-imagenet-val photos (64 x 64, the first 10,000 of its labels.csv), each
with nine derived copies, 100,000 files in all, written into ``--work`` (nothing goes into the
project). The copies are the kinds people make:

* ``up``: twice the size, JPEG q70 (an upscaled export);
* ``half``: half the size (32 px), q60 (a thumbnail someone kept);
* ``crop``: 8% cut from each side, brightness +15%, q90;
* ``mirror``: mirrored left to right, q90;
* ``q30``: re-saved at quality 30;
* ``bright``: brightness +25%, q85;
* ``colour``: saturation x1.4 and contrast x1.1, q85;
* ``rotate``: turned 3 degrees and cropped to the same frame, q90;
* ``blur``: a Gaussian blur of radius 0.8, q90.

Ground truth: the ten files of one photo are one picture (45 pairs each; 450,000 in all). The
index is built once with the defaults (``vsearch.build_index``), then each level is grouped in
a process of its own (``Index.duplicates(level=...)``, as ``vsearch duplicates`` runs it), so
each level's wall time and peak resident memory (``ru_maxrss`` of that process) are its own.
Pair precision and recall are printed beside them.

Usage::

    python benchmarks/bench_duplicates_100k.py [--work /tmp/vsearch-100k] [--photos 10000]
        [--tiny ../shared/datasets/tiny-imagenet-val] [--levels exact,near,similar]
        [--mode auto|exact|approximate]

The set and its index stay in ``--work`` and are reused by a later run (delete the folder to
start again). Progress goes to stderr, the markdown table to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("up", "half", "crop", "mirror", "q30", "bright", "colour", "rotate", "blur")
LEVELS = ("exact", "near", "similar")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def derive(src: Path, folder: Path) -> None:
    """The original's bytes and its nine copies, under ``folder`` (skipped when all are there)."""
    from PIL import Image, ImageEnhance, ImageFilter, ImageOps

    stem = src.stem
    names = [folder / f"{stem}.jpg"] + [folder / f"{stem}_{k}.jpg" for k in KINDS]
    if all(p.exists() for p in names):
        return
    names[0].write_bytes(src.read_bytes())
    with Image.open(src) as im:
        img = im.convert("RGB")
    w, h = img.size
    cut_w, cut_h = round(w * 0.08), round(h * 0.08)
    turned = img.rotate(3, resample=Image.Resampling.BICUBIC, expand=False)
    inset_w, inset_h = round(w * 0.05), round(h * 0.05)
    copies = {
        "up": (img.resize((w * 2, h * 2), Image.Resampling.LANCZOS), 70),
        "half": (img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS), 60),
        "crop": (ImageEnhance.Brightness(img.crop((cut_w, cut_h, w - cut_w, h - cut_h))).enhance(1.15), 90),
        "mirror": (ImageOps.mirror(img), 90),
        "q30": (img, 30),
        "bright": (ImageEnhance.Brightness(img).enhance(1.25), 85),
        "colour": (ImageEnhance.Contrast(ImageEnhance.Color(img).enhance(1.4)).enhance(1.1), 85),
        "rotate": (turned.crop((inset_w, inset_h, w - inset_w, h - inset_h)).resize((w, h)), 90),
        "blur": (img.filter(ImageFilter.GaussianBlur(0.8)), 90),
    }
    for kind, (picture, quality) in copies.items():
        picture.save(folder / f"{stem}_{kind}.jpg", format="JPEG", quality=quality)


def make_set(tiny: Path, folder: Path, photos: int) -> int:
    """Write the set (reusing what is there); the number of files."""
    with open(tiny / "labels.csv", newline="") as fh:
        paths = [tiny / row["path"] for row in csv.DictReader(fh)][:photos]
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, src in enumerate(paths, 1):
        derive(src, folder)
        if i % 1000 == 0:
            log(f"set: {i:,} of {len(paths):,} photos ({time.perf_counter() - t0:.0f} s)")
    return len(paths) * (1 + len(KINDS))


def build(folder: Path, index_dir: Path) -> str:
    """Build the index once; later runs reuse it."""
    import vsearch

    try:
        with vsearch.open_index(index_dir) as index:
            if len(index) >= sum(1 for _ in folder.iterdir()):
                return f"reused ({len(index):,} images)"
    except vsearch.VsearchError:
        pass
    log(f"index: building {index_dir} (about 20-40 minutes on 2 cores)...")
    t0 = time.perf_counter()
    with vsearch.build_index(folder, index_dir=index_dir) as index:
        count = len(index)
    return f"built in {time.perf_counter() - t0:.0f} s ({count:,} images)"


def group_one(index_dir: Path, level: str, out: Path, mode: str = "auto") -> None:
    """In a process of its own: group at ``level``, write the groups and the time as JSON."""
    import vsearch

    t0 = time.perf_counter()
    with vsearch.open_index(index_dir) as index:
        opened = time.perf_counter() - t0
        groups = index.duplicates(level=level, mode=mode)
        secs = time.perf_counter() - t0
    members = [[Path(m.path).name for m in g.members] for g in groups]
    # the worker processes near grouping forks (their largest peak: each has its own)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out.write_text(json.dumps({"secs": secs, "open_secs": opened, "groups": members, "workers_mib": workers}))


def picture_of(name: str) -> str:
    stem = Path(name).stem
    for kind in KINDS:
        if stem.endswith("_" + kind):
            return stem[: -len(kind) - 1]
    return stem


def pair_scores(groups: list[list[str]], photos: int) -> tuple[int, float, float]:
    """(pairs claimed, precision, recall) of the groups against the ten files of each photo."""
    claimed = right = 0
    for g in groups:
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                claimed += 1
                right += picture_of(g[i]) == picture_of(g[j])
    truth = photos * (1 + len(KINDS)) * len(KINDS) // 2
    return claimed, (right / claimed if claimed else 1.0), right / truth


def recall_by_kind(groups: list[list[str]], photos: int) -> dict[str, float]:
    """For each kind of copy, the share of the photos whose copy of that kind shares a group with
    the photo itself."""
    group_of = {name: n for n, g in enumerate(groups) for name in g}
    found = dict.fromkeys(KINDS, 0)
    for g in groups:
        for name in g:
            picture = picture_of(name)
            kind = Path(name).stem[len(picture) + 1:]
            if kind and group_of.get(f"{picture}.jpg") == group_of[name]:
                found[kind] += 1
    return {kind: n / photos for kind, n in found.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/vsearch-100k"))
    ap.add_argument("--photos", type=int, default=10_000)
    ap.add_argument("--tiny", type=Path, default=REPO.parent / "shared" / "datasets" / "tiny-imagenet-val")
    ap.add_argument("--levels", default=",".join(LEVELS))
    ap.add_argument("--mode", default="auto", choices=("auto", "exact", "approximate"),
                    help="the neighbour search of the shortlist (Index.duplicates' mode=)")
    ap.add_argument("--group-one", nargs=4, metavar=("INDEX", "LEVEL", "OUT", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.group_one:
        index_dir, level, out, mode = args.group_one
        group_one(Path(index_dir), level, Path(out), mode)
        return
    folder, index_dir = args.work / "photos", args.work / "index"
    files = make_set(args.tiny, folder, args.photos)
    built = build(folder, index_dir)
    log(f"index: {built}")
    lines = [f"neighbour search: {args.mode}", "", "| level | files | groups | pairs claimed | pair precision | pair recall | group s (wall) "
             "| peak memory, MiB |", "|---|---|---|---|---|---|---|---|"]
    kinds: list[str] = []
    for level in args.levels.split(","):
        out = args.work / f"groups-{level}-{args.mode}.json"
        log(f"group: level {level}...")
        t0 = time.perf_counter()
        child = subprocess.Popen([sys.executable, __file__, "--group-one", str(index_dir), level, str(out), args.mode],
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        # wait4 gives this child's own peak resident memory (ru_maxrss, KiB on Linux).
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if child.returncode != 0:
            lines.append(f"| {level} | {files:,} | | | | | | failed (exit {child.returncode}) |")
            continue
        result = json.loads(out.read_text())
        claimed, precision, recall = pair_scores(result["groups"], args.photos)
        memory = f"{usage.ru_maxrss / 1024:,.0f}"
        if result.get("workers_mib"):
            memory += f" (+ {result['workers_mib']:,.0f} per worker process)"
        lines.append(f"| {level} | {files:,} | {len(result['groups']):,} | {claimed:,} | {precision:.3f} | "
                     f"{recall:.3f} | {result['secs']:.0f} ({wall:.0f} with start-up) | {memory} |")
        log(lines[-1])
        kinds.append(f"| {level} | " + " | ".join(f"{r:.3f}" for r in recall_by_kind(result["groups"], args.photos).values())
                     + " |")
    print("\n".join(lines))
    print("\nEach copy in its photo's group, by kind:\n")
    print("\n".join([f"| level | {' | '.join(KINDS)} |", "|---" * (len(KINDS) + 1) + "|", *kinds]))
    print(f"\nIndex: {built}. Load average at the end: {os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    main()
