"""The clustered all-rows neighbour search (vectors/clustered.py) against the exact matmul."""

from __future__ import annotations

import numpy as np
import pytest

from vsearch.vectors import clustered, nearest


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _copies(n_pictures: int = 300, copies: int = 4, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Pictures with a few noisy copies each (cosine about 0.88 to each other), shuffled."""
    rng = np.random.default_rng(seed)
    base = _unit(rng.normal(size=(n_pictures, dim)))
    rows = np.concatenate([_unit(base + 0.045 * rng.normal(size=base.shape))
                           for _ in range(copies)])
    return rows[rng.permutation(len(rows))]


def _exact(vectors: np.ndarray, k: int, floor: float) -> list[set[int]]:
    rows, scores = nearest.neighbour_graph(vectors, k)
    return [set(r[s >= floor].tolist()) for r, s in zip(rows, scores)]


def test_finds_the_close_rows_the_matmul_finds_with_exact_scores():
    vectors = _copies()
    rows, scores = clustered.close_neighbours(vectors, 5, 0.8, lists=20, probes=4)
    truth = _exact(vectors, 5, 0.8)
    found = [set(r[r >= 0].tolist()) for r in rows]
    pairs = sum(map(len, truth))
    assert pairs > 500  # the set has copies to find
    hit = sum(len(t & (f | {j for j in t if i in found[j]})) for i, (t, f) in enumerate(zip(truth, found)))
    assert hit / pairs >= 0.99
    real = rows >= 0
    i = np.nonzero(real)[0]
    exact_scores = np.einsum("ij,ij->i", vectors[i], vectors[rows[real]])
    np.testing.assert_allclose(scores[real], exact_scores, atol=1e-5)  # every score is the exact cosine
    assert (scores[real] >= 0.8).all() and np.isneginf(scores[~real]).all() and (rows[~real] == -1).all()
    assert (rows != np.arange(len(vectors))[:, None]).all()  # never a row's own entry
    assert (np.diff(np.where(real, scores, -2.0), axis=1) <= 0).all()  # best first


def test_same_answer_every_run():
    vectors = _copies(seed=3)
    a = clustered.close_neighbours(vectors, 4, 0.7)
    b = clustered.close_neighbours(vectors, 4, 0.7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_one_list_is_the_exact_search():
    vectors = _copies(n_pictures=50, seed=5)
    rows, scores = clustered.close_neighbours(vectors, 3, -1.0, lists=1)
    exact_rows, exact_scores = nearest.neighbour_graph(vectors, 3)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    np.testing.assert_array_equal(rows, exact_rows)  # random rows: no ties to order either way


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_tiny_collections(count):
    vectors = _copies(n_pictures=3, copies=1)[:count]
    rows, scores = clustered.close_neighbours(vectors, 5, 0.0)
    assert rows.shape == scores.shape == (count, 5)
    for i in range(count):
        real = rows[i][rows[i] >= 0]
        assert i not in real and len(real) <= count - 1


def test_a_damaged_row_is_named():
    vectors = _copies(n_pictures=40)
    vectors[17] = np.nan
    with pytest.raises(nearest.DamagedVectorError) as caught:
        clustered.close_neighbours(vectors, 3, 0.5)
    assert caught.value.row == 17
    vectors = _copies(n_pictures=40)
    vectors[9] *= 0.5
    with pytest.raises(nearest.DamagedVectorError) as caught:
        clustered.close_neighbours(vectors, 3, 0.5)
    assert caught.value.row == 9 and caught.value.what == nearest.NOT_UNIT


def test_progress_counts_the_lists():
    seen = []
    clustered.close_neighbours(_copies(n_pictures=30), 2, 0.5, lists=6, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 6) for i in range(1, 7)]


def test_rows_that_find_nothing_close_look_further():
    vectors = _copies(n_pictures=200, seed=7)
    narrow = clustered.close_neighbours(vectors, 3, 0.5, lists=20, probes=1)
    truth = _exact(vectors, 3, 0.5)
    missed = sum(len(t - set(r.tolist())) for t, r in zip(truth, narrow[0]))
    assert missed > 0  # one list each misses pairs across lists
    # every row below 2.0 (all of them) probes all 20 lists: the exact answer
    rows, scores = clustered.close_neighbours(vectors, 3, 0.5, lists=20, probes=1, widen_below=2.0, wider_probes=20)
    exact_rows, exact_scores = nearest.neighbour_graph(vectors, 3)
    np.testing.assert_allclose(np.where(exact_scores >= 0.5, exact_scores, -np.inf), scores, atol=1e-5)
    np.testing.assert_array_equal(np.where(exact_scores >= 0.5, exact_rows, -1), rows)
    # only the rows that found nothing at 0.95 look further: rows that did keep their first answer
    some = clustered.close_neighbours(vectors, 3, 0.5, lists=20, probes=1, widen_below=0.95, wider_probes=20)
    sure = narrow[1][:, 0] >= 0.95
    np.testing.assert_array_equal(some[0][sure], narrow[0][sure])
    np.testing.assert_array_equal(some[0][~sure], rows[~sure])
