"""Indexing a real folder: incremental, resumable, crash-safe, any format, hostile files.

Through the real CLI (in-process, typer's CliRunner) and ``indexer.update``, with the fast
``fake`` model; a few through real subprocesses (a run killed with SIGKILL, a lock held by
another process, a progress bar on a pseudo-terminal); one with the real default model (an
unchanged re-run imports no torch).
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import WRITERS, FakeEmbedder, make_photo
from tests.helpers import cli, ok
from vsearch.retrieval import freshness
from vsearch.imaging import images
from vsearch.indexing import pipeline as indexer
from vsearch.models import loading as models
from vsearch.storage.store import CHUNK_DIR, META_FILE, Store

ROOT = Path(__file__).resolve().parent.parent
def summary_line(result) -> str:
    return next(ln for ln in result.stderr.splitlines() if ln.startswith("embedded "))


def counts(result) -> dict[str, int]:
    """``embedded 3, unchanged 2, ...`` -> {"embedded": 3, "unchanged": 2, ...}."""
    line = summary_line(result).split(" in ")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(\w+) (\d+)", line)}


def vectors_by_path(index_dir: Path) -> dict[str, np.ndarray]:
    with Store.open(index_dir) as store:
        return dict(zip(store.paths_by_row(), np.array(store.vectors())))


def age(folder: Path, seconds: float = 3600) -> None:
    """Move every mtime under ``folder`` back, so a later change is always a different mtime
    (file timestamps tick in jiffies: two writes a few ms apart may share one)."""
    past = time.time() - seconds
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            os.utime(Path(dirpath) / name, (past, past))
        os.utime(dirpath, (past, past))


@pytest.fixture
def loads(monkeypatch):
    """Register ``fake``; count how often it is loaded and with which device."""
    embedder = FakeEmbedder("fake")
    record: dict = {"loads": 0, "devices": [], "embedder": embedder}

    def loader(name, device, threads):
        record["loads"] += 1
        record["devices"].append(device)
        return embedder

    models.register("fake", loader)
    yield record
    models.unregister("fake")


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):
        make_photo(folder / f"p{i}.jpg", size=(96, 72), seed=i)
    for i in range(6, 9):
        make_photo(folder / "sub" / f"p{i}.png", size=(96, 72), seed=i)
    age(folder)
    return folder


# --------------------------------------------------------------------------- incremental


def test_unchanged_rerun_reads_no_pixels_and_loads_no_model(photos, loads, isolated_index_dir, monkeypatch):
    first = ok(cli("embed", photos, "--model", "fake"))
    assert counts(first) == {"embedded": 9, "unchanged": 0, "moved": 0, "copies": 0, "removed": 0, "skipped": 0}
    assert loads["loads"] == 1
    calls = loads["embedder"].calls

    def no_pixels(*a, **k):
        raise AssertionError("an unchanged re-run decoded an image")

    monkeypatch.setattr(images, "decode_for_model", no_pixels)
    again = ok(cli("build-index", photos))
    assert counts(again)["embedded"] == 0 and counts(again)["unchanged"] == 9
    assert loads["loads"] == 1 and loads["embedder"].calls == calls


def test_modified_file_is_reembedded_and_touched_file_is_not(photos, loads, isolated_index_dir, tmp_path):
    ok(cli("embed", photos, "--model", "fake"))
    before = vectors_by_path(isolated_index_dir)

    make_photo(photos / "p1.jpg", size=(96, 72), seed=101)  # new content, same path
    os.utime(photos / "p2.jpg")  # same content, new mtime: judged by digest, not re-embedded
    result = ok(cli("embed", photos))
    assert counts(result)["embedded"] == 1 and counts(result)["unchanged"] == 8

    after = vectors_by_path(isolated_index_dir)
    assert not np.allclose(after["p1.jpg"], before["p1.jpg"])
    assert np.array_equal(after["p2.jpg"], before["p2.jpg"])
    # The new vector is what a fresh index makes of the new content.
    ok(cli("embed", photos, "--index-dir", tmp_path / "fresh", "--model", "fake"))
    assert np.array_equal(after["p1.jpg"], vectors_by_path(tmp_path / "fresh")["p1.jpg"])

    # And the touched file's new mtime is remembered: the next run does nothing.
    assert counts(ok(cli("embed", photos)))["embedded"] == 0
    assert loads["loads"] == 3


def test_rename_and_move_keep_their_vectors_without_the_model(photos, loads, isolated_index_dir):
    ok(cli("embed", photos, "--model", "fake"))
    before = vectors_by_path(isolated_index_dir)
    (photos / "p0.jpg").rename(photos / "renamed.jpg")
    (photos / "new").mkdir()
    (photos / "sub" / "p6.png").rename(photos / "new" / "moved.png")

    result = ok(cli("embed", photos))
    assert counts(result) == {"embedded": 0, "unchanged": 7, "moved": 2, "copies": 0, "removed": 0,
                                    "skipped": 0}
    assert loads["loads"] == 1  # only the first run's
    after = vectors_by_path(isolated_index_dir)
    assert sorted(after) == sorted(set(before) - {"p0.jpg", "sub/p6.png"} | {"renamed.jpg", "new/moved.png"})
    assert np.array_equal(after["renamed.jpg"], before["p0.jpg"])
    assert np.array_equal(after["new/moved.png"], before["sub/p6.png"])


def test_copy_shares_the_vector(photos, loads, isolated_index_dir):
    ok(cli("embed", photos, "--model", "fake"))
    shutil.copy(photos / "p3.jpg", photos / "sub" / "copy_of_p3.jpg")
    result = ok(cli("embed", photos))
    assert counts(result)["copies"] == 1 and counts(result)["embedded"] == 0
    after = vectors_by_path(isolated_index_dir)
    assert np.array_equal(after["sub/copy_of_p3.jpg"], after["p3.jpg"])


def test_deleted_files_leave_vectors_manifest_and_annoy_index(photos, loads, isolated_index_dir):
    ok(cli("build-index", photos, "--model", "fake", "--trees", "5"))
    (photos / "p4.jpg").unlink()
    shutil.rmtree(photos / "sub")
    result = ok(cli("build-index", photos, "--trees", "5"))
    assert counts(result)["removed"] == 4 and counts(result)["embedded"] == 0
    assert "holds 5 images" in summary_line(result)

    from annoy import AnnoyIndex

    with Store.open(isolated_index_dir) as store:
        assert sorted(store.paths_by_row()) == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "p5.jpg"]
        assert [e.path for e in store.entries()] == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "p5.jpg"]
        assert store.vectors().shape == (5, 48)
        ann = AnnoyIndex(48, "angular")
        ann.load(str(store.ann_path()))
        assert ann.get_n_items() == 5
    hits = ok(cli("query", photos / "p0.jpg", "--k", "10", "--format", "paths", "--approximate"))
    assert sorted(Path(p).name for p in hits.stdout.split()) == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "p5.jpg"]


# --------------------------------------------------------------------------- resumable


CHILD = r'''
import os, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.conftest import FakeEmbedder
from vsearch.indexing import pipeline as indexer
from vsearch.models import loading as models
from vsearch.storage.store import Store

class Slow(FakeEmbedder):
    def embed_images(self, batch):
        time.sleep(float(os.environ.get("SLOW_S", "0")))
        return super().embed_images(batch)

models.register("slowfake", lambda name, device, threads: Slow("slowfake"))
mode = sys.argv[1]
if mode == "update":  # index a folder in small chunks
    with Store.open(Path(sys.argv[3]), write=True) as store:
        indexer.update(store, Path(sys.argv[2]), indexer.IndexOptions("slowfake", batch_size=4, chunk_size=8))
    print("finished", flush=True)
elif mode == "hold":  # hold an index's write lock until killed
    store = Store.open(Path(sys.argv[2]), write=True)
    print("held", flush=True)
    time.sleep(60)
else:  # the CLI itself
    from vsearch.cli.main import app
    app(sys.argv[2:], prog_name="vsearch")
'''


@pytest.fixture
def child(tmp_path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD.format(root=str(ROOT)))
    return path


def test_run_killed_mid_way_resumes_to_the_same_vectors(tmp_path, child, isolated_index_dir):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(48):
        make_photo(folder / f"img{i:02d}.jpg", size=(64, 48), seed=i)
    index = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(child), "update", str(folder), str(index)],
                            env={**os.environ, "SLOW_S": "0.2"}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # Three chunk files: at least two of 8 committed (the last may lack its manifest rows).
        while len(list((index / CHUNK_DIR).glob("0*.npy"))) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no chunk committed in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (index / META_FILE).exists()  # it never got to commit a generation

    fast = FakeEmbedder("slowfake")
    models.register("slowfake", lambda name, device, threads: fast)
    try:
        resumed = ok(cli("embed", folder, "--index-dir", index))
        done_before = counts(resumed)["unchanged"]
        assert done_before >= 16 and counts(resumed)["embedded"] == 48 - done_before
        ok(cli("embed", folder, "--index-dir", tmp_path / "straight", "--model", "slowfake"))
    finally:
        models.unregister("slowfake")
    got, want = vectors_by_path(index), vectors_by_path(tmp_path / "straight")
    assert list(got) == list(want) == [f"img{i:02d}.jpg" for i in range(48)]
    for path in want:
        assert np.array_equal(got[path], want[path]), path


def test_ctrl_c_keeps_committed_chunks(photos, loads, isolated_index_dir, monkeypatch):
    fake = loads["embedder"]
    real = fake.embed_images

    def interrupted(batch):
        if fake.calls == 3:  # the fourth batch
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(fake, "embed_images", interrupted)
    with Store.open(isolated_index_dir, write=True) as store, pytest.raises(KeyboardInterrupt):
        indexer.update(store, photos, indexer.IndexOptions("fake", batch_size=2, chunk_size=4))
    monkeypatch.setattr(fake, "embed_images", real)
    result = ok(cli("embed", photos))
    # 3 batches of 2 made it: one full chunk of 4 plus the 2 flushed on the way out.
    assert counts(result)["unchanged"] == 6 and counts(result)["embedded"] == 3


def test_cli_reports_an_interrupt_in_one_line(photos, loads, monkeypatch):
    def interrupted(batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(loads["embedder"], "embed_images", interrupted)
    result = cli("embed", photos, "--model", "fake")
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted: work done so far is saved; run the same command again to resume"


def test_second_writer_is_refused_with_a_clear_message(photos, loads, child, isolated_index_dir):
    ok(cli("embed", photos, "--model", "fake"))
    holder = subprocess.Popen([sys.executable, str(child), "hold", str(isolated_index_dir)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = cli("embed", photos)
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            f"error: index at {isolated_index_dir} is being written by another vsearch process "
            f"(pid {holder.pid}); wait for it to finish"
        )
        # Readers are not blocked by a writer.
        ok(cli("query", photos / "p0.jpg", "--k", "1"))
    finally:
        holder.kill()
        holder.wait()
    ok(cli("embed", photos))  # the lock dies with its holder


def test_memory_is_bounded_by_batch_and_chunk(tmp_path, loads, isolated_index_dir, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        make_photo(folder / f"img{i:02d}.jpg", size=(48, 36), seed=i)
    fake = loads["embedder"]
    decoded = {"n": 0}
    in_flight: list[int] = []
    chunk_sizes: list[int] = []
    real_decode, real_embed = images.decode_for_model, fake.embed_images
    embedded = {"n": 0}

    def decode(*a, **k):
        decoded["n"] += 1
        return real_decode(*a, **k)

    def embed(batch):
        in_flight.append(decoded["n"] - embedded["n"])  # decoded, not yet embedded
        embedded["n"] += len(batch)
        return real_embed(batch)

    real_add = Store.add_chunk

    def add_chunk(self, records, vectors):
        chunk_sizes.append(len(vectors))
        return real_add(self, records, vectors)

    monkeypatch.setattr(images, "decode_for_model", decode)
    monkeypatch.setattr(fake, "embed_images", embed)
    monkeypatch.setattr(Store, "add_chunk", add_chunk)
    with Store.open(isolated_index_dir, write=True) as store:
        indexer.update(store, folder, indexer.IndexOptions("fake", batch_size=3, chunk_size=9, workers=4))
    assert sum(chunk_sizes) == 60 and max(chunk_sizes) <= 9 + 3 - 1
    assert max(in_flight) <= 4 * 3 + 3  # the prefetch window plus the batch being embedded


# --------------------------------------------------------------------------- formats, hostile files


FORMATS = {
    "a.jpg": WRITERS["jpeg"],
    "b.JPEG": WRITERS["jpeg"],
    "c.png": WRITERS["png"],
    "d.webp": WRITERS["webp"],
    "e.gif": WRITERS["gif"],
    "f.bmp": WRITERS["bmp"],
    "g.tif": WRITERS["tiff"],
    "h.TIFF": WRITERS["tiff-lzw"],
    "i.heic": WRITERS["heif"],
    "j.HEIF": WRITERS["heif"],
    "k.avif": WRITERS["avif"],
    "l.Png": WRITERS["png"],
}


def test_every_format_is_embedded_from_its_pixels(tmp_path, loads, isolated_index_dir):
    folder = tmp_path / "formats"
    folder.mkdir()
    expected = {}
    fake = loads["embedder"]
    for i, (name, save) in enumerate(FORMATS.items()):
        # Big blocks of colour: the fake model's 4x4 colour grid must survive every codec.
        rng = np.random.default_rng(i)
        cells = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(np.kron(cells, np.ones((24, 32, 1), dtype=np.uint8)))
        save(img, folder / name)
        expected[name] = fake.embed_images(images.to_model_array(img, 32, "squash")[None])[0]
    (folder / "notes.txt").write_text("not an image")

    result = ok(cli("embed", folder, "--model", "fake"))
    assert counts(result)["embedded"] == len(FORMATS) and counts(result)["skipped"] == 0
    got = vectors_by_path(isolated_index_dir)
    assert sorted(got) == sorted(FORMATS)
    for name, vector in expected.items():
        assert float(got[name] @ vector) > 0.97, name  # GIF: the first frame, not the blue one


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 2)) + chunk(b"IEND", b""))


def test_bombs_and_bad_files_are_named_skips(photos, loads, isolated_index_dir, monkeypatch):
    _png_claiming(photos / "bomb.png", 60000, 60000)
    make_photo(photos / "large.png", size=(400, 300), seed=50)
    good = (photos / "p0.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (photos / "text.jpg").write_text("hello")
    (photos / "empty.webp").write_bytes(b"")
    make_photo(photos / "locked.jpg", seed=51)
    real_open = os.open

    def os_open(path, *args, **kwargs):  # chmod 0 does not stop root: fail the open instead
        if Path(path).name == "locked.jpg":
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    result = ok(cli("embed", photos, "--model", "fake", "--max-pixels", "100000"))
    assert counts(result)["embedded"] == 9 and counts(result)["skipped"] == 6
    lines = result.stderr.splitlines()
    reasons = {m.group(1): m.group(2) for ln in lines if (m := re.match(r"skipped (\S+): (.*)", ln))}
    assert reasons["bomb.png"].startswith("image too large (60000x60000 = 3600 MP > limit 0.1 MP")
    assert reasons["large.png"].startswith("image too large (400x300 = 0.1 MP")
    assert "raise it with --max-pixels" in reasons["large.png"]
    assert reasons["truncated.jpg"].startswith("truncated or corrupt image")
    assert reasons["text.jpg"] == "not an image or unsupported format"
    assert reasons["empty.webp"] == "empty file"
    assert reasons["locked.jpg"] == "unreadable (Permission denied)"

    again = ok(cli("embed", photos, "--max-pixels", "100000"))
    assert "skipped 0 (+6 known)" in summary_line(again) and loads["loads"] == 1


def test_bad_folders_are_reported_and_the_run_goes_on(photos, loads, isolated_index_dir, monkeypatch):
    (photos / "sub" / "loop").symlink_to(photos, target_is_directory=True)
    locked = photos / "locked"
    locked.mkdir()
    make_photo(locked / "secret.jpg")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    bad = os.fsencode(photos) + b"/bad\xffname.jpg"
    shutil.copy(photos / "p1.jpg", bad)

    result = ok(cli("embed", photos, "--model", "fake"))
    assert counts(result)["embedded"] == 9
    assert f"not scanned {photos / 'sub' / 'loop'}: symlink loop" in result.stderr
    assert f"not scanned {locked}: unreadable directory (Permission denied)" in result.stderr
    assert "bad\ufffdname.jpg: file name is not valid UTF-8; rename it" in result.stderr


def test_hidden_folders_and_the_index_inside_the_folder_are_skipped(photos, loads):
    hidden = photos / ".thumbnails"
    hidden.mkdir()
    make_photo(hidden / "t.jpg")
    make_photo(photos / ".hidden.jpg")
    inside = photos / "vsearch-index"
    ok(cli("embed", photos, "--model", "fake", "--index-dir", inside))
    make_photo(inside / "stray.jpg")  # an image inside the index folder is never indexed
    result = ok(cli("embed", photos, "--index-dir", inside))
    assert counts(result)["embedded"] == 0 and counts(result)["unchanged"] == 9
    with Store.open(inside) as store:
        paths = store.paths_by_row()
    assert len(paths) == 9 and not [p for p in paths if p.startswith((".", "vsearch-index"))]


# --------------------------------------------------------------------------- options, progress, summary


def test_workers_and_device_options(photos, loads, isolated_index_dir, tmp_path):
    ok(cli("embed", photos, "--model", "fake", "--workers", "1", "--device", "cpu"))
    ok(cli("embed", photos, "--model", "fake", "--workers", "4", "--index-dir", tmp_path / "four"))
    assert loads["devices"] == ["cpu", "auto"]
    one, four = vectors_by_path(isolated_index_dir), vectors_by_path(tmp_path / "four")
    assert list(one) == list(four) and all(np.array_equal(one[p], four[p]) for p in one)
    assert cli("embed", photos, "--workers", "0").exit_code == 1  # a usage error is one `error:` line, status 1 (issue 14 B)


def test_summary_names_every_count_and_each_skip(photos, loads, isolated_index_dir):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = ok(cli("embed", photos, "--model", "fake"))
    assert result.stdout == ""  # everything but results goes to stderr
    line = summary_line(result)
    assert re.fullmatch(
        r"embedded 9, unchanged 0, moved 0, copies 0, removed 0, skipped 1 in \d+\.\ds; "
        rf"index {re.escape(str(isolated_index_dir))} holds 9 images \(fake\)", line), line
    assert "skipped broken.png: " in result.stderr
    assert ok(cli("embed", photos, "--quiet")).stderr == ""


def test_no_progress_bar_when_not_a_tty(photos, loads):
    result = ok(cli("embed", photos, "--model", "fake"))
    assert "img/s" not in result.stderr and "\x1b[" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def _run_in_pty(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its stdin/stdout/stderr
        try:
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, *argv], env)
        finally:
            os._exit(127)  # never return into pytest in the forked child
    out = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_progress_bar_on_a_terminal_and_not_with_quiet(photos, child, tmp_path):
    env = {**os.environ, "SLOW_S": "0.15", "COLUMNS": "120"}
    code, out = _run_in_pty([str(child), "cli", "embed", str(photos), "--model", "slowfake", "--batch-size", "2",
                             "--index-dir", str(tmp_path / "tty")], env)
    assert code == 0, out
    assert "embedding" in out and "img/s" in out and re.search(r"\d/9", out), out
    assert "embedded 9, unchanged 0" in out

    code, out = _run_in_pty([str(child), "cli", "embed", str(photos), "--model", "slowfake", "--quiet",
                             "--index-dir", str(tmp_path / "tty-quiet")], env)
    assert code == 0 and out.strip() == "", out


# --------------------------------------------------------------------------- staleness at query time


def test_query_warns_when_folders_change_and_not_after_embed(photos, loads, isolated_index_dir):
    ok(cli("build-index", photos, "--model", "fake"))
    quiet = ok(cli("query", photos / "p0.jpg", "--k", "2", "--format", "paths"))
    assert quiet.stderr == ""

    make_photo(photos / "sub" / "new.jpg", seed=77)
    result = ok(cli("query", photos / "p0.jpg", "--k", "2", "--format", "paths"))
    assert len(result.stdout.split()) == 2  # results still come
    assert result.stderr.strip() == (
        f"warning: {photos} changed since the index was built (1 folder differs); "
        f"run `vsearch embed {photos}` to update"
    )
    ok(cli("embed", photos))
    assert ok(cli("query", photos / "p0.jpg", "--k", "2")).stderr == ""


def test_query_warns_on_an_edit_in_place(photos, loads, isolated_index_dir):
    ok(cli("embed", photos, "--model", "fake"))
    make_photo(photos / "p2.jpg", size=(96, 72), seed=99)  # rewritten in place: its folder's mtime stays
    with Store.open(isolated_index_dir) as store:
        report = freshness.check(store)
    assert report.dirs_changed == 0 and report.files_changed == 1 and report.complete
    result = ok(cli("query", photos / "p0.jpg", "--k", "1"))
    assert "(1 sampled file differs)" in result.stderr


def test_freshness_check_is_time_boxed_and_notices_a_missing_folder(photos, loads, isolated_index_dir):
    ok(cli("embed", photos, "--model", "fake"))
    (photos / "p0.jpg").unlink()
    with Store.open(isolated_index_dir) as store:
        assert freshness.check(store).stale
        boxed = freshness.check(store, budget_s=0.0)
        assert not boxed.complete and boxed.dirs_checked == 0 and boxed.warning() is None
        assert {d for d, _ in store.dirs()} == {"", "sub"}
    shutil.rmtree(photos)
    with Store.open(isolated_index_dir) as store:
        assert freshness.check(store).warning() == (
            f"warning: the indexed folder {photos} is not there; results may point at missing files"
        )


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_unchanged_rerun_with_the_real_model_imports_no_torch(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(3):
        make_photo(folder / f"r{i}.jpg", size=(160, 120), seed=i)
    index = tmp_path / "real-index"
    first = ok(cli("embed", folder, "--index-dir", index))
    assert counts(first)["embedded"] == 3 and "(efficientnet-lite0)" in summary_line(first)

    code = (
        "import sys\nfrom vsearch.cli.main import app\n"
        "try:\n    app(sys.argv[1:], prog_name='vsearch')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\nsys.exit(code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, "embed", str(folder), "--index-dir", str(index)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "embedded 0, unchanged 3," in out.stderr
    assert "torch imported: False" in out.stderr


def test_openmp_threads_wait_passively_unless_the_user_chose():
    code = "import os\nfrom vsearch.models import loading as models\nmodels.passive_openmp()\nprint(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        run_env = env if given is None else {**env, "OMP_WAIT_POLICY": given}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=run_env, capture_output=True, text=True,
                             check=False)
        assert out.stdout.strip() == expected, out.stderr
