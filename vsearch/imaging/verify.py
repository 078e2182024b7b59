"""Is image B the same photo as image A (rescaled, recompressed, cropped, mirrored, re-coloured)?

    decode (images.load_image: EXIF orientation, pixel cap, draft mode) -> grey, longest side WORK_SIDE
    -> ORB keypoints (cached per image and orientation) -> Hamming matches, ratio test
    -> RANSAC similarity transform (scale, rotation, shift) -> inliers, overlap
    -> aligned-pixel agreement over the overlap -> Verdict
    no straight fit: the same with B mirrored left-right
    too few keypoints (flat images), or no fit between small images (under SMALL_SIDE px):
    align the whole frames by their pixels (ECC) and measure the agreement alone

A cosine between embeddings says "looks alike"; two photos of the same scene look alike too.
Verification asks whether many local features of A land, under one geometric transform, on the
matching features of B: that holds for an edited copy of a photo and fails for a photo of
another scene. Two frames of one burst (the same scene a moment later: the subject moved, the
camera shifted a little) pass that test too, because the background's features still fit one
transform. What tells them apart is the pixels: after the fit, an edited copy agrees with its
original everywhere in the overlap, allowing for brightness, colour, compression and scale; a
burst frame disagrees where something moved.

**Aligned-pixel agreement** (:attr:`Verdict.agreement`): both images, grey, are resampled onto
one canvas over their overlap (long side AGREE_SIDE px, never finer than either image there),
the fit refined there by ECC (enhanced correlation, a dense affine alignment: RANSAC's fit on a
few keypoints can be a pixel off, and a crop resized back to another aspect is no similarity),
contrast-normalised, lightly blurred and cut into AGREE_CELL px cells. A cell with detail in
either image *agrees* when the two images' pixels there correlate at AGREE_CORRELATION or more
(zero-mean normalised correlation: a brightness, contrast or tone change leaves it alone); a
cell with detail in one image and none in the other differs; cells flat in both, or clipped
(burnt out or black) in either, say nothing; a cell that differs with no differing neighbour is
noise (what moves between two moments covers neighbouring cells). The agreement is the share
of the cells with something to say that do not differ. Measured (benchmarks/bench_verify.py
--bursts 120 --seed 1): of 1,019 edited copies of ten kinds whose keypoints fit (half size q60,
5-10% crop +15% brightness, mirrored, colour-jittered, blurred, q20-50, rotated, small 75-150 px
q60, and the heaviest combined edits), one agreed below 0.9; of 240 synthetic burst frames (the
subject moved 4-15% of the frame, the camera moved or the framing a few percent apart), 13
agreed at 0.9 or more (median 0.84). :data:`MIN_AGREEMENT` (0.9) is what the duplicates'
``near`` level asks; ``query --verify`` (``min_agreement=0``) only ranks by it.

``min_overlap`` says how much of *each* image the shared region must cover: 0 accepts any crop
(``query --verify``: find the original of a small crop), duplicates ask for half, so a quarter
tile of a picture is not a copy of the picture (sample_images' Hubble tiles).

Pixels in, a verdict out: no index, no CLI. OpenCV (``opencv-python-headless``) is imported
when a verifier is first used.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vsearch.imaging import images
from vsearch.errors import VsearchError

log = logging.getLogger(__name__)

#: Images are verified at this longest side: ORB at 512 px takes a few ms per image and keeps
#: enough detail for 5-10% crops; copies at any resolution meet at the same working scale.
WORK_SIDE = 512
#: Images smaller than this (longest side) are upscaled first: ORB ignores a 31 px border and
#: finds almost nothing on a 64 px thumbnail at its own size.
MIN_WORK_SIDE = 256
#: Keypoints per image. Brute-force matching grows with the square of this: 1,000 took 4x the
#: time of 500 per pair, and matching is most of a pair's cost once keypoints are cached.
FEATURES = 500
#: Lowe's ratio test: a match counts when its best distance is below this share of the second best.
RATIO = 0.8
#: Inliers of the fitted transform needed to call two images the same photo. Measured on the
#: 1,522 pairs that the near level shortlists in flowers17 (cosine >= 0.80, mostly different
#: photos of one species): pairs left unverified had a median of 0 inliers, 99th percentile
#: 14; verified pairs had at least 20 (1st percentile 25, median 175). 64 px copies: see
#: benchmarks/bench_verify.py --small.
MIN_INLIERS = 15
#: Below this many keypoints in either image, ORB cannot decide: compare thumbnails instead.
MIN_KEYPOINTS = 40
#: RANSAC reprojection tolerance, in working-scale pixels.
RANSAC_PX = 6.0
#: A fit that scales A by less than this (or more than its inverse) is no fit: RANSAC's way of
#: mapping A onto one spot of B, where a cluster of matches all land within the tolerance.
MIN_SCALE = 0.05
#: Images with too few keypoints (flat, or all fine noise): a 32x32 grey thumbnail, less its
#: brightness and linear gradient (any two gradients correlate); one with no detail left
#: compares with nothing. Two whose thumbnails correlate at THUMB_MIN_CORRELATION are the same
#: picture even when their cells cannot say (noise re-encoded at a low quality differs cell by cell).
THUMB_SIDE = 32
THUMB_MIN_CORRELATION = 0.9
#: Aligned-pixel agreement (module notes): the canvas's long side, its cells, the correlation at
#: which a cell agrees, and the grey copy of each image kept for it (long side, bounded memory:
#: 192 x 144 bytes per cached image).
AGREE_SIDE = 128
AGREE_CELL = 8
AGREE_CORRELATION = 0.7
PIXELS_SIDE = 192
#: A cell has detail when its pixels' standard deviation (the canvas normalised to a standard
#: deviation of 50) is at least this; less than a third of it is no detail at all.
AGREE_DETAIL = 3.0
#: A cell in which more than this share of either image's pixels is burnt out or black says nothing.
AGREE_CLIPPED = 0.25
#: Fewer cells with something to say than this: the pixels cannot decide (a flat picture).
MIN_CELLS = 8
#: The share of agreeing cells at which two images are the same picture, not another moment
#: of the scene (the duplicates' ``near`` level; measured: see the module notes).
MIN_AGREEMENT = 0.9
#: Below this many pixels on the long side (either image), a pair that ORB cannot fit is
#: aligned by its pixels instead: a small, recompressed copy has too few keypoints to fit.
SMALL_SIDE = 256
#: The agreement at which the first look of a ``pixels_first`` verifier (the whole frames aligned
#: by their pixels, before any keypoint) accepts a pair; below it the keypoint fit decides, at
#: :data:`MIN_AGREEMENT`. Stricter than that: a burst frame aligned frame onto frame agrees at
#: 0.90-0.95 a little more often than under its keypoint fit (28 -> 31 burst pairs claimed at 0.9
#: in benchmarks/bench_duplicates.py --bursts 100), while an edited copy agrees at 0.99 or more.
FIRST_LOOK_AGREEMENT = 0.95
#: Features of this many images (each orientation) are kept per verifier.
CACHE_IMAGES = 2048


@dataclass(frozen=True)
class Verdict:
    """The answer for one pair.

    ``same``: B is a copy of A (edited, rescaled, cropped within ``min_overlap``, or mirrored,
    and its aligned pixels agree at ``min_agreement``). ``inliers``: matches consistent with
    the fitted transform; ``matches``: matches that passed the ratio test. ``mirrored``: B
    matched only once flipped left-right. ``transform``: the 2x3 affine matrix (row-major) from
    A's pixels to B's (B's mirrored pixels if ``mirrored``), None when none was fitted.
    ``reason``: ``verified``, ``verified (pixels)`` (aligned by pixels, not keypoints: small or
    flat images), ``verified (thumbnails)`` (flat images whose thumbnails correlate), ``too few keypoints``, ``too few matches``, ``too few inliers``, ``too little
    overlap``, ``pixels differ`` (a fit, but the aligned pixels disagree: another moment of the
    scene, or another picture). ``overlap``: the share of the smaller-covered image inside the
    shared region. ``agreement``: the share of the overlap's cells whose aligned pixels agree
    (module notes), None when not measured (no fit); ``cells``: how many cells it counted.
    ``correlation``: how closely they agree, not only whether: the mean correlation of the aligned
    pixels over the cells with detail in both (-1 to 1), None when not measured. Another frame of a
    sitting that agrees everywhere a crop shows (nothing moved there) still correlates less than
    the crop's own original (it was resampled by the camera's move and has its own noise):
    ``query --verify`` ranks by it after the agreement.
    """

    same: bool
    inliers: int
    matches: int
    mirrored: bool
    transform: tuple[float, ...] | None
    reason: str
    overlap: float = 0.0
    agreement: float | None = None
    cells: int = 0
    correlation: float | None = None


@dataclass(frozen=True)
class _Look:
    """What the pixel tests compare: no keypoints."""

    size: tuple[int, int]  # (width, height) of the image's own pixels
    thumb: np.ndarray  # (THUMB_SIDE, THUMB_SIDE) float32: detail only, unit norm (zeros when none)
    pixels: np.ndarray  # uint8 grey, long side at most PIXELS_SIDE: what the agreement compares


@dataclass(frozen=True)
class _Features(_Look):
    points: np.ndarray  # (n, 2) float32, in the image's own pixels
    descriptors: np.ndarray | None  # (n, 32) uint8


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # pragma: no cover - an install without the dependency
        raise VsearchError("verification needs OpenCV: pip install opencv-python-headless") from None
    cv2.setNumThreads(1)  # pairs are many and small: threads cost more than they give
    return cv2


def _flipped(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, ::-1])


class Verifier:
    """Verifies pairs, keeping each image's keypoints for later pairs in the same run.

    ``min_overlap`` (0-1): how much of each image the shared region must cover.
    ``min_agreement`` (0-1): the aligned-pixel agreement a fit must also reach (0: measured,
    not asked; :data:`MIN_AGREEMENT` tells the same picture from another moment of the scene).
    ``max_pixels``: images larger than this are refused (images.load_image).
    ``pixels_first``: try the whole frames aligned by their pixels before any keypoint (a copy
    that is not cropped or turned much agrees there at once, for a quarter of a keypoint
    fit's time); the keypoint fit decides what that does not accept. The answers stay the
    fit's: a pair the first look accepts agrees at :data:`FIRST_LOOK_AGREEMENT`, stricter than
    the fit's own test; only its account differs (no inliers, ``verified (pixels)``).
    """

    def __init__(self, *, min_overlap: float = 0.0, min_inliers: int = MIN_INLIERS, min_agreement: float = 0.0,
                 max_pixels: int = images.DEFAULT_MAX_PIXELS, cache: int = CACHE_IMAGES,
                 pixels_first: bool = False) -> None:
        if not 0.0 <= min_overlap <= 1.0:  # also refuses nan
            raise VsearchError(f"min_overlap= takes a share between 0 and 1 (got {min_overlap})")
        if not 0.0 <= min_agreement <= 1.0:
            raise VsearchError(f"min_agreement= takes a share between 0 and 1 (got {min_agreement})")
        self.min_overlap = min_overlap
        self.min_agreement = min_agreement
        self.min_inliers = min_inliers
        self.max_pixels = max_pixels
        self.pixels_first = pixels_first
        self._cache: OrderedDict[tuple[str, bool], _Features] = OrderedDict()
        self._looks: OrderedDict[tuple[str, bool], _Look] = OrderedDict()
        # The working-scale grey of the last few images looked at, so keypoints asked for right
        # after a look do not decode the file again (a few: 512 x 384 bytes each).
        self._working: OrderedDict[str, np.ndarray] = OrderedDict()
        self._limit = cache
        self._cv2 = _cv2()
        self._orb = self._cv2.ORB_create(nfeatures=FEATURES)
        self._matcher = self._cv2.BFMatcher(self._cv2.NORM_HAMMING)

    # --- features ---------------------------------------------------------------------------

    def look(self, path: Path, mirrored: bool = False) -> _Look:
        """What the pixel tests compare of ``path`` (flipped left-right when ``mirrored``), cached;
        the mirrored look is the straight one flipped.

        Raises :class:`~vsearch.imaging.images.ImageDecodeError` when the file cannot be decoded.
        """
        key = (str(path), mirrored)
        found: _Look | None = self._cache.get(key) or self._looks.get(key)
        if found is not None:
            (self._cache if key in self._cache else self._looks).move_to_end(key)
            return found
        if mirrored:
            straight = self.look(path)
            found = _Look(straight.size, _flipped(straight.thumb), _flipped(straight.pixels))
        else:
            grey, size = self._grey(path)
            pixels = grey
            h, w = grey.shape
            if max(w, h) > PIXELS_SIDE:
                f = PIXELS_SIDE / max(w, h)
                pixels = self._cv2.resize(grey, (max(1, round(w * f)), max(1, round(h * f))),
                                          interpolation=self._cv2.INTER_AREA)
            working = self._working_scale(grey)
            thumb = self._cv2.resize(working, (THUMB_SIDE, THUMB_SIDE), interpolation=self._cv2.INTER_AREA)
            found = _Look(size, _detail(thumb.astype(np.float32)), np.ascontiguousarray(pixels))
            self._working[str(path)] = working
            if len(self._working) > 8:
                self._working.popitem(last=False)
        self._looks[key] = found
        if len(self._looks) > self._limit:
            self._looks.popitem(last=False)
        return found

    def features(self, path: Path, mirrored: bool = False) -> _Features:
        """Keypoints of ``path`` (flipped left-right when ``mirrored``) with its look, cached.

        Raises :class:`~vsearch.imaging.images.ImageDecodeError` when the file cannot be decoded.
        """
        key = (str(path), mirrored)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        look = self.look(path, mirrored)
        working = self._working.get(str(path))
        if working is None:  # looked at a while ago: decode again
            working = self._working_scale(self._grey(path)[0])
        if mirrored:
            working = _flipped(working)
        keypoints, descriptors = self._orb.detectAndCompute(working, None)
        # Keypoints back in the image's own pixels (the decoded image may be a draft-mode
        # reduction of the file: ``size`` is the decoded size, and both images of a pair are
        # compared by the share of their area, which does not depend on that).
        size = look.size
        to_own = np.array([size[0] / working.shape[1], size[1] / working.shape[0]], dtype=np.float32)
        points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2) * to_own
        found = _Features(size, look.thumb, look.pixels, points, descriptors)
        self._looks.pop(key, None)  # kept once, with the keypoints
        self._cache[key] = found
        if len(self._cache) > self._limit:
            self._cache.popitem(last=False)
        return found

    def _grey(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        img = images.load_image(Path(path), min_side=WORK_SIDE // 2, max_pixels=self.max_pixels)
        return np.asarray(img.convert("L")), img.size

    def _working_scale(self, grey: np.ndarray) -> np.ndarray:
        """``grey`` at the keypoints' working scale: long side WORK_SIDE at most, MIN_WORK_SIDE at least."""
        cv2 = self._cv2
        h, w = grey.shape
        longest = max(w, h)
        scale = WORK_SIDE / longest if longest > WORK_SIDE else max(1.0, MIN_WORK_SIDE / longest)
        if scale == 1.0:
            return grey
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        return cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)

    # --- pairs ------------------------------------------------------------------------------

    def verify(self, a: Path, b: Path) -> Verdict:
        """Whether ``b`` is a copy of ``a``; see :class:`Verdict`.

        Raises :class:`~vsearch.imaging.images.ImageDecodeError` when either file cannot be decoded.
        """
        if self.pixels_first:
            la, lb = self.look(a), self.look(b)
            if la.thumb.any() and lb.thumb.any():
                # frame onto frame as they are (a copy neither cropped nor turned agrees at once,
                # mirrored or not), then refined by ECC (a crop or a turn a little off the frame)
                first = self._by_pixels(la, [(False, lb), (True, self.look(b, mirrored=True))],
                                        at=FIRST_LOOK_AGREEMENT, refine=False)
                if not first.same:
                    first = self._by_pixels(la, [(False, lb)], at=FIRST_LOOK_AGREEMENT)
                if first.same:
                    return first
        fa, fb = self.features(a), self.features(b)
        if min(len(fa.points), len(fb.points)) < MIN_KEYPOINTS:
            return self._by_pixels(fa, [(False, fb), (True, self.look(b, mirrored=True))], flat=True)
        straight = self._fit(fa, fb, mirrored=False)
        if _confirmed(straight):
            return straight
        # A symmetric subject can fit its mirror image straight (turned); the pixels tell.
        flipped = self._fit(fa, self.features(b, mirrored=True), mirrored=True)
        if _confirmed(flipped):
            return flipped
        if min(max(fa.size), max(fb.size)) < SMALL_SIDE:
            # A small copy saved at a low quality keeps too few keypoints for a fit: its pixels decide.
            by_pixels = self._by_pixels(fa, [(False, fb), (True, self.look(b, mirrored=True))])
            if by_pixels.same:
                return by_pixels
        return max(straight, flipped, key=lambda v: (v.same, v.agreement or 0.0, v.inliers))

    def agreement(self, a: Path, b: Path, transform: tuple[float, ...], *, mirrored: bool = False) -> tuple[float, int]:
        """The aligned-pixel agreement of ``b`` with ``a`` under ``transform`` (A's pixels to B's,
        B mirrored when ``mirrored``): (share of the cells that agree, cells counted)."""
        fa, fb = self.look(a), self.look(b, mirrored=mirrored)
        share, cells, _, _ = _agreement(self._cv2, fa, fb, np.asarray(transform, dtype=np.float64).reshape(2, 3))
        return share, cells

    def _fit(self, fa: _Features, fb: _Features, *, mirrored: bool) -> Verdict:
        cv2 = self._cv2
        if fa.descriptors is None or fb.descriptors is None or len(fb.points) < 2:
            return Verdict(False, 0, 0, mirrored, None, "too few keypoints")
        pairs = self._matcher.knnMatch(fa.descriptors, fb.descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
        if len(good) < max(3, self.min_inliers):
            return Verdict(False, 0, len(good), mirrored, None, "too few matches")
        src = fa.points[[m.queryIdx for m in good]]
        dst = fb.points[[m.trainIdx for m in good]]
        # The tolerance is in working pixels; the points are in the images' own pixels.
        tol = RANSAC_PX * max(fb.size) / min(max(fb.size), WORK_SIDE) if max(fb.size) > WORK_SIDE else RANSAC_PX
        cv2.setRNGSeed(0)  # RANSAC samples at random: the same pair must get the same verdict every run
        matrix, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=tol,
                                                   maxIters=2000, confidence=0.995)
        if matrix is None or mask is None:
            return Verdict(False, 0, len(good), mirrored, None, "too few inliers")
        inliers = int(mask.sum())
        transform = tuple(float(x) for x in matrix.ravel())
        scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        if not MIN_SCALE <= scale <= 1 / MIN_SCALE:
            # A fit that shrinks A to a point counts every match near that point as an inlier.
            return Verdict(False, 0, len(good), mirrored, transform, "too few inliers")
        if inliers < self.min_inliers:
            return Verdict(False, inliers, len(good), mirrored, transform, "too few inliers")
        overlap = _overlap(matrix, fa.size, fb.size)
        if overlap < self.min_overlap:
            return Verdict(False, inliers, len(good), mirrored, transform, "too little overlap", overlap)
        share, cells, _, closeness = _agreement(cv2, fa, fb, matrix.astype(np.float64))
        if self.min_agreement > 0 and cells >= MIN_CELLS and share < self.min_agreement:
            return Verdict(False, inliers, len(good), mirrored, transform, "pixels differ", overlap, share, cells,
                           closeness)
        return Verdict(True, inliers, len(good), mirrored, transform, "verified", overlap, share, cells, closeness)

    def _by_pixels(self, fa: _Look, tries: list[tuple[bool, _Look]], *, flat: bool = False,
                   at: float = MIN_AGREEMENT, refine: bool = True) -> Verdict:
        """The whole frames aligned by their pixels (refined by ECC unless ``refine`` is False),
        B as each of ``tries`` gives it (mirrored or not, B's look), and judged by the agreement
        alone (there are no keypoints to count), at ``at`` or the verifier's own
        ``min_agreement`` if higher: small or flat images, or a first look (``pixels_first``);
        ``flat`` (too few keypoints), also by their thumbnails."""
        if not fa.thumb.any() or not tries[0][1].thumb.any():
            return Verdict(False, 0, 0, False, None, "too few keypoints")
        best: Verdict | None = None
        for mirrored, other in tries:
            (wa, ha), (wb, hb) = fa.size, other.size
            whole = np.array([[wb / wa, 0.0, 0.0], [0.0, hb / ha, 0.0]])  # frame onto frame
            share, cells, matrix, closeness = _agreement(self._cv2, fa, other, whole, refine=refine)
            transform = tuple(float(x) for x in matrix.ravel())
            overlap = _overlap(matrix, fa.size, other.size)
            same = cells >= MIN_CELLS and share >= max(self.min_agreement, at)
            if flat and not same and float((fa.thumb * other.thumb).sum()) >= THUMB_MIN_CORRELATION:
                return Verdict(True, 0, 0, mirrored, transform, "verified (thumbnails)", overlap, share, cells,
                               closeness)
            if same and overlap < self.min_overlap:
                verdict = Verdict(False, 0, 0, mirrored, transform, "too little overlap", overlap, share, cells,
                                  closeness)
            else:
                verdict = Verdict(same, 0, 0, mirrored, transform, "verified (pixels)" if same else "pixels differ",
                                  overlap, share, cells, closeness)
            if verdict.same:
                return verdict
            if best is None or (verdict.agreement or 0.0) > (best.agreement or 0.0):
                best = verdict
        assert best is not None
        return best


def _confirmed(verdict: Verdict) -> bool:
    """A verified fit whose pixels agree too (or that has too little detail for them to say)."""
    return verdict.same and (verdict.cells < MIN_CELLS or (verdict.agreement or 0.0) >= MIN_AGREEMENT)


def _plane_basis() -> np.ndarray:
    yy, xx = np.mgrid[0:THUMB_SIDE, 0:THUMB_SIDE].astype(np.float32) / THUMB_SIDE
    return np.stack([np.ones_like(xx).ravel(), xx.ravel(), yy.ravel()], axis=1)


_PLANE = _plane_basis()


def _detail(thumb: np.ndarray) -> np.ndarray:
    """The thumbnail less its best-fitting plane (brightness and linear gradient), unit norm.

    Any two smooth gradients correlate; what is left after the plane is the picture's own
    detail. A thumbnail with (almost) no detail comes back as zeros: nothing to compare.
    """
    flat = thumb.ravel()
    coef, *_ = np.linalg.lstsq(_PLANE, flat, rcond=None)
    rest = (flat - _PLANE @ coef).reshape(thumb.shape)
    norm = float(np.linalg.norm(rest))
    # 0.5 grey levels per pixel on average: below that, JPEG noise is all there is.
    return rest / norm if norm > 0.5 * THUMB_SIDE else np.zeros_like(rest)


def _agreement(cv2: Any, fa: _Look, fb: _Look, matrix: np.ndarray,
               refine: bool = True) -> tuple[float, int, np.ndarray, float | None]:
    """The aligned-pixel agreement of B with A under ``matrix`` (2x3, A's own pixels to B's), as
    the module notes say: (share of the cells that agree, cells counted, the fit refined by ECC
    (``refine``; else as given), in own pixels as ``matrix``, the mean correlation of the cells
    with detail in both). No overlap, or no detail at all: (0.0, 0, matrix, None)."""
    pa, pb = fa.pixels, fb.pixels
    # own pixels -> the kept grey copies' pixels, and back
    own_a = np.diag([pa.shape[1] / fa.size[0], pa.shape[0] / fa.size[1], 1.0])
    own_b = np.diag([pb.shape[1] / fb.size[0], pb.shape[0] / fb.size[1], 1.0])
    m = own_b @ _h(matrix) @ np.linalg.inv(own_a)
    (ha, wa), (hb, wb) = pa.shape, pb.shape
    corners = np.array([[0, 0], [wa, 0], [wa, ha], [0, ha]], dtype=np.float64) @ m[:2, :2].T + m[:2, 2]
    x0, y0 = np.maximum(corners.min(axis=0), 0.0)
    x1, y1 = np.minimum(corners.max(axis=0), (wb, hb))
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))  # B's pixels per A's pixel
    if x1 - x0 < 4 or y1 - y0 < 4 or scale <= 0:
        return 0.0, 0, matrix, None
    # The canvas: the overlap's box in B, no finer than AGREE_SIDE nor than either image there.
    longest = max(x1 - x0, y1 - y0)
    f = min(AGREE_SIDE, longest, longest / scale) / longest
    size = (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f)))
    to_canvas = np.array([[f, 0.0, -x0 * f], [0.0, f, -y0 * f], [0.0, 0.0, 1.0]])
    a, valid = _warp(cv2, pa, to_canvas @ m, size)
    b, _ = _warp(cv2, pb, to_canvas, size)
    refined_warp = _ecc(cv2, a, b, valid) if refine else None
    if refined_warp is not None:
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        a = cv2.warpAffine(a, refined_warp, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.warpAffine(valid.astype(np.float32), refined_warp, size, flags=flags) > 0.5
        # A's canvas -> B's canvas is the inverse of ECC's warp (which maps B's canvas into A's)
        m = np.linalg.inv(to_canvas) @ np.linalg.inv(_h(refined_warp)) @ to_canvas @ m
    refined = (np.linalg.inv(own_b) @ m @ own_a)[:2]
    share, cells, closeness = _cells(cv2, a, b, valid)
    return share, cells, refined, closeness


def _h(matrix: np.ndarray) -> np.ndarray:
    """A 2x3 affine matrix as 3x3."""
    return np.vstack([np.asarray(matrix, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


def _warp(cv2: Any, grey: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``grey`` resampled onto the canvas by ``matrix`` (3x3), float32, and where it lands (bool)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    if scale < 0.5:  # shrink with area averaging first: bilinear resampling alone would alias
        h, w = grey.shape
        small = cv2.resize(grey, (max(1, round(w * scale * 2)), max(1, round(h * scale * 2))),
                           interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([w / small.shape[1], h / small.shape[0], 1.0])
        grey = small
    affine = matrix[:2].astype(np.float64)
    out = cv2.warpAffine(grey.astype(np.float32), affine, size, flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    landed = cv2.warpAffine(np.ones(grey.shape, np.float32), affine, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, landed > 0.5  # within half a pixel of the image's edge


def _ecc(cv2: Any, a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """ECC's refinement of an alignment that is close already: the 2x3 warp from B's canvas into
    A's, or None when it does not converge or moves further than a refinement should."""
    if valid.sum() < 64:
        return None
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    try:
        _, warp = cv2.findTransformECC(b, np.where(valid, a, 0).astype(np.float32), warp, cv2.MOTION_AFFINE,
                                       criteria, valid.astype(np.uint8), 3)
    except cv2.error:  # flat images, or no convergence: keep the fit as it was
        return None
    # The similarity fit cannot follow a crop resized back to another aspect ratio: ECC's affine
    # warp does, by up to a third; more than that is no refinement but another alignment.
    side = max(a.shape)
    if not np.isfinite(warp).all() or np.abs(warp[:, :2] - np.eye(2)).max() > 0.35 or np.abs(warp[:, 2]).max() > 0.25 * side:
        return None
    return warp


def _cells(cv2: Any, a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> tuple[float, int, float | None]:
    """(share of the cells that agree, cells counted, the mean correlation of the counted cells
    with detail in both, None when there is none): see the module notes."""
    if valid.sum() < AGREE_CELL * AGREE_CELL:
        return 0.0, 0, None
    clipped = (a <= 4) | (a >= 251) | (b <= 4) | (b >= 251)
    planes = []
    for x in (a, b):
        sd = float(x[valid].std())
        if sd < 1e-3:
            return 0.0, 0, None
        planes.append(cv2.GaussianBlur((x - float(x[valid].mean())) * (50.0 / sd), (0, 0), 1.0))
    # The blur reads 2 px around each pixel: a cell must lie that far inside where A landed (the
    # canvas's own edge is no limit: erode's default border leaves it alone).
    inside = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    c = AGREE_CELL
    ny, nx = a.shape[0] // c, a.shape[1] // c
    if ny == 0 or nx == 0:
        return 0.0, 0, None

    def cell_means(x: np.ndarray) -> np.ndarray:
        # INTER_AREA at a whole factor is each cell's exact mean, in OpenCV (outside the GIL:
        # grouping verifies on several threads)
        return cv2.resize(np.ascontiguousarray(x[:ny * c, :nx * c], dtype=np.float64), (nx, ny),
                          interpolation=cv2.INTER_AREA).reshape(ny, nx)

    pa, pb = planes
    ma, mb = cell_means(pa), cell_means(pb)
    sa = np.sqrt(np.maximum(cell_means(pa * pa) - ma * ma, 0.0))
    sb = np.sqrt(np.maximum(cell_means(pb * pb) - mb * mb, 0.0))
    correlation = (cell_means(pa * pb) - ma * mb) / np.maximum(sa * sb, 1e-6)
    said = ((cell_means(inside) > 1.0 - 1e-9) & (cell_means(clipped) <= AGREE_CLIPPED)
            & (np.maximum(sa, sb) >= AGREE_DETAIL))
    both = (sa >= AGREE_DETAIL / 3) & (sb >= AGREE_DETAIL / 3)
    differ = said & ~(both & (correlation >= AGREE_CORRELATION))
    # A cell that differs alone is noise (a recoloured edge, a JPEG block): what moved between
    # two moments of a scene covers neighbouring cells. Only cells that differ next to another count.
    around = cv2.filter2D(differ.astype(np.float32), -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT)
    differ &= around >= 2  # itself and at least one neighbour
    cells = int(said.sum())
    detailed = said & (np.minimum(sa, sb) >= AGREE_DETAIL)
    closeness = float(correlation[detailed].mean()) if detailed.any() else None
    return (1.0 - float(differ.sum()) / cells if cells else 0.0), cells, closeness


def _overlap(matrix: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int]) -> float:
    """The smaller of: the share of A's area that lands inside B, and the share of B it covers."""
    cv2 = _cv2()
    wa, ha = size_a
    wb, hb = size_b
    corners = np.array([[0, 0], [wa, 0], [wa, ha], [0, ha]], dtype=np.float32)
    mapped = corners @ matrix[:, :2].T.astype(np.float32) + matrix[:, 2].astype(np.float32)
    frame_b = np.array([[0, 0], [wb, 0], [wb, hb], [0, hb]], dtype=np.float32)
    area, _ = cv2.intersectConvexConvex(mapped, frame_b)
    scale2 = abs(float(np.linalg.det(matrix[:, :2])))  # area of A's pixels in B's pixels
    if area <= 0 or scale2 <= 0:
        return 0.0
    return float(min(area / (wb * hb), area / (wa * ha * scale2)))


def verify_pair(a: Path, b: Path, *, min_overlap: float = 0.0, min_inliers: int = MIN_INLIERS,
                verifier: Verifier | None = None) -> Verdict:
    """Whether image ``b`` is a copy of image ``a`` (see :class:`Verdict` and the module notes).

    ``min_overlap``: how much of each image the shared region must cover (0 = any crop).
    ``verifier``: reuse one across calls to keep each image's keypoints; when given, its own
    ``min_overlap`` and ``min_inliers`` apply. Raises
    :class:`~vsearch.imaging.images.ImageDecodeError` when either file cannot be decoded.
    """
    verifier = verifier or Verifier(min_overlap=min_overlap, min_inliers=min_inliers)
    return verifier.verify(Path(a), Path(b))
