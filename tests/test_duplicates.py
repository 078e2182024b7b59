"""duplicates: levels, verified star groups around the keeper, keep rules, marks, output columns."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

import vsearch
from conftest import SAMPLE_IMAGES
from helpers import cli, fails, ok
from test_verify import edited_copy
from vsearch.duplicates.grouping import find_groups
from vsearch.storage.store import Store

#: The fake model's cosines are not the real model's: a loose shortlist puts every pair of these
#: few pictures before verification, so the tests check what verification decides.
SHORTLIST = "0.3"


def names(groups) -> list[set[str]]:
    return [{m.path.name for m in g} for g in groups]


def build(folder: Path, index_dir: Path) -> Path:
    ok(cli("build-index", folder, "--index-dir", index_dir, "--model", "fake", "-q"))
    return index_dir


@pytest.fixture
def library(tmp_path, fake_model) -> Path:
    """A photo with an edited copy, a mirrored copy and a byte copy; two Hubble tiles; a coffee."""
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(SAMPLE_IMAGES / "chelsea.jpg", lib / "cat.jpg")
    edited_copy(lib / "cat.jpg", lib / "cat-edit.jpg")
    ImageOps.mirror(Image.open(lib / "cat.jpg")).save(lib / "cat-mirror.jpg", quality=70)  # fewer bytes
    shutil.copy(SAMPLE_IMAGES / "coffee.jpg", lib / "coffee.jpg")
    shutil.copy(lib / "coffee.jpg", lib / "coffee-copy.jpg")
    for tile in ("ne", "nw"):
        shutil.copy(SAMPLE_IMAGES / f"hubble_deep_field_tile_{tile}.jpg", lib / f"tile-{tile}.jpg")
    build(lib, tmp_path / "idx")
    return lib


def test_near_groups_verified_copies_only(library, tmp_path):
    with vsearch.open_index(tmp_path / "idx") as idx:
        groups = idx.duplicates(float(SHORTLIST))
    assert sorted(names(groups), key=len) == [{"coffee.jpg", "coffee-copy.jpg"},
                                              {"cat.jpg", "cat-edit.jpg", "cat-mirror.jpg"}]
    cat = next(g for g in groups if g.keeper.path.name == "cat.jpg")
    assert cat.number == 1 and len(cat) == 3 and cat.keeper.keeper and not any(m.keeper for m in cat.copies)
    assert {m.level for m in cat} == {"near"} and cat.level == "near"
    coffee = groups[1]
    assert [m.level for m in coffee] == ["exact", "exact"]  # same bytes: exact, even at the near level
    assert coffee.keeper.path.name == "coffee.jpg"  # same pixels and bytes: the oldest, then the path


def test_levels(library, tmp_path):
    idx = tmp_path / "idx"
    exact = json.loads(ok(cli("duplicates", "--index-dir", idx, "--level", "exact", "-f", "json", "-q")).stdout)
    assert {Path(m["path"]).name for m in exact} == {"coffee.jpg", "coffee-copy.jpg"}
    assert {m["level"] for m in exact} == {"exact"}
    with Store.open(idx) as store:
        similar = find_groups(store, float(SHORTLIST), level="similar")
    # Cosine alone at a loose threshold groups look-alikes: the tiles, and more.
    assert any({"tile-ne.jpg", "tile-nw.jpg"} <= n for n in names(similar))
    assert {m.level for g in similar for m in g} <= {"exact", "similar"}


def test_output_shows_keeper_level_and_sizes(library, tmp_path):
    idx = tmp_path / "idx"
    members = json.loads(ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "-f", "json", "-q")).stdout)
    cat = {Path(m["path"]).name: m for m in members if m["group"] == 1}
    keeper = cat["cat.jpg"]
    assert keeper["keeper"] is True and keeper["score"] == 1.0 and keeper["level"] == "near"
    assert keeper["pixels"] == 451 * 300 and keeper["bytes"] == (library / "cat.jpg").stat().st_size
    assert keeper["format"] == "JPEG" and keeper["mtime"] == pytest.approx((library / "cat.jpg").stat().st_mtime, abs=1e-3)
    assert cat["cat-edit.jpg"]["keeper"] is False and {"group", "size", "path", "score", "row"} <= set(keeper)
    table = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST)).stdout
    header = table.splitlines()[1]
    for column in ("group", "size", "keeper", "level", "score", "pixels", "bytes", "format", "mtime", "path"):
        assert f" {column} " in header
    rows = list(csv.DictReader(io.StringIO(ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST,
                                                  "-f", "csv", "-q")).stdout)))
    assert [r["keeper"] for r in rows].count("yes") == 2 and rows[0]["mtime"][:2] in ("19", "20")
    paths = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "-f", "paths", "-q")).stdout.split()
    assert sorted(Path(p).name for p in paths) == ["cat-edit.jpg", "cat-mirror.jpg", "coffee-copy.jpg"]


def test_bad_level_or_keep_is_one_error_line(library, tmp_path):
    fails(cli("duplicates", "--index-dir", tmp_path / "idx", "--level", "fuzzy"), "fuzzy")
    fails(cli("duplicates", "--index-dir", tmp_path / "idx", "--keep", "prettiest"), "prettiest")
    with vsearch.open_index(tmp_path / "idx") as idx, pytest.raises(vsearch.VsearchError, match="keep must be"):
        idx.duplicates(keep="prettiest")


@pytest.fixture
def png_and_jpeg_copy(tmp_path, fake_model) -> Path:
    """An original PNG, a small lossy JPEG copy of it, and a same-size JPEG copy (fewer bytes)."""
    lib = tmp_path / "keep"
    lib.mkdir()
    original = Image.open(SAMPLE_IMAGES / "astronaut.jpg").convert("RGB")
    original.save(lib / "zz-original.png")
    original.resize((original.width // 2, original.height // 2)).save(lib / "a-small.jpg", quality=60)
    original.save(lib / "b-same-size.jpg", quality=70)
    build(lib, tmp_path / "kidx")
    return lib


def test_keep_rules(png_and_jpeg_copy, tmp_path):
    lib, idx = png_and_jpeg_copy, tmp_path / "kidx"

    def keeper(*options: str) -> str:
        out = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "-f", "json", "-q", *options)).stdout
        members = json.loads(out)
        assert {m["group"] for m in members} == {1} and len(members) == 3
        return next(Path(m["path"]).name for m in members if m["keeper"])

    # Most pixels, then the largest file: the PNG, never a lossy copy; the copies are the delete list.
    assert keeper() == "zz-original.png"
    listed = ok(cli("duplicates", "--index-dir", idx, "--threshold", SHORTLIST, "-f", "paths", "-q")).stdout.split()
    assert sorted(Path(p).name for p in listed) == ["a-small.jpg", "b-same-size.jpg"]
    assert keeper("--keep", "largest") == "zz-original.png"
    assert keeper("--keep", "smallest") == "a-small.jpg"
    assert keeper("--keep", "shortest-path") == "a-small.jpg"  # as short as b-same-size's? no: 11 < 15 letters
    for age, name in enumerate(("b-same-size.jpg", "a-small.jpg", "zz-original.png")):
        os.utime(lib / name, (1_000_000 + age, 1_000_000 + age))
    assert keeper("--keep", "oldest") == "b-same-size.jpg"
    assert keeper("--keep", "newest") == "zz-original.png"


def test_a_chain_does_not_merge_two_different_tiles(tmp_path, fake_model):
    """Tile A ~ whole ~ tile B: A and B never share a group (each member is verified against the keeper)."""
    lib = tmp_path / "chain"
    lib.mkdir()
    whole = Image.open(SAMPLE_IMAGES / "rocket.jpg").convert("RGB")
    w, h = whole.size
    whole.crop((0, 0, round(w * 0.6), h)).save(lib / "tile-a.jpg", quality=92)  # left 60%, full size
    whole.crop((round(w * 0.4), 0, w, h)).save(lib / "tile-b.jpg", quality=92)  # right 60%
    whole.resize((w // 2, h // 2)).save(lib / "whole-thumb.jpg", quality=80)  # the whole, fewer pixels
    build(lib, tmp_path / "cidx")
    with Store.open(tmp_path / "cidx") as store:
        groups = find_groups(store, float(SHORTLIST))
        linked = find_groups(store, -1.0, level="similar")
    assert names(linked) == [{"tile-a.jpg", "tile-b.jpg", "whole-thumb.jpg"}]  # cosine alone chains them
    assert len(groups) == 1 and "whole-thumb.jpg" in names(groups)[0] and len(groups[0]) == 2
    assert groups[0].keeper.path.name in ("tile-a.jpg", "tile-b.jpg")


def test_not_duplicates_are_kept_apart(library, tmp_path):
    with Store.open(tmp_path / "idx") as store:
        before = find_groups(store, float(SHORTLIST))
        cat = next(g for g in before if g.keeper.path.name == "cat.jpg")
        mirror = next(m for m in cat if m.path.name == "cat-mirror.jpg")
        marks = {frozenset((mirror.digest, cat.keeper.digest))}
        after = find_groups(store, float(SHORTLIST), not_duplicates=marks)
    assert {"cat.jpg", "cat-edit.jpg"} in names(after)
    assert not any({"cat.jpg", "cat-mirror.jpg"} <= n for n in names(after))
    with vsearch.open_index(tmp_path / "idx") as idx:  # the API passes them through
        assert names(idx.duplicates(float(SHORTLIST), not_duplicates=marks)) == names(after)


@pytest.mark.slow
def test_defaults_with_the_real_model(tmp_path):
    """The issue's defects, at the defaults: the Hubble tiles stay apart, a 64x64 photo saved again
    at 80x80 JPEG q60 is found, and the original PNG is kept over its small lossy JPEG copy."""
    lib = tmp_path / "photos"
    shutil.copytree(SAMPLE_IMAGES, lib, ignore=shutil.ignore_patterns("*.md", "*.csv"))
    small = Image.open(SAMPLE_IMAGES / "coins.jpg").convert("RGB").resize((64, 64))
    small.save(lib / "coins-64.png")
    small.resize((80, 80)).save(lib / "coins-80.jpg", quality=60)
    big = Image.open(SAMPLE_IMAGES / "astronaut.jpg").convert("RGB")
    big.save(lib / "astronaut-original.png")
    big.resize((big.width // 3, big.height // 3)).save(lib / "astronaut-small.jpg", quality=60)
    ok(cli("build-index", lib, "--index-dir", tmp_path / "idx", "-q"))
    members = json.loads(ok(cli("duplicates", "--index-dir", tmp_path / "idx", "-f", "json", "-q")).stdout)
    groups: dict[int, set[str]] = {}
    for m in members:
        groups.setdefault(m["group"], set()).add(Path(m["path"]).name)
    assert not any({"hubble_deep_field_tile_ne.jpg", "hubble_deep_field_tile_nw.jpg"} <= g for g in groups.values())
    assert not any(sum(n.startswith("hubble_deep_field_tile") for n in g) > 1 for g in groups.values())
    assert {"coins-64.png", "coins-80.jpg"} <= next(g for g in groups.values() if "coins-64.png" in g)
    keepers = {Path(m["path"]).name for m in members if m["keeper"]}
    # astronaut-original.png was saved from astronaut.jpg (its pixels sit on that JPEG's grid, at
    # its quality): the JPEG it came from is kept, never the small lossy copy.
    assert "astronaut.jpg" in keepers and "astronaut-small.jpg" not in keepers


def _six_photos_with_copies(tmp_path: Path) -> None:
    """Six sample photos, each with an edited and a mirrored copy, indexed at tmp_path / "idx"."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg", "coins.jpg", "camera.jpg"):
        src = SAMPLE_IMAGES / name
        shutil.copy(src, lib / name)
        edited_copy(lib / name, lib / f"{src.stem}-edit.jpg")
        ImageOps.mirror(Image.open(src).convert("RGB")).save(lib / f"{src.stem}-mirror.jpg", quality=80)
    build(lib, tmp_path / "idx")


def test_near_groups_on_several_threads_are_the_groups_of_one(tmp_path, fake_model, monkeypatch):
    """Connected parts of the candidates are grouped on several threads, each with its own
    verifier (OpenCV state is per thread); the groups, their order and numbers are those of one
    thread (a verifier given by the caller is used alone)."""
    import threading

    from vsearch.duplicates import grouping
    from vsearch.imaging import verify

    _six_photos_with_copies(tmp_path)
    threads: set[str] = set()
    real = verify.Verifier.verify
    monkeypatch.setattr(verify.Verifier, "verify",
                        lambda self, a, b: threads.add(threading.current_thread().name) or real(self, a, b))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    with vsearch.open_index(tmp_path / "idx") as idx:
        store, _ = idx._open()
        many = grouping.find_groups(store, level="near")
        used = set(threads)
        threads.clear()
        one = grouping.find_groups(store, level="near", verifier=grouping.near_verifier())
    assert len(used) > 1 and len(threads) == 1
    assert many == one and len(many) >= 4


@pytest.mark.skipif(sys.platform != "linux", reason="worker processes are forked on Linux only")
def test_near_groups_in_worker_processes_are_the_groups_of_one_thread(tmp_path, fake_model, monkeypatch):
    """From PROCESSES_FROM candidate rows, parts are grouped in forked worker processes (small
    images verify mostly in Python, where threads wait on each other); the groups, their order,
    numbers, members' facts and the groups reported as found are those of one thread, marks included."""
    from vsearch.duplicates import grouping

    _six_photos_with_copies(tmp_path)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    processes: list[str] = []
    real_pool = grouping.ProcessPoolExecutor
    monkeypatch.setattr(grouping, "ProcessPoolExecutor", lambda **kw: processes.append("pool") or real_pool(**kw))
    with vsearch.open_index(tmp_path / "idx") as idx:
        store, _ = idx._open()
        digests = {m.path.name: m.digest for g in grouping.find_groups(store, level="near", verifier=grouping.near_verifier())
                   for m in g}
        apart_mark = [frozenset((digests["coffee.jpg"], digests["coffee-edit.jpg"]))]
        one_found: list = []
        one = grouping.find_groups(store, level="near", verifier=grouping.near_verifier(), not_duplicates=apart_mark,
                                   found=one_found.append)
        assert processes == []
        monkeypatch.setattr(grouping, "PROCESSES_FROM", 0)
        many_found: list = []
        many = grouping.find_groups(store, level="near", not_duplicates=apart_mark, found=many_found.append)
    assert processes == ["pool"]
    assert many == one and len(many) >= 5 and many_found == one_found
    assert not any({"coffee.jpg", "coffee-edit.jpg"} <= {m.path.name for m in g} for g in many)  # the mark held
