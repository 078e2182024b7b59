"""Compressed search vectors (issue 11 item 1): formats, the PCA transform, and indexes built with them."""

from __future__ import annotations

import numpy as np
import pytest

from vsearch import compress
from vsearch.errors import IndexCorruptError, VsearchError


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    x[:, :4] *= 5  # a few strong directions, as real embeddings have
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- the module: formats and the PCA ---------------------------------------------------------


@pytest.mark.parametrize("text, kind, dim, whiten, dtype", [
    ("fp32", "fp32", None, False, "float32"), ("fp16", "fp16", None, False, "float16"),
    ("pca256", "pca", 256, False, "float32"), ("pca128w", "pca", 128, True, "float32"),
    ("pca64w-fp16", "pca", 64, True, "float16"), ("PCA8", "pca", 8, False, "float32"),
])
def test_parse_format(text, kind, dim, whiten, dtype):
    fmt = compress.parse_format(text)
    assert (fmt.kind, fmt.dim, fmt.whiten, fmt.dtype) == (kind, dim, whiten, dtype)
    assert compress.parse_format(fmt.name) == fmt  # the recorded name reads back the same


@pytest.mark.parametrize("text", ["pca", "fp8", "pca0", "pca12x", "256", ""])
def test_parse_format_refuses_with_the_allowed_forms(text):
    with pytest.raises(VsearchError, match="fp32, fp16, pcaD or pcaDw"):
        compress.parse_format(text)


def test_pca_is_seeded_normalised_and_blockwise(monkeypatch):
    x = _unit(3000, 32)
    a = compress.fit_pca(x, 8, whiten=True, sample=1000, seed=3)
    assert a.digest == compress.fit_pca(x, 8, whiten=True, sample=1000, seed=3).digest
    assert a.digest != compress.fit_pca(x, 8, whiten=True, sample=1000, seed=4).digest
    assert a.digest != compress.fit_pca(x, 8, whiten=False, sample=1000, seed=3).digest
    y = a.apply(x)
    assert y.shape == (3000, 8) and y.dtype == np.float32
    assert np.allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
    monkeypatch.setattr(compress, "BLOCK", 7)  # block edges change nothing
    assert np.allclose(a.apply(x), y, atol=1e-6)
    assert np.allclose(a.apply(x[5]), y[5], atol=1e-6)


def test_pca_keeps_the_largest_variance():
    x = _unit(2000, 16)
    pca = compress.fit_pca(x, 4, whiten=False)
    centred = x - x.mean(axis=0)
    top = np.linalg.svd(centred, full_matrices=False)[2][:4]
    # same subspace as the SVD's top 4 right singular vectors
    assert np.allclose(np.abs(np.linalg.svd(pca.components @ top.T)[1]), 1, atol=1e-4)


def test_whitened_components_have_equal_variance():
    x = _unit(4000, 16)
    pca = compress.fit_pca(x, 6, whiten=True)
    raw = (x - pca.mean) @ pca.components.T * pca.scale
    assert np.allclose(raw.var(axis=0), 1, rtol=0.05)


def test_pca_save_load_and_damage(tmp_path):
    pca = compress.fit_pca(_unit(500, 16), 4, whiten=True)
    pca.save(tmp_path / "p.npz")
    back = compress.Pca.load(tmp_path / "p.npz")
    assert back.digest == pca.digest
    (tmp_path / "bad.npz").write_bytes(b"not a transform")
    with pytest.raises(IndexCorruptError, match="--rebuild"):
        compress.Pca.load(tmp_path / "bad.npz")
    with pytest.raises(IndexCorruptError, match="missing"):
        compress.Pca.load(tmp_path / "gone.npz")
    compress.Pca(pca.mean, pca.components, np.full(4, np.nan, np.float32)).save(tmp_path / "nan.npz")
    with pytest.raises(IndexCorruptError, match="not finite"):
        compress.Pca.load(tmp_path / "nan.npz")
    compress.Pca(pca.mean[:3], pca.components, None).save(tmp_path / "shape.npz")
    with pytest.raises(IndexCorruptError, match="shapes"):
        compress.Pca.load(tmp_path / "shape.npz")


def test_encode_per_format():
    x = _unit(100, 16)
    pca = compress.fit_pca(x, 4, whiten=False)
    half = compress.encode(x, compress.parse_format("fp16"), None)
    assert half.dtype == np.float16 and np.abs(half - x).max() < 1e-3
    assert compress.encode(x, compress.FP32, None) is not None
    y = compress.encode(x, compress.parse_format("pca4"), pca)
    assert y.dtype == np.float32 and np.allclose(y, pca.apply(x))
    y16 = compress.encode(x, compress.parse_format("pca4-fp16"), pca)
    assert y16.dtype == np.float16 and np.abs(y16 - y).max() < 1e-3


def test_pca_dimension_checks():
    with pytest.raises(VsearchError, match="not fewer than the model's 48"):
        compress.parse_format("pca48").check(48, 1000)
    with pytest.raises(VsearchError, match="at least 32 images, the index holds 10"):
        compress.parse_format("pca32").check(48, 10)
    compress.parse_format("pca32").check(48, 32)
