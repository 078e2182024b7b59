"""The CLI end to end: the real default model on sample_images/, CliRunner and one subprocess.

The real-model index is built once per module; queries of indexed images reuse stored vectors,
so only the build and the cropped-copy query load the model.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.conftest import SAMPLE_IMAGES, run_cli_reporting_torch
from tests.helpers import cli, ok
from vsearch import __version__
from vsearch.cli.main import app

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FILES = sorted(p for p in SAMPLE_IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".png"))


@pytest.fixture(scope="module")
def real_index(tmp_path_factory) -> tuple[Path, str]:
    """sample_images/ indexed with the default model (no --model): (index dir, build stderr)."""
    index_dir = tmp_path_factory.mktemp("real") / "index"
    result = ok(cli("build-index", SAMPLE_IMAGES, "--index-dir", index_dir))
    return index_dir, result.stderr


def query_json(index_dir: Path, image: Path, *extra: object) -> list[dict]:
    return json.loads(ok(cli("query", image, "--index-dir", index_dir, "--format", "json", *extra)).stdout)


# --- with the real default model ----------------------------------------------------------


@pytest.mark.slow
def test_build_index_with_the_default_model(real_index):
    index_dir, stderr = real_index
    n = len(SAMPLE_FILES)
    assert f"embedded {n}," in stderr and "skipped 0" in stderr
    assert f"holds {n} images (efficientnet-lite0)" in stderr
    assert "annoy index: 50 trees" in stderr
    meta = json.loads((index_dir / "meta.json").read_text())
    assert (meta["count"], meta["dim"], meta["model"]["name"]) == (n, 1280, "efficientnet-lite0")
    assert meta["root"] == str(SAMPLE_IMAGES)
    assert meta["ann"]["trees"] == 50


@pytest.mark.slow
def test_an_unchanged_rebuild_embeds_nothing(real_index):
    index_dir, _ = real_index
    result = ok(cli("build-index", SAMPLE_IMAGES, "--index-dir", index_dir))
    assert f"embedded 0, unchanged {len(SAMPLE_FILES)}," in result.stderr
    assert "efficientnet-lite0" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chelsea.jpg", "hubble_deep_field_tile_ne.jpg", "horse.png"])
def test_query_top_hit_is_the_query_image_itself(real_index, name):
    index_dir, _ = real_index
    hits = query_json(index_dir, SAMPLE_IMAGES / name)
    assert Path(hits[0]["path"]) == SAMPLE_IMAGES / name
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_query_json_is_an_array_best_first_with_absolute_paths(real_index, monkeypatch):
    index_dir, _ = real_index
    monkeypatch.chdir(REPO)  # a relative query path, printed back as absolute
    hits = query_json(index_dir, Path("sample_images/chelsea.jpg"), "--k", "7", "--qe", "0")
    assert isinstance(hits, list) and len(hits) == 7
    scores = [h["score"] for h in hits]
    # Plain search ranks by the score it prints.
    assert scores == sorted(scores, reverse=True)
    # The default (query expansion) ranks by the expanded query, but every score printed is
    # still the cosine to the photo asked (docs/defaults.md): the same rows score the same.
    expanded = query_json(index_dir, Path("sample_images/chelsea.jpg"), "--k", "7")
    plain = {h["path"]: h["score"] for h in query_json(index_dir, Path("sample_images/chelsea.jpg"),
                                                      "--k", "25", "--qe", "0")}
    for h in expanded:
        assert h["score"] == pytest.approx(plain[h["path"]], abs=1e-5)
    assert [h["rank"] for h in hits] == list(range(1, 8))
    for h in hits:
        assert Path(h["path"]).is_absolute() and Path(h["path"]).exists()
        assert -1.0 <= h["score"] <= 1.0 + 1e-6
    assert len({h["path"] for h in hits}) == 7
    # The other chelsea picture is its nearest other image.
    assert Path(hits[1]["path"]).name == "chelsea_face.jpg"


@pytest.mark.slow
def test_query_csv_and_paths_formats_agree_with_json(real_index):
    index_dir, _ = real_index
    image = SAMPLE_IMAGES / "rocket.jpg"
    hits = query_json(index_dir, image, "--k", "5")
    result = ok(cli("query", image, "--index-dir", index_dir, "--format", "csv", "--k", "5"))
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["rank", "score", "path"]
    assert [r["path"] for r in rows] == [h["path"] for h in hits]
    assert [float(r["score"]) for r in rows] == pytest.approx([h["score"] for h in hits], abs=1e-6)
    result = ok(cli("query", image, "--index-dir", index_dir, "--format", "paths", "--k", "5"))
    assert result.stdout.splitlines() == [h["path"] for h in hits]
    assert result.stderr == ""  # results only on stdout; nothing else to say


@pytest.mark.slow
def test_exact_and_approximate_give_the_same_top_hits_as_the_default(real_index):
    index_dir, _ = real_index
    for name in ("coffee.jpg", "astronaut.jpg"):
        image = SAMPLE_IMAGES / name
        default = query_json(index_dir, image, "--k", "5")
        exact = query_json(index_dir, image, "--k", "5", "--exact")
        approximate = query_json(index_dir, image, "--k", "5", "--approximate")
        assert [h["path"] for h in exact] == [h["path"] for h in default]
        assert [h["path"] for h in approximate] == [h["path"] for h in default]
        assert [h["score"] for h in exact] == pytest.approx([h["score"] for h in default], abs=1e-6)


@pytest.mark.slow
def test_a_cropped_recompressed_copy_finds_its_original(real_index, tmp_path):
    from PIL import Image

    index_dir, _ = real_index
    original = SAMPLE_IMAGES / "chelsea.jpg"
    with Image.open(original) as im:
        w, h = im.size
        copy = tmp_path / "chelsea-edit.jpg"  # outside the index: it must be embedded
        im.crop((w // 16, h // 20, w - w // 20, h - h // 16)).save(copy, quality=60)
    hits = query_json(index_dir, copy, "--k", "3")
    assert Path(hits[0]["path"]) == original
    assert hits[0]["score"] < 0.9999  # a real embedding of the copy, not the stored vector
    assert hits[0]["score"] > hits[1]["score"]


@pytest.mark.slow
def test_a_new_photo_is_embedded_through_the_exported_onnx_model_without_torch(real_index, tmp_path, monkeypatch):
    from PIL import Image

    index_dir, _ = real_index
    assert not list(index_dir.glob("model-*.onnx"))  # build-index exported it to the user's model cache
    original = SAMPLE_IMAGES / "coffee.jpg"
    copy = tmp_path / "coffee-edit.jpg"
    with Image.open(original) as im:
        im.crop((20, 10, im.width - 30, im.height - 20)).save(copy, quality=55)
    proc = run_cli_reporting_torch("query", copy, "--index-dir", index_dir, "--format", "json", "--k", "3")
    assert proc.returncode == 0, proc.stderr
    assert "NO-TORCH" in proc.stderr
    onnx_hits = json.loads(proc.stdout)
    assert Path(onnx_hits[0]["path"]) == original and onnx_hits[0]["score"] < 0.9999
    # The torch model gives the same ranking and the same scores to 1e-4.
    monkeypatch.setenv("VSEARCH_TORCH", "1")
    torch_hits = query_json(index_dir, copy, "--k", "3")
    assert [h["path"] for h in torch_hits] == [h["path"] for h in onnx_hits]
    assert [h["score"] for h in torch_hits] == pytest.approx([h["score"] for h in onnx_hits], abs=1e-4)


@pytest.mark.slow
def test_after_the_first_batch_indexing_runs_on_onnx_and_later_runs_need_no_torch(tmp_path):
    import shutil

    import numpy as np

    from vsearch.imaging import images
    from vsearch.models import loading as models
    from vsearch.storage.store import Store

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg", "camera.jpg"):
        shutil.copy(SAMPLE_IMAGES / name, folder / name)
    index_dir = tmp_path / "index"
    ok(cli("embed", folder, "--index-dir", index_dir, "--batch-size", "2", "-q"))  # 2 torch, 3 ONNX
    assert not list(index_dir.glob("model-*.onnx"))  # exported to the user's model cache
    shutil.copy(SAMPLE_IMAGES / "horse.png", folder / "horse.png")
    proc = run_cli_reporting_torch("embed", folder, "--index-dir", index_dir)
    assert proc.returncode == 0, proc.stderr
    assert "NO-TORCH" in proc.stderr and "embedded 1, unchanged 5" in proc.stderr
    # Every stored vector, torch- or ONNX-made, equals what the torch model gives now.
    torch_model = models.load_model(device="cpu")
    pre = torch_model.id.preprocess
    with Store.open(index_dir) as store:
        paths = store.paths_by_row()
        stored = np.asarray(store.vectors())
    fresh = torch_model.embed_images(np.stack(
        [images.decode_for_model(folder / p, pre.size, pre.framing) for p in paths]))
    np.testing.assert_allclose(stored, fresh, atol=1e-4)


@pytest.mark.slow
def test_evaluate_on_the_sample_groups_file(real_index):
    index_dir, _ = real_index
    groups_csv = SAMPLE_IMAGES / "groups.csv"
    with groups_csv.open() as fh:
        groups = [row["group"] for row in csv.DictReader(fh)]
    expected_queries = sum(1 for g in groups if groups.count(g) > 1)
    result = ok(cli("evaluate", "--groups", groups_csv, "--index-dir", index_dir, "--format", "json"))
    metrics = json.loads(result.stdout)
    assert metrics["num_queries"] == expected_queries
    assert {"recall@1", "recall@5", "map@10", "ndcg@10", "mrr"} <= set(metrics)
    for key, value in metrics.items():
        if key != "num_queries":
            assert 0.0 <= value <= 1.0, key
    # The sample groups are easy (tiles of one photo, a cat and its face): the default model
    # must find a group-mate first for nearly every query.
    assert metrics["hit@1"] >= 0.9 and metrics["recall@5"] >= 0.8
    table = ok(cli("evaluate", "--groups", groups_csv, "--index-dir", index_dir))
    assert "precision" in table.stdout and "│ 5 " in table.stdout and f"{expected_queries} queries" in table.stderr


@pytest.mark.slow
def test_python_m_vsearch_in_a_real_process(real_index):
    index_dir, _ = real_index
    env = {**os.environ, "VSEARCH_INDEX_DIR": str(index_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "vsearch", "query", "sample_images/astronaut.jpg",
         "--format", "json", "--k", "3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert Path(hits[0]["path"]) == SAMPLE_IMAGES / "astronaut.jpg"
    assert len(hits) == 3
    bad = subprocess.run([sys.executable, "-m", "vsearch", "query", "no-such.jpg"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in bad.stderr


# --- no model needed ----------------------------------------------------------------------


def test_version():
    result = ok(cli("--version"))
    assert result.stdout.strip() == f"vsearch {__version__}"


def _commands() -> dict:
    # typer builds its own click-compatible group: read its commands by duck typing.
    return dict(typer.main.get_command(app).commands)


def test_every_command_has_help_and_an_example():
    commands = _commands()
    assert {"embed", "build-index", "query", "duplicates", "evaluate", "make-pairs", "info"} <= set(commands)
    top = ok(cli("--help")).stdout
    for name, command in commands.items():
        assert (command.help or "").strip(), f"{name} has no help text"
        assert name in top
        result = ok(cli(name, "--help"))
        first_line = command.help.strip().splitlines()[0]
        assert first_line.split()[0] in result.stdout, name
        # An example of the command itself, shown in its help.
        assert f"vsearch {name} " in (command.epilog or ""), f"{name} has no example"
        assert "Examples:" in result.stdout and f"vsearch {name} " in result.stdout, name
        for param in command.params:
            if param.param_type_name == "option" and not getattr(param, "hidden", False):
                assert (param.help or "").strip(), f"{name} {param.opts[0]} has no help text"
        assert not re.search(r"\w\.py\b", result.stdout), f"{name} help sends users to a source file"


def test_vsearch_index_dir_is_the_default_for_every_command(tmp_path, sample_copy, fake_model, monkeypatch):
    index_dir = tmp_path / "from-env"
    monkeypatch.setenv("VSEARCH_INDEX_DIR", str(index_dir))
    ok(cli("build-index", sample_copy, "--model", "fake", "-q"))
    assert (index_dir / "meta.json").exists()
    assert not (tmp_path / "xdg").exists()  # the XDG default was not touched
    hits = json.loads(ok(cli("query", sample_copy / "coins.jpg", "--format", "json")).stdout)
    assert Path(hits[0]["path"]) == sample_copy / "coins.jpg"
    groups = sample_copy / "groups.csv"
    groups.write_text("path,group\nchelsea.jpg,cat\nchelsea_face.jpg,cat\n")
    metrics = json.loads(ok(cli("evaluate", "--groups", groups, "--format", "json")).stdout)
    assert metrics["num_queries"] == 2

    # Without the variable: $XDG_DATA_HOME/vsearch/index, the same for every command.
    monkeypatch.delenv("VSEARCH_INDEX_DIR")
    ok(cli("embed", sample_copy, "--model", "fake", "-q"))
    assert (tmp_path / "xdg" / "vsearch" / "index" / "meta.json").exists()
    hits = json.loads(ok(cli("query", sample_copy / "coins.jpg", "--format", "json", "--k", "1")).stdout)
    assert Path(hits[0]["path"]) == sample_copy / "coins.jpg"
