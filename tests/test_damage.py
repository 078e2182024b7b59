"""Damage to each file of an index, every way (truncated, garbage, emptied, a folder in its
place, values changed, NaN rows, swapped rows): ``check()`` finds it, and a query or a
duplicates run gives one error line naming the file and its repair, or the answer it gave
before (the fallback docs/damage.md documents), never ``nan`` scores or a wrong answer it
could have seen. Then each repair the check names, run, leaves an index that checks clean.

Through the real CLI in-process, with the fast ``fake`` model and real JPEGs (conftest).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import vsearch
import vsearch.api as api
from tests.conftest import FakeEmbedder, make_photo
from tests.helpers import cli, fails, ok
from vsearch.errors import IndexMissingError
from vsearch.models import loading as models
from vsearch.storage.meta import META_FILE
from vsearch.storage.store import Store, file_digest

PHOTOS = 12
#: The ways a file is damaged here; the last three keep it a valid .npy.
HOWS = ("truncated", "garbage", "emptied", "folder", "values changed", "NaN row", "swapped rows")
#: Damage no reader can see without hashing the whole file (a query never does): check() finds it.
UNSEEN = {"swapped rows"}


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """One folder of photos (p0 .. p11 and p0copy.jpg, an exact copy of p0) and indexes of it,
    built once, each a template a test copies: ``plain`` (fp32 vectors, Annoy; a not-duplicate
    mark, judgments and an undo log), ``compressed`` (a PCA search copy and its transform, a
    DBA copy, Annoy), ``trained`` (a head and its projected copy) and ``ivfpq``."""
    base = tmp_path_factory.mktemp("damage")
    photos = base / "photos"
    photos.mkdir()
    for i in range(PHOTOS):
        make_photo(photos / f"p{i}.jpg", seed=i)
    shutil.copy2(photos / "p0.jpg", photos / "p0copy.jpg")
    embedder = FakeEmbedder("fake")
    models.register("fake", lambda name, device, threads: embedder)
    try:
        with vsearch.build_index(photos, base / "plain", model="fake", trees=3) as index:
            index.not_duplicate(photos / "p1.jpg", photos / "p2.jpg")
            index.judge(photos / "p0.jpg", [photos / "p3.jpg"], relevant=True)
            aside = base / "aside"
            aside.mkdir()
            done = index.apply_actions(index.plan_actions(index.duplicates(level="exact"), move_to=aside))
            index.undo(done.path)
        vsearch.build_index(photos, base / "compressed", model="fake", trees=3, vectors="pca8w", dba=2).close()
        shutil.copytree(base / "plain", base / "trained")
        api.train(base / "trained", epochs=2, dim=16, views=1, device="cpu")
        if _has_faiss():
            vsearch.build_index(photos, base / "ivfpq", model="fake", approximate="ivfpq").close()
    finally:
        models.unregister("fake")
    yield {"photos": photos, **{p.name: p for p in base.iterdir() if p.name not in ("photos", "aside")}}


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def copy_of(templates: dict[str, Path], name: str, tmp_path: Path) -> Path:
    if name not in templates:
        pytest.skip("faiss is not installed")
    index_dir = tmp_path / name
    shutil.copytree(templates[name], index_dir)
    return index_dir


def file_of(index_dir: Path, role: str) -> Path:
    """The file of ``role`` (as check() names roles) in the index's committed generation."""
    with api.open_index(index_dir, adapter=False) as index:
        names = dict(index.meta.named_files())
    return index_dir / names[role]


def damage(path: Path, how: str) -> None:
    """Damage ``path`` one of the :data:`HOWS` ways (a file that is not a .npy gets its middle
    bytes changed for "values changed", and is not given the .npy-only kinds)."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "folder":
        path.unlink()
        path.mkdir()
        (path / "x").write_text("x")
    elif path.suffix != ".npy":
        assert how == "values changed"
        changed = bytearray(data)
        middle = len(changed) // 2
        changed[middle:middle + 64] = bytes(b ^ 0xFF for b in changed[middle:middle + 64])
        path.write_bytes(bytes(changed))
    else:
        array = np.load(path)
        if how == "values changed":
            array = array * 3  # still a valid .npy of the same shape: no reader's shape check sees it
        elif how == "NaN row":
            array[2] = np.nan
        else:
            assert how == "swapped rows"
            array[[0, 3]] = array[[3, 0]]
        np.save(path, array)


def query(photos: Path, index_dir: Path, *extra: object):
    return cli("query", photos / "p0.jpg", "--index-dir", index_dir, "-f", "json", "--k", PHOTOS + 1, *extra)


def duplicates(index_dir: Path):
    return cli("duplicates", "--index-dir", index_dir, "--level", "similar", "-f", "json")


def error_names(result, path: Path) -> None:
    """One ``error:`` line, exit 1, that names ``path`` and a repair (a command to run)."""
    line = fails(result, "")
    assert path.name in line, line
    assert "`vsearch " in line, line


def statuses(report: api.CheckReport) -> dict[str, str]:
    return {f.file: f.status for f in report.files}


#: (template, role, hows): every file a generation names, in an index that has it.
CASES = [
    ("plain", "vectors", HOWS),
    ("plain", "Annoy index", HOWS[:5]),
    ("compressed", "vectors", HOWS),
    ("compressed", "search copy", HOWS),
    ("compressed", "transform", HOWS[:5]),
    ("compressed", "DBA copy", HOWS),
    ("trained", "vectors", HOWS),
    ("trained", "head", HOWS[:5]),
    ("trained", "projected copy", HOWS),
    ("ivfpq", "IVF-PQ index", HOWS[:5]),
]


def unseen(role: str, how: str) -> bool:
    """Damage a query cannot see without hashing the file, which it never does (docs/damage.md):
    rows swapped, or an Annoy file's bytes changed at its size (Annoy reads it as it is)."""
    return how == "swapped rows" or (role == "Annoy index" and how == "values changed")


@pytest.mark.parametrize(("template", "role", "how"),
                         [(t, r, h) for t, r, hows in CASES for h in hows],
                         ids=[f"{t}-{r}-{h}".replace(" ", "_") for t, r, hows in CASES for h in hows])
def test_damage_is_found_by_check_and_never_a_silent_wrong_answer(templates, tmp_path, fake_model, template, role,
                                                                  how):
    photos = templates["photos"]
    index_dir = copy_of(templates, template, tmp_path)
    runs = {"query": lambda: query(photos, index_dir), "duplicates": lambda: duplicates(index_dir)}
    if template in ("plain", "ivfpq"):
        runs["approximate"] = lambda: query(photos, index_dir, "--approximate")
    before = {name: ok(run()).stdout for name, run in runs.items()}
    assert api.check(index_dir).ok

    path = file_of(index_dir, role)
    damage(path, how)

    report = api.check(index_dir)
    found = {f.file: f for f in report.files}[path.name]
    assert found.status in ("damaged", "missing") and found.problem and found.repair, found
    assert [f.file for f in report.damaged] == [path.name]  # nothing else is blamed
    checked = cli("check", "--index-dir", index_dir)
    assert checked.exit_code == 1, (checked.stdout, checked.stderr)
    assert path.name in checked.stdout and "1 of " in checked.stderr

    if unseen(role, how):
        return  # check() is what finds it (tested above)
    for name, run in runs.items():
        result = run()
        if result.exit_code == 0:  # the documented fallback: the very answer it gave before
            assert result.stdout == before[name], (name, result.stderr)
        else:
            error_names(result, path)


# --- the records a person made: marks, undo logs, judgments ------------------------------------


def side_file(index_dir: Path, which: str) -> Path:
    return index_dir / "marks.jsonl" if which == "marks" else index_dir / "judgments.sqlite" if which == "judgments" \
        else next((index_dir / "undo").glob("*.jsonl"))


def reads_it(index_dir: Path, which: str):
    """The command that reads the side file ``which``."""
    if which == "marks":
        return cli("duplicates", "--index-dir", index_dir, "--level", "similar", "-f", "json")
    if which == "judgments":
        return cli("judgments", "--index-dir", index_dir, "-f", "json")
    return cli("undo", side_file(index_dir, which), "--index-dir", index_dir)


@pytest.mark.parametrize("how", HOWS[:4])
@pytest.mark.parametrize("which", ["marks", "undo log", "judgments"])
def test_a_damaged_side_file_is_found_by_check_and_read_as_one_line_or_its_fallback(templates, tmp_path, fake_model,
                                                                                    which, how):
    index_dir = copy_of(templates, "plain", tmp_path)
    path = side_file(index_dir, which)
    damage(path, how)
    found = {f.file: f for f in api.check(index_dir).files}
    name = path.relative_to(index_dir).as_posix()
    assert found[name].status == "damaged" and found[name].problem and found[name].repair, found[name]
    assert [f.file for f in api.check(index_dir).damaged] == [name]
    result = reads_it(index_dir, which)
    if result.exit_code != 0:  # else the documented fallback: damaged lines skipped, with a warning
        line = fails(result, "")
        assert path.name in line, line


def test_an_undone_log_cut_short_is_reported_and_never_undone_twice(templates, tmp_path, fake_model):
    index_dir = copy_of(templates, "plain", tmp_path)
    log = side_file(index_dir, "undo log")
    log.write_bytes(log.read_bytes()[:-10])  # the "undone" line, cut: the log reads as not undone
    assert api.check(index_dir).damaged[0].file == log.relative_to(index_dir).as_posix()
    before = sorted(p.name for p in templates["photos"].iterdir())
    cli("undo", "--index-dir", index_dir)  # what it moved is back already: nothing is moved twice
    assert sorted(p.name for p in templates["photos"].iterdir()) == before


# --- the index's own records: meta.json, the manifest, pending chunks --------------------------------


@pytest.mark.parametrize("how", HOWS[:4])
@pytest.mark.parametrize("name", [META_FILE, "manifest.sqlite"])
def test_damaged_meta_json_or_manifest_is_found_by_check(templates, tmp_path, fake_model, name, how):
    index_dir = copy_of(templates, "plain", tmp_path)
    damage(index_dir / name, how)
    report = api.check(index_dir)
    bad = {f.file: f for f in report.damaged}
    assert name in bad and "rebuild" in bad[name].repair, report
    fails(query(templates["photos"], index_dir), "")
    checked = cli("check", "--index-dir", index_dir)
    assert checked.exit_code == 1 and name in checked.stdout


def test_a_damaged_pending_chunk_is_found_and_the_next_build_embeds_its_images_again(built, photos, fake_model):
    make_photo(photos / "late.jpg", seed=98)
    st = (photos / "late.jpg").stat()
    with Store.open(built, write=True) as store:  # what a killed run leaves: a chunk not committed yet
        store.add_chunk([("late.jpg", st.st_size, st.st_mtime_ns, file_digest((photos / "late.jpg").read_bytes()))],
                        np.eye(1, 48, dtype=np.float32))
    chunk = next((built / "chunks").glob("*.npy"))
    chunk.write_bytes(b"garbage")
    bad = api.check(built).damaged
    assert [f.file for f in bad] == [f"chunks/{chunk.name}"] and bad[0].repair == f"`build_index({photos})` embeds its images again"
    ok(cli("build-index", photos, "-q"))
    assert api.check(built).ok
    assert ok(cli("query", photos / "late.jpg", "-f", "paths", "--k", 1)).stdout.strip() == str(photos / "late.jpg")


def test_check_of_a_folder_that_holds_no_index_is_one_error_line(tmp_path):
    with pytest.raises(IndexMissingError):
        api.check(tmp_path)
    fails(cli("check", "--index-dir", tmp_path), r"no index at .*vsearch build-index FOLDER")


# --- the three symptoms, each once more by name ---------------------------------------------


def test_a_nan_row_is_one_error_line_naming_the_file_and_the_repair_not_nan_scores(built, photos):
    vectors = file_of(built, "vectors")
    damage(vectors, "NaN row")
    line = fails(cli("query", photos / "p0.jpg"), "")
    assert line == (f"error: {vectors} is damaged: stored vector 2 (p10.jpg) holds values that are not finite (NaN or "
                    f"infinity); `vsearch build-index {photos} --rebuild` repairs it, and `vsearch check` lists every "
                    "damaged file")


def test_a_zeroed_stored_row_names_the_file_not_the_not_weight(built, photos):
    vectors = file_of(built, "vectors")
    array = np.load(vectors)
    with api.open_index(built) as index:
        row = index.entry_of_path("p0.jpg").row
    array[row] = 0
    np.save(vectors, array)
    for extra in ((), ("--not", photos / "p1.jpg")):
        line = fails(cli("query", photos / "p0.jpg", *extra), "")
        assert f"{vectors} is damaged: stored vector {row} (p0.jpg) is not a unit vector" in line
        assert "--not-weight" not in line


def test_a_page_search_over_a_nan_row_answers_the_error_not_a_500(built, photos):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from tests.test_serve import client_for, search

    damage(file_of(built, "vectors"), "NaN row")
    with api.open_index(built) as index:
        client = client_for(index)
        answer = search(client, row=0, k=PHOTOS)
    assert answer.status_code == 400, answer.text
    assert "holds values that are not finite" in answer.json()["error"]


# --- checksums: recorded at each commit, never recomputed over damage ---------------------------------


def recorded(index_dir: Path) -> dict[str, dict]:
    return json.loads((index_dir / META_FILE).read_text()).get("checksums", {})


def test_each_commit_records_the_size_and_sha256_of_every_file_it_names(templates):
    import hashlib

    for name in ("plain", "compressed", "trained", "ivfpq"):
        if name not in templates:
            continue
        index_dir = templates[name]
        with api.open_index(index_dir) as index:
            named = {file for _role, file in index.meta.named_files()}
        sums = recorded(index_dir)
        assert set(sums) == named, name
        for file, record in sums.items():
            data = (index_dir / file).read_bytes()
            assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, (name, file)


def test_a_later_commit_never_records_the_checksum_of_a_file_damaged_since(built, photos):
    vectors = file_of(built, "vectors")
    damage(vectors, "swapped rows")
    ok(cli("build-index", photos, "-q", "--trees", "5"))  # a new Annoy index: meta.json committed again
    (photos / "p3.jpg").rename(photos / "p3-renamed.jpg")
    ok(cli("build-index", photos, "-q", "--trees", "5"))  # a rename only: a generation of the same vectors
    with api.open_index(built) as index:
        assert index.meta.vectors == vectors.name and index.generation == 2
    assert [f.file for f in api.check(built).damaged] == [vectors.name]


def test_every_way_of_writing_a_file_leaves_an_index_that_checks_clean(photos, fake_model, tmp_path):
    index_dir = tmp_path / "idx"

    def clean(*args: object) -> None:
        if args:
            ok(cli(*args, "--index-dir", index_dir, "-q"))
        report = api.check(index_dir)
        assert [(f.file, f.status) for f in report.files if f.status != "ok"] == [], (args, report)

    clean("build-index", photos, "--model", "fake", "--vectors", "pca8w", "--dba", "2", "--trees", "3")
    make_photo(photos / "new.jpg", seed=50)
    clean("build-index", photos, "--dba", "2", "--trees", "3")  # a new generation: every file made again
    (photos / "new.jpg").rename(photos / "moved.jpg")
    clean("build-index", photos, "--dba", "2", "--trees", "3")  # a move only: the same vectors files
    clean("build-index", photos, "--refit", "--trees", "3")  # a PCA fitted again, the copy remade, DBA dropped
    clean("train", "--views", "1", "--epochs", "2", "--dim", "8")
    clean("train", "--views", "1", "--epochs", "2", "--dim", "8")  # the same head again: same file names
    make_photo(photos / "newer.jpg", seed=51)
    clean("build-index", photos, "--trees", "3")  # a new generation's projected copy
    clean("train", "--remove")
    clean("build-index", photos, "--vectors", "fp16", "--trees", "3")  # another format: only the copy
    if _has_faiss():
        clean("build-index", photos, "--index", "ivfpq")


def test_an_index_from_before_checksums_opens_and_checks_as_unchecked(built, photos):
    meta = json.loads((built / META_FILE).read_text())
    del meta["checksums"]
    (built / META_FILE).write_text(json.dumps(meta))
    ok(cli("query", photos / "p0.jpg"))
    result = ok(cli("check", "-f", "json"))
    files = {f["file"]: f["status"] for f in json.loads(result.stdout)["files"]}
    assert files[meta["vectors"]] == files[meta["ann"]["file"]] == "unchecked"
    assert f"note: no checksums recorded (the index was last committed by an older vsearch): `vsearch build-index " \
           f"{photos} --rebuild` adds them" in result.stderr
    damage(built / meta["vectors"], "NaN row")  # without a checksum, what the vectors hold is still checked
    assert api.check(built).damaged[0].file == meta["vectors"]


# --- the repair check names, run: an index that checks clean, and the same answers --------------------


REPAIRS = [
    ("plain", "vectors", "NaN row"), ("plain", "vectors", "swapped rows"), ("plain", "vectors", "folder"),
    ("plain", "Annoy index", "values changed"),
    ("compressed", "search copy", "swapped rows"), ("compressed", "transform", "garbage"),
    ("compressed", "DBA copy", "values changed"), ("compressed", "vectors", "emptied"),
    ("trained", "head", "values changed"), ("trained", "projected copy", "swapped rows"),
    ("ivfpq", "IVF-PQ index", "truncated"),
]


@pytest.mark.parametrize(("template", "role", "how"), REPAIRS, ids=["-".join(c).replace(" ", "_") for c in REPAIRS])
def test_the_repair_check_names_repairs_the_index(templates, tmp_path, fake_model, template, role, how):
    photos = templates["photos"]
    index_dir = copy_of(templates, template, tmp_path)
    options = {"compressed": ("--dba", "2", "--trees", "3"), "ivfpq": ("--index", "ivfpq")}.get(template, ("--trees", "3"))
    before = ok(query(photos, index_dir)).stdout
    path = file_of(index_dir, role)
    damage(path, how)
    (found,) = api.check(index_dir).damaged
    calls = fake_model.calls
    if "train()" in found.repair:
        assert found.repair.startswith("call `train()` again")
        ok(cli("train", "--index-dir", index_dir, "--views", "1", "--epochs", "2", "--dim", "16", "-q"))
    else:
        assert found.repair.startswith(f"`build_index({photos}, rebuild=True)` repairs it")
        result = ok(cli("build-index", photos, "--rebuild", "--index-dir", index_dir, *options))
        if role != "vectors":  # made again from the vectors: nothing is embedded again
            assert fake_model.calls == calls, result.stderr
            assert "embedded 0," in result.stderr
    assert api.check(index_dir).ok, api.check(index_dir)
    assert ok(query(photos, index_dir)).stdout == before


def test_a_rebuild_embeds_again_only_the_images_whose_vectors_are_damaged(built, photos, fake_model):
    meta = json.loads((built / META_FILE).read_text())
    del meta["checksums"]  # no checksum: only the rows that are not unit vectors are known bad
    (built / META_FILE).write_text(json.dumps(meta))
    damage(built / meta["vectors"], "NaN row")
    result = ok(cli("build-index", photos, "--rebuild"))
    assert f"embedded 1, unchanged {PHOTOS - 1}" in result.stderr, result.stderr
    assert api.check(built).ok
