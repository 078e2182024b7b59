"""The saved optimised graph of an exported model (onnxmodel.optimised_path): same vectors as
the plain export, kept in the user cache, and a damaged or stale copy never in the way.

On a small convolutional graph written here with ``onnx.helper`` (uint8 NHWC pixels in, unit
vectors out, like an export), so no torch and no real model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from vsearch.models import loading as models
from vsearch.models import onnxmodel

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402 (after the skips)

SIZE = 16


def _model_id() -> models.ModelId:
    return models.ModelId(name="tiny", family="efficientnet-lite", arch="tiny-conv", pretrained="none",
                          weights_sha256="1" * 64, dim=8,
                          preprocess=models.Preprocess(SIZE, "squash", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                          pooling="avg")


def _export(path: Path) -> Path:
    """Conv + BatchNorm + Relu (fused by the optimiser), pooled and L2-normalised."""
    rng = np.random.default_rng(0)

    def const(name: str, array: np.ndarray) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.astype(np.float32).ravel())

    nodes = [
        helper.make_node("Cast", ["pixels"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["flat"]),
        helper.make_node("LpNormalization", ["flat"], ["vectors"], axis=1, p=2),
    ]
    inits = [const("w1", rng.normal(0, 0.1, (16, 3, 3, 3))), const("b1", rng.normal(0, 0.1, 16)),
             const("g", rng.uniform(0.5, 1.5, 16)), const("beta", rng.normal(0, 0.1, 16)),
             const("mean", rng.normal(0, 1, 16)), const("var", rng.uniform(0.5, 2, 16)),
             const("w2", rng.normal(0, 0.1, (8, 16, 3, 3)))]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["n", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return onnxmodel.cache_dir()


@pytest.fixture
def plain(cache) -> Path:
    return _export(onnxmodel.onnx_path(None, _model_id()))


def _pixels(n: int = 5) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _opt_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.opt-*.onnx"))


def test_the_optimised_graph_is_saved_once_and_gives_the_plain_exports_vectors(plain, cache):
    expected = onnxmodel.OnnxEmbedder(_model_id(), plain).embed_images(_pixels())
    assert not _opt_files(cache)  # a plain session saves nothing
    first = onnxmodel.OnnxEmbedder(_model_id(), plain, quick_start=True)  # builds and saves it
    saved = _opt_files(cache)
    assert saved == [onnxmodel.optimised_path(plain)]
    mtime = saved[0].stat().st_mtime_ns
    second = onnxmodel.OnnxEmbedder(_model_id(), plain, quick_start=True)  # loads the saved graph
    assert _opt_files(cache) == saved and saved[0].stat().st_mtime_ns == mtime
    for model in (first, second):
        got = model.embed_images(_pixels())
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_load_for_index_uses_it_for_queries_and_not_for_indexing(plain, cache):
    onnxmodel.load_for_index(None, _model_id(), quick_start=False)
    assert not _opt_files(cache)
    assert onnxmodel.load_for_index(None, _model_id()) is not None
    assert len(_opt_files(cache)) == 1


def test_a_damaged_optimised_graph_falls_back_to_the_export_with_a_warning(plain, cache, caplog):
    expected = onnxmodel.OnnxEmbedder(_model_id(), plain).embed_images(_pixels())
    onnxmodel.OnnxEmbedder(_model_id(), plain, quick_start=True)
    [saved] = _opt_files(cache)
    saved.write_bytes(saved.read_bytes()[:500])  # truncated from outside
    with caplog.at_level(logging.WARNING, logger="vsearch.models.onnxmodel"):
        model = onnxmodel.OnnxEmbedder(_model_id(), plain, quick_start=True)
    assert f"warning: cannot load {saved} (" in caplog.text and f"using {plain} instead" in caplog.text
    assert np.abs(model.embed_images(_pixels()) - expected).max() < 1e-5
    # Saved again from the export: the next query starts quickly once more, without a warning.
    assert _opt_files(cache) == [saved] and saved.stat().st_size > 500
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vsearch.models.onnxmodel"):
        onnxmodel.OnnxEmbedder(_model_id(), plain, quick_start=True)
    assert not caplog.text


def test_a_new_export_gets_a_new_optimised_graph_and_the_old_one_goes(plain, cache):
    onnxmodel.OnnxEmbedder(_model_id(), plain, quick_start=True)
    [old] = _opt_files(cache)
    _export(plain)  # exported again (e.g. after the cache was cleared): another file
    st = plain.stat()
    os.utime(plain, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    onnxmodel.OnnxEmbedder(_model_id(), plain, quick_start=True)
    [new] = _opt_files(cache)
    assert new != old and new == onnxmodel.optimised_path(plain)


def test_an_unwritable_cache_still_answers_from_the_export(plain, cache, monkeypatch):
    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnxmodel.atomic, "sync", full)
    model = onnxmodel.OnnxEmbedder(_model_id(), plain, quick_start=True)
    assert model.embed_images(_pixels()).shape == (5, 8)
    assert not _opt_files(cache) and not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
