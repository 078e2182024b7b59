"""`vsearch train`: a contrastive projection head, saved in the index and applied by every query path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import vsearch.api as api
from tests.conftest import SAMPLE_IMAGES, make_photo, run_cli_reporting_torch
from tests.helpers import cli, fails, ok
from vsearch.retrieval.search import Searcher

PHOTOS = 12
TRAIN = ("--views", 2, "--epochs", 3, "--dim", 16, "-q")


def meta_of(index_dir: Path) -> dict:
    return json.loads((index_dir / "meta.json").read_text())


def head_file(index_dir: Path) -> Path:
    return index_dir / meta_of(index_dir)["adapter"]["file"]


def query_rows(index_dir: Path, image: Path, *extra: object) -> list[tuple[str, float]]:
    hits = json.loads(ok(cli("query", image, "--index-dir", index_dir, "-f", "json", "--k", 5, *extra)).stdout)
    return [(h["path"], h["score"]) for h in hits]


@pytest.fixture
def trained(built) -> Path:
    ok(cli("train", "--index-dir", built, *TRAIN))
    return built


def test_train_saves_a_head_named_in_meta_json(trained):
    info = meta_of(trained)["adapter"]
    assert set(info) >= {"file", "sha256", "dim_in", "dim_out", "trained_on", "epochs", "seed"}
    assert (info["dim_in"], info["dim_out"], info["epochs"], info["seed"]) == (48, 16, 3, 0)
    assert info["trained_on"] == 2 * PHOTOS  # two views of each photo
    gen = meta_of(trained)["generation"]
    assert (trained / info["file"]).is_file()
    assert (trained / f"vectors.{gen:06d}.head-{info['sha256'][:12]}.npy").is_file()


def test_training_is_deterministic_under_seed(built, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(built, other)
    ok(cli("train", "--index-dir", built, *TRAIN, "--seed", 7))
    ok(cli("train", "--index-dir", other, *TRAIN, "--seed", 7))
    assert head_file(built).read_bytes() == head_file(other).read_bytes()
    ok(cli("train", "--index-dir", other, *TRAIN, "--seed", 8))
    assert meta_of(other)["adapter"]["sha256"] != meta_of(built)["adapter"]["sha256"]
    assert len(list(other.glob("head.*.npz"))) == 1  # the replaced head is gone


def test_stored_and_embedded_queries_meet_in_the_heads_space(trained, photos, tmp_path, open_store):
    # A copy outside the index is embedded (the fake model stands in for torch/ONNX); the same
    # file inside it reads the projected copy: both go through the same head.
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((photos / "p3.jpg").read_bytes() + b"\0" * 8)  # same pixels, another digest
    searcher = Searcher(open_store(trained))
    stored = searcher.image_vector(photos / "p3.jpg")
    embedded = searcher.image_vector(outside)
    assert (stored.source, embedded.source) == ("stored", "embedded")
    assert stored.vector.shape == (16,)
    np.testing.assert_allclose(stored.vector, embedded.vector, atol=1e-5)
    raw = Searcher(open_store(trained), adapter=False)
    head = searcher.encoder.head
    np.testing.assert_allclose(head.apply(raw.vectors[:]), searcher.vectors[:], atol=1e-5)
    assert query_rows(trained, outside)[0][0] == str(photos / "p3.jpg")


def test_adapter_off_gives_the_results_of_an_untrained_index(built, photos):
    before = query_rows(built, photos / "p1.jpg")
    ok(cli("train", "--index-dir", built, *TRAIN))
    after = query_rows(built, photos / "p1.jpg")
    assert query_rows(built, photos / "p1.jpg", "--adapter", "off") == before
    assert [s for _, s in after] != [s for _, s in before]  # the head is applied by default


def test_evaluate_compares_with_and_without_the_head(trained, photos, tmp_path):
    groups = tmp_path / "groups.csv"
    groups.write_text("path,group\n" + "".join(f"{photos / f'p{i}.jpg'},{i % 3}\n" for i in range(PHOTOS)))
    out = ok(cli("evaluate", "--index-dir", trained, "--index-dir", trained, "--adapter", "off,on",
                 "--groups", groups, "-f", "json", "-q")).stdout
    result = json.loads(out)
    assert "adapter off" in json.dumps(result) and "adapter on" in json.dumps(result)
    fails(cli("evaluate", "--index-dir", trained, "--adapter", "maybe", "--groups", groups), "--adapter takes on or off")


def test_duplicates_run_through_the_head(trained, photos):
    shutil.copy(photos / "p2.jpg", photos / "p2-copy.jpg")
    ok(cli("build-index", photos, "--model", "fake", "-q"))
    out = json.loads(ok(cli("duplicates", "--level", "similar", "-f", "json", "-q")).stdout)
    assert {Path(m["path"]).name for m in out} >= {"p2.jpg", "p2-copy.jpg"}


def test_a_damaged_head_is_one_error_line_saying_train_again(trained, photos):
    head_file(trained).write_bytes(b"not a head")
    fails(cli("query", photos / "p0.jpg"), r"trained head .* cannot be read.*`vsearch train` again")
    assert len(query_rows(trained, photos / "p0.jpg", "--adapter", "off")) == 5  # the raw vectors still answer


def test_another_head_in_its_place_is_refused(trained, photos):
    path = head_file(trained)
    with np.load(path) as data:
        w = data["W"] * 2
    np.savez(path.with_suffix(".tmp.npz"), W=w)
    path.with_suffix(".tmp.npz").replace(path)
    fails(cli("query", photos / "p0.jpg"), r"not the one meta.json names.*`vsearch train` again")


def test_the_head_survives_an_incremental_build(trained, photos):
    info = meta_of(trained)["adapter"]
    make_photo(photos / "new.jpg", seed=99)
    ok(cli("build-index", photos, "--model", "fake", "-q"))
    meta = meta_of(trained)
    assert meta["adapter"] == info and meta["count"] == PHOTOS + 1
    projected = trained / f"vectors.{meta['generation']:06d}.head-{info['sha256'][:12]}.npy"
    assert np.load(projected).shape == (PHOTOS + 1, 16)  # the new generation's copy, made at commit
    assert query_rows(trained, photos / "new.jpg")[0] == (str(photos / "new.jpg"), pytest.approx(1.0, abs=1e-5))


def test_a_damaged_head_at_a_build_is_dropped_with_a_warning(trained, photos, caplog):
    head_file(trained).write_bytes(b"damaged")
    make_photo(photos / "new.jpg", seed=99)
    ok(cli("build-index", photos, "--model", "fake", "-q"))
    assert "cannot be read" in caplog.text and "committed without it" in caplog.text
    assert "adapter" not in meta_of(trained)
    assert len(query_rows(trained, photos / "new.jpg")) == 5


def test_remove_puts_the_raw_vectors_back(trained, photos):
    file = head_file(trained)
    ok(cli("train", "--remove", "-q"))
    assert "adapter" not in meta_of(trained) and not file.exists()


def test_judgments_add_positives_and_hard_negatives(built, photos):
    ok(cli("judge", photos / "p0.jpg", photos / "p5.jpg", photos / "p7.jpg", "--irrelevant", "-q"))
    ok(cli("judge", photos / "p0.jpg", photos / "p5.jpg", "--relevant", "-q"))  # the latest verdict counts
    ok(cli("judge", "text:a red photo", photos / "p6.jpg", "--relevant", "-q"))  # text: not an image pair
    result = api.train(built, epochs=2, dim=16, views=0, use_judgments=True, seed=1)
    assert (result.view_pairs, result.judged_pairs, result.hard_negatives) == (0, 2, 1)
    assert meta_of(built)["adapter"]["judgments"] == 2


def test_use_judgments_without_any_is_one_error_line(built):
    fails(cli("train", "--use-judgments", "--views", 0), r"no relevant judged pair.*vsearch judge")
    fails(cli("train", "--views", 0), r"--views 0 leaves nothing to train on")
    fails(cli("train", "--dim", 4096), r"--dim takes 1 to 48")


def test_approximate_search_through_a_head_is_refused(trained, photos):
    fails(cli("query", photos / "p0.jpg", "--approximate"), r"approximate index is over the raw vectors.*--adapter off")


def test_an_index_without_a_head_reads_as_before(built):
    assert "adapter" not in meta_of(built)
    with api.open_index(built) as index:
        assert not index.adapted and index.query(SAMPLE_IMAGES / "horse.png", 3)


@pytest.mark.slow
def test_stored_torch_and_onnx_paths_apply_the_head_alike(tmp_path, monkeypatch, open_store):
    from vsearch.models import onnxmodel

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"):
        shutil.copy(SAMPLE_IMAGES / name, folder / name)
    index_dir = tmp_path / "index"
    ok(cli("build-index", folder, "--index-dir", index_dir, "-q"))
    ok(cli("train", "--index-dir", index_dir, "--views", 1, "--epochs", 2, "--dim", 32, "-q"))
    outside = tmp_path / "outside.jpg"  # the same pixels as an indexed photo, not its digest
    outside.write_bytes((folder / "coffee.jpg").read_bytes() + b"\0" * 8)
    searcher = Searcher(open_store(index_dir), device="cpu")
    stored = searcher.image_vector(folder / "coffee.jpg")
    onnx = searcher.image_vector(outside)
    assert isinstance(searcher.encoder.embedder, onnxmodel.OnnxEmbedder)
    monkeypatch.setenv("VSEARCH_TORCH", "1")
    torch_searcher = Searcher(open_store(index_dir), device="cpu")
    torch_vec = torch_searcher.image_vector(outside)
    assert not isinstance(torch_searcher.encoder.embedder, onnxmodel.OnnxEmbedder)
    assert (stored.source, onnx.source, torch_vec.source) == ("stored", "embedded", "embedded")
    assert stored.vector.shape == onnx.vector.shape == torch_vec.vector.shape == (32,)
    # The head is one numpy function on every path: what differs is only the model's own
    # ONNX-vs-torch difference, which the export keeps within 1e-4 (onnxmodel.py).
    np.testing.assert_allclose(onnx.vector, torch_vec.vector, atol=1e-5)
    np.testing.assert_allclose(stored.vector, onnx.vector, atol=1e-5)
    # The stored-vector and new-photo paths through the head still import no torch.
    monkeypatch.delenv("VSEARCH_TORCH")
    for query in (folder / "coffee.jpg", outside):
        proc = run_cli_reporting_torch("query", query, "--index-dir", index_dir, "-f", "paths", "-k", 1)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(folder / "coffee.jpg") and proc.stderr.strip().endswith("NO-TORCH")


def test_index_train_through_the_api_and_an_open_index_follows(built, photos):
    with api.open_index(built) as index:
        assert not index.adapted
        result = index.train(epochs=1, dim=8, views=1, seed=3)
        assert index.adapted and result.adapter.dim_out == 8
        assert index.query(photos / "p4.jpg", 1)[0].path == photos / "p4.jpg"
    with api.open_index(built, adapter=False) as index:
        assert not index.adapted


def test_the_head_works_on_a_compressed_search_space(built, photos, tmp_path, open_store):
    ok(cli("build-index", photos, "--model", "fake", "--vectors", "pca10w", "-q"))
    ok(cli("train", "--index-dir", built, "--views", 1, "--epochs", 2, "--dim", 8, "-q"))
    meta = meta_of(built)
    assert meta["adapter"]["dim_in"] == 10 and meta["vectors_format"]["dim"] == 10
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((photos / "p3.jpg").read_bytes() + b"\0" * 8)
    searcher = Searcher(open_store(built))
    stored, embedded = searcher.image_vector(photos / "p3.jpg"), searcher.image_vector(outside)
    assert (stored.source, embedded.source) == ("stored", "embedded") and stored.vector.shape == (8,)
    np.testing.assert_allclose(stored.vector, embedded.vector, atol=1e-5)
    # Another search space leaves the head behind, with the remedy.
    ok(cli("build-index", photos, "--model", "fake", "--vectors", "pca6", "-q"))
    assert "adapter" not in meta_of(built)
