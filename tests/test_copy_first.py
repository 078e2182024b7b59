"""The copy-first step and the default query expansion (docs/defaults.md): QE and DBA order
the results, the query's nearest neighbour by the unaltered vectors stays at rank 1, and every
score stays the cosine to the query asked."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vsearch
from tests.conftest import make_photo
from tests.helpers import cli, ok
from vsearch.defaults import DEFAULT_QE
from vsearch.retrieval import rerank
from vsearch.retrieval.search import Refine, Searcher
from vsearch.storage.store import Store


def test_keep_first_hand_cases():
    assert rerank.keep_first([5, 3, 9, 1], [9]) == [9, 5, 3, 1]
    assert rerank.keep_first([5, 3, 9, 1], [7]) == [7, 5, 3, 9, 1]  # not among them: added ahead
    assert rerank.keep_first([5, 3, 9, 1], [3, 3, 1]) == [3, 1, 5, 9]  # no duplicates
    assert rerank.keep_first([5, 3], []) == [5, 3]


def test_mmr_keeps_the_pinned_result_and_counts_it_as_picked():
    v = np.array([[1, 0, 0], [0.999, 0.045, 0], [0.8, 0.6, 0], [0, 1, 0]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = np.array([0.9, 0.44, 0], dtype=np.float32)
    q /= np.linalg.norm(q)
    assert list(rerank.mmr(q, v, 3, 0.3, keep=1))[:2] == [0, 3]  # the near-copy of 0 waits
    assert list(rerank.mmr(q, v, 2, 1.0, keep=1)) == [0, 2]


@pytest.fixture
def library(tmp_path, fake_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(16):
        make_photo(folder / f"p{i:02d}.jpg", seed=300 + i)
    index_dir = tmp_path / "idx"
    ok(cli("build-index", folder, "--index-dir", index_dir, "--model", "fake", "-q", "--dba", "3"))
    return folder, index_dir


def test_the_unaltered_nearest_neighbour_leads_and_scores_are_cosines_to_the_query(library, tmp_path):
    folder, index_dir = library
    query = make_photo(tmp_path / "new.jpg", seed=305)  # the same picture as p05, not indexed
    with Store.open(index_dir) as store:
        searcher = Searcher(store)
        vector = searcher.image_vector(query).vector
        unit = vector / np.linalg.norm(vector)
        raw = np.asarray(searcher.vectors)
        nearest = int(np.argmax(raw @ unit))
        assert searcher.copy_rows(vector) == [nearest]
        on = searcher.search(vector, 6, refine=Refine(expand=2))
        off = searcher.search(vector, 6, refine=Refine(expand=2, copy_first=False))
        expanded = searcher.expand(vector, 2)
        order = [int(r) for r in searcher.neighbours(expanded, 7)[0]]
    assert on[0].row == nearest and on[0].path.name == "p05.jpg"
    assert [h.row for h in off] == order[:6]  # without the step: the expanded query's order, over the DBA copy
    assert [h.row for h in on] == rerank.keep_first(order, [nearest])[:6]
    for hit in on + off:  # what QE and DBA change is the order, not what a score means
        assert hit.score == pytest.approx(float(raw[hit.row] @ unit), abs=1e-5)


def test_an_indexed_query_photo_stays_ahead_of_its_nearest_other_photo(library):
    folder, index_dir = library
    with vsearch.open_index(index_dir) as idx:
        hits = idx.query(folder / "p03.jpg", k=4)
        assert hits[0].path.name == "p03.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-5)
        with Store.open(index_dir) as store:
            searcher = Searcher(store)
            own = searcher.rows_of([folder / "p03.jpg"])[folder / "p03.jpg"]
            pinned = searcher.copy_rows(searcher.vectors[own], query_rows=[own])
        assert pinned[0] == own and len(pinned) == 2 and hits[1].row == pinned[1]
        assert idx.query(folder / "p03.jpg", k=4, exclude_self=True)[0].row == pinned[1]


def test_query_expands_by_default_and_evaluate_compares_copy_first(library):
    folder, index_dir = library
    with vsearch.open_index(index_dir) as idx:
        default = [h.row for h in idx.query(folder / "p07.jpg", k=5)]
        assert default == [h.row for h in idx.query(folder / "p07.jpg", k=5, qe=DEFAULT_QE)]
    cli_rows = [h["row"] for h in json.loads(ok(cli("query", folder / "p07.jpg", "--index-dir", index_dir,
                                                     "--k", "5", "--format", "json")).stdout)]
    assert cli_rows == default
    out = json.loads(ok(cli("evaluate", "--index-dir", index_dir, "--index-dir", index_dir, "--augment", "4",
                            "--copy-first", "off,on", "-f", "json")).stdout)
    labels = [s["label"] for s in out["systems"]]
    assert labels[0].endswith("copy first off)") and labels[1].endswith("copy first on)")
    assert out["systems"][1]["metrics"]["recall@1"] >= out["systems"][0]["metrics"]["recall@1"]
    bad = cli("evaluate", "--index-dir", index_dir, "--augment", "2", "--copy-first", "maybe")
    assert bad.exit_code == 1 and "--copy-first" in bad.stderr
