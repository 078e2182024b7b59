"""Hardening, round two (issue 20): a regression test for each item, through the real CLI.

1. Output options (``--html``, ``--sheet``, ``duplicates --html``, ``evaluate --report`` and
   ``--per-query``, ``judgments export -o``) write a FIFO or a character device in place and
   never replace it; a socket is refused.
2. A ``meta.json`` naming a generation the manifest no longer holds is one error line with the
   repair, not a reader that retries forever.
3. Label files and undo logs are read like images: a FIFO or a device is refused, never waited on.
5. What used to be a traceback is one ``error:`` line: a truncated head, huge numbers, names too
   long for the file system or not UTF-8, a negative seed, a hand-edited ``ivfpq`` record.
8. A NaN head says so; absurd values (epochs, k, verify, device, model) are refused; a remedy
   names the indexed folder instead of ``FOLDER``.

What used to hang runs in a subprocess with a time limit, so that a regression fails instead of
hanging the suite. Device files are made with ``os.mknod`` in tmp (root only), never a real one.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, FakeEmbedder, make_photo
from tests.helpers import cli, fails, ok
from vsearch import atomic

# --- helpers ---------------------------------------------------------------------------------

#: ``vsearch ARGS`` in a fresh process, with the fake model registered; a stale meta.json is
#: told after 0.2 s of retries instead of the 2 s a busy index is given.
_DRIVER = """
import sys
from tests.conftest import FakeEmbedder
from vsearch.models import loading
from vsearch.storage import store
store.COMMIT_WAIT_S = 0.2
fake = FakeEmbedder("fake")
loading.register("fake", lambda name, device, threads: fake)
from vsearch.cli.main import app
app(sys.argv[1:], prog_name="vsearch")
"""


def start(*args: object) -> subprocess.Popen[bytes]:
    """``vsearch ARGS`` in a subprocess (the test's environment: its index folder, its HOME)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", _DRIVER, *(os.fsencode(str(a)) for a in args)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def one_error_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float = 90) -> str:
    """The process ends within ``timeout`` with status 1 and one ``error:`` line matching ``pattern``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{proc.args[3:]!r} still running after {timeout} s")
    text = err.decode("utf-8", "replace")
    lines = text.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, text)
    assert lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines[0]
    assert out == b""
    return lines[0]


@pytest.fixture
def chardev(tmp_path):
    """A character device like /dev/null (1, 3), made in tmp; skipped where mknod is not allowed."""
    def make(name: str = "null") -> Path:
        path = tmp_path / name
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("mknod needs root")
        return path
    return make


class Drain:
    """A thread that opens a FIFO for reading and keeps what comes through it."""

    def __init__(self, fifo: Path) -> None:
        self.data = b""
        self._thread = threading.Thread(target=self._read, args=(fifo,), daemon=True)
        self._thread.start()

    def _read(self, fifo: Path) -> None:
        with open(fifo, "rb") as fh:
            self.data = fh.read()

    def join(self) -> bytes:
        self._thread.join(30)
        return self.data


@pytest.fixture
def groups_csv(photos, tmp_path) -> Path:
    path = tmp_path / "groups.csv"
    path.write_text("path,group\n" + "".join(f"{photos / f'p{i}.jpg'},{i % 2}\n" for i in range(6)))
    return path


def outputs(photos: Path, groups: Path, target: Path) -> dict[str, list[object]]:
    """Each command line whose output option writes ``target``."""
    return {
        "query --html": ["query", photos / "p0.jpg", "--html", target],
        "query --sheet": ["query", photos / "p0.jpg", "--sheet", target],
        "duplicates --html": ["duplicates", "--html", target],
        "evaluate --report": ["evaluate", "--groups", groups, "--report", target],
        "evaluate --per-query": ["evaluate", "--groups", groups, "--per-query", target],
        "judgments export -o": ["judgments", "export", "-o", target],
    }


OUTPUTS = list(outputs(Path(), Path(), Path()))


def judged(photos: Path, option: str) -> None:
    """A verdict for ``judgments export`` to write."""
    if option.startswith("judgments"):
        ok(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--relevant", "-q"))


# --- 1. output options never replace a FIFO or a device ----------------------------------------


@pytest.mark.parametrize("option", OUTPUTS)
def test_an_output_option_writes_a_character_device_in_place(built, photos, groups_csv, chardev, option):
    device = chardev()
    judged(photos, option)
    before = os.lstat(device)
    ok(cli(*outputs(photos, groups_csv, device)[option]))
    after = os.lstat(device)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino
    assert not list(device.parent.glob(".null.*.tmp"))  # no temporary left beside it


@pytest.mark.parametrize("option", OUTPUTS)
def test_an_output_option_writes_into_a_fifo_and_keeps_it(built, photos, groups_csv, tmp_path, option):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    judged(photos, option)
    reader = Drain(fifo)
    ok(cli(*outputs(photos, groups_csv, fifo)[option]))
    assert len(reader.join()) > 0  # what was written came through the pipe
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_an_output_fifo_that_nobody_reads_is_one_error_line(built, photos, tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "FIFO_WAIT_S", 0.2)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    fails(cli("query", photos / "p0.jpg", "--html", fifo), rf"cannot write {fifo}: it is a FIFO and nothing opened it")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_an_output_socket_is_refused_and_kept(built, photos, tmp_path):
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(path))
    fails(cli("query", photos / "p0.jpg", "--html", path), rf"cannot write {path}: it is a socket; give a file name")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_an_output_through_a_link_replaces_the_file_and_keeps_the_link(built, photos, tmp_path):
    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(real)
    ok(cli("query", photos / "p0.jpg", "--html", link))
    assert link.is_symlink() and real.read_text().startswith("<!")


# --- 2. a stale meta.json is an error, not a reader that waits forever -------------------------


def _stale(index: Path, generation: int = -1) -> None:
    meta = index / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "generation": generation}))


def test_a_meta_json_naming_a_gone_generation_is_one_error_line_in_every_reader(built, photos):
    pytest.importorskip("starlette")
    _stale(built)
    runs = [start(*args) for args in (["info"], ["query", photos / "p0.jpg"], ["duplicates"], ["undo"],
                                      ["serve", "--port", "1"])]
    for proc in runs:
        one_error_line(proc, rf"meta\.json names generation -1, which the manifest .* no longer holds .*"
                             rf"`vsearch build-index {photos}` rewrites it")


def test_a_meta_json_restored_from_two_builds_ago_is_told_and_a_build_repairs_it(built, photos):
    old = (built / "meta.json").read_bytes()
    for seed in (40, 41):  # two more commits: the restored meta.json's generation leaves the manifest
        make_photo(photos / f"n{seed}.jpg", seed=seed)
        ok(cli("build-index", photos, "-q"))
    (built / "meta.json").write_bytes(old)
    one_error_line(start("info"), "names generation 1, which the manifest .* no longer holds")
    ok(cli("build-index", photos, "-q"))  # the remedy it names
    assert json.loads(ok(cli("info", "-f", "json")).stdout)["images"] == 8


# --- 3. label files and undo logs: regular files only ------------------------------------------


def test_label_files_and_undo_logs_that_are_fifos_or_devices_are_refused_without_waiting(built, tmp_path, chardev):
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)
    runs = {start("evaluate", "--groups", fifo): "a FIFO", start("evaluate", "--pairs", fifo): "a FIFO",
            start("undo", fifo): "a FIFO"}
    for proc, kind in runs.items():
        one_error_line(proc, rf"cannot read (the undo log )?{fifo}: not a regular file \({kind}\)")
    device = chardev()
    fails(cli("evaluate", "--groups", device), rf"cannot read {device}: not a regular file \(a device\)")
    fails(cli("undo", device), rf"cannot read the undo log {device}: not a regular file \(a device\)")


# --- 5. what used to be a traceback ------------------------------------------------------------


@pytest.fixture
def trained(built, photos):
    ok(cli("train", "--epochs", "1", "--views", "1", "-q"))
    return built / json.loads((built / "meta.json").read_text())["adapter"]["file"]


def test_a_truncated_head_is_one_error_line_in_query_duplicates_and_serve(trained, photos):
    pytest.importorskip("starlette")
    data = trained.read_bytes()
    trained.write_bytes(data[: len(data) // 2])
    pattern = rf"the trained head {trained} cannot be read .*run `vsearch train` again \(or query with --adapter off\)"
    fails(cli("query", photos / "p0.jpg"), pattern)
    fails(cli("duplicates"), pattern)
    fails(cli("serve", "--port", "1"), pattern)
    ok(cli("query", photos / "p0.jpg", "--adapter", "off"))  # the way round it names


def test_huge_numbers_are_one_error_line(built, photos, groups_csv):
    fails(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--relevant", "--grade", "99999999999999999999999"),
          r"a grade is at most 1000 \(got 99999999999999999999999\)")
    fails(cli("evaluate", "--groups", groups_csv, "--k", "99999999999999999999"),
          r"--k takes at most 1000000000 \(got 99999999999999999999\)")


def test_names_too_long_for_a_file_are_one_error_line(built, photos):
    fails(cli("query", "x" * 300), r"no file 'x+' exists, and text search needs a CLIP index")
    fails(cli("judge", "y" * 5000, photos / "p1.jpg", "--relevant"), r"cannot read y+: File name too long")
    fails(cli("query", photos / "p0.jpg", "--not", "z" * 300), "z+: file name too long")


def test_names_that_are_not_utf8_are_one_error_line(built, photos):
    name = os.fsdecode(os.fsencode(photos) + b"/caf\xe9.jpg")
    with open(os.fsencode(name), "wb") as fh:
        fh.write((photos / "p1.jpg").read_bytes())
    shown = rf"file name is not valid UTF-8: {photos}/caf\\xe9\.jpg; rename it"
    fails(cli("judge", photos / "p0.jpg", name, "--relevant"), shown)
    fails(cli("judge", name, photos / "p0.jpg", "--relevant"), shown)
    fails(cli("duplicates", "--not-duplicate", photos / "p0.jpg", name), shown)


def test_a_negative_seed_is_one_error_line(built, photos, tmp_path):
    fails(cli("make-pairs", photos, "--augment", "2", "--out", tmp_path / "pairs", "--seed", "-1"),
          r"--seed takes 0 or more \(got -1\)")
    fails(cli("evaluate", "--augment", "2", "--seed", "-1"), r"--seed takes 0 or more \(got -1\)")


@pytest.mark.parametrize("value", ["x", None, 1.5, True])
def test_a_hand_edited_ivfpq_record_is_one_error_line(photos, fake_model, isolated_index_dir, value):
    pytest.importorskip("faiss")
    for i in range(6, 40):
        make_photo(photos / f"p{i}.jpg", seed=i)
    ok(cli("build-index", photos, "--model", "fake", "--index", "ivfpq", "-q"))
    meta = isolated_index_dir / "meta.json"
    data = json.loads(meta.read_text())
    data["ivfpq"]["nprobe"] = value
    meta.write_text(json.dumps(data))
    fails(cli("query", photos / "p0.jpg", "--approximate"),
          rf"meta\.json is incomplete or damaged \(.*IvfpqInfo\.nprobe is .*, not int.*`vsearch build-index {photos} "
          "--rebuild` repairs it")


# --- 8. absurd values, a NaN head, remedies that name the folder -------------------------------


def test_a_head_of_nan_says_it_holds_values_that_are_not_finite(trained, photos):
    with np.load(trained) as data:
        shape = data["W"].shape
    buf = io.BytesIO()
    np.savez(buf, W=np.full(shape, np.nan, dtype=np.float32))
    trained.write_bytes(buf.getvalue())
    message = fails(cli("query", photos / "p0.jpg"), "values that are not finite")
    assert "expected" not in message


def test_epochs_beyond_the_bound_are_refused_before_any_work(built):
    one_error_line(start("train", "--epochs", "100000000000"), r"--epochs takes at most 10000 \(got 100000000000\)")


@pytest.mark.parametrize("args, pattern", [
    (("embed", "{photos}", "--device", "bogus"), r"unknown --device 'bogus'; choose auto, cpu, cuda or mps"),
    (("query", "{photos}/p0.jpg", "--device", "bogus"), r"unknown --device 'bogus'"),
    (("embed", "{photos}", "--model", ""), r"--model names no model"),
    (("query", "{photos}/p0.jpg", "-k", "10000000000000000000000"), r"--k takes at most 1000000000 results"),
    (("query", "{photos}/p0.jpg", "--verify", "10000000000000000000000"), r"--verify takes at most 10000 results"),
    (("query", "{photos}/p0.jpg", "--qe", "10000000000000000000000"), r"--qe takes at most 1000000000 results"),
    (("build-index", "{photos}", "--trees", "99999999999999999999"), r"--trees takes at most 1000 "),
    (("build-index", "{photos}", "--dba", "99999999999999999999"), r"--dba takes 0 to 1000 neighbours"),
])
def test_absurd_values_are_refused_in_one_line(built, photos, args, pattern):
    fails(cli(*(str(a).format(photos=photos) for a in args)), pattern)


def test_a_damaged_annoy_file_names_the_folder_that_rebuilds_it(built, photos):
    ann = built / json.loads((built / "meta.json").read_text())["ann"]["file"]
    ann.write_bytes(ann.read_bytes()[:-7])
    fails(cli("query", photos / "p0.jpg", "--approximate"),
          rf"cannot read the Annoy index .*`vsearch build-index {photos}` rebuilds it")


def test_a_damaged_meta_json_names_the_folder_it_covers(built, photos):
    meta = built / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "generation": float("inf")}))
    fails(cli("info"), rf"incomplete or damaged \(OverflowError.*`vsearch build-index {photos} --rebuild` repairs it")


def test_an_index_folder_that_cannot_be_made_is_one_error_line(built, photos):
    fails(cli("train", "--index-dir", photos / "p0.jpg" / "x"),
          rf"cannot make the index folder {photos}/p0\.jpg/x: Not a directory")


# --- leftovers of round two: side files, --batch-size, remedies, long --move-to names ------------

#: The command that reads each file of the index folder first, and what its error line says.
INDEX_FILES = {
    "meta.json": (["info"], r"cannot read {path}: not a regular file \({kind}\); "
                            r"`vsearch build-index {photos} --rebuild` repairs it"),
    "manifest.sqlite": (["info"], r"cannot read manifest {path}: not a regular file \({kind}\); "
                                  r"`vsearch build-index {photos} --rebuild` rebuilds it"),
    "vectors": (["query", "{photos}/p0.jpg"], r"cannot read {path}: not a regular file \({kind}\); "
                                             r"`vsearch build-index {photos}` repairs the index"),
    "marks.jsonl": (["duplicates"], r"cannot read {path}: not a regular file \({kind}\); move it out of the "
                                    r"index folder to go on without what it records"),
    "judgments.jsonl": (["judgments"], r"cannot read {path}: not a regular file \({kind}\); move it out of the "
                                       r"index folder to go on without what it records"),
    "judgments.sqlite": (["judgments"], r"{path} is not a regular file \({kind}\); it was left as it is: move it "
                                        r"away to start a new one"),
}


def _in_place(index: Path, name: str) -> Path:
    """The path of ``name`` in the index folder (``vectors``: the committed vectors file), emptied."""
    if name == "vectors":
        name = json.loads((index / "meta.json").read_text())["vectors"]
    path = index / name
    path.unlink(missing_ok=True)
    return path


def _expected(name: str, path: Path, photos: Path, kind: str) -> str:
    return INDEX_FILES[name][1].format(path=re.escape(str(path)), photos=re.escape(str(photos)), kind=kind)


@pytest.mark.parametrize("name", list(INDEX_FILES))
def test_an_index_file_that_is_a_fifo_is_one_error_line_not_a_wait(built, photos, name):
    """A FIFO in place of meta.json, the manifest, the vectors or a side log (marks, the page's
    old judgments, judgments.sqlite) made every reader wait forever for a writer."""
    path = _in_place(built, name)
    os.mkfifo(path)
    args = [a.format(photos=photos) for a in INDEX_FILES[name][0]]
    one_error_line(start(*args), _expected(name, path, photos, "a FIFO"), timeout=60)
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


@pytest.mark.parametrize("name", list(INDEX_FILES))
@pytest.mark.parametrize("kind", ["a device", "a folder"])
def test_an_index_file_that_is_a_device_or_a_folder_is_one_error_line(built, photos, chardev, name, kind):
    path = _in_place(built, name)
    if kind == "a device":
        os.rename(chardev(), path)
    else:
        path.mkdir()
    args = [a.format(photos=photos) for a in INDEX_FILES[name][0]]
    fails(cli(*args), _expected(name, path, photos, kind))


def test_check_says_a_marks_fifo_is_a_fifo_not_an_empty_file(built):
    os.mkfifo(built / "marks.jsonl")
    report = json.loads(cli("check", "-f", "json").stdout)
    row = next(f for f in report["files"] if f["file"] == "marks.jsonl")
    assert "not a regular file (a FIFO)" in row["problem"] and "empty" not in row["problem"]


@pytest.mark.parametrize("command", ["build-index", "embed"])
@pytest.mark.parametrize("value", ["10000000000000000000000", "4097"])
def test_a_batch_size_beyond_the_bound_is_refused_before_any_work(photos, fake_model, isolated_index_dir,
                                                                   command, value):
    fails(cli(command, photos, "--model", "fake", "--batch-size", value),
          rf"--batch-size takes at most 4096 images \(got {value}\)")
    assert not (isolated_index_dir / "meta.json").exists()


def _manifest_kv(index: Path, key: str, value: str) -> None:
    import sqlite3

    with sqlite3.connect(index / "manifest.sqlite") as db:
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (value, key))


@pytest.mark.parametrize("damage, pattern", [
    ("no meta.json", r"index at .* was never completed; run `vsearch build-index {photos}` to finish it"),
    ("manifest schema 9", r"schema version 9, which this vsearch .* does not read; upgrade vsearch, or "
                          r"`vsearch build-index {photos} --rebuild`"),
    ("manifest garbage", r"cannot read manifest .*: file is not a database; `vsearch build-index {photos} "
                         r"--rebuild` rebuilds it"),
    ("format version 99", r"has format version 99; .* Rebuild it with `vsearch build-index {photos} --rebuild`"),
])
def test_a_remedy_names_the_indexed_folder_not_FOLDER(built, photos, damage, pattern):
    if damage == "no meta.json":
        (built / "meta.json").unlink()
    elif damage == "manifest schema 9":
        _manifest_kv(built, "schema_version", "9")
    elif damage == "manifest garbage":
        (built / "manifest.sqlite").write_bytes(b"garbage " * 600)
    else:
        meta = built / "meta.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 99}))
    message = fails(cli("info"), pattern.format(photos=re.escape(str(photos))))
    assert "FOLDER" not in message


def test_labelled_images_missing_from_the_index_name_the_folder_that_adds_them(built, photos, tmp_path):
    make_photo(photos / "new.jpg", seed=77)  # under the indexed folder, not indexed yet
    groups = tmp_path / "g.csv"
    groups.write_text(f"path,group\n{photos / 'new.jpg'},1\n{photos / 'p0.jpg'},1\n")
    fails(cli("evaluate", "--groups", groups),
          rf"not in the index at .*: {re.escape(str(photos))}/new\.jpg; index their folder first "
          rf"\(vsearch build-index {re.escape(str(photos))}\)$")
    other = tmp_path / "other"
    other.mkdir()
    make_photo(other / "o.jpg", seed=78)
    groups.write_text(f"path,group\n{other / 'o.jpg'},1\n{photos / 'p0.jpg'},1\n")
    message = fails(cli("evaluate", "--groups", groups),
                    rf"they are outside {re.escape(str(photos))}, the folder this index covers; index their folder "
                    rf"first \(vsearch build-index {re.escape(str(other))} --index-dir NEW_DIR\)$")
    assert "FOLDER" not in message


def test_a_model_that_differs_from_the_index_names_its_folder(built, photos, tmp_path):
    from vsearch.models import loading

    loading.register("fake", lambda name, device, threads: FakeEmbedder("fake", weights_sha256="1" * 64))
    query = make_photo(tmp_path / "q.jpg", seed=90)  # not indexed: its vector needs the model
    message = fails(cli("query", query),
                    rf"differs from the one that built the index at .*; rebuild the index "
                    rf"\(vsearch build-index {re.escape(str(photos))} --index-dir NEW_DIR\)")
    assert "FOLDER" not in message


@pytest.fixture
def copies_lib(tmp_path, fake_model) -> tuple[Path, Path]:
    """tests/test_actions.py's library of planted copies, indexed with the fake model."""
    from tests.test_actions import plant_copies

    photos = plant_copies(tmp_path / "lib")
    index = tmp_path / "idx"
    ok(cli("build-index", photos, "--index-dir", index, "--model", "fake", "-q"))
    return photos, index


@pytest.mark.parametrize("yes", [False, True])
@pytest.mark.parametrize("where", ["last", "middle", "missing parent"])
def test_a_move_to_name_too_long_for_the_file_system_is_one_error_line_and_moves_nothing(
        copies_lib, tmp_path, yes, where):
    """A --move-to path with a name over 255 bytes was a traceback (OSError: File name too long)
    once its parent existed, and left an undo log when its parent did not."""
    from tests.test_actions import THRESHOLD, tree_bytes

    photos, index = copies_lib
    long = "d" * 256
    (tmp_path / "dest").mkdir()
    dest = {"last": tmp_path / "dest" / long, "middle": tmp_path / "dest" / long / "x",
            "missing parent": tmp_path / "nothere" / long}[where]
    before = tree_bytes(photos, index)
    fails(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to", dest,
              *(["--yes"] if yes else [])),
          rf"--move-to {re.escape(str(dest))}: the name d{{256}} is 256 bytes, more than the file system takes "
          r"\(255\); choose a shorter one")
    assert tree_bytes(photos, index) == before and not (index / "undo").exists()
    assert os.listdir(tmp_path / "dest") == [] and not (tmp_path / "nothere").exists()


def test_a_head_that_is_a_fifo_is_one_error_line_not_a_wait(trained, photos):
    trained.unlink()
    os.mkfifo(trained)
    one_error_line(start("query", photos / "p0.jpg"),
                   rf"the trained head {re.escape(str(trained))} cannot be read: not a regular file \(a FIFO\); "
                   r"run `vsearch train` again", timeout=60)
