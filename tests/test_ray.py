"""The Ray engine (``--engine ray``) against the local engine, on a local Ray cluster the tests start.

One cluster for the module (``ray.init(num_cpus=2)``): starting Ray costs seconds, so the tests
share it, and the engine uses a cluster it finds already running instead of starting its own.
The fake model crosses to the Ray workers as an object (it is registered only in this process).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from conftest import REPO, TESTS, make_photo
from helpers import cli, fails, ok
from vsearch.indexing import pipeline as indexer
from vsearch.storage.store import Store

PHOTOS = 7


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # The workers import this checkout's vsearch, and conftest (the fake model's class).
    path = os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture
def folder(photos):
    """Seven photos and one corrupt JPEG."""
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return photos


def rows(index_dir) -> dict[str, np.ndarray]:
    """Path -> stored vector for every committed row."""
    with Store.open(index_dir) as store:
        return dict(zip(store.paths_by_row(), np.array(store.vectors())))


def skips(index_dir) -> list[tuple[str, str]]:
    with Store.open(index_dir) as store:
        return store.skipped()


def same_index(a, b) -> None:
    va, vb = rows(a), rows(b)
    assert sorted(va) == sorted(vb)
    for path in va:
        np.testing.assert_allclose(va[path], vb[path], atol=1e-5, rtol=0)
    assert skips(a) == skips(b)


@pytest.mark.slow  # a Ray run costs seconds (actors start, import, load the model)
def test_ray_engine_gives_the_local_engines_rows_vectors_and_skips_then_updates_like_it(
        ray_cluster, folder, fake_model, tmp_path):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    ok(cli("embed", folder, "--index-dir", local, "--model", "fake"))
    result = ok(cli("build-index", folder, "--index-dir", on_ray, "--model", "fake", "--engine", "ray",
                    "--batch-size", "3"))

    assert "embedded 7," in result.stderr and "skipped 1" in result.stderr
    assert "broken.jpg" in result.stderr  # a named skip, with its reason, as locally
    same_index(local, on_ray)
    assert len(rows(on_ray)) == PHOTOS
    assert skips(on_ray)[0][0] == "broken.jpg"
    # The index is an ordinary one: query reads it unchanged.
    hits = ok(cli("query", folder / "p3.jpg", "--index-dir", on_ray, "--format", "paths", "-k", "1")).stdout
    assert hits.strip() == str(folder / "p3.jpg")

    # An update: a renamed file keeps its vector (recognised by digest on the workers), not embedded again.
    before = rows(on_ray)
    (folder / "p0.jpg").rename(folder / "renamed.jpg")
    make_photo(folder / "new.jpg", seed=99)
    result = ok(cli("embed", folder, "--index-dir", on_ray, "--engine", "ray", "--workers", "1"))
    # The corrupt file, tried again, counts as unchanged.
    assert "embedded 1, unchanged 7, moved 1," in result.stderr
    after = rows(on_ray)
    np.testing.assert_array_equal(after["renamed.jpg"], before["p0.jpg"])
    assert "p0.jpg" not in after and "new.jpg" in after


@pytest.mark.slow
def test_an_interrupted_ray_run_resumes_without_embedding_the_committed_chunk_again(
        ray_cluster, folder, fake_model, tmp_path):
    index, local = tmp_path / "idx", tmp_path / "local"
    options = indexer.IndexOptions("fake", batch_size=2, chunk_size=2, workers=1, engine="ray")  # one actor

    def stop_after_two(p) -> None:  # a Ctrl-C once the first chunk is full
        if p.embedded >= 2:
            raise KeyboardInterrupt

    with indexer.open_for_update(index) as store, pytest.raises(KeyboardInterrupt):
        indexer.update(store, folder, options, progress=stop_after_two)
    with Store.open(index, write=True) as store:
        assert store.meta is None  # nothing consolidated, but the first chunk is on disk
        kept = sum(e.skip_reason is None for e in store.entries())
    assert 2 <= kept < PHOTOS

    with indexer.open_for_update(index) as store:
        summary = indexer.update(store, folder, options)
    # Only what the first run did not commit is embedded; the corrupt file, skipped before, is
    # tried again and counted as unchanged.
    assert (summary.embedded, summary.unchanged, summary.total) == (PHOTOS - kept, kept + 1, PHOTOS)
    with indexer.open_for_update(local) as store:
        indexer.update(store, folder, indexer.IndexOptions("fake"))
    same_index(index, local)


class FailingEmbedder:
    """The fake model's identity, but every batch fails (on the Ray worker that runs it)."""

    def __init__(self, like) -> None:
        self.id = like.id
        self.supports_text = False

    def embed_images(self, batch):
        from vsearch.errors import VsearchError

        raise VsearchError("the model failed on this worker")


@pytest.mark.slow
def test_a_failure_on_a_worker_is_one_error_line_and_leaves_no_index(ray_cluster, folder, fake_model, monkeypatch,
                                                                     tmp_path):
    from vsearch.models import loading as models

    failing = FailingEmbedder(fake_model)
    monkeypatch.setattr(models, "_REGISTRY", {**models._REGISTRY, "fake": lambda name, device, threads: failing})
    fails(cli("embed", folder, "--index-dir", tmp_path / "idx", "--model", "fake", "--engine", "ray", "--workers", "1"),
          r"^error: the model failed on this worker$")
    assert not (tmp_path / "idx").exists()


def test_the_ray_engine_without_ray_installed_is_one_error_line(folder, fake_model, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    fails(cli("embed", folder, "--index-dir", tmp_path / "idx", "--model", "fake", "--engine", "ray"),
          r"needs Ray Data, which is not installed .*pip install 'vsearch\[ray\]'")
    assert not (tmp_path / "idx").exists()  # a failed first run leaves nothing behind


def test_engine_and_address_are_checked(folder, fake_model, tmp_path):
    fails(cli("embed", folder, "--index-dir", tmp_path / "a", "--engine", "spark"),
          r"unknown engine 'spark'; choose local or ray")
    fails(cli("embed", folder, "--index-dir", tmp_path / "b", "--address", "auto"),
          r"--address is for the Ray engine: add --engine ray")


def test_an_address_where_no_cluster_answers_is_one_error_line_at_once(folder, fake_model, monkeypatch, tmp_path):
    import ray

    # As in a fresh process: this one may hold the tests' own cluster, which the engine would use.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    fails(cli("embed", folder, "--index-dir", tmp_path / "idx", "--model", "fake", "--engine", "ray",
              "--address", "127.0.0.1:1"),
          r"^error: no Ray cluster answers at 127\.0\.0\.1:1 \(Connection refused\); start one with "
          r"`ray start --head` on the head node, or leave out --address for a local one$")
    assert not (tmp_path / "idx").exists()
