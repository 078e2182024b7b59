"""Is image B the same photo as image A (rescaled, recompressed, cropped, mirrored, re-coloured)?

    decode (images.load_image: EXIF orientation, pixel cap, draft mode) -> grey, longest side WORK_SIDE
    -> ORB keypoints (cached per image and orientation) -> Hamming matches, ratio test
    -> RANSAC similarity transform (scale, rotation, shift) -> inliers, overlap -> Verdict
    no straight fit: the same with B mirrored left-right
    too few keypoints (tiny or flat images): compare 32x32 grey thumbnails instead

A cosine between embeddings says "looks alike"; two photos of the same scene look alike too.
Verification asks whether many local features of A land, under one geometric transform, on the
matching features of B: that holds for an edited copy of a photo and fails for a second shot.

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
#: Fallback for tiny or flat images: normalised correlation of 32x32 grey thumbnails, less
#: their brightness and linear gradient (any two gradients correlate).
THUMB_SIDE = 32
THUMB_MIN_CORRELATION = 0.9
#: Features of this many images (each orientation) are kept per verifier.
CACHE_IMAGES = 2048


@dataclass(frozen=True)
class Verdict:
    """The answer for one pair.

    ``same``: B is a copy of A (edited, rescaled, cropped within ``min_overlap``, or mirrored).
    ``inliers``: matches consistent with the fitted transform; ``matches``: matches that passed
    the ratio test. ``mirrored``: B matched only once flipped left-right. ``transform``: the
    2x3 affine matrix (row-major) from A's pixels to B's (B's mirrored pixels if ``mirrored``),
    None when none was fitted. ``reason``: ``verified``, ``verified (thumbnails)``, ``too few
    keypoints``, ``too few matches``, ``too few inliers``, ``too little overlap``, ``thumbnails
    differ``. ``overlap``: the share of the smaller-covered image inside the shared region.
    """

    same: bool
    inliers: int
    matches: int
    mirrored: bool
    transform: tuple[float, ...] | None
    reason: str
    overlap: float = 0.0


@dataclass(frozen=True)
class _Features:
    points: np.ndarray  # (n, 2) float32, in the image's own pixels
    descriptors: np.ndarray | None  # (n, 32) uint8
    size: tuple[int, int]  # (width, height) of the image's own pixels
    thumb: np.ndarray  # (THUMB_SIDE, THUMB_SIDE) float32: detail only, unit norm (zeros when none)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # pragma: no cover - an install without the dependency
        raise VsearchError("verification needs OpenCV: pip install opencv-python-headless") from None
    cv2.setNumThreads(1)  # pairs are many and small: threads cost more than they give
    return cv2


class Verifier:
    """Verifies pairs, keeping each image's keypoints for later pairs in the same run.

    ``min_overlap`` (0-1): how much of each image the shared region must cover.
    ``max_pixels``: images larger than this are refused (images.load_image).
    """

    def __init__(self, *, min_overlap: float = 0.0, min_inliers: int = MIN_INLIERS,
                 max_pixels: int = images.DEFAULT_MAX_PIXELS, cache: int = CACHE_IMAGES) -> None:
        if not 0.0 <= min_overlap <= 1.0:
            raise VsearchError(f"min_overlap must be between 0 and 1 (got {min_overlap})")
        self.min_overlap = min_overlap
        self.min_inliers = min_inliers
        self.max_pixels = max_pixels
        self._cache: OrderedDict[tuple[str, bool], _Features] = OrderedDict()
        self._limit = cache
        self._cv2 = _cv2()
        self._orb = self._cv2.ORB_create(nfeatures=FEATURES)
        self._matcher = self._cv2.BFMatcher(self._cv2.NORM_HAMMING)

    # --- features ---------------------------------------------------------------------------

    def features(self, path: Path, mirrored: bool = False) -> _Features:
        """Keypoints of ``path`` (flipped left-right when ``mirrored``), cached.

        Raises :class:`~vsearch.imaging.images.ImageDecodeError` when the file cannot be decoded.
        """
        key = (str(path), mirrored)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        grey, size = self._grey(path)
        if mirrored:
            grey = np.ascontiguousarray(grey[:, ::-1])
        found = self._extract(grey, size)
        self._cache[key] = found
        if len(self._cache) > self._limit:
            self._cache.popitem(last=False)
        return found

    def _grey(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        # A mirrored request after a straight one decodes again; mirrored checks are the rarer.
        img = images.load_image(Path(path), min_side=WORK_SIDE // 2, max_pixels=self.max_pixels)
        return np.asarray(img.convert("L")), img.size

    def _extract(self, grey: np.ndarray, size: tuple[int, int]) -> _Features:
        cv2 = self._cv2
        h, w = grey.shape
        longest = max(w, h)
        scale = WORK_SIDE / longest if longest > WORK_SIDE else max(1.0, MIN_WORK_SIDE / longest)
        if scale != 1.0:
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
        keypoints, descriptors = self._orb.detectAndCompute(grey, None)
        # Keypoints back in the image's own pixels (the decoded image may be a draft-mode
        # reduction of the file: ``size`` is the decoded size, and both images of a pair are
        # compared by the share of their area, which does not depend on that).
        to_own = np.array([size[0] / grey.shape[1], size[1] / grey.shape[0]], dtype=np.float32)
        points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2) * to_own
        thumb = cv2.resize(grey, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
        return _Features(points, descriptors, size, _detail(thumb))

    # --- pairs ------------------------------------------------------------------------------

    def verify(self, a: Path, b: Path) -> Verdict:
        """Whether ``b`` is a copy of ``a``; see :class:`Verdict`.

        Raises :class:`~vsearch.imaging.images.ImageDecodeError` when either file cannot be decoded.
        """
        fa, fb = self.features(a), self.features(b)
        if min(len(fa.points), len(fb.points)) < MIN_KEYPOINTS:
            return self._by_thumbnails(fa, fb, self.features(b, mirrored=True))
        straight = self._fit(fa, fb, mirrored=False)
        if straight.same:
            return straight
        flipped = self._fit(fa, self.features(b, mirrored=True), mirrored=True)
        if flipped.same:
            return flipped
        return max(straight, flipped, key=lambda v: v.inliers)

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
        if inliers < self.min_inliers:
            return Verdict(False, inliers, len(good), mirrored, transform, "too few inliers")
        overlap = _overlap(matrix, fa.size, fb.size)
        if overlap < self.min_overlap:
            return Verdict(False, inliers, len(good), mirrored, transform, "too little overlap", overlap)
        return Verdict(True, inliers, len(good), mirrored, transform, "verified", overlap)

    def _by_thumbnails(self, fa: _Features, fb: _Features, fb_mirrored: _Features) -> Verdict:
        """Tiny or flat images: whole-frame thumbnails correlate, straight or mirrored."""
        if not fa.thumb.any() or not fb.thumb.any():
            return Verdict(False, 0, 0, False, None, "too few keypoints")
        straight = float((fa.thumb * fb.thumb).sum())
        mirrored = float((fa.thumb * fb_mirrored.thumb).sum())
        flip = mirrored > straight
        best = max(straight, mirrored)
        if best >= THUMB_MIN_CORRELATION:
            return Verdict(True, 0, 0, flip, None, "verified (thumbnails)", 1.0)
        return Verdict(False, 0, 0, flip, None, "thumbnails differ")


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
