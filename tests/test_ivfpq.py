"""IVF-PQ (faiss) beside Annoy: agrees with exact search, round trips through the CLI, refuses a
damaged file or a missing faiss with one line, and costs nothing to an index that does not use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, make_photo
from tests.helpers import cli, fails, ok
from vsearch.vectors import nearest
from vsearch.vectors import ivfpq
from vsearch.models import loading as models

pytest.importorskip("faiss")


def clustered(n: int, dim: int, seed: int, clusters: int = 30) -> np.ndarray:
    """Unit vectors around ``clusters`` seeded centres: neighbours are decided within a cluster."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    return models.l2_normalise(x.astype(np.float32))


def test_ivfpq_agrees_with_exact_search_and_every_score_is_exact(tmp_path):
    vectors = clustered(3000, 96, seed=0)
    queries = clustered(100, 96, seed=1)
    params = ivfpq.choose_params(len(vectors), 96)
    assert (params.nlist, params.m, params.nbits) == (76, 48, 8)  # 4 sqrt(3000) = 219 > 3000 / 39
    size, sha = ivfpq.build_file(vectors, tmp_path / "i.ivfpq", params)
    searcher = ivfpq.IvfpqSearcher(tmp_path / "i.ivfpq", 96, count=3000, size=size, sha256=sha,
                                   nprobe=params.nprobe)
    exact_rows, _ = nearest.exact_search(vectors, queries, 10)
    rows, scores = nearest.approximate_search_batch(searcher, vectors, queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(rows, exact_rows)])
    assert recall >= 0.95
    for r, s, q in zip(rows, scores, queries):  # PQ proposes; the stored vectors score
        np.testing.assert_allclose(s, vectors[r] @ q, rtol=0, atol=1e-5)
        assert list(s) == sorted(s, reverse=True)
    single_rows, _ = nearest.approximate_search(searcher, vectors, queries[0], 10)
    assert list(single_rows) == list(rows[0])


def test_the_same_vectors_build_the_same_file(tmp_path):
    vectors = clustered(400, 16, seed=2)
    params = ivfpq.choose_params(len(vectors), 16)
    assert params.train == 400 < ivfpq.TRAIN_MIN
    first = ivfpq.build_file(vectors, tmp_path / "a.ivfpq", params)
    assert ivfpq.build_file(vectors, tmp_path / "b.ivfpq", params) == first  # seeded training
    assert (tmp_path / "a.ivfpq").read_bytes() == (tmp_path / "b.ivfpq").read_bytes()


def test_parameters_for_tiny_and_large_collections():
    tiny = ivfpq.choose_params(20, 48)
    assert (tiny.nlist, tiny.m, tiny.nbits) == (1, 48, 4)  # 2**4 <= 20 codes to train on
    big = ivfpq.choose_params(1_000_000, 1280)
    assert (big.nlist, big.m, big.nbits, big.train) == (4000, 64, 8, 100_000)
    assert ivfpq.choose_params(1_000_000, 1000).m == 50  # a divisor of the dimension


# --- through the CLI and the API ------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """8 groups of 3 copies of one photo (sizes, qualities), and groups.csv beside the folder."""
    base = tmp_path_factory.mktemp("ivfpq")
    folder = base / "photos"
    folder.mkdir()
    rows = ["path,group"]
    for g in range(8):
        first = make_photo(folder / f"g{g}_0.jpg", seed=g, quality=92)
        Image.open(first).resize((288, 216)).save(folder / f"g{g}_1.jpg", quality=70)
        Image.open(first).resize((256, 192)).save(folder / f"g{g}_2.jpg", quality=50)
        rows += [f"photos/g{g}_{j}.jpg,g{g}" for j in range(3)]
    (base / "groups.csv").write_text("\n".join(rows) + "\n")
    return folder


def meta_of(index: Path) -> dict:
    return json.loads((index / "meta.json").read_text())


def build(photos: Path, index: Path, *args: object) -> dict:
    ok(cli("build-index", photos, "--index-dir", index, "--model", "fake", "-q", *args))
    return meta_of(index)


def test_build_index_ivfpq_query_and_evaluate(photos, tmp_path, fake_model):
    index = tmp_path / "idx"
    meta = build(photos, index, "--index", "ivfpq")
    info = meta["ivfpq"]
    assert meta["ann"] is None and (index / info["file"]).stat().st_size == info["size"]
    assert info["dim"] == 48 and info["nbits"] == 4 and info["nlist"] == 1
    hits = json.loads(ok(cli("query", photos / "g3_0.jpg", "--index-dir", index, "--approximate", "-k", "3",
                             "--format", "json")).stdout)
    assert [Path(h["path"]).name[:3] for h in hits] == ["g3_"] * 3
    exact = json.loads(ok(cli("query", photos / "g3_0.jpg", "--index-dir", index, "--exact", "-k", "3",
                              "--format", "json")).stdout)
    assert [h["score"] for h in hits] == [h["score"] for h in exact]  # exact re-scoring
    out = json.loads(ok(cli("evaluate", "--index-dir", index, "--groups", photos.parent / "groups.csv",
                            "--ann-recall", "--format", "json")).stdout)
    assert out["ann_recall@10"] is not None and out["ann_recall@1"] == 1.0
    # Back to Annoy: it replaces the IVF-PQ index, and an Annoy meta.json has no "ivfpq" key at all.
    meta = build(photos, index, "--index", "annoy")
    assert meta["ann"]["trees"] > 0 and "ivfpq" not in meta


def test_build_index_summary_names_the_ivfpq_index(photos, tmp_path, fake_model):
    result = ok(cli("build-index", photos, "--index-dir", tmp_path / "idx", "--model", "fake", "--index", "ivfpq"))
    assert "ivfpq index: 1 lists, 48 bytes a vector, 1 probed (index.000001.ivfpq)" in result.stderr


def test_auto_picks_ivfpq_from_the_measured_size(photos, tmp_path, fake_model, monkeypatch):
    assert "ivfpq" not in build(photos, tmp_path / "small")  # default auto, small: Annoy
    monkeypatch.setattr(nearest, "IVFPQ_FROM", 10)
    assert build(photos, tmp_path / "large")["ivfpq"]["nlist"] >= 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_ivfpq_file_is_one_error_line_naming_the_rebuild(photos, tmp_path, fake_model, damage):
    index = tmp_path / "idx"
    path = index / build(photos, index, "--index", "ivfpq")["ivfpq"]["file"]
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes(10))  # same size, other bytes
    else:
        path.unlink()
    fails(cli("query", photos / "g1_0.jpg", "--index-dir", index, "--approximate"),
          rf"cannot read the IVF-PQ index .*index\.000001\.ivfpq .*`vsearch build-index {photos}` rebuilds it")
    ok(cli("query", photos / "g1_0.jpg", "--index-dir", index, "--exact"))  # the remedy it names
    build(photos, index, "--index", "ivfpq")  # and a build repairs it
    ok(cli("query", photos / "g1_0.jpg", "--index-dir", index, "--approximate"))


def test_a_foreign_file_of_the_recorded_size_and_hash_is_refused(photos, tmp_path, fake_model):
    index = tmp_path / "idx"
    meta = build(photos, index, "--index", "ivfpq")
    path = index / meta["ivfpq"]["file"]
    path.write_bytes(b"not faiss" * 100)  # and meta.json edited to match: faiss itself refuses it
    meta["ivfpq"].update(size=900, sha256=__import__("hashlib").sha256(path.read_bytes()).hexdigest())
    (index / "meta.json").write_text(json.dumps(meta))
    fails(cli("query", photos / "g1_0.jpg", "--index-dir", index, "--approximate"),
          r"IVF-PQ index .*not an IVF-PQ index faiss can read.*rebuilds it")


def test_without_faiss_one_line_names_the_extra(photos, tmp_path, fake_model, monkeypatch, caplog):
    index = tmp_path / "idx"
    build(photos, index, "--index", "ivfpq")
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    calls = fake_model.calls
    fails(cli("query", photos / "g1_0.jpg", "--index-dir", index, "--approximate"),
          r"needs faiss, which is not installed: pip install 'vsearch\[scale\]'")
    fails(cli("build-index", photos, "--index-dir", tmp_path / "new", "--model", "fake", "--index", "ivfpq"),
          r"pip install 'vsearch\[scale\]'")
    assert fake_model.calls == calls and not (tmp_path / "new").exists()  # refused before any work
    ok(cli("query", photos / "g1_0.jpg", "--index-dir", index))  # auto at this size: exact, no faiss
    monkeypatch.setattr(nearest, "IVFPQ_FROM", 10)  # auto past the threshold, no faiss: Annoy, and a warning
    with caplog.at_level("WARNING", logger="vsearch.indexing.pipeline"):
        ok(cli("build-index", photos, "--index-dir", tmp_path / "auto", "--model", "fake", "-q"))
    assert "pip install 'vsearch[scale]'" in caplog.text
    assert meta_of(tmp_path / "auto")["ann"]["trees"] > 0


def test_unknown_index_kind_is_one_line(photos, tmp_path, fake_model):
    fails(cli("build-index", photos, "--index-dir", tmp_path / "idx", "--model", "fake", "--index", "hnsw"),
          r"--index takes auto, annoy or ivfpq, not 'hnsw'")


def test_only_an_ivfpq_index_imports_faiss(photos, tmp_path, fake_model):
    """Through the real CLI (a subprocess; the query photo is indexed, so its stored vector is
    used and no model is needed): an Annoy index's search never imports faiss, an IVF-PQ one does."""
    code = ("import sys, atexit, runpy; atexit.register(lambda: print('FAISS', 'faiss' in sys.modules, "
            "file=sys.stderr)); sys.argv[0] = 'vsearch'; runpy.run_module('vsearch', run_name='__main__')")
    for kind in ("annoy", "ivfpq"):
        index = tmp_path / kind
        build(photos, index, "--index", kind)
        proc = subprocess.run([sys.executable, "-c", code, "query", str(photos / "g2_0.jpg"), "--index-dir",
                               str(index), "--approximate", "-k", "2", "--format", "paths"],
                              capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        assert f"FAISS {kind == 'ivfpq'}" in proc.stderr
        assert Path(proc.stdout.splitlines()[0]).name == "g2_0.jpg"


def test_duplicates_use_the_ivfpq_index_when_approximate(photos, tmp_path, fake_model):
    """duplicates' approximate neighbour graph comes from whichever approximate index was built."""
    import vsearch

    index = tmp_path / "idx"
    build(photos, index, "--index", "ivfpq")
    with vsearch.open_index(index) as opened:
        approx = opened.duplicates(level="similar", mode="approximate")
        exact = opened.duplicates(level="similar", mode="exact")
    assert approx and sum(len(g.members) for g in approx) >= 24  # every copy is in a group
    assert sorted(sorted(m.path.name for m in g.members) for g in approx) == \
        sorted(sorted(m.path.name for m in g.members) for g in exact)
