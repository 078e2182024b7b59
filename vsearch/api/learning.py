"""The API's learning calls: fit the projection head on an index, or drop it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vsearch.api.common import PathLike, index_dir_of

if TYPE_CHECKING:  # imports torch's neighbours (Pillow, the augmentations): only a call pays for it
    from vsearch.learning.train import TrainResult

__all__ = ["remove_head", "train"]


def train(index_dir: PathLike | None = None, *, epochs: int = 10, dim: int | None = None, seed: int = 0, views: int = 2,
          use_judgments: bool = False, device: str = "auto",
          progress: Callable[[str, int, int], None] | None = None) -> TrainResult:
    """Fit a projection head on the index's vectors and commit it in the index (``vsearch train``).

    Positives: ``views`` edited copies of each photo (:mod:`vsearch.imaging.augment`'s seeded
    edits, embedded with the index's model); with ``use_judgments``, relevant judged pairs too,
    and irrelevant ones as hard negatives. The same ``seed`` gives the same head. Queries,
    duplicates and evaluate then go through it unless opened with ``adapter=False``. ``dim``:
    the projected length (default 256, or the vectors' own when shorter).
    ``progress(stage, done, total)``.
    """
    from vsearch.learning import train as tr  # Pillow and the edits: only training pays for them

    options = tr.TrainOptions(epochs=epochs, dim=dim, seed=seed, views=views, use_judgments=use_judgments)
    return tr.train(index_dir_of(index_dir), options, device=device, progress=progress)


def remove_head(index_dir: PathLike | None = None) -> bool:
    """Drop the index's trained head (searches use the raw vectors again); whether there was one."""
    from vsearch.learning import train as tr  # Pillow and the edits: only training pays for them

    return tr.remove_head(index_dir_of(index_dir))
