"""Indexing options and runs that go wrong: IndexOptions, --exclude, skipped files tried again,
and a failed first build that leaves no half index behind. All with the fast ``fake`` model.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import FakeEmbedder, make_photo
from tests.helpers import cli, ok
from vsearch.indexing import scan
from vsearch.indexing import pipeline as indexer
from vsearch.models import loading as models
from vsearch.errors import ModelUnavailableError, VsearchError
from vsearch.storage.store import Store

def indexed_paths(index_dir: Path) -> list[str]:
    with Store.open(index_dir) as store:
        return sorted(store.paths_by_row())


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    for sub in ("", "thumbs", "2019/raw", "2019/keep"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, rel in enumerate(["a.jpg", "b.png", "thumbs/t.jpg", "2019/raw/r.jpg", "2019/keep/k.jpg",
                             "2019/keep/k.png"]):
        make_photo(folder / rel, size=(64, 48), seed=i)
    return folder


# --------------------------------------------------------------------------- IndexOptions


def test_options_check_their_values_and_keep_excludes_as_a_tuple():
    options = indexer.IndexOptions("fake", exclude=["*.png", "thumbs"])
    assert options.exclude == ("*.png", "thumbs") and hash(options)
    assert indexer.IndexOptions(exclude="*.png").exclude == ("*.png",)  # one pattern, not five
    for bad in ({"batch_size": 0}, {"chunk_size": 0}, {"workers": 0}, {"max_pixels": 0}, {"threads": -1}):
        with pytest.raises(VsearchError, match="must be 1 or more"):
            indexer.IndexOptions(**bad)
    with pytest.raises(VsearchError, match="^exclude= needs a pattern"):
        indexer.IndexOptions(exclude=["/"])


def test_update_takes_options_and_a_loaded_model(photos, tmp_path):
    given = FakeEmbedder("given")
    with Store.open(tmp_path / "idx", write=True) as store:
        summary = indexer.update(store, photos, indexer.IndexOptions(batch_size=2, chunk_size=2, workers=1),
                                 embedder=given)
    assert summary.embedded == 6 and summary.model == "given" and not summary.loaded_model
    assert given.calls == 3  # batches of 2


# --------------------------------------------------------------------------- --exclude


def test_exclude_patterns_match_the_path_its_folders_or_any_name():
    ex = scan.excluded
    assert ex("b.png", ["*.png"]) and ex("2019/keep/k.png", ["*.png"])
    assert ex("thumbs/t.jpg", ["thumbs"]) and ex("x/thumbs/t.jpg", ["thumbs"])
    assert ex("2019/raw/r.jpg", ["2019/raw"]) and ex("2019/raw/r.jpg", ["2019/raw/"])
    assert not ex("2019/keep/k.jpg", ["2019/raw", "*.png", "thumbs"])
    assert not ex("a/2019/raw/r.jpg", ["2019/raw"])  # a pattern with "/" starts at the folder
    assert not ex("B.PNG", ["*.png"])  # case-sensitive, as --path is


def test_cli_exclude_is_repeatable_and_excluded_files_leave_the_index(photos, fake_model, isolated_index_dir):
    result = ok(cli("embed", photos, "--model", "fake", "--exclude", "*.png", "--exclude", "thumbs",
                    "--exclude", "2019/raw"))
    assert "embedded 2," in result.stderr
    assert indexed_paths(isolated_index_dir) == ["2019/keep/k.jpg", "a.jpg"]

    ok(cli("build-index", photos))  # without --exclude: everything comes in
    assert len(indexed_paths(isolated_index_dir)) == 6
    result = ok(cli("build-index", photos, "--exclude", "2019"))
    assert "removed 3," in result.stderr
    assert indexed_paths(isolated_index_dir) == ["a.jpg", "b.png", "thumbs/t.jpg"]


def test_excluding_everything_is_a_clear_error_and_leaves_no_index(photos, fake_model, isolated_index_dir):
    result = cli("embed", photos, "--model", "fake", "--exclude", "*g")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: no images found in {photos} (looked for ")
    assert result.stderr.rstrip().endswith("outside the --exclude patterns)")
    assert not isolated_index_dir.exists()


# --------------------------------------------------------------------------- skipped files are tried again


def test_a_skipped_file_that_becomes_readable_is_indexed_on_the_next_run(photos, fake_model, isolated_index_dir):
    target = photos / "a.jpg"
    good = target.read_bytes()
    # Unreadable with the same size, then repaired with the same mtime: what chmod 000 and
    # chmod 644 look like to a stat (tests run as root, for whom chmod changes nothing).
    target.write_bytes(b"\0" * len(good))
    stamp = target.stat().st_mtime_ns
    first = ok(cli("embed", photos, "--model", "fake"))
    assert "skipped a.jpg: not an image or unsupported format" in first.stderr
    assert "a.jpg" not in indexed_paths(isolated_index_dir)

    again = ok(cli("embed", photos))  # still bad: tried, not reported again
    assert "skipped 0 (+1 known)" in again.stderr and "skipped a.jpg" not in again.stderr

    target.write_bytes(good)
    os.utime(target, ns=(stamp, stamp))
    assert target.stat().st_mtime_ns == stamp and target.stat().st_size == len(good)
    fixed = ok(cli("embed", photos))
    assert "embedded 1, unchanged 5," in fixed.stderr and "skipped 0 in" in fixed.stderr
    assert "a.jpg" in indexed_paths(isolated_index_dir)
    with Store.open(isolated_index_dir) as store:
        assert store.skipped() == []


def test_a_skip_that_changes_reason_is_reported_again(photos, fake_model, isolated_index_dir):
    target = photos / "b.png"
    good = target.read_bytes()
    target.write_bytes(b"\0" * len(good))
    stamp = target.stat().st_mtime_ns
    first = ok(cli("embed", photos, "--model", "fake"))
    assert "skipped b.png: not an image or unsupported format" in first.stderr
    target.write_bytes(good)  # an image now, but over the pixel limit of this run
    os.utime(target, ns=(stamp, stamp))
    result = ok(cli("embed", photos, "--max-pixels", "1000"))
    assert "skipped 1 in" in result.stderr and "skipped b.png: image too large" in result.stderr


# --------------------------------------------------------------------------- a failed first build


@pytest.fixture
def offline_model():
    """A model whose weights cannot be fetched, as an open_clip tag without a network."""

    def load(name, device, threads):
        raise ModelUnavailableError("could not get the weights for offline (no network)")

    models.register("offline", load)
    yield
    models.unregister("offline")


def test_a_failed_first_build_leaves_no_index_folder(photos, offline_model, tmp_path):
    index_dir = tmp_path / "new" / "deeper" / "index"
    result = cli("build-index", photos, "--index-dir", index_dir, "--model", "offline")
    assert result.exit_code == 1
    assert result.stderr == "error: could not get the weights for offline (no network)\n"
    assert not (tmp_path / "new").exists()  # with the parents it made
    # The next query says there is no index, not that one was "never completed".
    query = cli("query", photos / "a.jpg", "--index-dir", index_dir)
    assert query.exit_code == 1 and "no index at" in query.stderr


def test_a_failed_first_build_empties_only_what_it_added(photos, offline_model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("embed", photos, "--index-dir", empty, "--model", "offline").exit_code == 1
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_an_interrupted_first_build_keeps_committed_chunks(photos, fake_model, isolated_index_dir, monkeypatch):
    real = fake_model.embed_images

    def interrupted(batch):
        if fake_model.calls == 2:  # the third batch, after a chunk of 2 x 2 was committed
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(fake_model, "embed_images", interrupted)
    with pytest.raises(KeyboardInterrupt), indexer.open_for_update(isolated_index_dir) as store:
        indexer.update(store, photos, indexer.IndexOptions("fake", batch_size=2, chunk_size=4, workers=1))
    assert isolated_index_dir.is_dir()  # its work is kept: the next run resumes
    monkeypatch.setattr(fake_model, "embed_images", real)
    assert "embedded 2, unchanged 4," in ok(cli("embed", photos)).stderr


def test_a_failed_run_on_a_built_index_keeps_it(photos, fake_model, offline_model, isolated_index_dir):
    ok(cli("build-index", photos, "--model", "fake"))
    before = sorted(p.name for p in isolated_index_dir.iterdir())
    make_photo(photos / "new.jpg", seed=40)
    result = cli("embed", photos, "--model", "offline")  # refused: another model
    assert result.exit_code == 1 and "was built with model fake" in result.stderr
    assert sorted(p.name for p in isolated_index_dir.iterdir()) == before
    assert ok(cli("query", photos / "a.jpg", "--k", "1", "--format", "paths")).stdout.strip() == str(photos / "a.jpg")
