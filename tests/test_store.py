"""Storage round trips through vsearch.storage.store.Store: chunks, consolidation, row order, atomicity, lock."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vsearch import identity
from vsearch.models import loading as models
from vsearch.errors import IndexBusyError, IndexCorruptError, IndexMissingError, ModelMismatchError
from vsearch.storage.store import CHUNK_DIR, META_FILE, Store

DIM = 8


def model_id(name: str = "fake", weights: str = "0" * 64) -> identity.ModelId:
    return identity.ModelId(
        name=name, family="fake", arch="test", pretrained="none", weights_sha256=weights, dim=DIM,
        preprocess=identity.Preprocess(32, "squash", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), pooling="avg",
    )


def unit_vectors(n: int, seed: int) -> np.ndarray:
    return models.l2_normalise(np.random.default_rng(seed).normal(size=(n, DIM)))


def records(paths: list[str]) -> list[tuple[str, int, int, str]]:
    # The digest must be unique per path here (shared digests mean shared vectors).
    return [(p, 100 + i, 1_000 + i, f"digest-{p}") for i, p in enumerate(paths)]


@pytest.fixture
def writer(tmp_path):
    """A new index open for writing, bound to a root and a model."""
    store = Store.open(tmp_path / "idx", write=True)
    store.bind(tmp_path / "photos", "fake")
    store.bind_model(model_id())
    yield store
    store.close()


def reopen(store: Store) -> Store:
    return Store.open(store.dir)


def vector_by_path(store: Store) -> dict[str, np.ndarray]:
    vectors = store.vectors()
    return {p: np.array(vectors[i]) for i, p in enumerate(store.paths_by_row())}


def test_round_trip_keeps_each_vector_with_its_path(writer):
    # Two chunks, paths deliberately out of order: consolidation sorts rows by path.
    a_paths, b_paths = ["z.jpg", "b/c.jpg", "m.png"], ["a.jpg", "b/a.jpg"]
    a_vecs, b_vecs = unit_vectors(3, 1), unit_vectors(2, 2)
    writer.add_chunk(records(a_paths), a_vecs)
    writer.add_chunk(records(b_paths), b_vecs)
    meta = writer.consolidate()
    assert (meta.count, meta.dim, meta.generation) == (5, DIM, 1)

    reader = reopen(writer)
    try:
        assert reader.paths_by_row() == sorted(a_paths + b_paths)
        vectors = reader.vectors()
        assert vectors.shape == (5, DIM) and vectors.dtype == np.float32
        got = vector_by_path(reader)
        for path, vec in zip(a_paths + b_paths, np.concatenate([a_vecs, b_vecs])):
            np.testing.assert_array_equal(got[path], vec)
        # Invariant 1 both ways: the manifest entry of each path names its row.
        for row, path in enumerate(reader.paths_by_row()):
            assert reader.entry(path).row == row
            assert reader.path_of_row(row) == path
        assert reader.meta.model == model_id()
        assert json.loads((reader.dir / META_FILE).read_text())["count"] == 5
    finally:
        reader.close()


def test_second_generation_keeps_rows_aligned_after_adds_deletes_moves_and_copies(writer):
    first = ["c.jpg", "e.jpg", "g.jpg"]
    vecs = unit_vectors(3, 3)
    writer.add_chunk(records(first), vecs)
    writer.consolidate()
    old_vectors_file = writer.dir / writer.meta.vectors

    new = unit_vectors(2, 4)
    writer.add_chunk(records(["a.jpg", "f.jpg"]), new)
    writer.mark_deleted(["e.jpg"])
    writer.move(writer.entry("g.jpg"), "b.jpg", 5, 6)
    writer.add_reference("h.jpg", 7, 8, "digest-c.jpg", writer.entry("c.jpg"))
    meta = writer.consolidate()

    assert meta.generation == 2 and meta.count == 5
    assert old_vectors_file.exists()  # a reader may still hold generation 1: kept one commit more
    got = vector_by_path(writer)
    assert list(got) == ["a.jpg", "b.jpg", "c.jpg", "f.jpg", "h.jpg"]
    np.testing.assert_array_equal(got["a.jpg"], new[0])
    np.testing.assert_array_equal(got["f.jpg"], new[1])
    np.testing.assert_array_equal(got["b.jpg"], vecs[2])  # moved: g's vector under its new name
    np.testing.assert_array_equal(got["c.jpg"], vecs[0])
    np.testing.assert_array_equal(got["h.jpg"], vecs[0])  # a copy shares its source's vector
    assert writer.entry("e.jpg") is None
    assert not any((writer.dir / CHUNK_DIR).iterdir())  # consolidated chunks are dropped
    writer.add_chunk(records(["i.jpg"]), unit_vectors(1, 5))
    writer.consolidate()
    assert not old_vectors_file.exists()  # two generations on, nobody reads it


def test_skipped_files_are_kept_in_the_manifest_but_get_no_row(writer):
    writer.add_chunk(records(["a.jpg"]), unit_vectors(1, 5))
    writer.record_skip("bad.jpg", 10, 20, "not an image")
    meta = writer.consolidate()
    assert meta.count == 1 and meta.skipped == 1
    assert writer.skipped() == [("bad.jpg", "not an image")]
    assert writer.entry("bad.jpg").row is None
    assert writer.paths_by_row() == ["a.jpg"]


def test_leftover_tmp_files_are_never_loaded_and_a_writer_cleans_them(writer):
    writer.add_chunk(records(["a.jpg", "b.jpg"]), unit_vectors(2, 6))
    writer.consolidate()
    good = np.array(writer.vectors())
    meta_before = (writer.dir / META_FILE).read_text()
    writer.close()

    # What a writer killed mid-write leaves: temporary files beside the real ones.
    idx = writer.dir
    junk_meta = idx / f".{META_FILE}.999.tmp"
    junk_meta.write_text(json.dumps({**json.loads(meta_before), "count": 3, "generation": 7}))
    junk_vectors = idx / ".vectors.000002.npy.999.tmp"
    with junk_vectors.open("wb") as fh:  # np.save would append ".npy" to this name
        np.save(fh, np.ones((3, DIM), dtype=np.float32))
    junk_chunk = idx / CHUNK_DIR / ".000009.npy.999.tmp"
    junk_chunk.write_bytes(b"half a chunk")
    orphan_chunk = idx / CHUNK_DIR / "000042.npy"  # written, but no manifest row points at it
    np.save(orphan_chunk, np.ones((1, DIM), dtype=np.float32))

    reader = Store.open(idx)
    try:
        assert reader.meta.generation == 1 and reader.meta.count == 2
        np.testing.assert_array_equal(reader.vectors(), good)
    finally:
        reader.close()
    assert junk_meta.exists()  # readers never delete anything

    with Store.open(idx, write=True) as again:
        assert again.meta.generation == 1
    for junk in (junk_meta, junk_vectors, junk_chunk, orphan_chunk):
        assert not junk.exists(), junk


def test_a_second_writer_is_refused_while_readers_still_open(writer):
    busy = rf"being written by another vsearch process \(pid {os.getpid()}\)"
    with pytest.raises(IndexBusyError, match=busy):
        Store.open(writer.dir, write=True)
    writer.add_chunk(records(["a.jpg"]), unit_vectors(1, 7))
    writer.consolidate()
    reader = reopen(writer)  # reading needs no lock
    assert reader.meta.count == 1
    reader.close()
    writer.close()
    with Store.open(writer.dir, write=True) as next_writer:  # the lock goes with the writer
        assert next_writer.meta.count == 1


def test_an_index_is_bound_to_one_model(writer):
    with pytest.raises(ModelMismatchError, match="built with model fake.*Leave out model= to use fake, or use another index_dir=$"):
        writer.bind(writer.root, "other-model")
    with pytest.raises(ModelMismatchError, match="would not be comparable"):
        writer.bind_model(model_id(weights="1" * 64))
    writer.bind_model(model_id())  # the same identity is fine


def test_a_reader_needs_a_committed_index(tmp_path, writer):
    with pytest.raises(IndexMissingError, match=r"no index at .*; build one with `build_index\(FOLDER\)` \(or point index_dir= "):
        Store.open(tmp_path / "nothing-here")
    # Manifest present, meta.json not yet written: never completed.
    writer.add_chunk(records(["a.jpg"]), unit_vectors(1, 8))
    with pytest.raises(IndexMissingError, match="never completed"):
        Store.open(writer.dir)


def test_vectors_that_disagree_with_meta_json_never_load(writer):
    writer.add_chunk(records(["a.jpg", "b.jpg", "c.jpg"]), unit_vectors(3, 9))
    writer.consolidate()
    writer.close()
    path = writer.dir / writer.meta.vectors
    np.save(path, np.ones((2, DIM), dtype=np.float32))  # a well-formed file, wrong count
    reader = Store.open(writer.dir)
    for _ in range(2):  # a failed check is not cached as a success
        with pytest.raises(IndexCorruptError,
                           match=r"holds \(2, 8\).*meta.json says \(3, 8\) float32; `build_index\(.*\)` repairs the index$"):
            reader.vectors()
    reader.close()


def test_a_writer_drops_unreadable_vectors_and_keeps_pending_chunks(writer):
    writer.add_chunk(records(["a.jpg", "b.jpg", "c.jpg"]), unit_vectors(3, 10))
    writer.consolidate()
    pending = unit_vectors(1, 11)
    writer.add_chunk(records(["d.jpg"]), pending)  # embedded, not yet consolidated
    writer.close()
    path = writer.dir / writer.meta.vectors
    path.write_bytes(path.read_bytes()[:200])  # truncated mid-array

    with Store.open(writer.dir, write=True) as repaired:
        # The lost rows left the manifest (the next update embeds their files again);
        # the pending chunk was committed; the index is consistent at once.
        assert repaired.meta.generation == 2 and repaired.meta.count == 1
        assert repaired.entry("a.jpg") is None
        assert repaired.paths_by_row() == ["d.jpg"]
        np.testing.assert_array_equal(repaired.vectors(), pending)
    assert not path.exists()
    with Store.open(writer.dir) as reader:
        assert reader.meta.count == 1


def test_an_index_written_before_generation_snapshots_is_read_and_upgraded(writer):
    writer.add_chunk(records(["b.jpg", "c.jpg"]), unit_vectors(2, 12))
    writer.consolidate()
    writer.close()
    import sqlite3

    db = sqlite3.connect(writer.dir / "manifest.sqlite")  # what an older vsearch wrote
    db.execute("DROP TABLE committed")
    db.execute("DELETE FROM kv WHERE key IN ('snapshots', 'previous_files')")
    db.commit()
    db.close()
    with Store.open(writer.dir) as reader:
        assert reader.paths_by_row() == ["b.jpg", "c.jpg"] and reader.entry("c.jpg").row == 1
        with Store.open(writer.dir, write=True) as upgraded:
            upgraded.add_chunk(records(["a.jpg"]), unit_vectors(1, 13))
            upgraded.consolidate()
        assert reader.paths_by_row() == ["b.jpg", "c.jpg"]  # its generation is still mapped
    with Store.open(writer.dir) as reader:
        assert reader.paths_by_row() == ["a.jpg", "b.jpg", "c.jpg"]


def test_a_bug_while_salvaging_a_rebuild_is_raised_not_taken_for_damage(tmp_path, monkeypatch):
    """rebuild_files forgives damage only: a programming error (here a KeyError from the
    manifest) must not be swallowed, which would silently embed the whole folder again."""
    from vsearch.storage import store as store_module
    from vsearch.storage.manifest import Manifest

    index_dir = tmp_path / "idx"
    with Store.open(index_dir, write=True) as s:
        s.bind(tmp_path, "fake")

    def broken(self):
        raise KeyError("a bug")

    monkeypatch.setattr(Manifest, "salvage", broken)
    with pytest.raises(KeyError):
        store_module.rebuild_files(index_dir)
