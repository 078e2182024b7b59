"""Cheap labels: seeded, edited copies of indexed photos, each of which should find its original.

A copy is the original after the kind of edit photos get in the wild. Each edit below is one
function ``(image, rng) -> image`` whose random parameters are drawn from the documented
ranges (the *strength*). :func:`make_copies` writes, for every picked image, one copy per kind:

============  =====================================================================================
kind          strength
============  =====================================================================================
crop          random resized crop: keeps 50-90% of the area, aspect ratio 3:4 to 4:3 (log-uniform),
              resized back to the original size
flip          horizontal mirror
rotate        rotation by 2-10 degrees either way, then cropped to the largest centred rectangle of the
              original aspect that holds no border, resized back to the original size
colour        brightness, contrast and saturation each x0.7-1.3, hue shifted by up to 5% of the circle
blur          Gaussian blur, radius 0.4-1.0% of the short side (2-5 px on a 500 px photo)
downscale     long side shrunk to 25-50% (never below 32 px), and left small
jpeg          JPEG re-encoding at quality 20-50
all           the seven above in that order (flip with probability 1/2), as a heavily edited copy
============  =====================================================================================

The originals are first brought to at most :data:`WORK_SIDE` pixels on the long side (as a
shared or uploaded photo usually is), which also bounds the work per copy. Copies are saved as
PNG (lossless), so the only compression a copy carries is the one an edit applied.

Everything is reproducible: the images picked depend on (seed, the sorted paths) only, and each
copy's parameters on (seed, its position among the picked images, its kind).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from vsearch.imaging import images
from vsearch.errors import VsearchError

#: Originals are reduced to at most this many pixels on the long side before editing.
WORK_SIDE = 1024
CROP_AREA = (0.5, 0.9)
CROP_ASPECT = (3 / 4, 4 / 3)
ROTATE_DEGREES = (2.0, 10.0)
BRIGHTNESS = (0.7, 1.3)
CONTRAST = (0.7, 1.3)
SATURATION = (0.7, 1.3)
HUE_SHIFT = 0.05  # fraction of the hue circle, either way
BLUR_RADIUS = (0.004, 0.010)  # fraction of the short side
JPEG_QUALITY = (20, 50)
DOWNSCALE = (0.25, 0.5)  # new long side / old long side
DOWNSCALE_MIN_SIDE = 32

Augmentation = Callable[[Image.Image, np.random.Generator], Image.Image]


def random_resized_crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Crop a random box of :data:`CROP_AREA` of the area and :data:`CROP_ASPECT`, resize back."""
    w, h = img.size
    area = rng.uniform(*CROP_AREA) * w * h
    aspect = math.exp(rng.uniform(math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])))
    cw = min(w, max(1, round(math.sqrt(area * aspect))))
    ch = min(h, max(1, round(math.sqrt(area / aspect))))
    left = int(rng.integers(0, w - cw + 1))
    top = int(rng.integers(0, h - ch + 1))
    return img.resize((w, h), Image.Resampling.BICUBIC, box=(left, top, left + cw, top + ch))


def flip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirror left to right (``rng`` unused: the edit has no parameter)."""
    return ImageOps.mirror(img)


def rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate by :data:`ROTATE_DEGREES` either way and crop away the corners the turn exposed."""
    w, h = img.size
    degrees = rng.uniform(*ROTATE_DEGREES) * (1 if rng.random() < 0.5 else -1)
    a = math.radians(abs(degrees))
    # Largest centred w*s x h*s box whose turned-back corners stay inside the w x h frame.
    s = min(w / (w * math.cos(a) + h * math.sin(a)), h / (w * math.sin(a) + h * math.cos(a)))
    # 3 px further in: bicubic resampling reads 2 px past the box, and must not reach a corner.
    s = max(0.1, s - 6 / min(w, h))
    turned = img.rotate(degrees, resample=Image.Resampling.BICUBIC)
    cw, ch = w * s, h * s
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return turned.resize((w, h), Image.Resampling.BICUBIC, box=box)


def colour_jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Scale brightness, contrast and saturation, and turn the hue by up to :data:`HUE_SHIFT`."""
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(*BRIGHTNESS))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(*CONTRAST))
    img = ImageEnhance.Color(img).enhance(rng.uniform(*SATURATION))
    shift = round(rng.uniform(-HUE_SHIFT, HUE_SHIFT) * 256) % 256
    hue, sat, val = img.convert("HSV").split()
    hue = hue.point(lambda v: (v + shift) % 256)
    return Image.merge("HSV", (hue, sat, val)).convert("RGB")


def blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur with a radius of :data:`BLUR_RADIUS` of the short side (at least 0.5 px)."""
    radius = max(0.5, rng.uniform(*BLUR_RADIUS) * min(img.size))
    return img.filter(ImageFilter.GaussianBlur(radius))


def jpeg_recompress(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Encode as JPEG at a quality in :data:`JPEG_QUALITY` and decode again."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def downscale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Shrink so the long side is :data:`DOWNSCALE` of what it was (at least 32 px), and keep it small."""
    w, h = img.size
    f = max(rng.uniform(*DOWNSCALE), DOWNSCALE_MIN_SIDE / max(w, h))
    if f >= 1:
        return img.copy()
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return img.resize(size, Image.Resampling.LANCZOS)


def all_edits(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Every edit in turn (flip with probability 1/2): one heavily edited copy."""
    for name, fn in SINGLE_EDITS.items():
        if name == "flip" and rng.random() < 0.5:
            continue
        img = fn(img, rng)
    return img


SINGLE_EDITS: dict[str, Augmentation] = {
    "crop": random_resized_crop,
    "flip": flip,
    "rotate": rotate,
    "colour": colour_jitter,
    "blur": blur,
    "downscale": downscale,
    "jpeg": jpeg_recompress,
}
#: Every kind of copy, in the order they are made and reported.
KINDS: dict[str, Augmentation] = {**SINGLE_EDITS, "all": all_edits}


#: Two files are the same picture when their 32 x 32 grey thumbnails differ by at most this mean
#: absolute difference (of 255). Measured on flowers17: its 66 duplicate pairs differ by at most
#: 1.6 (median 0.002), while different photos among each image's 5 nearest Lite0 neighbours with
#: cosine >= 0.8 differ by 5.4 or more.
SAME_PICTURE_MAD = 3.0


def thumbprint(path: Path) -> np.ndarray:
    """A 32 x 32 grey thumbnail (float32) of the whole frame, for :func:`same_picture`."""
    img = images.load_image(path, min_side=64).convert("L")
    return np.asarray(img.resize((32, 32), Image.Resampling.BOX), dtype=np.float32)


def same_picture(a: Path, b: Path) -> bool:
    """Whether two files hold the same picture (re-encoded or resized), by :data:`SAME_PICTURE_MAD`.

    An unreadable file is the same picture as nothing.
    """
    try:
        return float(np.abs(thumbprint(a) - thumbprint(b)).mean()) <= SAME_PICTURE_MAD
    except VsearchError:
        return False


@dataclass(frozen=True)
class AugmentedCopy:
    """One edited copy and the original it was made from."""

    original: Path
    copy: Path
    kind: str


def pick(paths: Sequence[Path], n: int, seed: int) -> list[Path]:
    """``n`` distinct paths chosen at random (by ``seed``), in sorted order.

    Depends on the set of paths and the seed only, not on their order, so two indexes of the
    same folder pick the same images.
    """
    pool = sorted(set(paths))
    if n < 1:
        raise VsearchError("augment= takes a positive number of images")
    if n > len(pool):
        raise VsearchError(f"augment={n}: only {len(pool)} images to pick from; ask for {len(pool)} or fewer")
    chosen = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in sorted(int(c) for c in chosen)]


def _load_original(path: Path) -> Image.Image:
    try:
        img = images.load_image(path, min_side=WORK_SIDE // 2)
    except VsearchError as exc:
        raise VsearchError(f"cannot read {path} to make copies of it: {exc}") from None
    img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.LANCZOS)
    return img


def _copies_of(position: int, original: Path, out_dir: Path, seed: int, kinds: Sequence[str]) -> list[AugmentedCopy]:
    img = _load_original(original)
    made = []
    for kind in kinds:
        # One generator per copy, keyed by the kind's place in KINDS: a copy's parameters do not
        # depend on which other copies are made.
        rng = np.random.default_rng([seed, position, list(KINDS).index(kind)])
        edited = KINDS[kind](img, rng)
        dest = out_dir / f"{position:05d}_{original.stem}_{kind}.png"
        # compress_level 1: several times faster than the default, and still lossless.
        edited.save(dest, format="PNG", compress_level=1)
        made.append(AugmentedCopy(original, dest, kind))
    return made


def make_copies(originals: Sequence[Path], out_dir: Path, *, seed: int = 0,
                kinds: Sequence[str] | None = None, workers: int = 2,
                progress: Callable[[int, int], None] | None = None) -> list[AugmentedCopy]:
    """Write one copy of each original per kind into ``out_dir``; the copies, grouped by original.

    ``kinds`` defaults to every kind in :data:`KINDS`. ``progress(done, total)`` is called after
    each original. Raises :class:`VsearchError` for an unknown kind or an unreadable original.
    """
    kinds = list(KINDS) if kinds is None else list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise VsearchError(f"unknown augmentation {unknown[0]!r}; choose from {', '.join(KINDS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[AugmentedCopy] = []
    # Pillow releases the GIL in decode, resize, filter and encode: threads do overlap.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = [pool.submit(_copies_of, i, Path(p), out_dir, seed, kinds) for i, p in enumerate(originals)]
        for done, job in enumerate(jobs, start=1):
            made.extend(job.result())
            if progress:
                progress(done, len(jobs))
    return made
