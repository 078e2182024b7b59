"""Acting on duplicate groups: dry runs, --move-to and --trash with --yes, undo, the review page,
and bad input as one error line. The fake model makes the index; groups are the planted copies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, make_photo
from tests.helpers import cli, fails, ok
from vsearch.duplicates import actions
from vsearch.storage.store import Store

THRESHOLD = "0.98"


@pytest.fixture
def lib(tmp_path, fake_model) -> tuple[Path, Path]:
    """(photos, index): eight distinct photos, a re-encoded copy of p1 and a half-size PNG copy of
    p2 in sub/, indexed with the fake model; the copies make two groups at 0.98."""
    photos = plant_copies(tmp_path / "photos")
    index = tmp_path / "idx"
    ok(cli("build-index", photos, "--index-dir", index, "--model", "fake", "-q"))
    return photos, index


def plant_copies(photos: Path) -> Path:
    """Eight distinct photos in ``photos``, a re-encoded copy of p1 and a half-size PNG copy of
    p2 in sub/ (two groups at 0.98 with the fake model); returns ``photos``."""
    (photos / "sub").mkdir(parents=True)
    for i in range(8):
        make_photo(photos / f"p{i}.jpg", seed=i)
    Image.open(photos / "p1.jpg").save(photos / "p1_copy.jpg", quality=60)
    Image.open(photos / "p2.jpg").resize((160, 120)).save(photos / "sub" / "p2_small.png")
    return photos


def tree_bytes(*folders: Path) -> dict[str, bytes]:
    """Every file under the folders, by path: what "byte-identical" compares."""
    return {str(p): p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def index_rows(index: Path) -> dict[str, tuple[str, bytes]]:
    """Path -> (digest, vector bytes) of every committed row."""
    with Store.open(index) as store:
        vectors = store.vectors()
        return {path: (store.entry(path).digest, np.asarray(vectors[row]).tobytes())
                for row, path in enumerate(store.paths_by_row())}


def groups(index: Path) -> list[list[str]]:
    members = json.loads(ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "-f", "json", "-q")).stdout)
    found: dict[int, list[str]] = {}
    for m in members:
        found.setdefault(m["group"], []).append(Path(m["path"]).name)
    return sorted(sorted(g) for g in found.values())


def copies(index: Path) -> list[Path]:
    """The members that acting would move: all but each group's keeper."""
    return [Path(p) for p in ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "-f", "paths",
                                    "-q")).stdout.splitlines()]


def test_the_fixture_has_two_groups(lib):
    assert groups(lib[1]) == [["p1.jpg", "p1_copy.jpg"], ["p2.jpg", "p2_small.png"]]


# --- dry runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", [["--move-to", "DEST"], ["--trash"]])
def test_a_dry_run_changes_nothing(lib, tmp_path, how):
    photos, index = lib
    dest = tmp_path / "dest"
    dest.mkdir()
    before = tree_bytes(photos, index, dest)
    args = [str(dest) if a == "DEST" else a for a in how]
    result = ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, *args))
    assert "dry run: 2 files would be" in result.stderr and "add --yes" in result.stderr
    assert result.stderr.count("would move " if how[0] == "--move-to" else "would trash ") == 2
    assert tree_bytes(photos, index, dest) == before  # files and index, byte for byte
    assert not (tmp_path / "xdg" / "Trash").exists()


# --- move, then undo -------------------------------------------------------------------------


def test_move_then_undo_restores_every_byte_and_the_index_rows(lib, tmp_path, fake_model):
    photos, index = lib
    dest = tmp_path / "dest"
    dest.mkdir()
    files, rows = tree_bytes(photos), index_rows(index)
    moving = copies(index)
    calls = fake_model.calls
    result = ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to", dest, "--yes"))
    assert "2 files moved to" in result.stderr and "vsearch undo" in result.stderr
    for source in moving:  # moved, keeping the path relative to the indexed folder
        rel = source.relative_to(photos)
        assert not source.exists() and (dest / rel).read_bytes() == files[str(source)]
    # The index followed: the moved copies (outside the folder) left it; nothing was embedded.
    after = index_rows(index)
    gone = {str(s.relative_to(photos)) for s in moving}
    assert set(after) == set(rows) - gone and all(after[p] == rows[p] for p in after)
    assert groups(index) == [] and fake_model.calls == calls
    # The undo log: a header, then one line per action with digest, size and mtime, written first.
    (log,) = (index / "undo").iterdir()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["format"] == "vsearch-undo" and lines[0]["root"] == str(photos)
    assert sorted(line["source"] for line in lines[1:]) == sorted(map(str, moving))
    assert all({"digest", "size", "mtime_ns", "vector"} <= set(line) for line in lines[1:])

    undone = ok(cli("undo", "--index-dir", index))
    assert "2 files put back" in undone.stderr
    assert tree_bytes(photos) == files and not [p for p in dest.rglob("*") if p.is_file()]
    assert index_rows(index) == rows and fake_model.calls == calls  # the rows, from the log's vectors
    assert groups(index) == [["p1.jpg", "p1_copy.jpg"], ["p2.jpg", "p2_small.png"]]
    # A second undo finds nothing left to undo.
    fails(cli("undo", "--index-dir", index), "nothing to undo")


def test_moving_inside_the_folder_keeps_the_same_rows_under_new_paths(lib, fake_model):
    photos, index = lib
    dest = photos / "_dupes"
    dest.mkdir()
    rows = index_rows(index)
    with Store.open(index) as store:
        row_of = {p: r for r, p in enumerate(store.paths_by_row())}
    moving = copies(index)
    ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to", dest, "--yes", "-q"))
    with Store.open(index) as store:
        new_row_of = {p: r for r, p in enumerate(store.paths_by_row())}
    for source in moving:
        rel = source.relative_to(photos).as_posix()
        assert new_row_of[f"_dupes/{rel}"] == row_of[rel] and rel not in new_row_of
    assert sorted(v for v in index_rows(index).values()) == sorted(rows.values())
    # The next build finds nothing to do: the index already knows where the files are.
    calls = fake_model.calls
    build = ok(cli("build-index", photos, "--index-dir", index))
    assert "embedded 0," in build.stderr and fake_model.calls == calls
    # Undo through a real process: the log alone names its index.
    (log,) = (index / "undo").iterdir()
    proc = subprocess.run([sys.executable, "-m", "vsearch", "undo", str(log)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "VSEARCH_INDEX_DIR": "/nonexistent"},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert index_rows(index) == rows and all(s.exists() for s in moving)


def test_a_failure_midway_leaves_a_log_that_undoes_what_was_done(lib, tmp_path, monkeypatch):
    photos, index = lib
    dest = tmp_path / "dest"
    dest.mkdir()
    files, rows = tree_bytes(photos), index_rows(index)
    real_move, done = actions._move_file, []

    def failing_second(source, target, digest):
        if done:
            raise OSError(28, "No space left on device")
        done.append(source)
        real_move(source, target, digest)

    monkeypatch.setattr(actions, "_move_file", failing_second)
    fails(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to", dest, "--yes"),
          "no space left on device writing")
    monkeypatch.setattr(actions, "_move_file", real_move)
    assert len(index_rows(index)) == len(rows) - 1  # the one moved copy left the index, consistently
    result = ok(cli("undo", "--index-dir", index))
    assert "1 file put back (1 already in place)" in result.stderr
    assert tree_bytes(photos) == files and index_rows(index) == rows


# --- trash, then undo ------------------------------------------------------------------------


def test_trash_then_undo(lib, trash, fake_model):
    photos, index = lib
    files, rows = tree_bytes(photos), index_rows(index)
    moving = copies(index)
    calls = fake_model.calls
    result = ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--trash", "--yes"))
    assert "2 files sent to the trash" in result.stderr
    trashed = sorted((trash / "files").iterdir())
    assert sorted(p.name for p in trashed) == sorted(s.name for s in moving)
    assert all(not s.exists() for s in moving)
    assert len(list((trash / "info").glob("*.trashinfo"))) == 2
    assert set(index_rows(index)) == set(rows) - {str(s.relative_to(photos)) for s in moving}
    ok(cli("undo", "--index-dir", index, "-q"))
    assert tree_bytes(photos) == files and index_rows(index) == rows and fake_model.calls == calls
    assert not list((trash / "files").iterdir()) and not list((trash / "info").iterdir())


def test_undo_finds_a_trashed_file_whose_location_was_not_logged(lib, trash):
    photos, index = lib
    files = tree_bytes(photos)
    ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--trash", "--yes", "-q"))
    (log,) = (index / "undo").iterdir()
    kept = [line for line in log.read_text().splitlines() if '"trashed"' not in line]
    log.write_text("\n".join(kept) + "\n")  # as if the process died right after trashing
    ok(cli("undo", "--index-dir", index, "-q"))
    assert tree_bytes(photos) == files


# --- not a duplicate, through the CLI --------------------------------------------------------


def test_not_duplicate_keeps_the_pair_apart_through_a_rebuild_and_a_rename(lib):
    photos, index = lib
    result = ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "-f", "json",
                    "--not-duplicate", photos / "p1.jpg", photos / "p1_copy.jpg"))
    assert "not duplicates" in result.stderr
    assert {Path(m["path"]).name for m in json.loads(result.stdout)} == {"p2.jpg", "p2_small.png"}
    assert groups(index) == [["p2.jpg", "p2_small.png"]]
    ok(cli("build-index", photos, "--index-dir", index, "--rebuild", "-q"))
    assert groups(index) == [["p2.jpg", "p2_small.png"]]
    (photos / "p1_copy.jpg").rename(photos / "sub" / "renamed.jpg")
    ok(cli("build-index", photos, "--index-dir", index, "-q"))
    assert groups(index) == [["p2.jpg", "p2_small.png"]]
    # Acting leaves the marked pair alone.
    dest = photos.parent / "dest"
    dest.mkdir()
    dry = ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to", dest))
    assert "dry run: 1 file would be" in dry.stderr and "renamed.jpg" not in dry.stderr


# --- the review page -------------------------------------------------------------------------


def test_html_review_shows_each_group_and_the_commands(lib, tmp_path):
    photos, index = lib
    dest = tmp_path / "dest"
    dest.mkdir()
    out = tmp_path / "review.html"
    result = ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to", dest,
                    "--html", out))
    assert f"review page: {out}" in result.stderr
    page = out.read_text()
    assert page.count("<section>") == 2 and page.count('class="keeper"') == 2 and page.count('class="copy"') == 2
    assert page.count("data:image/jpeg;base64,") == 4 and "file://" in page
    assert "320x240 px" in page and "160x120 px" in page and "level near" in page  # copies verified by local features
    assert f"--move-to {dest} --yes" in page and page.count("--not-duplicate ") == 2
    assert f"move to {dest}" in page
    assert not [p for p in dest.iterdir()]  # a review is still a dry run


# --- bad input: one error line each, nothing changed ------------------------------------------


def test_bad_move_targets_are_one_error_line(lib, tmp_path):
    photos, index = lib
    before = tree_bytes(photos, index)
    base = ["duplicates", "--index-dir", index, "--threshold", THRESHOLD]
    (tmp_path / "afile").write_text("x")
    fails(cli(*base, "--move-to", tmp_path / "afile"), r"is a file")
    fails(cli(*base, "--move-to", photos), r"holds the indexed folder")
    fails(cli(*base, "--move-to", photos.parent), r"holds the indexed folder")
    fails(cli(*base, "--move-to", index), r"inside the index folder")
    fails(cli(*base, "--move-to", photos / "sub", "--yes"), r"p2_small.png is already under --move-to")
    dest = tmp_path / "dest"
    dest.mkdir()
    fails(cli(*base, "--move-to", dest, "--trash"), "exclude each other")
    fails(cli(*base, "--yes"), "--yes confirms --move-to DIR or --trash")
    (dest / "sub").mkdir()
    (dest / "sub" / "p2_small.png").write_bytes(b"someone else's")
    fails(cli(*base, "--move-to", dest, "--yes"), r"p2_small.png already exists; vsearch never overwrites")
    assert tree_bytes(photos, index) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_unwritable_target_is_one_error_line(lib, tmp_path):
    photos, index = lib
    dest = tmp_path / "locked"
    dest.mkdir()
    dest.chmod(0o500)
    try:
        fails(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to", dest, "--yes"),
              "is not writable")
    finally:
        dest.chmod(0o700)


def test_a_target_the_user_cannot_write_is_one_error_line(lib, tmp_path, monkeypatch):
    # The same check as above, for a run as root (who may write anywhere the OS lets it).
    photos, index = lib
    dest = tmp_path / "readonly"
    dest.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == dest else real_access(p, mode, **kw))
    fails(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to", dest),
          r"--move-to .*readonly is not writable")


def test_a_copy_changed_since_indexing_is_not_touched(lib, tmp_path):
    photos, index = lib
    dest = tmp_path / "dest"
    dest.mkdir()
    changed = copies(index)[0]
    make_photo(changed, seed=99)
    before = tree_bytes(photos, index)
    # --level similar groups from the stored vectors alone, so the changed file is still listed
    # (near would re-verify its new pixels and leave it out): the check before acting must catch it.
    fails(cli("duplicates", "--index-dir", index, "--level", "similar", "--threshold", THRESHOLD, "--move-to", dest,
              "--yes"), r"changed or is gone since it was indexed; nothing was done")
    assert tree_bytes(photos, index) == before and not list(dest.iterdir())


def test_undo_refuses_another_index_and_overwriting(lib, tmp_path, fake_model):
    photos, index = lib
    other_photos = tmp_path / "other"
    other_photos.mkdir()
    make_photo(other_photos / "o.jpg", seed=50)
    other = tmp_path / "other-idx"
    ok(cli("build-index", other_photos, "--index-dir", other, "--model", "fake", "-q"))
    fails(cli("undo", "--index-dir", other), "nothing to undo")
    dest = tmp_path / "dest"
    dest.mkdir()
    ok(cli("duplicates", "--index-dir", index, "--threshold", THRESHOLD, "--move-to", dest, "--yes", "-q"))
    (log,) = (index / "undo").iterdir()
    fails(cli("undo", log, "--index-dir", other), r"is an undo log of another index")
    fails(cli("undo", tmp_path / "missing.jsonl", "--index-dir", index), "no undo log")
    (tmp_path / "junk.jsonl").write_text('{"hello": 1}\n')
    fails(cli("undo", tmp_path / "junk.jsonl", "--index-dir", index), "is not a vsearch undo log")
    # Something now sits where a copy was: undo puts nothing back rather than overwrite it.
    squatter = copies_of_log(log)[0]
    squatter.write_bytes(b"new file")
    state = tree_bytes(photos, dest, index)
    fails(cli("undo", "--index-dir", index), r"exists and is another file; vsearch never overwrites a file")
    assert tree_bytes(photos, dest, index) == state
    squatter.unlink()
    ok(cli("undo", "--index-dir", index, "-q"))


def copies_of_log(log: Path) -> list[Path]:
    return [Path(json.loads(line)["source"]) for line in log.read_text().splitlines()[1:] if '"action"' in line]


def test_not_duplicate_bad_input_is_one_error_line(lib):
    photos, index = lib
    base = ["duplicates", "--index-dir", index, "--not-duplicate"]
    fails(cli(*base, photos / "p1.jpg", photos / "missing.jpg"), "no such file")
    (photos / "twin.jpg").write_bytes((photos / "p1.jpg").read_bytes())
    fails(cli(*base, photos / "p1.jpg", photos / "twin.jpg"), "the same bytes")
    fails(cli(*base, photos / "p1.jpg", photos / "sub"), "not a regular file")
    assert not (index / "marks.jsonl").exists()


def test_undo_has_help_with_examples():
    result = ok(cli("undo", "--help"))
    assert "Examples" in result.stdout and "LOG" in result.stdout
