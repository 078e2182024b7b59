"""Every bad input ends in one ``error: ...`` line (or a named skip), never a traceback.

All through the real CLI (in-process), with the fast ``fake`` model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_photo
from tests.helpers import cli, fails, ok
from vsearch.storage.store import MANIFEST_FILE, META_FILE


def query_works(photos: Path) -> None:
    result = cli("query", photos / "p0.jpg", "--format", "paths", "--k", "1")
    ok(result)
    assert result.stdout.strip() == str(photos / "p0.jpg")


# --- folders ------------------------------------------------------------------------------


def test_missing_folder(tmp_path, photos, fake_model):
    fails(cli("build-index", tmp_path / "nope", "--model", "fake"),
          rf"folder not found: {tmp_path / 'nope'}$")
    fails(cli("embed", tmp_path / "nope", "--model", "fake"), "folder not found")
    fails(cli("build-index", photos / "p0.jpg", "--model", "fake"), "not a folder")
    # The failed runs leave the default index free for a real folder.
    ok(cli("build-index", photos, "--model", "fake", "-q"))
    query_works(photos)


def test_empty_folder(tmp_path, photos, fake_model):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no pictures here")
    fails(cli("build-index", empty, "--model", "fake"), rf"no images found in {empty} \(looked for .*\.jpg")
    # An empty folder must not bind the default index to itself.
    ok(cli("build-index", photos, "--model", "fake", "-q"))
    query_works(photos)


# --- the index ----------------------------------------------------------------------------


def test_missing_index(tmp_path, photos):
    fails(cli("query", photos / "p0.jpg"), "no index at .*build one with `vsearch build-index FOLDER`")
    fails(cli("query", photos / "p0.jpg", "--index-dir", tmp_path / "elsewhere"),
          f"no index at {tmp_path / 'elsewhere'}")
    groups = tmp_path / "g.csv"
    groups.write_text("path,group\nphotos/p0.jpg,a\nphotos/p1.jpg,a\n")
    fails(cli("evaluate", "--groups", groups), "no index at")


def test_index_from_another_model_is_refused(built, photos, fake_model):
    message = fails(cli("embed", photos, "--model", "efficientnet-lite0"), "built with model fake")
    assert "efficientnet-lite0" in message and "--index-dir" in message
    assert fake_model.calls > 0  # it did build; the refusal loaded no other model (no torch: fast)
    query_works(photos)


def test_other_format_version_is_refused(built, photos, fake_model):
    meta = built / META_FILE
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 99}))
    fails(cli("query", photos / "p0.jpg"), r"format version 99; this vsearch .* reads version 1\. Rebuild")
    fails(cli("build-index", photos, "--model", "fake"), "format version 99")


def test_meta_json_missing_never_loads_and_a_writer_finishes_it(built, photos, fake_model):
    (built / META_FILE).unlink()
    fails(cli("query", photos / "p0.jpg"), f"never completed; run `vsearch build-index {photos}` to finish it")
    ok(cli("build-index", photos, "-q"))
    query_works(photos)


def test_truncated_vectors_never_load_and_a_writer_repairs_them(built, photos, fake_model):
    meta = json.loads((built / META_FILE).read_text())
    vectors = built / meta["vectors"]
    data = vectors.read_bytes()
    vectors.write_bytes(data[: len(data) // 2])
    fails(cli("query", photos / "p0.jpg"), f"{meta['vectors']}")
    fails(cli("evaluate", "--pairs", _pairs(photos)), f"{meta['vectors']}")
    calls = fake_model.calls
    result = cli("build-index", photos)
    ok(result)
    assert fake_model.calls > calls  # the lost vectors were embedded again
    query_works(photos)


def _pairs(photos: Path) -> Path:
    path = photos.parent / "pairs.csv"
    path.write_text(f"query,positive\n{photos / 'p0.jpg'},{photos / 'p1.jpg'}\n")
    return path


def test_manifest_generation_ahead_of_meta_json(built, photos, fake_model, tmp_path):
    # A crash after the manifest committed generation 2 but before meta.json said so.
    old_meta = (built / META_FILE).read_bytes()
    make_photo(photos / "new.jpg", seed=40)
    ok(cli("embed", photos, "-q"))
    (built / META_FILE).write_bytes(old_meta)
    query_works(photos)  # readers serve generation 1, which the manifest still maps
    ok(cli("embed", photos, "-q"))
    query_works(photos)
    result = cli("query", photos / "new.jpg", "--format", "paths", "--k", "1")
    assert result.stdout.strip() == str(photos / "new.jpg")


def test_a_run_killed_mid_embedding_never_loads_and_the_next_run_resumes(
        photos, fake_model, isolated_index_dir):
    from vsearch.indexing import pipeline as indexer
    from vsearch.storage.store import Store

    def stop_after_two(p) -> None:
        if p.embedded >= 2:
            raise KeyboardInterrupt

    with Store.open(isolated_index_dir, write=True) as store, pytest.raises(KeyboardInterrupt):
        indexer.update(store, photos, indexer.IndexOptions("fake", batch_size=2, chunk_size=2, workers=1), progress=stop_after_two)
    assert not (isolated_index_dir / META_FILE).exists()
    fails(cli("query", photos / "p0.jpg"), f"never completed; run `vsearch build-index {photos}` to finish it")

    result = cli("embed", photos)
    ok(result)
    assert "embedded 4, unchanged 2," in result.stderr  # the committed chunk was kept, not redone
    assert "holds 6 images" in result.stderr
    query_works(photos)


def test_a_second_writer_is_refused(built, photos, fake_model):
    from vsearch.storage.store import Store

    with Store.open(built, write=True):
        fails(cli("embed", photos), r"being written by another vsearch process \(pid \d+\); wait for it")
        query_works(photos)  # readers are not blocked
    ok(cli("embed", photos, "-q"))


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_annoy_index_is_one_line_and_build_index_rebuilds_it(built, photos, fake_model, damage):
    ann = built / json.loads((built / META_FILE).read_text())["ann"]["file"]
    if damage == "truncate":
        ann.write_bytes(ann.read_bytes()[:1001])
    else:
        ann.unlink()
    fails(cli("query", photos / "p0.jpg", "--approximate"), f"cannot read the Annoy index {ann}.*build-index")
    query_works(photos)  # exact search (the default at this size) does not need it
    ok(cli("build-index", photos, "-q"))
    result = cli("query", photos / "p0.jpg", "--approximate", "--format", "paths", "--k", "1")
    ok(result)
    assert result.stdout.strip() == str(photos / "p0.jpg")


def test_a_manifest_that_is_not_sqlite_is_refused(built, photos):
    (built / MANIFEST_FILE).write_bytes(b"this is not a database" * 100)
    fails(cli("query", photos / "p0.jpg"), "cannot read manifest")


def test_index_dir_that_is_some_other_folder_is_refused(tmp_path, photos, fake_model):
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.txt").write_text("precious")
    fails(cli("build-index", photos, "--model", "fake", "--index-dir", other), "holds no vsearch index")
    assert [p.name for p in other.iterdir()] == ["thesis.txt"]


# --- files that are not images ------------------------------------------------------------


def test_bad_image_files_are_skipped_named_and_counted(photos, fake_model):
    good = (photos / "p0.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.png").write_text("these are my notes, not a picture\n" * 20)
    corrupt = bytearray(good)
    corrupt[20:400] = b"\x00" * 380  # header tables destroyed
    (photos / "corrupt.jpeg").write_bytes(bytes(corrupt))
    bad = {"truncated.jpg", "empty.jpg", "notes.png", "corrupt.jpeg"}

    result = cli("build-index", photos, "--model", "fake")
    ok(result)
    assert "embedded 6," in result.stderr and "skipped 4" in result.stderr
    named = {line.split(":")[0].removeprefix("skipped ") for line in result.stderr.splitlines()
             if line.startswith("skipped ") and ":" in line}
    assert named == bad, result.stderr
    assert "holds 6 images" in result.stderr
    assert "Traceback" not in result.stderr

    # The good files are all searchable; the bad ones are not in the results.
    result = cli("query", photos / "p3.jpg", "--format", "paths", "--k", "100")
    ok(result)
    assert sorted(Path(p).name for p in result.stdout.split()) == [f"p{i}.jpg" for i in range(6)]

    # An unchanged re-run does not retry them, but still says they are there.
    calls = fake_model.calls
    result = cli("embed", photos)
    ok(result)
    assert fake_model.calls == calls
    assert "skipped 0 (+4 known)" in result.stderr


def test_a_bad_query_image_is_one_line(built, photos, tmp_path):
    (tmp_path / "q.jpg").write_bytes(b"not a jpeg")
    fails(cli("query", tmp_path / "q.jpg"), f"cannot read query image {tmp_path / 'q.jpg'}")
    fails(cli("query", photos), "query is a folder")


# --- label files --------------------------------------------------------------------------


def test_unreadable_csv(built, tmp_path):
    fails(cli("evaluate", "--groups", tmp_path / "missing.csv"), r"cannot read .*missing\.csv: No such file")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    fails(cli("evaluate", "--pairs", binary), "binary.csv is not a readable CSV file")
    header_only = tmp_path / "header.csv"
    header_only.write_text("path,group\n")
    fails(cli("evaluate", "--groups", header_only), "has a header but no rows")


def test_csv_with_a_wrong_header(built, tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("file,label\na.jpg,x\n")
    fails(cli("evaluate", "--groups", wrong), "expected a CSV header with path,group; found file,label")
    fails(cli("evaluate", "--pairs", wrong), "expected a CSV header with query,positive; found file,label")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    fails(cli("evaluate", "--pairs", empty), "found no header")


def test_labelled_images_not_in_the_index_are_named(built, photos, tmp_path):
    missing = [f"gone{i}.jpg" for i in range(5)]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query,positive\n" + "".join(f"{photos / 'p0.jpg'},{photos / m}\n" for m in missing))
    message = fails(cli("evaluate", "--pairs", pairs), "5 labelled image\\(s\\) are not in the index")
    shown = [m for m in missing if str(photos / m) in message]
    assert shown == missing[:3] and "and 2 more" in message

    groups = tmp_path / "groups.csv"
    groups.write_text("path,group\nphotos/p0.jpg,a\nphotos/p1.jpg,a\nphotos/elsewhere.jpg,a\n")
    fails(cli("evaluate", "--groups", groups),
          f"1 labelled image\\(s\\) are not in the index .*: {photos / 'elsewhere.jpg'};")


def test_groups_evaluate_on_the_fake_index(built, photos, tmp_path):
    # The positive control for the label-file errors above.
    groups = tmp_path / "groups.csv"
    groups.write_text("path,group\n" + "".join(f"photos/p{i}.jpg,{i // 2}\n" for i in range(6)))
    result = cli("evaluate", "--groups", groups, "--format", "json")
    ok(result)
    metrics = json.loads(result.stdout)
    assert metrics["num_queries"] == 6
    assert 0.0 <= metrics["mrr"] <= 1.0
