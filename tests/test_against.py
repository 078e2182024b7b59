"""duplicates --against FOLDER (which photos of an import the library holds), --explain A B (why a
pair is or is not a duplicate), --marks and --unmark (the not-duplicate marks, seen and taken back)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import vsearch
from conftest import SAMPLE_IMAGES
from helpers import cli, fails, ok
from test_verify import edited_copy

#: The fake model's cosines are not the real model's: a loose shortlist puts every pair of these
#: few pictures before verification, so the tests check what verification decides.
SHORTLIST = "0.3"


@pytest.fixture
def library(tmp_path, fake_model) -> Path:
    """Four photos, indexed into tmp_path/idx."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "coins.jpg", "rocket.jpg"):
        shutil.copy(SAMPLE_IMAGES / name, lib / name)
    ok(cli("build-index", lib, "--index-dir", tmp_path / "idx", "--model", "fake", "-q"))
    return lib


@pytest.fixture
def phone(tmp_path, library) -> Path:
    """An import: an edited copy, a byte copy, a small q60 copy, a mirrored copy (in a subfolder),
    a photo the library does not hold, and a file that is no image."""
    imp = tmp_path / "phone import"
    (imp / "DCIM").mkdir(parents=True)
    edited_copy(library / "chelsea.jpg", imp / "cat edit.jpg")
    shutil.copy(library / "coffee.jpg", imp / "coffee-copy.jpg")
    coins = Image.open(library / "coins.jpg")
    coins.resize((coins.width // 2, coins.height // 2)).save(imp / "coins-small.jpg", quality=60)
    Image.open(library / "rocket.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(imp / "DCIM" / "rocket.jpg")
    shutil.copy(SAMPLE_IMAGES / "astronaut.jpg", imp / "DCIM" / "new photo.jpg")
    (imp / "broken.jpg").write_bytes(b"not an image")
    return imp


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in rows}


def test_against_says_which_photos_the_library_holds(phone, library, tmp_path):
    idx = tmp_path / "idx"
    result = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "--against", phone, "-f", "json"))
    rows = by_name(json.loads(result.stdout))
    assert {n: (r["status"], r["level"]) for n, r in rows.items()} == {
        "cat edit.jpg": ("present", "near"), "coffee-copy.jpg": ("present", "exact"),
        "coins-small.jpg": ("present", "near"), "rocket.jpg": ("present", "near"),
        "new photo.jpg": ("new", None), "broken.jpg": ("unreadable", None)}
    assert Path(rows["cat edit.jpg"]["match"]) == library / "chelsea.jpg" and rows["coffee-copy.jpg"]["score"] == 1.0
    assert rows["broken.jpg"]["reason"]
    assert "6 photos in" in result.stderr and "4 in the library already (1 exact, 3 near), 1 new, 1 not read" \
        in result.stderr
    assert "not read: " in result.stderr and "broken.jpg" in result.stderr
    # -f paths: the new ones, for xargs cp; --present: the ones the library holds.
    new = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "--against", phone, "-f", "paths",
                 "-q")).stdout
    assert new == f"{phone / 'DCIM' / 'new photo.jpg'}\n"
    held = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "--against", phone, "-f", "paths",
                  "--present", "--null", "-q")).stdout
    assert sorted(Path(p).name for p in held.split("\0") if p) == ["cat edit.jpg", "coffee-copy.jpg",
                                                                   "coins-small.jpg", "rocket.jpg"]
    table = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "--against", phone, "-q")).stdout
    assert all(f" {c} " in table.splitlines()[1] for c in ("status", "level", "score", "path", "match"))
    with vsearch.open_index(idx) as index:  # nothing was added to the index
        assert len(index) == 4


def test_against_through_the_api_at_each_level(phone, library, tmp_path):
    with vsearch.open_index(tmp_path / "idx") as index:
        exact = {r.path.name: r.status for r in index.against(phone, level="exact")}
        # (the exact level reads bytes and decodes nothing: a file that is no image is new too)
        assert exact == {"cat edit.jpg": "new", "coffee-copy.jpg": "present", "coins-small.jpg": "new",
                         "rocket.jpg": "new", "new photo.jpg": "new", "broken.jpg": "new"}
        similar = {r.path.name: r for r in index.against(phone, level="similar", threshold=-1.0)}
        assert {r.level for r in similar.values() if r.status == "present"} <= {"exact", "similar"}
        assert similar["new photo.jpg"].status == "present"  # cosine alone, at any threshold: looks alike
        strict = index.against(phone, threshold=0.3, min_overlap=0.95)  # a 7% crop keeps 74%: no longer a copy
        assert {r.path.name: r.status for r in strict}["cat edit.jpg"] == "new"
        seen: list[tuple[int, int]] = []
        results = index.against(phone, threshold=0.3, progress=lambda done, total: seen.append((done, total)))
        assert [r.path for r in results] == sorted(r.path for r in results)
        assert seen and seen[-1] == (6, 6)
        with pytest.raises(vsearch.VsearchError, match="folder not found"):
            index.against(tmp_path / "nowhere")
        with pytest.raises(vsearch.VsearchError, match="min_overlap= takes a share"):
            index.against(phone, min_overlap=2)
        with pytest.raises(vsearch.VsearchError, match="level= takes one of"):
            index.against(phone, level="fuzzy")


def test_against_bad_input_is_one_error_line(phone, tmp_path):
    idx = tmp_path / "idx"
    fails(cli("duplicates", "--index-dir", idx, "--against", tmp_path / "nowhere"), "folder not found")
    fails(cli("duplicates", "--index-dir", idx, "--against", phone / "broken.jpg"), "not a folder")
    fails(cli("duplicates", "--index-dir", idx, "--present"), "--present goes with --against")
    fails(cli("duplicates", "--index-dir", idx, "--against", phone, "--trash"), "does not go with --move-to/--trash")
    fails(cli("duplicates", "--index-dir", idx, "--against", phone, "--marks"), "--against and --marks exclude")


def test_explain_a_pair(library, tmp_path):
    idx = tmp_path / "idx"
    edited_copy(library / "chelsea.jpg", tmp_path / "edit.jpg")  # outside the index: embedded
    out = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "--explain", library / "chelsea.jpg",
                 tmp_path / "edit.jpg")).stdout
    for test in ("cosine (near shortlist)", "keypoints matched", "transform", "overlap", "aligned pixels agree",
                 "cosine (similar)", "level"):
        assert test in out, test
    assert "a verified copy" in out
    rows = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "--explain", library / "chelsea.jpg",
                  tmp_path / "edit.jpg", "-f", "csv")).stdout.splitlines()
    assert rows[0] == "test,value,needs,result" and rows[-1].startswith("level,near,")
    with vsearch.open_index(idx) as index:
        why = index.explain(library / "chelsea.jpg", tmp_path / "edit.jpg", threshold=0.3)
        assert why.level == "near" and why.verdict == "verified" and not why.same_bytes
        assert why.inliers >= 50 and why.matches >= why.inliers and why.overlap > 0.6
        assert why.agreement is not None and why.agreement >= 0.95 and why.cells > 20
        assert why.scale == pytest.approx(1.0, abs=0.02) and abs(why.rotation) < 1 and not why.mirrored
        # (the fake model's cosines are not the real model's: "cosine (similar)" may miss)
        assert all(c.passed for c in why.checks if c.test not in ("same bytes (exact)", "cosine (similar)")
                   and c.passed is not None)
        same = index.explain(library / "coffee.jpg", library / "coffee.jpg")
        assert same.level == "exact" and same.same_bytes
        apart = index.explain(library / "chelsea.jpg", library / "coins.jpg", threshold=0.3)
        assert apart.level in (None, "similar") and apart.verdict != "verified"
        assert any(c.passed is False for c in apart.checks)
        with pytest.raises(vsearch.VsearchError, match="no such file"):
            index.explain(library / "chelsea.jpg", tmp_path / "nope.jpg")
    fails(cli("duplicates", "--index-dir", idx, "--explain", library / "chelsea.jpg", library / "coins.jpg",
              "-f", "paths"), "--explain prints a table, json or csv")
    fails(cli("duplicates", "--index-dir", idx, "--explain", library / "chelsea.jpg", library),
          "is not a regular file")


def test_marks_can_be_listed_and_taken_back(library, tmp_path):
    idx = tmp_path / "idx"
    cat, copy = library / "chelsea.jpg", library / "cat-copy.jpg"
    edited_copy(cat, copy)
    ok(cli("build-index", library, "--index-dir", idx, "--model", "fake", "-q"))

    def grouped(name: str = "renamed.jpg") -> bool:
        out = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "-f", "json", "-q")).stdout
        return {"chelsea.jpg", name} <= {Path(m["path"]).name for m in json.loads(out)}

    assert grouped("cat-copy.jpg")
    assert json.loads(ok(cli("duplicates", "--index-dir", idx, "--marks", "-f", "json", "-q")).stdout) == []
    ok(cli("duplicates", "--index-dir", idx, "--not-duplicate", cat, copy, "-q"))
    assert not grouped("cat-copy.jpg")
    # Kept by content: rename the copy, and the mark follows it.
    renamed = library / "renamed.jpg"
    copy.rename(renamed)
    ok(cli("build-index", library, "--index-dir", idx, "--model", "fake", "-q"))
    listed = ok(cli("duplicates", "--index-dir", idx, "--marks"))
    assert "1 not-duplicate mark;" in listed.stderr
    marks = json.loads(ok(cli("duplicates", "--index-dir", idx, "--marks", "-f", "json", "-q")).stdout)
    assert len(marks) == 1 and {Path(marks[0]["a"]), Path(marks[0]["b"])} == {cat, renamed}
    assert marks[0]["indexed"] is True and marks[0]["time"]
    with vsearch.open_index(idx) as index:
        assert [(m.a, m.b) for m in index.marks()] == [(cat, renamed)]
    taken = ok(cli("duplicates", "--index-dir", idx, "--unmark", renamed, cat, "--threshold", SHORTLIST))
    assert "taken back" in taken.stderr
    assert grouped()
    assert json.loads(ok(cli("duplicates", "--index-dir", idx, "--marks", "-f", "json", "-q")).stdout) == []
    lines = [json.loads(line) for line in (idx / "marks.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["unmark"] is True and "unmark" not in lines[0]  # append-only
    fails(cli("duplicates", "--index-dir", idx, "--unmark", renamed, cat),
          r"are not marked as not duplicates \(`vsearch duplicates --marks` lists them\); nothing was taken back")
    with vsearch.open_index(idx) as index:
        index.not_duplicate(cat, renamed)  # marked again after it was taken back: it stands again
        assert len(index.marks()) == 1 and not grouped()
        index.unmark(cat, renamed)
        assert index.marks() == [] and grouped()
        with pytest.raises(vsearch.VsearchError, match="not marked as not duplicates"):
            index.unmark(cat, renamed)
    fails(cli("duplicates", "--index-dir", idx, "--marks", "-f", "paths"), "--marks prints a table, json or csv")
    fails(cli("duplicates", "--index-dir", idx, "--marks", "--unmark", cat, renamed), "does not go with --unmark")
