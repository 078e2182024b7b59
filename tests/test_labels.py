"""Label files and augmented labels: malformed rows are one error line, repeats count once,
an augmented run survives an indexed file that has gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_photo
from tests.helpers import cli
from vsearch.imaging import augment
from vsearch.evaluation import labels as lbl
from vsearch.errors import VsearchError
from vsearch.retrieval.search import Searcher
from vsearch.storage.store import Store

@pytest.fixture
def indexed(tmp_path, fake_model) -> tuple[Path, Path]:
    """Six photos (in pairs of the same picture) indexed with the fake model: (folder, index)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        make_photo(folder / f"a{i}.jpg", seed=i)
        make_photo(folder / f"b{i}.jpg", seed=i, quality=60)
    index = tmp_path / "idx"
    result = cli("build-index", folder, "--index-dir", index, "--model", "fake", "-q")
    assert result.exit_code == 0, result.output
    return folder, index


def one_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_row_with_more_fields_than_the_header_names_file_and_line(indexed, tmp_path):
    folder, index = indexed
    groups = tmp_path / "groups.csv"
    groups.write_text(f"path,group\n{folder}/a0.jpg,x\n{folder}/b0.jpg,x,extra\n")
    assert one_error(cli("evaluate", "--groups", groups, "--index-dir", index)) == (
        f"error: {groups}:3: 3 fields, but the header has 2")
    pairs = tmp_path / "pairs.csv"
    # a quoted cell over two lines: the error still names the line where the bad row starts
    pairs.write_text(f'query,positive\n"{folder}/a0.jpg",{folder}/b0.jpg\n"{folder}/a1\n.jpg",x,y,z\n')
    assert one_error(cli("evaluate", "--pairs", pairs, "--index-dir", index)) == (
        f"error: {pairs}:3: 4 fields, but the header has 2")
    # trailing empty fields (a spreadsheet's habit) are no extra data
    ok = tmp_path / "ok.csv"
    ok.write_text(f"path,group,\n{folder}/a0.jpg,x,,\n{folder}/b0.jpg,x,,\n")
    assert len(lbl.read_groups(ok).queries) == 2


def test_an_empty_group_cell_is_an_error(indexed, tmp_path):
    folder, index = indexed
    groups = tmp_path / "groups.csv"
    groups.write_text(f"path,group\n{folder}/a0.jpg,x\n{folder}/b0.jpg, \n")
    assert one_error(cli("evaluate", "--groups", groups, "--index-dir", index)) == (
        f"error: {groups}:3: empty group for {folder}/b0.jpg")


def test_repeated_rows_count_once_and_are_reported(indexed, tmp_path):
    folder, index = indexed
    groups = tmp_path / "groups.csv"
    rows = [f"{folder}/a{i}.jpg,g{i}\n{folder}/b{i}.jpg,g{i}\n" for i in range(3)]
    groups.write_text("path,group\n" + "".join(rows) + f"{folder}/a0.jpg,g0\nphotos/a0.jpg,g0\n")
    read = lbl.read_groups(groups)
    assert len(read.queries) == 6 and read.duplicates == 2  # the same file, twice more (once by a relative path)
    assert all(len(q.gains) == 1 for q in read.queries)
    result = cli("evaluate", "--groups", groups, "--index-dir", index, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_queries"] == 6
    assert "note: 2 repeated label row(s) counted once" in result.stderr.splitlines()
    # quiet keeps the note: it is about the labels, not progress
    quiet = cli("evaluate", "--groups", groups, "--index-dir", index, "-q")
    assert quiet.stderr.splitlines() == ["note: 2 repeated label row(s) counted once"]

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"query,positive\n{folder}/a0.jpg,{folder}/b0.jpg\n{folder}/a0.jpg,{folder}/b0.jpg\n"
                     f"{folder}/a1.jpg,{folder}/b1.jpg\n")
    read = lbl.read_pairs(pairs)
    assert [len(q.gains) for q in read.queries] == [1, 1] and read.duplicates == 1
    conflict = tmp_path / "conflict.csv"
    conflict.write_text(f"query,positive,relevance\n{folder}/a0.jpg,{folder}/b0.jpg,1\n"
                        f"{folder}/a0.jpg,{folder}/b0.jpg,2\n")
    with pytest.raises(VsearchError, match=r"conflict\.csv:3: this pair is also on line 2 with relevance 1, here 2"):
        lbl.read_pairs(conflict)


def test_augment_skips_an_indexed_file_deleted_since(indexed):
    folder, index = indexed
    (folder / "b1.jpg").unlink()
    # --augment 6 picks every indexed image, the deleted one included
    result = cli("evaluate", "--index-dir", index, "--augment", 6, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_queries"] == 5 * len(augment.KINDS)
    assert (f"skipped 1 picked image(s) no longer on disk: {folder.resolve() / 'b1.jpg'} "
            "(run vsearch build-index to refresh)") in result.stderr.splitlines()
    assert "edited copies of 5 indexed images" in result.stderr
    with Store.open(index) as store:
        made = lbl.augment_labels(Searcher(store), 6, 0, folder.parent / "copies")
    assert made.skipped == (folder.resolve() / "b1.jpg",)
    assert {q for lq in made.queries for q in lq.gains} == {p.resolve() for p in folder.iterdir()}


def test_augment_with_every_pick_gone_is_one_error(indexed):
    folder, index = indexed
    for p in folder.iterdir():
        p.unlink()
    message = one_error(cli("evaluate", "--index-dir", index, "--augment", 2))
    assert message.startswith("error: none of the 2 images picked is still on disk")
    assert message.endswith("run vsearch build-index to refresh the index")
