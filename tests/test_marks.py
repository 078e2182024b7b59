"""Not-duplicate marks: an append-only, fsynced file keyed by content digest that outlives
rebuilds, stale-file cleanup and renames."""

from __future__ import annotations

import errno
import json

import pytest

from tests.conftest import make_photo
from tests.helpers import cli, fails, ok
from vsearch import atomic
from vsearch.duplicates import marks
from vsearch.errors import VsearchError
from vsearch.storage.store import Store, file_digest


def test_marks_are_pairs_of_digests_in_any_order(tmp_path):
    assert marks.not_duplicates(tmp_path) == set()
    marks.add_not_duplicate(tmp_path, "b" * 32, "a" * 32, paths=("x.jpg", "y.jpg"))
    marks.add_not_duplicate(tmp_path, "a" * 32, "b" * 32)  # the same pair again: one line
    marks.add_not_duplicate(tmp_path, "a" * 32, "c" * 32)
    assert marks.not_duplicates(tmp_path) == {frozenset(("a" * 32, "b" * 32)), frozenset(("a" * 32, "c" * 32))}
    lines = [json.loads(line) for line in marks.marks_path(tmp_path).read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["paths"] == ["x.jpg", "y.jpg"]
    with pytest.raises(VsearchError, match="same bytes"):
        marks.add_not_duplicate(tmp_path, "d" * 32, "d" * 32)


def test_each_mark_is_fsynced_and_a_torn_line_is_skipped(tmp_path, monkeypatch):
    synced = []
    real_sync = atomic.sync
    monkeypatch.setattr(atomic, "sync", lambda fd: (synced.append(fd), real_sync(fd)))
    marks.add_not_duplicate(tmp_path, "a" * 32, "b" * 32)
    assert len(synced) == 1
    with open(marks.marks_path(tmp_path), "ab") as fh:
        fh.write(b'{"a": "ccc", "b"')  # a crash mid-line
    assert marks.not_duplicates(tmp_path) == {frozenset(("a" * 32, "b" * 32))}
    marks.add_not_duplicate(tmp_path, "e" * 32, "f" * 32)  # starts a line of its own
    assert marks.not_duplicates(tmp_path) == {frozenset(("a" * 32, "b" * 32)), frozenset(("e" * 32, "f" * 32))}


def test_a_full_disk_writing_a_mark_is_one_error_line(tmp_path, fake_model, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        make_photo(photos / f"p{i}.jpg", seed=i)
    ok(cli("build-index", photos, "--model", "fake", "-q"))

    def full(fh, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "write_some", full)
    fails(cli("duplicates", "--not-duplicate", photos / "p0.jpg", photos / "p1.jpg"), "no space left on device")


def test_marks_survive_a_rebuild_a_commit_and_a_rename(tmp_path, fake_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        make_photo(photos / f"p{i}.jpg", seed=i)
    index = tmp_path / "idx"
    ok(cli("build-index", photos, "--index-dir", index, "--model", "fake", "-q"))
    a, b = (file_digest((photos / n).read_bytes()) for n in ("p0.jpg", "p1.jpg"))
    marks.add_not_duplicate(index, a, b)
    (index / "undo").mkdir()
    (index / "undo" / "0001-x.jsonl").write_text("{}\n")
    make_photo(photos / "p9.jpg", seed=9)  # a new file: a new generation, then the stale-file cleanup
    ok(cli("build-index", photos, "--index-dir", index, "-q"))
    (photos / "p1.jpg").rename(photos / "renamed.jpg")
    ok(cli("build-index", photos, "--index-dir", index, "--rebuild", "-q"))
    with Store.open(index, write=True, rebuild=True):  # the library's own rebuild path, directly
        pass
    assert marks.not_duplicates(index) == {frozenset((a, b))}
    assert (index / "undo" / "0001-x.jsonl").read_text() == "{}\n"


def test_index_not_duplicate_through_the_api(tmp_path, fake_model):
    import vsearch

    photos = tmp_path / "photos"
    photos.mkdir()
    make_photo(photos / "a.jpg", seed=1)
    make_photo(photos / "b.jpg", seed=1, quality=50)  # the same picture, other bytes
    with vsearch.build_index(photos, tmp_path / "idx", model="fake") as idx:
        assert len(idx.duplicates(threshold=0.98)) == 1
        idx.not_duplicate(photos / "a.jpg", str(photos / "b.jpg"))
        assert idx.duplicates(threshold=0.98) == []
