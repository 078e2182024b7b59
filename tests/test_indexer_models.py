"""Which model an index run gets: the user's ONNX model cache, the index's own model for a query,
and an open_clip tag that cannot be downloaded (no network) failing fast and cleanly.

Real models: marked slow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, SAMPLE_IMAGES, run_cli_reporting_torch
from tests.helpers import cli, ok
from vsearch.models import sources as embedders
from vsearch.imaging import images
from vsearch.models import loading as models
from vsearch.models import onnxmodel
from vsearch.errors import VsearchError
from vsearch.storage.store import Store

pytestmark = pytest.mark.slow
def photos(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(SAMPLE_IMAGES / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One index built with the default model into a model cache of this module's own."""
    base = tmp_path_factory.mktemp("cached")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        folder = photos(base / "a", ["chelsea.jpg", "coffee.jpg", "rocket.jpg"])
        index_dir = base / "index-a"
        ok(cli("build-index", folder, "--index-dir", index_dir, "-q"))
        yield base, index_dir


def cached_files(base: Path) -> list[Path]:
    return sorted((base / "cache" / "vsearch" / "models").iterdir())


def test_the_export_lives_in_the_user_cache_once_and_a_new_index_needs_no_torch(built, monkeypatch):
    base, index_dir = built
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    assert [p.name for p in cached_files(base)] == [onnxmodel.onnx_path(None, _model_id(index_dir)).name]
    assert not list(index_dir.glob("model-*.onnx"))
    # A second index of the same model: its identity is the weights' hash, so the cached export
    # serves it from the first image on, without importing torch.
    folder = photos(base / "b", ["astronaut.jpg", "camera.jpg"])
    proc = run_cli_reporting_torch("embed", folder, "--index-dir", base / "index-b")
    assert proc.returncode == 0, proc.stderr
    assert "embedded 2," in proc.stderr and proc.stderr.strip().endswith("NO-TORCH")
    assert len(cached_files(base)) == 1 and _model_id(base / "index-b") == _model_id(index_dir)


def test_an_old_index_with_its_own_onnx_file_still_embeds_without_torch(built, tmp_path, monkeypatch):
    base, index_dir = built
    old = tmp_path / "old-index"
    shutil.copytree(index_dir, old)
    shutil.copy(cached_files(base)[0], old / cached_files(base)[0].name)  # where older versions kept it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    proc = run_cli_reporting_torch("query", SAMPLE_IMAGES / "horse.png", "--index-dir", old, "--format", "paths")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith("NO-TORCH") and len(proc.stdout.split()) == 3


def test_model_for_index_prefers_the_export_and_both_refuse_text_alike(built, monkeypatch):
    base, index_dir = built
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    with Store.open(index_dir) as store:
        onnx = embedders.model_for_index(store, "cpu")
        monkeypatch.setenv("VSEARCH_TORCH", "1")
        torch_model = embedders.model_for_index(store, "cpu")
        expected = str(models.no_text_search(store.meta.model))
    assert isinstance(onnx, onnxmodel.OnnxEmbedder) and not isinstance(torch_model, onnxmodel.OnnxEmbedder)
    for model in (onnx, torch_model):
        with pytest.raises(VsearchError) as info:
            model.embed_text(["a cat"])
        assert str(info.value) == expected


def test_concurrent_first_builds_share_one_export(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen([sys.executable, "-m", "vsearch", "embed",
                          str(photos(tmp_path / f"p{i}", ["chelsea.jpg", "coffee.jpg", "rocket.jpg"])),
                          "--index-dir", str(tmp_path / f"idx{i}"), "--batch-size", "1", "-q"],
                         cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    cache = tmp_path / "cache" / "vsearch" / "models"
    assert [p.suffix for p in cache.iterdir()] == [".onnx"]  # one file, no temporaries left
    assert _model_id(tmp_path / "idx0") == _model_id(tmp_path / "idx1")


NO_NETWORK = """
import socket, sys
def refuse(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")
socket.getaddrinfo = refuse
socket.socket.connect = refuse
from vsearch.cli.main import app
app(sys.argv[1:], prog_name="vsearch")
"""


def test_a_hub_model_without_network_fails_fast_in_one_line_and_leaves_no_index(tmp_path):
    folder = photos(tmp_path / "p", ["chelsea.jpg"])
    index_dir = tmp_path / "index"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("HF_HUB_OFFLINE", None)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", NO_NETWORK, "build-index", str(folder), "--index-dir",
                           str(index_dir), "--model", "ViT-B-32:laion2b_s34b_b79k"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: could not get the weights for ViT-B-32:laion2b_s34b_b79k (no network: ")
    assert "--model efficientnet-lite0" in lines[0]
    assert not index_dir.exists()
    # Before: 22 retry lines and about 46 s of backoff. Now the imports (torch, open_clip) dominate.
    assert elapsed < 25, elapsed


def _model_id(index_dir: Path) -> models.ModelId:
    with Store.open(index_dir) as store:
        assert store.meta is not None
        return store.meta.model


def test_a_damaged_cached_export_is_dropped_and_made_again(built, tmp_path, monkeypatch):
    base, index_dir = built
    cache = tmp_path / "cache"
    shutil.copytree(base / "cache", cache)
    cached = onnxmodel.onnx_path(cache / "vsearch" / "models", _model_id(index_dir))  # not a saved optimised graph
    cached.write_bytes(b"not an onnx file")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    proc = run_cli_reporting_torch("query", SAMPLE_IMAGES / "horse.png", "--index-dir", index_dir, "--format", "paths")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 3 and proc.stderr.strip().endswith("\nTORCH")
    assert f"cannot load {cached} (" in proc.stderr and "using the torch model instead" in proc.stderr
    assert not cached.exists()
    # The next build that loads the model exports it again.
    folder = photos(tmp_path / "c", ["horse.png"])
    ok(cli("embed", folder, "--index-dir", tmp_path / "index-c", "-q"))
    assert cached.is_file()


def test_the_saved_optimised_graph_embeds_as_the_plain_export(built, monkeypatch):
    base, index_dir = built
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    model_id = _model_id(index_dir)
    pixels = np.stack([images.decode_for_model(SAMPLE_IMAGES / name, model_id.preprocess.size,
                                               model_id.preprocess.framing)
                       for name in ("horse.png", "coffee.jpg", "astronaut.jpg")])
    plain = onnxmodel.load_for_index(None, model_id, quick_start=False)
    assert plain is not None and not plain.path.name.count(".opt-")
    expected = plain.embed_images(pixels)
    for _ in range(2):  # the first saves the optimised graph, the second starts from it
        quick = onnxmodel.load_for_index(None, model_id)
        assert np.abs(quick.embed_images(pixels) - expected).max() < 1e-5
    assert onnxmodel.optimised_path(plain.path).is_file()
