"""Does the keep rule keep the original? Planted derivatives of real photos, one group per kind.

A set is made in a temporary folder (nothing is copied into the project) from ``--originals``
flowers17 photos (random by ``--seed``; JPEG q75, about 500 x 700), none of the 300 that the
thresholds of :mod:`vsearch.imaging.provenance` were set on, and every photo of sample_images
(JPEG q90 from PNG, two PNGs; also seen in setting them). Each original gets one derivative of each kind:

* ``resave-high``: the same pixels saved again at a higher JPEG quality (the original's + 5 to
  + 20, at most 98): a bigger file, finer tables;
* ``resave-low``: saved again at quality 50-65;
* ``resized``: 50-80 % of each side, quality 85-95;
* ``brightened``: brightness x 1.1-1.3, quality drawn from 75, 85, 90, 95 (what editors offer);
* ``mirrored``: left to right, quality drawn from 75, 85, 90, 95;
* ``cropped``: 5-10 % cut from each side, quality 90;
* ``stripped``: the metadata removed and the JPEG data untouched (``exiftool -all=``,
  ``jpegtran -copy none``); only with camera EXIF (below), else it is a byte copy;
* ``copy``: the same bytes, named ``x (1).jpg`` beside the original (what a browser or file
  manager names a second download or copy);
* ``raw+jpeg``: a RAW file and its JPEG rendition; the RAW is the original.

Where files land: the original in ``photos/``; each derivative under the same file name in a
folder drawn at random from ``edits/`` and ``shared/`` (one sorts before ``photos``, one after,
so "then the path" cannot favour either side); the ``copy`` beside the original.

The RAW files are DNGs written here (the writer of tests/test_images.py): a 12-bit RGGB Bayer
mosaic sampled from the photo's pixels, with the photo as the JPEG preview, laid out as cameras
lay out their DNGs (LibRaw reads them). They are not a camera's capture: no camera RAW is in the
shared datasets. What the rule weighs, that the file is a RAW, is the same.

Two settings of what the files say beyond their pixels, each run:

* **metadata**: ``none`` (as the datasets are: no EXIF anywhere), or ``camera`` (each original
  given a camera's EXIF, Make, Model and DateTimeOriginal, inserted without re-encoding; the
  derivatives made by an editor keep it, with its Software and a later DateTime, as Lightroom,
  Photoshop and GIMP do; ``stripped`` loses it);
* **mtimes**: ``as made`` (each derivative made a day or more after its original) or
  ``copied`` (every file's mtime drawn at random within one minute, as a copy that does not
  keep them leaves: the mtime says nothing).

Groups: each original with each one derivative (a pair per kind), and each original with all
its derivatives at once. A rule's keeper is the first file of the group in its order
(:func:`vsearch.duplicates.keeper.order`, the code ``duplicates`` runs, every file a neighbour
of every other). Rules: ``pixels`` (the rule before: most pixels, then largest file, then
oldest, then path), ``default`` (this one) and "largest file" (what most peers do: the biggest
file, then the path).

``--end-to-end`` (or ``--only-end-to-end``) also builds an index of one set (no metadata, mtimes
copied; the default model) and runs ``Index.duplicates()`` (level near, as ``vsearch
duplicates``) with both vsearch rules, without the RAW files (whose rule alone would decide
every group): of the groups found that hold files of one picture only and its original, the
share whose keeper is that original.

Usage::

    .venv/bin/python benchmarks/bench_keeper.py [--originals 200] [--seed 0]
        [--data ../shared/datasets/flowers17] [--end-to-end | --only-end-to-end] [--work DIR]

The markdown tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import struct
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vsearch.duplicates import keeper  # noqa: E402

KINDS = ("resave-high", "resave-low", "resized", "brightened", "mirrored", "cropped", "stripped", "copy",
         "raw+jpeg")
EDITOR_QUALITIES = (75, 85, 90, 95)
RULES = ("pixels", "default", "largest file")
DAY = 86_400.0
#: The flowers17 photos the thresholds of vsearch.imaging.provenance were set on (left out here).
CALIBRATION_SEED, CALIBRATION_PHOTOS = 1, 300


def log(*parts: object) -> None:
    """Progress on stderr, so stdout holds the tables alone."""
    print(*parts, file=sys.stderr, flush=True)


# --- making the set ----------------------------------------------------------------------------


@dataclass
class Group:
    """One planted group: its files, the original first; ``kind`` is a derivative kind or "all"."""

    kind: str
    original: Path
    files: list[Path]


def camera_exif(taken: str) -> Image.Exif:
    exif = Image.Exif()
    exif[271], exif[272], exif[306] = "vsearch-bench", "Camera 1", taken  # Make, Model, DateTime
    exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    return exif


def editor_exif(exif: Image.Exif | None) -> bytes:
    """What an editor writes back: the camera's EXIF, its own Software, a later DateTime."""
    if exif is None:
        return b""
    edited = Image.Exif()
    edited.load(exif.tobytes())
    edited[305], edited[306] = "Editor 2.0", "2024:06:01 12:00:00"
    return edited.tobytes()


def insert_exif(jpeg: bytes, exif: Image.Exif) -> bytes:
    """The JPEG with an APP1 EXIF segment right after SOI: the pixels' data untouched."""
    payload = exif.tobytes()
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def strip_metadata(jpeg: bytes) -> bytes:
    """The JPEG without its APPn (1-15) and COM segments: the entropy-coded data untouched."""
    out, i = bytearray(jpeg[:2]), 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF:
        marker = jpeg[i + 1]
        if marker == 0xDA:  # start of scan: the rest is image data
            break
        length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if not (0xE1 <= marker <= 0xEF or marker == 0xFE):
            out += jpeg[i:i + 2 + length]
        i += 2 + length
    return bytes(out + jpeg[i:])


def save_jpeg(img: Image.Image, quality: int, exif: bytes) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def quality_of(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as im:
        from vsearch.imaging.provenance import jpeg_quality

        return jpeg_quality(getattr(im, "quantization", None) or {}) or 90


def make_set(originals: list[Path], work: Path, *, seed: int, metadata: str, mtimes: str,
             raw: bool = True) -> list[Group]:
    """Write the originals and their derivatives under ``work`` (``raw``: with the RAW+JPEG
    pairs); the groups."""
    from tests.test_images import _write_dng  # the DNG writer the RAW tests use (a test helper, not the library)

    rng = random.Random(seed)
    for sub in ("photos", "edits", "shared", "raw"):
        (work / sub).mkdir(parents=True)
    groups: list[Group] = []
    base_time = 1_600_000_000.0
    for n, source in enumerate(originals):
        data = source.read_bytes()
        stem = f"{n:04d}-{source.stem}"
        is_jpeg = data[:2] == b"\xff\xd8"
        exif = camera_exif(f"2019:0{1 + n % 9}:1{n % 10} 10:{n % 60:02d}:00") if metadata == "camera" else None
        if exif is not None and is_jpeg:
            data = insert_exif(data, exif)
        original = work / "photos" / f"{stem}{source.suffix.lower()}"
        original.write_bytes(data)
        img = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = img.size
        q0 = quality_of(data) if is_jpeg else 100
        edited = editor_exif(exif if is_jpeg else None)
        made: dict[str, Path] = {}

        def derivative(kind: str, payload: bytes, *, beside: str | None = None, stem: str = stem,
                       made: dict[str, Path] = made) -> None:
            """Write one derivative: under the original's name in edits/KIND/ or shared/KIND/, or
            named ``beside`` in the original's own folder."""
            where = work / "photos" if beside else work / rng.choice(("edits", "shared")) / kind
            where.mkdir(exist_ok=True)
            path = where / (beside or f"{stem}.jpg")
            path.write_bytes(payload)
            made[kind] = path

        derivative("resave-high", save_jpeg(img, min(98, q0 + rng.randint(5, 20)), edited))
        derivative("resave-low", save_jpeg(img, rng.randint(50, 65), edited))
        f = rng.uniform(0.5, 0.8)
        derivative("resized", save_jpeg(img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.LANCZOS),
                                        rng.randint(85, 95), edited))
        derivative("brightened", save_jpeg(ImageEnhance.Brightness(img).enhance(rng.uniform(1.1, 1.3)),
                                           rng.choice(EDITOR_QUALITIES), edited))
        derivative("mirrored", save_jpeg(ImageOps.mirror(img), rng.choice(EDITOR_QUALITIES), edited))
        cut = [round(rng.uniform(0.05, 0.10) * s) for s in (w, h, w, h)]
        derivative("cropped", save_jpeg(img.crop((cut[0], cut[1], w - cut[2], h - cut[3])), 90, edited))
        if metadata == "camera" and is_jpeg:
            derivative("stripped", strip_metadata(data))
        derivative("copy", data, beside=f"{stem} (1){original.suffix}")
        t0 = base_time + n * 60
        stamps: dict[Path, float] = {original: t0}
        dng: Path | None = None
        for i, path in enumerate(made.values()):
            stamps[path] = t0 + DAY * (1 + i) if mtimes == "as made" else t0
        if raw:
            dng = _write_dng(work / "raw" / f"{stem}.dng", np.asarray(img), preview=img)
            rendition = work / "photos" / f"{stem}-camera.jpg"
            rendition.write_bytes(save_jpeg(img, 92, exif.tobytes() if exif is not None else b""))
            made["raw+jpeg"] = rendition
            stamps[dng] = stamps[rendition] = t0  # the camera writes both at once
        if mtimes == "copied":
            stamps = {p: base_time + 10_000_000 + rng.uniform(0, 60) for p in stamps}
        for path, t in stamps.items():
            os.utime(path, (t, t))

        for kind, path in made.items():
            if kind == "raw+jpeg":
                assert dng is not None
                groups.append(Group(kind, dng, [dng, path]))
            else:
                groups.append(Group(kind, original, [original, path]))
        groups.append(Group("all", original, [original, *(p for k, p in made.items() if k != "raw+jpeg")]))
    return groups


# --- choosing ----------------------------------------------------------------------------------



def keeper_of(group: Group, rule: str, facts: dict[Path, keeper.FileFacts]) -> Path:
    members = {i: facts[p] for i, p in enumerate(group.files)}
    if rule == "largest file":
        return min(members.values(), key=lambda f: (-f.bytes, f.rel)).path
    everyone = {i: [j for j in members if j != i] for i in members}
    return members[keeper.order(members, rule, everyone)[0]].path


def run(originals: list[Path], work: Path, seed: int, metadata: str, mtimes: str) -> dict[str, dict[str, list[bool]]]:
    """kind -> rule -> one True/False per group: was the original kept."""
    folder = work / f"{metadata}-{mtimes.replace(' ', '-')}"
    t = time.perf_counter()
    groups = make_set(originals, folder, seed=seed, metadata=metadata, mtimes=mtimes)
    log(f"{metadata} / {mtimes}: {len(groups)} groups made in {time.perf_counter() - t:.0f} s")
    facts = {p: keeper.facts_of(p, folder) for g in groups for p in g.files}
    out: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    t = time.perf_counter()
    for g in groups:
        for rule in RULES:
            out[g.kind][rule].append(keeper_of(g, rule, facts) == g.original)
    log(f"  keepers chosen in {time.perf_counter() - t:.1f} s")
    return out


def share(values: list[bool]) -> str:
    return f"{sum(values) / len(values):.1%} ({sum(values)}/{len(values)})" if values else "-"


def table(results: dict[str, dict[str, list[bool]]], title: str) -> None:
    print(f"\n**{title}**: share of groups whose keeper is the original\n")
    print("| group | " + " | ".join(RULES) + " |")
    print("|---|" + "---|" * len(RULES))
    pairs: dict[str, list[bool]] = defaultdict(list)
    for kind in (*KINDS, "all"):
        if kind not in results:
            continue
        row = results[kind]
        label = "all derivatives in one group" if kind == "all" else f"original + {kind}"
        print(f"| {label} | " + " | ".join(share(row[r]) for r in RULES) + " |")
        if kind != "all":
            for r in RULES:
                pairs[r] += row[r]
    print("| every pair group | " + " | ".join(share(pairs[r]) for r in RULES) + " |")


# --- end to end --------------------------------------------------------------------------------


def end_to_end(originals: list[Path], work: Path, seed: int, metadata: str, mtimes: str) -> None:
    """Build an index of one set, without the RAW files (the RAW rule alone would decide every
    group), and group it as ``vsearch duplicates`` does: every file of one picture (the original
    and its derivatives) may land in one group."""
    import vsearch

    name = f"{metadata}-{mtimes.replace(' ', '-')}"
    folder, index_dir = work / f"e2e-{name}", work / f"idx-{name}"
    for old in (folder, index_dir):
        shutil.rmtree(old, ignore_errors=True)
    groups = make_set(originals, folder, seed=seed, metadata=metadata, mtimes=mtimes, raw=False)
    picture: dict[Path, Path] = {}  # file -> the photo original of its picture
    raw_of: dict[Path, Path] = {}  # photo original -> its RAW
    for g in groups:
        if g.kind == "raw+jpeg":
            photo = next(o.original for o in groups if o.kind == "all" and o.original.stem == g.original.stem)
            raw_of[photo] = g.original
            picture.update({p: photo for p in g.files})
        else:
            picture.update({p: g.original for p in g.files})
    t = time.perf_counter()
    with vsearch.build_index(folder, index_dir=index_dir) as index:
        log(f"  end to end: indexed {len(index)} files in {time.perf_counter() - t:.0f} s")
        print(f"\n**End to end** ({metadata} metadata, mtimes {mtimes}, no RAW files; `Index.duplicates()`, "
              "level near): groups found of one picture that hold its original, and the share whose keeper is "
              "that original\n")
        print("| rule | groups found | of one picture, with its original | keeper is the original |")
        print("|---|---|---|---|")
        for rule in ("pixels", "default"):
            t = time.perf_counter()
            found = index.duplicates(keep=rule)
            kept = []
            for g in found:
                paths = {m.path for m in g}
                photos = {picture.get(p) for p in paths}
                if len(photos) != 1 or None in photos:
                    continue
                photo = next(iter(photos))
                expected = raw_of[photo] if raw_of.get(photo) in paths else photo
                if expected in paths:
                    kept.append(g.keeper.path == expected)
            print(f"| {rule} | {len(found)} | {len(kept)} | {share(kept)} |")
            log(f"  {rule}: grouped in {time.perf_counter() - t:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=200, help="flowers17 photos to use (default 200)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "flowers17")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="folder for the sets (default: a temporary one)")
    parser.add_argument("--end-to-end", action="store_true", help="also index one set and group it")
    parser.add_argument("--only-end-to-end", action="store_true", help="only the end-to-end run")
    args = parser.parse_args()

    flowers = sorted((args.data / "images").glob("*.jpg"))
    calibration = set(random.Random(CALIBRATION_SEED).sample(flowers, CALIBRATION_PHOTOS))
    unseen = [p for p in flowers if p not in calibration]
    picked = random.Random(args.seed).sample(unseen, min(args.originals, len(unseen)))
    samples = sorted(p for p in (REPO / "sample_images").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    originals = picked + samples
    log(f"{len(picked)} flowers17 photos and {len(samples)} sample_images photos")
    work = Path(tempfile.mkdtemp(prefix="bench-keeper-")) if args.work is None else args.work
    try:
        print(f"# Keeper benchmark: {len(originals)} originals ({len(picked)} flowers17, {len(samples)} "
              f"sample_images), seed {args.seed}")
        for metadata in ("none", "camera"):
            for mtimes in ("as made", "copied"):
                if not args.only_end_to_end:
                    table(run(originals, work, args.seed, metadata, mtimes),
                          f"{metadata} metadata, mtimes {mtimes}")
        if args.end_to_end or args.only_end_to_end:
            end_to_end(originals, work, args.seed, "none", "copied")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
