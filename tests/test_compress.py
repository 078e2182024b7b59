"""Compressed search vectors (issue 11 item 1): formats, the PCA transform, and indexes built with them."""

from __future__ import annotations

import numpy as np
import pytest

from vsearch.vectors import compress
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
    with pytest.raises(IndexCorruptError, match=r"`build_index\(FOLDER, rebuild=True\)` repairs it$"):
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


# --- indexes built with a format -------------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.conftest import make_photo, run_cli_reporting_torch  # noqa: E402
from tests.helpers import cli, fails, ok  # noqa: E402
from vsearch import api  # noqa: E402
from vsearch.retrieval.search import Searcher  # noqa: E402
from vsearch.storage.store import Store  # noqa: E402
from vsearch.vectors.space import SearchSpace  # noqa: E402

FORMATS = ["fp32", "fp16", "pca8", "pca8w", "pca8w-fp16"]


def _photos(folder: Path, n: int, start: int = 0) -> Path:
    folder.mkdir(exist_ok=True)
    for i in range(start, start + n):
        make_photo(folder / f"p{i:02d}.jpg", seed=i)
    return folder


def _meta(index_dir: Path) -> dict:
    return json.loads((index_dir / "meta.json").read_text())


def _build(folder, index_dir, *args):
    return ok(cli("build-index", folder, "--index-dir", index_dir, "--model", "fake", "-q", *args))


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_per_format(tmp_path, fake_model, open_store, fmt):
    photos = _photos(tmp_path / "photos", 12)
    index_dir = tmp_path / "idx"
    _build(photos, index_dir, "--vectors", fmt)
    meta = _meta(index_dir)
    parsed = compress.parse_format(fmt)
    if fmt == "fp32":
        assert "vectors_format" not in meta  # an fp32 index is written as before formats existed
    else:
        info = meta["vectors_format"]
        assert info["name"] == fmt and info["dtype"] == parsed.dtype and info["dim"] == (parsed.dim or 48)
        assert (index_dir / info["file"]).exists()
        assert (info["transform"] is not None) == (parsed.kind == "pca")
    # the stored row (search copy) and a new image (embedded, mapped) land in the same space
    out = ok(cli("query", photos / "p03.jpg", "--index-dir", index_dir, "-f", "json", "-k", "3")).stdout
    hits = json.loads(out)
    assert Path(hits[0]["path"]).name == "p03.jpg" and hits[0]["score"] == pytest.approx(1, abs=1e-3)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "q.jpg").write_bytes((photos / "p03.jpg").read_bytes() + b"\0")  # other digest, same pixels
    searcher = Searcher(open_store(index_dir))
    stored = searcher.image_vector(photos / "p03.jpg")
    embedded = searcher.image_vector(outside / "q.jpg")
    assert stored.source == "stored" and embedded.source == "embedded"
    assert stored.vector.shape == embedded.vector.shape == ((parsed.dim or 48),)
    tol = 1e-3 if parsed.dtype == "float16" else 1e-5
    assert np.abs(stored.vector - embedded.vector).max() < tol
    with api.open_index(index_dir) as index:
        top = index.query(outside / "q.jpg", k=1)[0]
        assert top.path.name == "p03.jpg" and top.score == pytest.approx(1, abs=tol * 10)


def test_pca_fitted_once_reused_by_an_incremental_run_and_refitted_when_asked(tmp_path, fake_model):
    photos = _photos(tmp_path / "photos", 12)
    index_dir = tmp_path / "idx"
    _build(photos, index_dir, "--vectors", "pca8w")
    first = _meta(index_dir)["vectors_format"]
    _photos(photos, 3, start=12)
    _build(photos, index_dir)  # no --vectors: the index keeps its own format, and its PCA
    second = _meta(index_dir)
    assert second["count"] == 15 and second["vectors_format"]["name"] == "pca8w"
    assert second["vectors_format"]["sha256"] == first["sha256"]
    assert second["vectors_format"]["transform"] == first["transform"]
    calls = fake_model.calls
    _build(photos, index_dir, "--refit")  # fitted again on the 15 vectors now there
    third = _meta(index_dir)["vectors_format"]
    assert third["sha256"] != first["sha256"] and third["name"] == "pca8w"
    assert fake_model.calls == calls  # nothing embedded again
    _photos(photos, 1, start=15)
    _build(photos, index_dir)  # the next commit drops the transform the previous generation's readers used
    assert not (index_dir / first["transform"]).exists()
    assert (index_dir / third["transform"]).exists()
    hits = json.loads(ok(cli("query", photos / "p13.jpg", "--index-dir", index_dir, "-f", "json", "-k", "1")).stdout)
    assert Path(hits[0]["path"]).name == "p13.jpg"


def test_another_format_remakes_only_the_search_copy(tmp_path, fake_model):
    photos = _photos(tmp_path / "photos", 12)
    index_dir = tmp_path / "idx"
    _build(photos, index_dir)
    before = _meta(index_dir)
    calls = fake_model.calls
    for fmt in ("pca8", "fp16", "pca6w", "fp32"):
        _build(photos, index_dir, "--vectors", fmt)
        meta = _meta(index_dir)
        assert meta["vectors"] == before["vectors"] and meta["generation"] == before["generation"]
        assert meta.get("vectors_format", {}).get("name", "fp32") == fmt
        assert meta["ann"] is not None  # Annoy made again, over the new copy
        hits = json.loads(ok(cli("query", photos / "p05.jpg", "--index-dir", index_dir, "-f", "json",
                                 "--approximate", "-k", "1")).stdout)
        assert Path(hits[0]["path"]).name == "p05.jpg"
    assert fake_model.calls == calls
    left = sorted(p.name for p in index_dir.iterdir() if p.name.startswith(("vectors.", "pca.")))
    assert left == [before["vectors"]]  # back to fp32: no copy, no transform left behind


def test_pca_too_large_is_refused_with_one_line(tmp_path, fake_model):
    photos = _photos(tmp_path / "photos", 6)
    index_dir = tmp_path / "idx"
    fails(cli("build-index", photos, "--index-dir", index_dir, "--model", "fake", "-q", "--vectors", "pca8"),
          r"pca8: a PCA to 8 dimensions needs at least 8 images, the index holds 6")
    _build(photos, index_dir, "--vectors", "fp32")  # what the error says; the embedded chunks are kept
    fails(cli("build-index", photos, "--index-dir", index_dir, "--model", "fake", "-q", "--vectors", "pca48"),
          r"48 dimensions is not fewer than the model's 48")
    fails(cli("build-index", photos, "--index-dir", index_dir, "--vectors", "pca"), r"--vectors takes fp32, fp16")
    assert "vectors_format" not in _meta(index_dir)  # refused, nothing changed


def _pca_index(tmp_path) -> tuple[Path, Path]:
    photos = _photos(tmp_path / "photos", 12)
    index_dir = tmp_path / "idx"
    _build(photos, index_dir, "--vectors", "pca8w")
    return photos, index_dir


def test_a_transform_that_is_not_the_recorded_one_is_refused(tmp_path, fake_model):
    photos, index_dir = _pca_index(tmp_path)
    info = _meta(index_dir)["vectors_format"]
    other = compress.fit_pca(_unit(50, 48), 8, whiten=True)
    other.save(index_dir / info["transform"])
    fails(cli("query", photos / "p01.jpg", "--index-dir", index_dir),
          r"transform .* is not the one meta\.json records .*`vsearch build-index .* --rebuild` repairs it$")


def test_a_search_copy_of_another_dimension_is_refused(tmp_path, fake_model):
    photos, index_dir = _pca_index(tmp_path)
    meta = _meta(index_dir)
    meta["vectors_format"]["dim"] = 6  # a copy that does not match its own format
    (index_dir / "meta.json").write_text(json.dumps(meta))
    fails(cli("query", photos / "p01.jpg", "--index-dir", index_dir), r"damaged.*--rebuild")
    meta["vectors_format"]["dim"] = 8
    (index_dir / "meta.json").write_text(json.dumps(meta))
    np.save(index_dir / meta["vectors_format"]["file"], np.zeros((12, 6), np.float32))
    fails(cli("query", photos / "p01.jpg", "--index-dir", index_dir),
          r"holds \(12, 6\) float32, but meta\.json says \(12, 8\) float32.*--rebuild")


def test_a_damaged_transform_is_refused_then_refitted_by_a_build(tmp_path, fake_model):
    photos, index_dir = _pca_index(tmp_path)
    info = _meta(index_dir)["vectors_format"]
    (index_dir / info["transform"]).write_bytes(b"garbage")
    fails(cli("query", photos / "p01.jpg", "--index-dir", index_dir), r"transform .*damaged.*--rebuild")
    _build(photos, index_dir)  # the raw vectors are the truth: the writer fits it again
    hits = json.loads(ok(cli("query", photos / "p01.jpg", "--index-dir", index_dir, "-f", "json", "-k", "1")).stdout)
    assert Path(hits[0]["path"]).name == "p01.jpg"


def test_an_index_from_before_formats_reads_and_stays_fp32(tmp_path, fake_model, open_store):
    photos = _photos(tmp_path / "photos", 12)
    index_dir = tmp_path / "idx"
    _build(photos, index_dir)
    with Store.open(index_dir, write=True) as store:  # as an older vsearch left it: no format key
        store.manifest.db.execute("DELETE FROM kv WHERE key IN ('vectors_format', 'transform')")
        store.manifest.db.commit()
    meta = _meta(index_dir)
    assert "vectors_format" not in meta
    _photos(photos, 2, start=12)
    _build(photos, index_dir)
    assert "vectors_format" not in _meta(index_dir)
    store = open_store(index_dir)
    assert SearchSpace.of(store).vectors() is store.vectors() and SearchSpace.of(store).dim == 48


@pytest.mark.parametrize("fmt", ["pca8w", "fp16"])
def test_stored_vector_query_imports_no_torch(tmp_path, fake_model, fmt):
    photos = _photos(tmp_path / "photos", 12)
    index_dir = tmp_path / "idx"
    _build(photos, index_dir, "--vectors", fmt)
    done = run_cli_reporting_torch("query", photos / "p02.jpg", "--index-dir", index_dir, "-f", "paths", "-k", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("p02.jpg")
    assert done.stderr.strip().splitlines()[-1] == "NO-TORCH"


def test_dba_duplicates_and_evaluate_run_in_the_search_space(tmp_path, fake_model, open_store):
    photos = _photos(tmp_path / "photos", 12)
    make_photo(photos / "copy.jpg", seed=4, quality=70)  # p04 saved again: other bytes, near the same vector
    index_dir = tmp_path / "idx"
    _build(photos, index_dir, "--vectors", "pca8w-fp16", "--dba", "2")
    meta = _meta(index_dir)
    assert meta["dba"]["neighbours"] == 2
    store = open_store(index_dir)
    assert SearchSpace.of(store).search_vectors().shape == (13, 8) and SearchSpace.of(store).search_vectors().dtype == np.float16
    groups = json.loads(ok(cli("duplicates", "--index-dir", index_dir, "--level", "similar", "-f", "json")).stdout)
    together = {}
    for m in groups:
        together.setdefault(m["group"], set()).add(Path(m["path"]).name)
    assert {"p04.jpg", "copy.jpg"} in together.values()
    out = ok(cli("query", photos / "p04.jpg", "--index-dir", index_dir, "--dedupe", "0.99", "--diverse", "0.5",
                 "-f", "json", "-k", "3")).stdout
    assert len(json.loads(out)) == 3


def test_evaluate_side_by_side_across_formats(tmp_path, fake_model):
    """An edited copy is embedded once per model and search space: a PCA index must not get the
    fp32 index's vector for it (nor the other way round)."""
    photos = _photos(tmp_path / "photos", 12)
    plain, pca = tmp_path / "fp32", tmp_path / "pca"
    _build(photos, plain)
    _build(photos, pca, "--vectors", "pca8w")
    out = ok(cli("evaluate", "--index-dir", plain, "--index-dir", pca, "--augment", "3", "-f", "json")).stdout
    assert "recall@1" in out


SLOW_IMAGES = ["astronaut.jpg", "brick.jpg", "camera.jpg", "chelsea.jpg", "clock.jpg", "coffee.jpg", "coins.jpg",
               "grass.jpg", "gravel.jpg", "horse.png", "rocket.jpg", "retina.jpg"]


@pytest.mark.slow
def test_stored_row_onnx_and_torch_agree_in_every_format(tmp_path, monkeypatch):
    """The real default model: one image through the stored row, ONNX Runtime and torch lands
    on the same vector in each format's space (PCA and whitening applied alike)."""
    import shutil

    from tests.conftest import SAMPLE_IMAGES
    from vsearch.models import onnxmodel

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in SLOW_IMAGES:
        shutil.copy(SAMPLE_IMAGES / name, photos / name)
    query = tmp_path / "q" / "coffee.jpg"
    query.parent.mkdir()
    query.write_bytes((photos / "coffee.jpg").read_bytes() + b"\0")  # same pixels, not a stored file
    index_dir = tmp_path / "idx"
    ok(cli("build-index", photos, "--index-dir", index_dir, "-q"))
    for fmt in ["fp32", "fp16", "pca8", "pca8w"]:
        ok(cli("build-index", photos, "--index-dir", index_dir, "-q", "--vectors", fmt))
        got = {}
        for runtime in ("onnx", "torch"):
            if runtime == "torch":
                monkeypatch.setenv("VSEARCH_TORCH", "1")
            with Store.open(index_dir) as store:
                searcher = Searcher(store, device="cpu")
                got["stored"] = searcher.image_vector(photos / "coffee.jpg")
                got[runtime] = searcher.image_vector(query)
                is_onnx = isinstance(searcher.encoder.embedder, onnxmodel.OnnxEmbedder)
                assert is_onnx == (runtime == "onnx")
            monkeypatch.delenv("VSEARCH_TORCH", raising=False)
        assert got["stored"].source == "stored" and got["onnx"].source == got["torch"].source == "embedded"
        tol = 1e-3 if fmt == "fp16" else 1e-5
        for runtime in ("onnx", "torch"):
            diff = np.abs(got[runtime].vector - got["stored"].vector).max()
            assert diff < tol, (fmt, runtime, diff)


def test_info_shows_the_format_and_the_search_copy_size(tmp_path, fake_model):
    photos = _photos(tmp_path / "photos", 12)
    index_dir = tmp_path / "idx"
    _build(photos, index_dir, "--vectors", "pca8w")
    info = json.loads(ok(cli("info", "--index-dir", index_dir, "-f", "json")).stdout)
    meta = _meta(index_dir)["vectors_format"]
    assert info["vectors_format"] == "pca8w"
    assert info["search_copy_bytes"] == sum((index_dir / meta[k]).stat().st_size for k in ("file", "transform"))


def test_each_write_of_a_pca_commit_failing_leaves_the_old_generation(tmp_path, fake_model, monkeypatch):
    """Fault injection (ENOSPC at each write in turn) through a commit that makes a search copy
    and fits a PCA: one error line, no temporaries, and the previous generation still answers."""
    import shutil

    from tests.test_store_faults import _count_writes, no_temporaries

    photos = _photos(tmp_path / "photos", 12)
    index_dir = tmp_path / "idx"
    _build(photos, index_dir, "--vectors", "pca8w", "--trees", "2")
    make_photo(photos / "new.jpg", seed=50)
    template = tmp_path / "template"
    shutil.copytree(index_dir, template)
    args = ("--vectors", "pca6w", "--trees", "2")  # a new fit and a new copy, in the same commit
    with monkeypatch.context() as m:
        writes = _count_writes(m)
        _build(photos, index_dir, *args)
    total = writes[0]
    assert total >= 10
    for fail_at in range(1, total + 1):
        shutil.rmtree(index_dir)
        shutil.copytree(template, index_dir)
        with monkeypatch.context() as m:
            _count_writes(m, fail_at)
            fails(cli("build-index", photos, "--index-dir", index_dir, "--model", "fake", "-q", *args),
                  "no space left on device writing")
        assert not no_temporaries(index_dir), fail_at
        hits = json.loads(ok(cli("query", photos / "p01.jpg", "--index-dir", index_dir, "-f", "json", "-k", "1")).stdout)
        assert Path(hits[0]["path"]).name == "p01.jpg", fail_at
    _build(photos, index_dir, *args)
    assert _meta(index_dir)["vectors_format"]["name"] == "pca6w" and _meta(index_dir)["count"] == 13


def test_rebuild_keeps_the_format(tmp_path, fake_model):
    photos = _photos(tmp_path / "photos", 12)
    index_dir = tmp_path / "idx"
    _build(photos, index_dir, "--vectors", "pca8w")
    calls = fake_model.calls
    _build(photos, index_dir, "--rebuild")
    assert _meta(index_dir)["vectors_format"]["name"] == "pca8w"
    assert fake_model.calls == calls  # the raw vectors were kept, the copy made from them


def test_exact_search_over_a_float16_copy_matches_float32():
    from vsearch.vectors import nearest

    x = _unit(40_000, 16)
    q = x[:3]
    rows16, scores16 = nearest.exact_search(x.astype(np.float16), q, 5)
    rows32, scores32 = nearest.exact_search(x, q, 5)
    assert (rows16[:, 0] == rows32[:, 0]).all() and np.abs(scores16 - scores32).max() < 2e-3
