"""Why two photos are, or are not, duplicates: each test of the levels, with its measure and threshold.

    same bytes?                          -> exact
    cosine >= the near shortlist (0.80)  -> verified: keypoints fit one transform (>= 15 inliers),
                                            each image shares min_overlap (0.5) with the other,
                                            the aligned pixels agree (>= 0.9)   -> near
    cosine >= the similar level's (0.92) -> similar
    else                                 -> no level

The tests are those of :func:`vsearch.duplicates.grouping.find_groups` for one pair, A in the
keeper's place. (Grouping also looks only at each photo's MAX_LINKS nearest neighbours, and a
"not a duplicate" mark keeps a pair apart; neither is a property of the pair.) Either photo may
be outside the index: it is embedded with the index's model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from vsearch.duplicates import grouping
from vsearch.errors import VsearchError
from vsearch.imaging.reading import read_image_bytes
from vsearch.retrieval.search import Searcher
from vsearch.storage.store import file_digest

if TYPE_CHECKING:  # verify imports OpenCV and Pillow: only an explanation pays for them
    from vsearch.imaging.verify import Verdict


@dataclass(frozen=True)
class PairCheck:
    """One test of a pair: ``test`` (what is tested), ``value`` (what the pair measures),
    ``needs`` (what the level asks), ``passed`` (None when the test does not apply)."""

    test: str
    value: str
    needs: str
    passed: bool | None


@dataclass(frozen=True)
class PairExplanation:
    """Everything :func:`explain_pair` measured for photos ``a`` and ``b``.

    ``cosine``: of their embeddings. ``same_bytes``: byte-identical files. ``matches``: ORB
    keypoints matched (ratio test); ``inliers``: those that fit the transform. ``mirrored``: B
    matched once flipped left-right. ``transform``: the fitted 2x3 matrix from A's pixels to
    B's (None when none was fitted), and in words ``scale`` (B's pixels per A's), ``rotation``
    (degrees) and ``shift`` (B's pixels). ``overlap``: the share of each image in common (the
    smaller). ``agreement``: the share of the overlap where the aligned pixels agree, over
    ``cells`` cells (None when no fit). ``verdict``: the verifier's reason. ``level``:
    ``exact``, ``near``, ``similar`` or None, the strictest the pair reaches; ``why``: that in
    one sentence; ``checks``: each test in order.
    """

    a: Path
    b: Path
    cosine: float
    same_bytes: bool
    matches: int
    inliers: int
    mirrored: bool
    transform: tuple[float, ...] | None
    scale: float | None
    rotation: float | None
    shift: tuple[float, float] | None
    overlap: float
    agreement: float | None
    cells: int
    verdict: str
    level: str | None
    why: str
    checks: tuple[PairCheck, ...]


def explain_pair(searcher: Searcher, a: Path, b: Path, *, near_threshold: float | None = None,
                 similar_threshold: float | None = None,
                 min_overlap: float = grouping.NEAR_MIN_OVERLAP) -> PairExplanation:
    """Measure photos ``a`` and ``b`` as the duplicate levels do (see the module notes).

    ``near_threshold``: the near level's shortlist cosine (default 0.80); ``similar_threshold``:
    the similar level's cosine (default 0.92); ``min_overlap``: the share of each image a near
    copy shares with its keeper. Raises :class:`VsearchError` when either file is missing or
    cannot be read, or for a bad option.
    """
    from vsearch.imaging import verify  # OpenCV and Pillow: only an explanation pays for them

    near_at = grouping.SHORTLIST_THRESHOLD if near_threshold is None else near_threshold
    similar_at = grouping.DEFAULT_THRESHOLD if similar_threshold is None else similar_threshold
    for name, value in (("threshold", near_at), ("threshold", similar_at)):
        if not -1.0 <= value <= 1.0:  # also refuses nan
            raise VsearchError(f"{name}= takes a cosine between -1 and 1, e.g. {grouping.DEFAULT_THRESHOLD}")
    verifier = grouping.near_verifier(min_overlap)
    a, b = Path(a).expanduser(), Path(b).expanduser()
    same_bytes = _digest(a) == _digest(b)
    cosine = float(searcher.image_vector(a).vector @ searcher.image_vector(b).vector)
    try:
        v = verifier.verify(a, b)
        if v.same and v.reason == "verified (pixels)":
            # The frames agreed by their pixels before any keypoint was asked (pixels_first): when
            # the keypoints verify the pair too, theirs is the fuller account (matches, transform).
            fit = verify.Verifier(min_overlap=min_overlap, min_agreement=verify.MIN_AGREEMENT).verify(a, b)
            v = fit if fit.same else v
    except VsearchError as exc:
        raise VsearchError(f"cannot compare {a} and {b}: {exc}") from None
    scale = rotation = None
    shift = None
    if v.transform is not None and (v.inliers >= verify.MIN_INLIERS or v.inliers == 0):
        m = v.transform
        scale, rotation = math.hypot(m[0], m[3]), math.degrees(math.atan2(m[3], m[0]))
        shift = (m[2], m[5])
    checks = _checks(v, verify, cosine, same_bytes, near_at, similar_at, min_overlap)
    shortlisted = cosine >= near_at
    if same_bytes:
        level, why = "exact", "the same bytes"
    elif shortlisted and v.same:
        level, why = "near", _near_why(v, verify, min_overlap)
    elif cosine >= similar_at:
        level = "similar"
        why = f"looks alike (cosine {cosine:.3f} >= {similar_at:.2f}) but is no verified copy: {_miss(v, verify, min_overlap)}"
    else:
        level = None
        missed = (f"cosine {cosine:.3f} is below the near level's shortlist ({near_at:.2f})" if not shortlisted
                  else _miss(v, verify, min_overlap))
        why = f"no level: {missed}, and below the similar level's cosine ({similar_at:.2f})"
    return PairExplanation(a, b, cosine, same_bytes, v.matches, v.inliers, v.mirrored, v.transform, scale, rotation,
                           shift, v.overlap, v.agreement, v.cells, v.reason, level, why, tuple(checks))


def _digest(path: Path) -> str:
    try:
        return file_digest(read_image_bytes(path))
    except OSError as exc:
        raise VsearchError(f"cannot read {path}: {exc.strerror or exc}") from None


def _checks(v: Verdict, verify: ModuleType, cosine: float, same_bytes: bool, near_at: float, similar_at: float,
            min_overlap: float) -> list[PairCheck]:
    """Each test in the order the levels apply them."""
    by_pixels = v.reason == "verified (pixels)" or (v.inliers == 0 and v.agreement is not None)
    checks = [
        PairCheck("same bytes (exact)", "yes" if same_bytes else "no", "the same bytes", same_bytes),
        PairCheck("cosine (near shortlist)", f"{cosine:.3f}", f">= {near_at:.2f}", cosine >= near_at),
    ]
    if by_pixels:
        checks.append(PairCheck("keypoints", "no keypoint fit: aligned by pixels", f">= {verify.MIN_KEYPOINTS} per image",
                            None))
    else:
        checks.append(PairCheck("keypoints matched", f"{v.inliers} fit the transform ({v.matches} matched)",
                            f">= {verify.MIN_INLIERS} inliers", v.inliers >= verify.MIN_INLIERS))
    fitted = v.transform is not None and (by_pixels or v.inliers >= verify.MIN_INLIERS)
    if not fitted:
        checks.append(PairCheck("transform", "none fits", "one transform", False))
    elif v.transform is not None:
        m = v.transform
        words = (f"scale {math.hypot(m[0], m[3]):.3f}, rotation {math.degrees(math.atan2(m[3], m[0])):.1f} deg, "
                 f"shift ({m[2]:.1f}, {m[5]:.1f}) px" + (", mirrored" if v.mirrored else ""))
        checks.append(PairCheck("transform", words, "one transform", None))
        checks.append(PairCheck("overlap", f"{v.overlap:.3f}", f">= {min_overlap:.2f} of each image",
                            v.overlap >= min_overlap))
    if v.agreement is not None:
        checks.append(PairCheck("aligned pixels agree", f"{v.agreement:.3f} of {v.cells} cells",
                            f">= {verify.MIN_AGREEMENT:.2f}",
                            v.cells < verify.MIN_CELLS or v.agreement >= verify.MIN_AGREEMENT))
    checks.append(PairCheck("cosine (similar)", f"{cosine:.3f}", f">= {similar_at:.2f}", cosine >= similar_at))
    return checks


def _near_why(v: Verdict, verify: ModuleType, min_overlap: float) -> str:
    if v.inliers == 0:
        how = f"its pixels, aligned, agree over {v.agreement:.2f} of the frame (needs {verify.MIN_AGREEMENT:.2f})"
    else:
        agree = "" if v.agreement is None else f", the aligned pixels agree over {v.agreement:.2f} (needs {verify.MIN_AGREEMENT:.2f})"
        how = (f"{v.inliers} keypoints fit one transform (needs {verify.MIN_INLIERS}), "
               f"{v.overlap:.2f} of each image in common (needs {min_overlap:.2f}){agree}")
    return f"a verified copy{' (mirrored)' if v.mirrored else ''}: {how}"


def _miss(v: Verdict, verify: ModuleType, min_overlap: float) -> str:
    """What the verification missed, in words."""
    if v.reason == "pixels differ":
        return (f"the aligned pixels agree over only {v.agreement:.2f} of the overlap (needs {verify.MIN_AGREEMENT:.2f}): "
                "the same scene at another moment, or another picture")
    if v.reason == "too little overlap":
        return f"only {v.overlap:.2f} of each image in common (needs {min_overlap:.2f}): a heavier crop than min_overlap= allows"
    if v.reason == "too few inliers":
        return f"only {v.inliers} keypoints fit one transform (needs {verify.MIN_INLIERS})"
    if v.reason == "too few matches":
        return f"only {v.matches} keypoints matched (needs {verify.MIN_INLIERS})"
    return v.reason
