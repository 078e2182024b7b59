"""Duplicate finding side by side: vsearch (each level), imagededup PHash and czkawka, one run.

A labelled set is made in a temporary folder from flowers17 (nothing is copied into the
project), flat, one file per picture version:

* ``original``: ``--originals`` photos picked at random (by ``--seed``), their bytes unchanged;
* ``half``: each original at half size, re-encoded as JPEG quality 60;
* ``crop``: each original with 5-10% of its width and of its height cut away (split at random
  between the two sides), brightness +15%, JPEG quality 90;
* ``mirror``: each original mirrored left to right, JPEG quality 90;
* ``repeat``: the flowers17 photos that already are repeats of each other (found by pixels with
  ``vsearch.imaging.augment.same_picture``'s rule; flowers17 holds 66 such pairs), all of them unless
  ``--repeats`` caps the number of repeat groups;
* ``distractor``: ``--distractors`` untouched photos of the originals' classes, each a picture of
  its own (so only a false match can pair them);
* ``burst`` (``--bursts N``): for N of the originals, two more frames of the same scene a
  moment later (:func:`burst_frame`: the subject moved, the camera moved a little or the
  framing a few percent apart, a new exposure and sensor noise). Each frame is a picture of its
  own: a pair of it with its original, a copy of the original or the other frame is false;
* ``small`` (``--small N``): N more photos reduced to a small original (200-400 px on the long
  side, JPEG q85), each with a copy at half that size saved at JPEG q60 (100-200 px): the
  small copies the issue saw missed.

Photos that are another flowers17 photo at a different crop (:data:`CROP_REPEATS`) are used
neither as originals nor as distractors.

Ground truth: every pair of files that show the same picture (an original and each of its three
copies, the copies among themselves, and the members of each repeat group). A tool's answer is
scored as pairs: every pair within a vsearch group (a group says all its members are one
picture), every (file, duplicate) pair imagededup lists, every pair within a czkawka group.
Pair precision, recall and F1 follow, with recall per kind (each copy against its original, and
the repeat pairs), and how many pairs with a burst frame were claimed (all false).

Times are wall clock on this machine: "build" is what must exist before grouping (vsearch:
``build_index`` on the fresh set, model load included; imagededup: hashing every file;
czkawka: its whole run, which hashes and groups in one call, so its row shows that time as
"group" and no build), "group" is finding the groups from there.

Scale: ``--scale`` times vsearch's grouping from an existing index of tiny-imagenet-val (10,100
images, 64x64), built once and kept in ``--cache`` (reused by later runs), and extrapolates it
linearly to 100,000 images.

Usage (its own environment: imagededup and czkawka must not go into the project's)::

    python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -e '.[bench]'
    /tmp/benchvenv/bin/python benchmarks/bench_duplicates.py [--originals 200] [--distractors 200]
        [--data ../shared/datasets/flowers17] [--levels exact,near,similar] [--peers imagededup,czkawka]
        [--scale] [--tiny ../shared/datasets/tiny-imagenet-val] [--cache /tmp/vsearch-bench-cache]
        [--work DIR] [--seed 0] [--show-false N] [--czkawka-similarity 0-50] [--bursts N] [--small N]

The markdown table goes to stdout, progress to stderr. ``Index.duplicates`` is called with
``level=`` when the vsearch in use takes it; an older vsearch (cosine groups only) is run as
level ``similar``.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import logging
import math
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import vsearch  # noqa: E402
from vsearch.imaging import augment  # noqa: E402

LEVELS = ("exact", "near", "similar")
PEERS = ("imagededup", "czkawka")
KINDS = ("half", "crop", "mirror", "repeat", "small")
HALF_QUALITY = 60
CROP_FRACTION = (0.05, 0.10)  # of the width and of the height
BRIGHTNESS = 1.15
COPY_QUALITY = 90
SCALE_TARGET = 100_000
#: Burst frames per burst original; the small originals' long side, and their copies' quality.
BURST_FRAMES = 2
SMALL_SIDE = (200, 400)
SMALL_QUALITY = 85
#: flowers17 photos that are another flowers17 photo at a different crop or zoom (not caught by
#: the whole-frame pixel rule): found as the pairs that vsearch's near level (branch dupfind at
#: 45b03d6) grouped over all 1,360 photos and that are not pixel repeats, 46 pairs, each looked
#: at side by side as thumbnails: the same scene in the same light, framed tighter or wider (a
#: few, e.g. 0793-0741, could be a second shot). Both photos of each pair are left out of the
#: originals and distractors, so the set holds no duplicate it does not label. The other tools'
#: false pairs on flowers17 (seed 0) showed no further such pair.
CROP_REPEATS = frozenset({
    "0242-0243", "0242-0244", "0056-0029", "0161-0171", "0217-0229", "0249-0250", "0265-0266",
    "0651-0665", "0662-0700", "0668-0688", "0679-0646", "0682-0654", "0687-0666", "0689-0669",
    "0693-0671", "0695-0672", "0698-0674", "0703-0673", "0704-0675", "0705-0676", "0735-0729",
    "0764-0746", "0774-0749", "0793-0741", "0842-0814", "0844-0824", "0852-0830", "0873-0819",
    "0903-0949", "0928-0915", "0994-1015", "0997-1022", "1003-0974", "1010-0990", "1016-0971",
    "1074-1091", "1164-1134", "1188-1179", "1242-1205", "1243-1202", "1294-1301", "1305-1322",
    "1308-1325", "1321-1290", "1326-1310", "1334-1318",
})


def log(*parts: object) -> None:
    """Progress on stderr, so stdout holds the table alone."""
    print(*parts, file=sys.stderr, flush=True)


# --- the labelled set ------------------------------------------------------------------------


@dataclass
class LabelledSet:
    """The files made (flat in ``folder``) and which of them show the same picture."""

    folder: Path
    groups: list[list[str]] = field(default_factory=list)  # names showing one picture
    kind: dict[str, str] = field(default_factory=dict)  # name -> original/half/.../distractor
    source: dict[str, str] = field(default_factory=dict)  # copy name -> its original's name

    def truth(self) -> set[frozenset[str]]:
        """Every pair of names that show the same picture."""
        return {frozenset(p) for g in self.groups for p in itertools.combinations(g, 2)}

    def kind_pairs(self) -> dict[str, set[frozenset[str]]]:
        """The true pairs per kind: each copy with its original, and the repeat pairs."""
        out: dict[str, set[frozenset[str]]] = defaultdict(set)
        for name, original in self.source.items():
            out[self.kind[name]].add(frozenset((name, original)))
        for g in self.groups:
            if self.kind[g[0]] == "repeat":
                out["repeat"].update(frozenset(p) for p in itertools.combinations(g, 2))
        return out


def read_classes(data: Path) -> dict[Path, str]:
    """flowers17's ``labels.csv``: image path -> class."""
    import csv

    with open(data / "labels.csv", newline="") as fh:
        return {data / row["path"]: row["group"] for row in csv.DictReader(fh)}


def find_repeats(paths: list[Path]) -> list[list[Path]]:
    """Groups of files that hold the same picture, by ``augment.same_picture``'s rule, all pairs."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        prints = np.stack(list(pool.map(augment.thumbprint, paths))).reshape(len(paths), -1)
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    block = 32  # 32 x 1360 x 1024 float32: 178 MB at most per step
    for start in range(0, len(paths), block):
        mad = np.abs(prints[start:start + block, None, :] - prints[None, :, :]).mean(axis=2)
        for i, j in zip(*np.nonzero(mad <= augment.SAME_PICTURE_MAD), strict=True):
            a, b = start + int(i), int(j)
            if a < b:
                parent[root(a)] = root(b)
    groups: dict[int, list[Path]] = defaultdict(list)
    for i, p in enumerate(paths):
        groups[root(i)].append(p)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _save_jpeg(img: Image.Image, dest: Path, quality: int) -> None:
    img.save(dest, format="JPEG", quality=quality)


def make_copies(original: Path, folder: Path, rng: random.Random) -> dict[str, str]:
    """The three edited copies of one original; kind -> file name."""
    with Image.open(original) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    stem = original.stem
    names = {kind: f"{stem}_{kind}.jpg" for kind in ("half", "crop", "mirror")}
    w, h = img.size
    half = img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS)
    _save_jpeg(half, folder / names["half"], HALF_QUALITY)
    cut_w = round(w * rng.uniform(*CROP_FRACTION))
    cut_h = round(h * rng.uniform(*CROP_FRACTION))
    left = rng.randint(0, cut_w)
    top = rng.randint(0, cut_h)
    crop = img.crop((left, top, w - (cut_w - left), h - (cut_h - top)))
    _save_jpeg(ImageEnhance.Brightness(crop).enhance(BRIGHTNESS), folder / names["crop"], COPY_QUALITY)
    _save_jpeg(ImageOps.mirror(img), folder / names["mirror"], COPY_QUALITY)
    return names


def burst_frame(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another frame of the scene in ``img``, a moment later: not a copy of it.

    * the subject moved: a soft-edged box of 30-45% of the width and of the height, centred
      within 15% of the middle (where flowers17's subject is), pasted again 4-15% of the frame
      away in a random direction (the background behind it stays: both places differ);
    * the camera moved (half of the frames): turned by up to 2 degrees, shifted by up to 3% of
      the frame, with up to 1.5% of perspective at each corner; or the framing a few percent
      apart (the other half): zoomed by 0.94-1.06 and shifted by up to 4%;
    * a new exposure (x0.94-1.06) and sensor noise (Gaussian, sigma 1.5-3.5 grey levels).

    The frame is zoomed in 6% so no border shows. A frame with nothing moved in it would be the
    same picture (a crop of it), so every frame has the subject moved.
    """
    import cv2

    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    h, w = rgb.shape[:2]
    bw, bh = w * rng.uniform(0.30, 0.45), h * rng.uniform(0.30, 0.45)
    cx, cy = w * (0.5 + rng.uniform(-0.15, 0.15)), h * (0.5 + rng.uniform(-0.15, 0.15))
    angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.04, 0.15)
    move = np.float32([[1, 0, math.cos(angle) * dist * w], [0, 1, math.sin(angle) * dist * h]])
    mask = np.zeros((h, w), np.float32)
    x0, y0 = int(cx - bw / 2), int(cy - bh / 2)
    mask[max(0, y0):max(0, y0 + int(bh)), max(0, x0):max(0, x0 + int(bw))] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.03 * min(w, h)))
    moved = cv2.warpAffine(rgb, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    over = cv2.warpAffine(mask, move, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    out = rgb * (1 - over) + moved * over
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    if rng.random() < 0.5:  # the camera moved
        turn, zoom = math.radians(rng.uniform(-2, 2)), 1.0
        shift = rng.uniform(-0.03, 0.03, 2) * (w, h)
        jitter = rng.uniform(-0.015, 0.015, (4, 2)) * (w, h)
    else:  # framed a few percent apart
        turn, zoom = 0.0, rng.uniform(0.94, 1.06)
        shift = rng.uniform(-0.04, 0.04, 2) * (w, h)
        jitter = np.zeros((4, 2))
    c, s = math.cos(turn) * zoom, math.sin(turn) * zoom
    centre = np.float32([w / 2, h / 2])
    target = ((corners - centre) @ np.float32([[c, s], [-s, c]]) + centre + shift + jitter - centre) * 1.06 + centre
    warp = cv2.getPerspectiveTransform(corners, target.astype(np.float32))
    out = cv2.warpPerspective(out, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    out = out * rng.uniform(0.94, 1.06) + rng.normal(0, rng.uniform(1.5, 3.5), out.shape)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def add_bursts(out: LabelledSet, originals: list[Path], seed: int) -> None:
    """``BURST_FRAMES`` burst frames of each of ``originals`` (already in the set), JPEG q92."""
    for i, p in enumerate(originals):
        rng = np.random.default_rng([seed, i])
        with Image.open(p) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        for j in range(BURST_FRAMES):
            name = f"{p.stem}_burst{j + 1}.jpg"
            burst_frame(img, rng).save(out.folder / name, quality=92)
            out.kind[name] = "burst"


def add_small(out: LabelledSet, photos: list[Path], rng: random.Random) -> None:
    """Each of ``photos`` as a small original and its half-size q60 copy (a true pair)."""
    for p in photos:
        with Image.open(p) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        side = rng.randint(*SMALL_SIDE)
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        original, copy = f"{p.stem}_small.jpg", f"{p.stem}_small_half.jpg"
        img.save(out.folder / original, quality=SMALL_QUALITY)
        img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.LANCZOS).save(
            out.folder / copy, quality=HALF_QUALITY)
        out.kind[original] = "small-original"
        out.kind[copy] = "small"
        out.source[copy] = original
        out.groups.append([original, copy])


def build_set(data: Path, folder: Path, originals: int, distractors: int, repeats: int | None,
              seed: int, bursts: int = 0, small: int = 0) -> LabelledSet:
    """Make the labelled set in ``folder`` (see the module docstring)."""
    classes = read_classes(data)
    paths = sorted(classes)
    log(f"finding the repeats among {len(paths)} flowers17 photos (by pixels)...")
    t0 = time.perf_counter()
    repeat_groups = find_repeats(paths)
    log(f"  {len(repeat_groups)} repeat groups, {sum(len(g) for g in repeat_groups)} files "
        f"({sum(math.comb(len(g), 2) for g in repeat_groups)} pairs), {time.perf_counter() - t0:.0f} s")
    in_repeats = {p for g in repeat_groups for p in g}
    cropped = {f"image_{n}" for pair in CROP_REPEATS for n in pair.split("-")}
    singles = [p for p in paths if p not in in_repeats and p.stem not in cropped]
    rng = random.Random(seed)
    if originals + distractors > len(singles):
        raise SystemExit(f"--originals + --distractors: only {len(singles)} photos to pick from")
    picked = sorted(rng.sample(singles, originals))
    chosen_classes = {classes[p] for p in picked}
    rest = [p for p in singles if p not in set(picked) and classes[p] in chosen_classes]
    if distractors > len(rest):
        raise SystemExit(f"--distractors: only {len(rest)} other photos of the originals' classes")
    decoys = sorted(rng.sample(rest, distractors))
    spare = [p for p in singles if p not in set(picked) and p not in set(decoys)]
    if small > len(spare):
        raise SystemExit(f"--small: only {len(spare)} photos left to pick from")
    smalls = sorted(rng.sample(spare, small)) if small else []
    if repeats is not None:
        repeat_groups = sorted(rng.sample(repeat_groups, min(repeats, len(repeat_groups))))
    folder.mkdir(parents=True, exist_ok=True)
    out = LabelledSet(folder)
    log(f"writing {originals} originals with 3 copies each, {distractors} distractors, "
        f"{sum(len(g) for g in repeat_groups)} repeats into {folder}...")
    for p in picked:
        shutil.copyfile(p, folder / p.name)
        out.kind[p.name] = "original"
        copies = make_copies(p, folder, rng)
        for kind, name in copies.items():
            out.kind[name] = kind
            out.source[name] = p.name
        out.groups.append([p.name, *copies.values()])
    for g in repeat_groups:
        for p in g:
            shutil.copyfile(p, folder / p.name)
            out.kind[p.name] = "repeat"
        out.groups.append([p.name for p in g])
    for p in decoys:
        shutil.copyfile(p, folder / p.name)
        out.kind[p.name] = "distractor"
    if bursts:
        log(f"writing {BURST_FRAMES} burst frames of {min(bursts, len(picked))} originals...")
        add_bursts(out, picked[:bursts], seed)
    if smalls:
        log(f"writing {len(smalls)} small photos with a half-size q60 copy each...")
        add_small(out, smalls, rng)
    return out


# --- scoring ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    tool: str
    setting: str
    pairs: set[frozenset[str]] | None = None  # None: did not run
    build_s: float | None = None
    group_s: float | None = None
    note: str = ""


def group_pairs(groups: Iterable[Iterable[str]]) -> set[frozenset[str]]:
    """Every pair within each group."""
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(set(g)), 2)}


def scores(found: set[frozenset[str]], truth: set[frozenset[str]]) -> tuple[float, float, float]:
    """Pair precision, recall, F1 (precision is 1 when nothing was claimed)."""
    hit = len(found & truth)
    precision = hit / len(found) if found else 1.0
    recall = hit / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def table(rows: list[Row], labelled: LabelledSet) -> str:
    """The markdown table of every row."""
    truth = labelled.truth()
    per_kind = labelled.kind_pairs()
    bursts = any(k == "burst" for k in labelled.kind.values())
    head = ["tool", "setting", "pairs claimed", "precision", "recall", "F1",
            *(f"recall {k}" for k in KINDS if per_kind[k]), *(["burst pairs claimed"] if bursts else []),
            "build s", "group s", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.pairs is None:
            cells = [r.tool, r.setting, *[""] * (len(head) - 3), r.note]
        else:
            p, rc, f1 = scores(r.pairs, truth)
            kinds = [f"{len(r.pairs & per_kind[k]) / len(per_kind[k]):.3f}" for k in KINDS if per_kind[k]]
            burst = [str(sum(1 for pair in r.pairs if any(labelled.kind[n] == "burst" for n in pair)))] if bursts else []
            cells = [r.tool, r.setting, str(len(r.pairs)), f"{p:.3f}", f"{rc:.3f}", f"{f1:.3f}",
                     *kinds, *burst, _secs(r.build_s), _secs(r.group_s), r.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def show_false(rows: list[Row], labelled: LabelledSet, limit: int) -> None:
    """Up to ``limit`` false pairs of each row on stderr, with their kinds, to look at."""
    truth = labelled.truth()
    for r in rows:
        if r.pairs is None:
            continue
        wrong = sorted(sorted(p) for p in r.pairs - truth)
        log(f"{r.tool} {r.setting}: {len(wrong)} false pairs")
        for a, b in wrong[:limit]:
            log(f"  {a} ({labelled.kind[a]})  ~  {b} ({labelled.kind[b]})")


# --- the tools -------------------------------------------------------------------------------


def _takes_level(index: vsearch.Index) -> bool:
    return "level" in inspect.signature(index.duplicates).parameters


def _vsearch_groups(index: vsearch.Index, level: str) -> list:
    if _takes_level(index):
        return index.duplicates(level=level)
    return index.duplicates()


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_vsearch(folder: Path, index_dir: Path, levels: list[str]) -> list[Row]:
    """vsearch at each level, defaults otherwise: one index build, then one grouping per level."""
    log("vsearch: building the index...")
    index, build_s = _timed(lambda: vsearch.build_index(folder, index_dir=index_dir))
    rows = []
    with index:
        levelled = _takes_level(index)
        for level in levels:
            if not levelled and level != "similar":
                rows.append(Row("vsearch", f"level={level}", note="this vsearch has no level="))
                continue
            log(f"vsearch: grouping, level {level}...")
            try:
                groups, group_s = _timed(lambda lv=level: _vsearch_groups(index, lv))
            except vsearch.VsearchError as exc:
                rows.append(Row("vsearch", f"level={level}", note=f"error: {exc}"))
                continue
            found = group_pairs([Path(m.path).name for m in g] for g in groups)
            note = "" if levelled else "no level= in this vsearch: cosine groups (today's default)"
            rows.append(Row("vsearch", f"level={level}", found, build_s, group_s, note))
    return rows


def run_imagededup(folder: Path) -> Row:
    """imagededup's PHash at its default Hamming distance (10)."""
    try:
        from imagededup.methods import PHash
    except ImportError as exc:
        return Row("imagededup", "PHash", note=f"not installed ({exc})")
    log("imagededup: hashing...")
    logging.disable(logging.INFO)  # imagededup logs every step at INFO on its own handler
    try:
        phash = PHash(verbose=False)
        encodings, build_s = _timed(lambda: phash.encode_images(image_dir=str(folder)))
        log("imagededup: finding duplicates...")
        with warnings.catch_warnings():
            # It warns that num_enc_workers is unused whenever it is handed encodings.
            warnings.simplefilter("ignore", RuntimeWarning)
            dups, group_s = _timed(lambda: phash.find_duplicates(encoding_map=encodings))
    finally:
        logging.disable(logging.NOTSET)
    found = {frozenset((a, b)) for a, others in dups.items() for b in others if a != b}
    return Row("imagededup", "PHash, max distance 10", found, build_s, group_s)


def run_czkawka(folder: Path, similarity: int | None) -> Row:
    """czkawka's similar-images search (perceptual hashes), at the binding's default similarity
    unless ``similarity`` (0-50 bits, lower is stricter) is given. The default gave the same
    groups as 10 (and different ones from 9 and 11) on a set made here."""
    try:
        from czkawka import ImageSimilarity
    except ImportError as exc:
        return Row("czkawka", "similar images", note=f"not installed ({exc})")
    log("czkawka: finding similar images...")

    def groups() -> list[list[str]]:
        finder = ImageSimilarity()
        finder.set_directories([folder])
        if similarity is not None:
            finder.set_similarity(similarity)
        return [[Path(p).name for p in g] for g in finder.find_similar()]

    found, group_s = _timed(groups)
    setting = "similar images, " + ("default similarity" if similarity is None else f"similarity {similarity}")
    return Row("czkawka", setting, group_pairs(found), None, group_s, note="hashing and grouping in one call")


# --- scale -----------------------------------------------------------------------------------


def run_scale(tiny: Path, cache: Path, levels: list[str]) -> str:
    """vsearch grouping time from an existing index of ``tiny`` (built once into ``cache``)."""
    index_dir = cache / "tiny-imagenet-val-index"
    try:
        index = vsearch.open_index(index_dir)
        built = "reused"
    except vsearch.VsearchError:
        log(f"scale: building the index of {tiny} into {index_dir} (once; later runs reuse it)...")
        index, build_s = _timed(lambda: vsearch.build_index(tiny, index_dir=index_dir))
        built = f"built in {build_s:.0f} s"
    lines = ["| level | images | groups | images grouped | group s | extrapolated to 100k, min |",
             "|---|---|---|---|---|---|"]
    with index:
        count = len(index)
        levelled = _takes_level(index)
        for level in levels:
            if not levelled and level != "similar":
                continue
            log(f"scale: grouping {count} images, level {level}...")
            try:
                groups, secs = _timed(lambda lv=level: _vsearch_groups(index, lv))
            except vsearch.VsearchError as exc:
                lines.append(f"| {level} | {count:,} | | | | error: {exc} |")
                continue
            grouped = sum(len(list(g)) for g in groups)
            lines.append(f"| {level} | {count:,} | {len(groups):,} | {grouped:,} | {secs:.1f} | "
                         f"{secs * SCALE_TARGET / count / 60:.1f} |")
    lines.append("")
    lines.append(f"Index of {tiny.name} ({count:,} images): {built}. Extrapolation is linear in the "
                 "number of images (each image looks at a bounded number of neighbours).")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def _names(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise SystemExit(f"{flag}: unknown {bad[0]!r}; choose from {', '.join(allowed)}")
    return names


def main(argv: list[str] | None = None) -> None:
    """Make the set, run every tool, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "flowers17")
    ap.add_argument("--originals", type=int, default=200)
    ap.add_argument("--distractors", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=None, help="repeat groups to include (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", default=",".join(LEVELS))
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--czkawka-similarity", type=int, default=None, help="0-50 (default: the binding's own)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the set and its index (default: a temp folder)")
    ap.add_argument("--show-false", type=int, default=0, metavar="N",
                    help="list up to N false pairs of each tool on stderr")
    ap.add_argument("--bursts", type=int, default=0, metavar="N",
                    help=f"add {BURST_FRAMES} burst frames of each of N originals (default 0)")
    ap.add_argument("--small", type=int, default=0, metavar="N",
                    help="add N small photos with a half-size JPEG q60 copy each (default 0)")
    ap.add_argument("--scale", action="store_true", help="also time grouping at 10k images")
    ap.add_argument("--tiny", type=Path, default=REPO.parent / "shared" / "datasets" / "tiny-imagenet-val")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vsearch-bench-cache")
    args = ap.parse_args(argv)
    levels = _names(args.levels, LEVELS, "--levels")
    peers = _names(args.peers, PEERS, "--peers")
    if not (args.data / "labels.csv").is_file():
        raise SystemExit(f"--data: no labels.csv in {args.data}")
    with tempfile.TemporaryDirectory(prefix="bench-dup-") as tmp:
        work = args.work or Path(tmp)
        if any((work / "set").glob("*")) or (work / "vsearch-index").exists():
            # Files of an earlier run would be scored as unlabelled extras.
            raise SystemExit(f"--work: {work} holds an earlier run's set or index; give an empty folder")
        labelled = build_set(args.data, work / "set", args.originals, args.distractors, args.repeats, args.seed,
                             bursts=args.bursts, small=args.small)
        rows = run_vsearch(labelled.folder, work / "vsearch-index", levels)
        if "imagededup" in peers:
            rows.append(run_imagededup(labelled.folder))
        if "czkawka" in peers:
            rows.append(run_czkawka(labelled.folder, args.czkawka_similarity))
        files = len(labelled.kind)
        counts = defaultdict(int)
        for k in labelled.kind.values():
            counts[k] += 1
        print(f"Labelled set: {files} files ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}), "
              f"{len(labelled.truth())} true pairs; vsearch {vsearch.__version__}, seed {args.seed}.\n")
        print(table(rows, labelled))
        if args.show_false:
            show_false(rows, labelled, args.show_false)
    if args.scale:
        print()
        print(run_scale(args.tiny, args.cache, levels))


if __name__ == "__main__":
    main()
