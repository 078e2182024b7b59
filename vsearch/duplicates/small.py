"""Small copies the near level's shortlist would miss: a photo saved again at half its size and
a low JPEG quality, from an already small photo.

Their embeddings drift further apart than other copies': on 100 flowers17 photos reduced to
200-400 px and saved again at half that size as JPEG q60, 12 scored 0.69-0.80 with their
originals, below the shortlist's 0.80, though every one of them verifies (its keypoints fit and
its aligned pixels agree everywhere; benchmarks/bench_duplicates.py --small). Lowering the
shortlist for every pair would cost a verification for each of tens of thousands of look-alike
pairs (tiny-imagenet-val's 10,100 photos have 82,207 neighbour pairs at 0.65, 182 at 0.80).
So only each photo's nearest neighbour, between :data:`SMALL_SHORTLIST` and the shortlist, is
looked at, and only when the pair is what such a copy looks like: the smaller image under
:data:`SMALL_SIDE` px on its long side, with at most half the other's pixels. The pair then
goes to verification like any other. Only with the default shortlist: a ``threshold=`` given
is obeyed as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

#: The cosine down to which a photo's nearest neighbour may be a small copy of it (measured: 0.69).
SMALL_SHORTLIST = 0.65
#: A small image: under this many pixels on its long side.
SMALL_SIDE = 256
#: A resized copy: the smaller image has at most this share of the larger one's pixels.
SMALLER_SHARE = 0.5


def small_copy_pair(a: Path, b: Path, *, resized: bool = True) -> bool:
    """Whether ``a`` and ``b`` look like a photo and a small resized copy of it, by their headers
    (an unreadable header: no). ``resized=False``: any small image, resized or not (a crop of a
    small photo drifts as far: where a pair costs one verification per photo checked, as
    :mod:`~vsearch.duplicates.against` does, not one per photo of the library)."""
    from vsearch.imaging.images import read_header  # Pillow: only pairs below the shortlist pay for it

    try:
        ha, hb = read_header(a), read_header(b)
    except Exception as e:  # noqa: BLE001 - RAW, gone, unreadable: not a small copy to look at
        log.info("no header for %s or %s: %s", a, b, e)
        return False
    small, large = sorted((ha, hb), key=lambda h: h.pixels)
    return max(small.width, small.height) < SMALL_SIDE and (not resized or small.pixels <= SMALLER_SHARE * large.pixels)
