"""Damage and faults in the index directory: each ends in a repaired index or one ``error:`` line.

Through the real CLI (in-process, the fast ``fake`` model), and a real process where Annoy
could crash it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, make_photo
from tests.helpers import cli, fails, ok
from vsearch import atomic
from vsearch.storage import manifest
from vsearch.storage import vectorfiles
from vsearch.errors import VsearchError
from vsearch.storage.store import MANIFEST_FILE, META_FILE, Store, file_digest

#: How many photos the shared ``photos`` fixture (conftest) makes for these tests.
PHOTOS = 5
TREES = 3


def top_hit(photos: Path, name: str, *extra: object) -> str:
    result = ok(cli("query", photos / name, "--format", "paths", "--k", "1", *extra))
    return result.stdout.strip()


def no_temporaries(index_dir: Path) -> list[Path]:
    return [p for p in index_dir.rglob("*") if p.name.endswith(".tmp")]


# --- A1: a chunk that cannot be read ---------------------------------------------------------


def _pending_chunk(index_dir: Path, photos: Path, names: list[str]) -> Path:
    """What a killed run leaves: a committed chunk for ``names`` that no generation holds yet."""
    records = []
    for name in names:
        st = (photos / name).stat()
        records.append((name, st.st_size, st.st_mtime_ns, file_digest((photos / name).read_bytes())))
    with Store.open(index_dir, write=True) as store:
        number = int(store.manifest.get("next_chunk", "0"))
        store.add_chunk(records, np.eye(len(names), 48, dtype=np.float32))
    return vectorfiles.chunk_path(index_dir, number)


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage"])
def test_an_unreadable_chunk_is_embedded_again_and_nothing_else_is_lost(built, photos, fake_model, damage, caplog):
    for i in (5, 6):
        make_photo(photos / f"p{i}.jpg", seed=i)
    chunk = _pending_chunk(built, photos, ["p5.jpg", "p6.jpg"])
    if damage == "delete":
        chunk.unlink()
    elif damage == "truncate":
        chunk.write_bytes(chunk.read_bytes()[:150])
    else:
        chunk.write_bytes(b"\x93NUMPY garbage" * 20)
    calls = fake_model.calls
    result = ok(cli("build-index", photos))
    # A logger warning: the CLI process prints it on stderr (pytest captures it here).
    assert re.search(rf"warning: chunk {re.escape(str(chunk))} is (missing|damaged).*2 image\(s\) will be embedded again",
                     caplog.text), caplog.text
    assert "embedded 2, unchanged 5" in result.stderr
    assert fake_model.calls > calls
    assert top_hit(photos, "p6.jpg") == str(photos / "p6.jpg")
    with Store.open(built) as store:
        assert store.meta.count == 7 and len(store.paths_by_row()) == 7


def test_a_chunk_lost_during_consolidation_costs_only_its_files(built, photos, fake_model):
    make_photo(photos / "p5.jpg", seed=5)
    chunk = _pending_chunk(built, photos, ["p5.jpg"])
    with Store.open(built, write=True) as store:
        chunk.unlink()  # gone while the writer runs (after its checks at open)
        meta = store.consolidate()
    assert meta.count == 5
    ok(cli("embed", photos, "-q"))
    assert top_hit(photos, "p5.jpg") == str(photos / "p5.jpg")


# --- A2: an indexed file that turns unreadable -------------------------------------------------


def test_an_indexed_file_that_turns_bad_leaves_the_index_at_the_next_run(built, photos, fake_model):
    (photos / "p3.jpg").write_bytes(os.urandom(5000))
    result = ok(cli("build-index", photos))
    assert "p3.jpg" in result.stderr
    assert top_hit(photos, "p0.jpg") == str(photos / "p0.jpg")
    with Store.open(built) as store:
        assert store.meta.count == 4 and "p3.jpg" not in store.paths_by_row()
        assert store.skipped()[0][0] == "p3.jpg"
    ok(cli("build-index", photos, "-q"))  # and re-runs stay consistent
    assert top_hit(photos, "p1.jpg") == str(photos / "p1.jpg")


# --- A3: a full disk (or a failing one) during a commit ------------------------------------------


def _count_writes(monkeypatch, fail_at: int | None = None, code: int = errno.ENOSPC) -> list[int]:
    """Route every write and fsync through a counter; the ``fail_at``-th raises ``code``."""
    seen = [0]
    real_write, real_sync = atomic.write_some, atomic.sync

    def counted(real):
        def call(*args):
            seen[0] += 1
            if seen[0] == fail_at:
                raise OSError(code, os.strerror(code))
            return real(*args)
        return call

    monkeypatch.setattr(atomic, "write_some", counted(real_write))
    monkeypatch.setattr(atomic, "sync", counted(real_sync))
    return seen


def test_each_write_of_a_commit_failing_leaves_the_old_generation_and_one_error_line(
        built, photos, fake_model, tmp_path, monkeypatch):
    make_photo(photos / "new.jpg", seed=50)
    template = tmp_path / "template"
    shutil.copytree(built, template)
    with monkeypatch.context() as m:
        writes = _count_writes(m)
        ok(cli("build-index", photos, "-q", "--trees", "3"))
    total = writes[0]
    assert total >= 8  # chunk, vectors, meta.json, Annoy, meta.json: data and fsync each
    for fail_at in range(1, total + 1):
        for code, said in ((errno.ENOSPC, "no space left on device writing"), (errno.EIO, "input/output error writing")):
            if code == errno.EIO and fail_at % 3:
                continue  # EIO takes the same path: a sample of the writes is enough
            shutil.rmtree(built)
            shutil.copytree(template, built)
            with monkeypatch.context() as m:
                _count_writes(m, fail_at, code)
                fails(cli("build-index", photos, "-q", "--trees", "3"), said)
            assert not no_temporaries(built), fail_at
            assert top_hit(photos, "p0.jpg") == str(photos / "p0.jpg")  # the old generation answers
    ok(cli("build-index", photos, "-q", "--trees", "3"))  # and the next run, with space, finishes
    assert top_hit(photos, "new.jpg") == str(photos / "new.jpg")


class _FullDisk:
    """A connection whose ``fail_at``-th COMMIT fails as SQLite does on a full disk."""

    def __init__(self, db: sqlite3.Connection, fail_at: int) -> None:
        self._db, self._left = db, fail_at

    def execute(self, sql, *args):
        if sql == "COMMIT":
            self._left -= 1
            if self._left == 0:
                raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_full_disk_in_a_manifest_transaction_is_one_error_line(built, photos, fake_model, monkeypatch, fail_at):
    make_photo(photos / "new.jpg", seed=50)
    real_open = manifest.Manifest.open.__func__

    def opening(cls, path, *, write):
        opened = real_open(cls, path, write=write)
        if write:
            opened.db = _FullDisk(opened.db, fail_at)
        return opened

    with monkeypatch.context() as m:
        m.setattr(manifest.Manifest, "open", classmethod(opening))
        fails(cli("build-index", photos, "-q"),
              rf"no space left on device writing {re.escape(str(built / MANIFEST_FILE))}")
    assert not no_temporaries(built)
    assert top_hit(photos, "p0.jpg") == str(photos / "p0.jpg")
    ok(cli("build-index", photos, "-q"))
    assert top_hit(photos, "new.jpg") == str(photos / "new.jpg")


def test_merged_vectors_are_written_without_a_writable_memory_map(built, photos, fake_model, monkeypatch):
    # A write through a map on a full disk is a SIGBUS no handler turns into a message.
    real = np.lib.format.open_memmap

    def no_map(*args, **kwargs):
        if kwargs.get("mode", args[1] if len(args) > 1 else "r+") != "r":
            raise AssertionError("np.lib.format.open_memmap used to write")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", no_map)
    make_photo(photos / "new.jpg", seed=50)
    ok(cli("embed", photos, "-q"))
    assert top_hit(photos, "new.jpg") == str(photos / "new.jpg")


# --- A5: an Annoy file truncated at a node boundary ---------------------------------------------


def _query_in_a_process(photos: Path, index_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "vsearch", "query", str(photos / "p0.jpg"), "--approximate",
                           "--index-dir", str(index_dir)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(("recorded", "cut"), [(True, 1), (True, 6), (True, 8), (False, 6), (False, 8)])
def test_an_annoy_file_cut_at_a_node_boundary_is_refused_before_annoy_maps_it(built, photos, recorded, cut):
    # 5 images, 3 trees: 5 item nodes, 3 roots, 3 copies of them. Cut 6 or more, Annoy crashed.
    meta = json.loads((built / META_FILE).read_text())
    ann = built / meta["ann"]["file"]
    if not recorded:
        meta["ann"].pop("size", None)
        (built / META_FILE).write_text(json.dumps(meta))
    else:
        assert meta["ann"]["size"] == ann.stat().st_size
    node = 12 + 4 * meta["dim"]
    data = ann.read_bytes()
    ann.write_bytes(data[:len(data) - cut * node])
    result = _query_in_a_process(photos, built)
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read the Annoy index {ann}"), result.stderr
    assert "build-index" in lines[0]
    ok(cli("build-index", photos, "-q", "--trees", "3"))  # which rebuilds it
    assert _query_in_a_process(photos, built).returncode == 0


# --- A10 and B: damaged or edited metadata, and the --rebuild that repairs it -------------------


def _vectors_by_path(index_dir: Path) -> dict[str, np.ndarray]:
    with Store.open(index_dir) as store:
        return dict(zip(store.paths_by_row(), np.array(store.vectors())))


@pytest.mark.parametrize("damage", ["meta-garbage", "meta-root-edited", "meta-root-not-a-string",
                                    "manifest-garbage", "manifest-kv-garbage"])
def test_damaged_or_edited_metadata_is_refused_with_one_remedy_and_rebuild_repairs_it(
        built, photos, fake_model, tmp_path, damage):
    before = _vectors_by_path(built)
    meta_path = built / META_FILE
    meta = json.loads(meta_path.read_text())
    if damage == "meta-garbage":
        meta_path.write_bytes(b"{\x00 not json")
    elif damage == "meta-root-edited":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        meta_path.write_text(json.dumps({**meta, "root": str(elsewhere)}))
    elif damage == "meta-root-not-a-string":
        meta_path.write_text(json.dumps({**meta, "root": 123}))
    elif damage == "manifest-garbage":
        (built / MANIFEST_FILE).write_bytes(b"this is not a database" * 200)
    else:
        db = sqlite3.connect(built / MANIFEST_FILE)
        db.execute("UPDATE kv SET value = 'x' WHERE key = 'generation'")
        db.commit()
        db.close()
    remedy = r"`vsearch build-index \S+ --rebuild`"
    fails(cli("query", photos / "p0.jpg"), remedy)
    fails(cli("build-index", photos, "-q"), remedy)

    calls = fake_model.calls
    result = ok(cli("build-index", photos, "--rebuild"))
    assert top_hit(photos, "p0.jpg") == str(photos / "p0.jpg")
    after = _vectors_by_path(built)
    assert sorted(after) == sorted(before)
    for path, vector in before.items():
        np.testing.assert_allclose(after[path], vector, atol=1e-6)
    if damage.startswith("meta"):  # the manifest and vectors were sound: nothing is decoded again
        assert "embedded 0, unchanged 5" in result.stderr and fake_model.calls == calls
    assert not list(built.glob("*.tmp"))


def test_a_rebuild_for_another_folder_keeps_nothing(built, photos, fake_model, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    make_photo(other / "q0.jpg", seed=80)
    # --model fake: a new folder starts from the default model otherwise, which is slow to load.
    ok(cli("build-index", other, "--rebuild", "--model", "fake", "-q"))
    assert _vectors_by_path(built).keys() == {"q0.jpg"}


def test_index_dir_that_is_a_file_or_unwritable_is_one_clear_error(tmp_path, photos, fake_model, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for write in (False, True):
        with pytest.raises(VsearchError, match=f"^index_dir={afile} is a file, not a folder"):
            Store.open(afile, write=write)

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    fails(cli("build-index", photos, "--model", "fake", "--index-dir", tmp_path / "ro" / "idx"),
          r"cannot write to the index folder .*ro/idx \(permission denied\); choose another --index-dir")


def test_a_read_only_manifest_is_one_error_line(built, photos, fake_model, monkeypatch):
    real_open = manifest.Manifest.open.__func__

    def opening(cls, path, *, write):
        opened = real_open(cls, path, write=write)
        if write:
            opened.db = _ReadOnly(opened.db)
        return opened

    monkeypatch.setattr(manifest.Manifest, "open", classmethod(opening))
    make_photo(photos / "new.jpg", seed=50)
    fails(cli("build-index", photos, "-q"), rf"permission denied writing {re.escape(str(built / MANIFEST_FILE))}")


class _ReadOnly(_FullDisk):
    def execute(self, sql, *args):
        if sql == "BEGIN IMMEDIATE":
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return self._db.execute(sql, *args)

    def __init__(self, db: sqlite3.Connection) -> None:
        super().__init__(db, 0)


def test_an_annoy_build_the_disk_cannot_hold_is_refused_before_annoy_maps_its_file(built, photos, monkeypatch):
    # Annoy builds through a memory map: on a full disk that would be a Bus error.
    from collections import namedtuple

    from vsearch.vectors import nearest as index

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(index.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    fails(cli("build-index", photos, "-q", "--trees", "7"), r"no space left on device writing .*index\.\d+\.ann.*MB are free")
    assert not no_temporaries(built)
    assert top_hit(photos, "p0.jpg") == str(photos / "p0.jpg")
