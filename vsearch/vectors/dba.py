"""Database-side augmentation (DBA, Arandjelovic & Zisserman 2012): each stored vector is
replaced by the normalised sum of itself and its nearest neighbours, so that a query finds
the photos of a class that agree with each other.

numpy only, block by block: the output may be a memory map.
"""

from __future__ import annotations

import numpy as np

__all__ = ["database_side_augmentation"]


def database_side_augmentation(vectors: np.ndarray, neighbour_rows: np.ndarray, out: np.ndarray,
                               block: int = 4096) -> np.ndarray:
    """DBA: ``out[i] = normalise(vectors[i] + sum(vectors[neighbour_rows[i]]))``.

    ``neighbour_rows``: (N, n) rows of each row's n nearest *other* rows (-1 = none). ``out`` may
    be a memory map; it is filled block by block, so memory stays at one block.
    """
    n_rows = len(vectors)
    if neighbour_rows.shape[0] != n_rows:
        raise ValueError("neighbour_rows must have one line per vector")
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        acc = np.array(vectors[start:stop], dtype=np.float32)
        nb = neighbour_rows[start:stop]
        for j in range(nb.shape[1]):
            col = nb[:, j]
            ok = col >= 0
            # Sorted gathers keep a memory-mapped source sequential.
            idx = np.nonzero(ok)[0]
            order = np.argsort(col[idx])
            acc[idx[order]] += np.asarray(vectors[col[idx][order]], dtype=np.float32)
        norms = np.linalg.norm(acc, axis=1, keepdims=True)
        out[start:stop] = acc / np.maximum(norms, 1e-12)
    return out
