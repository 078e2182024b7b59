"""Readers racing a writer that commits again and again: each sees one whole generation.

The writer runs in another process (as a second ``vsearch`` would); every vector is a function
of its path, so a reader that paired paths of one generation with vectors of another is caught.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest

from vsearch import identity
from vsearch.errors import IndexBusyError
from vsearch.storage.store import Store

DIM = 8


def model_id() -> identity.ModelId:
    return identity.ModelId(name="fake", family="fake", arch="test", pretrained="none", weights_sha256="0" * 64,
                            dim=DIM, preprocess=identity.Preprocess(32, "squash", (0.5,) * 3, (0.5,) * 3), pooling="avg")


def vector_of(path: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "little")
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def commit(store: Store, names: list[str]) -> None:
    store.add_chunk([(n, 1, 1, f"d-{n}") for n in names], np.stack([vector_of(n) for n in names]))
    store.consolidate()


def writer(index_dir: str, rounds: int, started) -> None:
    """Each round adds a file that sorts first (every row moves), drops one, moves one."""
    with Store.open(Path(index_dir), write=True) as store:
        started.set()
        for i in range(rounds):
            new = f"a{rounds - i:05d}.jpg"
            store.add_chunk([(new, 1, 1, f"d-{new}")], vector_of(new)[None])
            if i % 3 == 1:
                store.mark_deleted([store.paths_by_row()[-1]])
            store.consolidate()
            time.sleep(0.02)  # a real run commits once, after embedding: far rarer than this


def check_whole(store: Store) -> int:
    paths = store.paths_by_row()
    vectors = np.asarray(store.vectors())
    assert len(paths) == len(vectors) == store.meta.count
    for row, path in enumerate(paths):
        np.testing.assert_array_equal(vectors[row], vector_of(path), err_msg=f"row {row} {path}")
    entry = store.entry(paths[0])
    assert entry is not None and entry.row == 0
    assert store.path_of_row(len(paths) - 1) == paths[-1]
    return store.meta.generation


def test_readers_see_one_whole_generation_while_a_writer_commits(tmp_path):
    index_dir = tmp_path / "idx"
    with Store.open(index_dir, write=True) as store:
        store.bind(tmp_path / "photos", "fake")
        store.bind_model(model_id())
        commit(store, [f"m{i:03d}.jpg" for i in range(40)])
    long_lived = Store.open(index_dir)
    first = check_whole(long_lived)

    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    proc = ctx.Process(target=writer, args=(str(index_dir), 60, started))
    proc.start()
    started.wait(30)
    seen: set[int] = set()
    opened = told_to_reopen = 0
    try:
        while proc.is_alive() or opened < 5:
            with Store.open(index_dir) as reader:  # opening never fails
                try:
                    seen.add(check_whole(reader))  # and what it reads is one generation, never a mix
                except IndexBusyError as exc:  # unless two commits passed while it looked
                    assert "updated twice while this process had it open" in str(exc)
                    told_to_reopen += 1
            opened += 1
    finally:
        proc.join(60)
    assert proc.exitcode == 0
    assert len(seen) > 3, seen  # the readers did overlap many commits
    assert told_to_reopen < opened / 4, (told_to_reopen, opened)

    # A process that held the index open across the commits still pairs its own paths and
    # vectors, or is told plainly to open it again; never another generation's paths.
    try:
        assert check_whole(long_lived) == first
    except IndexBusyError as exc:
        assert "updated twice while this process had it open" in str(exc)
    long_lived.close()


def test_a_reader_open_across_one_commit_keeps_its_generation(tmp_path):
    index_dir = tmp_path / "idx"
    with Store.open(index_dir, write=True) as store:
        store.bind(tmp_path / "photos", "fake")
        store.bind_model(model_id())
        commit(store, ["b.jpg", "c.jpg"])
        reader = Store.open(index_dir)
        commit(store, ["a.jpg"])  # every row moves down one
        store.move(store.entry("c.jpg"), "z.jpg", 1, 1)
        assert check_whole(reader) == 1 and reader.paths_by_row() == ["b.jpg", "c.jpg"]
        with Store.open(index_dir) as fresh:
            assert fresh.paths_by_row() == ["a.jpg", "b.jpg", "c.jpg"]  # the move is not committed yet
        store.consolidate()
        with pytest.raises(IndexBusyError, match="open it again"):
            reader.paths_by_row()  # two commits on: its generation is gone
    reader.close()
    with Store.open(index_dir) as fresh:
        assert fresh.paths_by_row() == ["a.jpg", "b.jpg", "z.jpg"]


def test_a_reader_whose_vectors_file_went_with_two_commits_is_told_to_reopen(tmp_path):
    # A reader reads meta.json, then maps its vectors file later; two commits in between remove
    # that file (the writer keeps only the previous generation's). That is "open it again", as a
    # lookup that finds its generation gone, never "damaged, rebuild it" (seen once under load).
    index_dir = tmp_path / "idx"
    with Store.open(index_dir, write=True) as store:
        store.bind(tmp_path / "photos", "fake")
        store.bind_model(model_id())
        commit(store, ["b.jpg", "c.jpg"])
        with Store.open(index_dir) as reader:
            commit(store, ["a.jpg"])
            commit(store, ["d.jpg"])
            with pytest.raises(IndexBusyError, match="open it again"):
                reader.vectors()
    with Store.open(index_dir) as fresh:
        assert check_whole(fresh) == 3
