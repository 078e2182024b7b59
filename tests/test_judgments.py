"""Judgments: ``vsearch judge``, ``vsearch judgments [list|export]``, ``evaluate --judgments``, and
judgments.sqlite (content-digest keys that survive renames, the old JSON-lines file imported
once, a damaged file left alone with one error line)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sqlite3
import subprocess
import sys

import pytest

import vsearch
from tests.conftest import REPO, make_photo
from tests.helpers import cli, fails, ok
from vsearch.learning import judgments as jd
from vsearch.storage.store import file_digest


def listed(index_dir=None):
    args = ("--index-dir", index_dir) if index_dir else ()
    return json.loads(ok(cli("judgments", "-f", "json", *args)).stdout)


def neighbours(photos, name, k=5):
    """The fake model's ranking for photos/name, itself left out (as evaluate leaves it out)."""
    with vsearch.open_index() as index:
        return [h.path.name for h in index.query(photos / name, k=k + 1) if h.path.name != name][:k]


# --- recording and reading back --------------------------------------------------------------


def test_judge_records_verdicts_keyed_by_content_and_lists_them(built, photos):
    result = ok(cli("judge", photos / "p0.jpg", photos / "p1.jpg", photos / "p2.jpg", "--relevant"))
    assert "recorded 2 verdict(s): relevant" in result.stderr
    ok(cli("judge", photos / "p0.jpg", photos / "p3.jpg", "--irrelevant"))
    ok(cli("judge", photos / "p4.jpg", photos / "p5.jpg", "--relevant", "--grade", "3"))
    got = listed()
    digest = {f"p{i}": file_digest((photos / f"p{i}.jpg").read_bytes()) for i in range(6)}
    assert [(j["query"], j["result"], j["relevant"], j["grade"], j["source"], j["result_path"]) for j in got] == [
        (digest["p0"], digest["p1"], True, 1, "cli", "p1.jpg"),
        (digest["p0"], digest["p2"], True, 1, "cli", "p2.jpg"),
        (digest["p0"], digest["p3"], False, 0, "cli", "p3.jpg"),
        (digest["p4"], digest["p5"], True, 3, "cli", "p5.jpg"),
    ]
    assert got[0]["rank"] is None and got[0]["query_path"] == str((photos / "p0.jpg").resolve())
    table = ok(cli("judgments", "list")).stdout
    assert "p3.jpg" in table and "cli" in table
    rows = list(csv.DictReader(io.StringIO(ok(cli("judgments", "-f", "csv")).stdout)))
    assert len(rows) == 4 and rows[3]["grade"] == "3"
    with sqlite3.connect(built / jd.DB_FILE) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_judgments_survive_a_rename_and_a_rebuild(built, photos):
    ok(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--relevant"))
    before = ok(cli("evaluate", "--judgments", "-f", "json")).stdout
    os.rename(photos / "p0.jpg", photos / "query-renamed.jpg")
    os.rename(photos / "p1.jpg", photos / "result-renamed.jpg")
    ok(cli("build-index", photos, "--model", "fake", "-q"))
    exported = ok(cli("judgments", "export")).stdout
    assert exported.splitlines() == ["query,positive,relevance",
                                     f"{(photos / 'query-renamed.jpg').resolve()},"
                                     f"{(photos / 'result-renamed.jpg').resolve()},1"]
    assert ok(cli("evaluate", "--judgments", "-f", "json")).stdout == before  # the same pair, found by content
    ok(cli("build-index", photos, "--model", "fake", "-q", "--rebuild"))
    assert len(listed()) == 1


def test_export_then_evaluate_pairs_scores_like_evaluate_judgments(built, photos, tmp_path):
    ok(cli("judge", photos / "p0.jpg", photos / "p1.jpg", photos / "p2.jpg", "--relevant"))
    ok(cli("judge", photos / "p0.jpg", photos / "p3.jpg", "--irrelevant"))
    ok(cli("judge", photos / "p4.jpg", photos / "p5.jpg", "--relevant", "--grade", "2"))
    ok(cli("judge", photos / "p5.jpg", photos / "p1.jpg", "--irrelevant"))  # no relevant result: not a query
    out = tmp_path / "judged" / "pairs.csv"
    out.parent.mkdir()
    result = ok(cli("judgments", "export", "--out", out))
    assert "2 queries, 4 pairs written to" in result.stderr and "no relevant result judged" in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(r["positive"].rsplit("/", 1)[1], r["relevance"]) for r in rows] == [
        ("p1.jpg", "1"), ("p2.jpg", "1"), ("p3.jpg", "0"), ("p5.jpg", "2")]
    from_pairs = json.loads(ok(cli("evaluate", "--pairs", out, "-f", "json")).stdout)
    judged = ok(cli("evaluate", "--judgments", "-f", "json"))
    assert json.loads(judged.stdout) == from_pairs and from_pairs["num_queries"] == 2
    assert "note: 1 query left out: no relevant result judged" in judged.stderr
    fails(cli("judgments", "export", "-f", "json"), "csv")
    fails(cli("judgments", "--out", out), "export")


def test_evaluate_judgments_uses_the_grades_for_ndcg(built, photos):
    first, second = neighbours(photos, "p0.jpg", 2)
    ok(cli("judge", photos / "p0.jpg", photos / first, "--relevant", "--grade", "1"))
    ok(cli("judge", photos / "p0.jpg", photos / second, "--relevant", "--grade", "3"))
    got = json.loads(ok(cli("evaluate", "--judgments", "--k", "5", "-f", "json")).stdout)
    # DCG = 1/log2(2) + 3/log2(3); ideal = 3/log2(2) + 1/log2(3)
    assert got["ndcg@5"] == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))
    assert got["map@5"] == pytest.approx(1.0)  # binary metrics see both as relevant
    ok(cli("judge", photos / "p0.jpg", photos / second, "--relevant"))  # a changed mind: the last verdict counts
    again = json.loads(ok(cli("evaluate", "--judgments", "--k", "5", "-f", "json")).stdout)
    assert again["ndcg@5"] == pytest.approx(1.0)


def test_a_query_from_outside_the_index_and_a_text_query(built, photos, tmp_path):
    outside = make_photo(tmp_path / "outside.jpg", seed=1, quality=70)  # like p1, not indexed
    ok(cli("judge", outside, photos / "p1.jpg", "--relevant"))
    ok(cli("judge", "text:a red car", photos / "p2.jpg", "--relevant"))
    got = listed()
    assert got[0]["query"] == file_digest(outside.read_bytes()) and got[1]["query"] == "text:a red car"
    result = ok(cli("evaluate", "--judgments", "-f", "json"))
    assert json.loads(result.stdout)["num_queries"] == 1  # the outside photo, from where it was judged
    assert "1 text query left out: this index's model has no text tower" in result.stderr
    outside.unlink()
    fails(cli("evaluate", "--judgments"), "none of the 2 judged queries .* can be scored")


def test_text_queries_are_scored_on_a_clip_index_and_exported_as_text(tmp_path):
    from tests.test_api import CLIP_NAME, FakeClip, make_photos
    from vsearch.models import loading as models

    photos = make_photos(tmp_path / "work")
    clip = FakeClip(CLIP_NAME, photos)
    models.register(CLIP_NAME, lambda name, device, threads: clip)
    try:
        idx = tmp_path / "idx"
        vsearch.build_index(photos, index_dir=idx, model=CLIP_NAME).close()
        ok(cli("judge", "text:a cat", photos / "cat.jpg", photos / "cat-small.png", "--relevant", "--index-dir", idx))
        ok(cli("judge", "text:a cat", photos / "dog.jpg", "--irrelevant", "--index-dir", idx))
        got = json.loads(ok(cli("evaluate", "--judgments", "--index-dir", idx, "--k", "2", "-f", "json")).stdout)
        assert got["num_queries"] == 1 and got["recall@2"] == 1.0 and clip.texts[-1] == "a cat"
        pairs = tmp_path / "pairs.csv"
        ok(cli("judgments", "export", "--index-dir", idx, "--out", pairs))
        assert [r["query"] for r in csv.DictReader(pairs.open())] == ["text:a cat"] * 3
        again = json.loads(ok(cli("evaluate", "--pairs", pairs, "--index-dir", idx, "--k", "2", "-f", "json")).stdout)
        assert again == got
    finally:
        models.unregister(CLIP_NAME)


def test_the_api_records_judgments_too(built, photos):
    with vsearch.open_index() as index:
        done = index.judge(photos / "p0.jpg", [photos / "p1.jpg"], relevant=True, grade=2)
        assert done[0].grade == 2 and done[0].label == "relevant"
        report = index.evaluate(judgments=True, ks=[1])
    assert report.metrics["num_queries"] == 1


def test_record_judgment_checks_its_input(tmp_path):
    jd.record_judgment(tmp_path, "q", "r", True, rank=3, source="page")
    for kwargs, message in [({"relevant": "yes"}, "relevant"), ({"relevant": True, "grade": 0}, "grade of 1"),
                            ({"relevant": False, "grade": 2}, "grade 0"), ({"relevant": True, "rank": 0}, "rank"),
                            ({"relevant": True, "source": "robot"}, "source")]:
        with pytest.raises(vsearch.VsearchError, match=message):
            jd.record_judgment(tmp_path, "q", "r", **kwargs)
    assert [(j.rank, j.source) for j in jd.read_judgments(tmp_path)] == [(3, "page")]


# --- the page's old file ---------------------------------------------------------------------


def test_the_pages_old_jsonl_is_imported_once_and_kept(built, photos):
    old = built / jd.JSONL_FILE
    lines = [{"time": "2026-11-30T10:00:00+0000", "query": "q1", "result": "r1", "label": "relevant",
              "result_path": "p1.jpg"},
             {"time": "2026-11-30T10:01:00+0000", "query": "q1", "result": "r2", "label": "not-relevant"}]
    old.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"torn": ')
    got = listed()
    assert [(j["query"], j["result"], j["relevant"], j["grade"], j["source"]) for j in got] == [
        ("q1", "r1", True, 1, "page"), ("q1", "r2", False, 0, "page")]
    ok(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--relevant"))
    assert len(listed()) == 3  # not imported a second time
    assert old.read_text().startswith(json.dumps(lines[0]))


# --- bad input: one error line, nothing lost ---------------------------------------------------


def test_bad_results_record_nothing_and_keep_earlier_judgments(built, photos, tmp_path):
    ok(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--relevant"))
    stranger = make_photo(tmp_path / "stranger.jpg", seed=99)
    fails(cli("judge", photos / "p0.jpg", photos / "p2.jpg", stranger, "--relevant"),
          r"stranger.jpg is not in the index .* nothing was recorded")
    fails(cli("judge", photos / "p0.jpg", tmp_path / "missing.jpg", "--relevant"), "no such file")
    fails(cli("judge", photos / "p0.jpg", tmp_path, "--relevant"), "not a regular file")
    fails(cli("judge", tmp_path / "nope.jpg", photos / "p1.jpg", "--relevant"), "no such file")
    fails(cli("judge", photos / "p0.jpg", photos / "p1.jpg"), "--relevant or --irrelevant")
    fails(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--irrelevant", "--grade", "2"), "grade 0")
    fails(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--relevant", "--index-dir", tmp_path / "none"),
          "index")
    assert [j["result_path"] for j in listed()] == ["p1.jpg"]


def test_a_damaged_judgments_file_gives_one_error_line_and_is_never_overwritten(built, photos):
    ok(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--relevant"))
    path = built / jd.DB_FILE
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damaged = b"not a database, but someone's judgments" + path.read_bytes()[40:]
    path.write_bytes(damaged)
    for args in (["judge", photos / "p0.jpg", photos / "p2.jpg", "--relevant"], ["judgments"],
                 ["judgments", "export"], ["evaluate", "--judgments"], ["evaluate", "--clicks"]):
        fails(cli(*args), f"{path} is damaged and cannot be read .* left as it is")
    assert path.read_bytes() == damaged
    with pytest.raises(vsearch.VsearchError, match="damaged"):
        vsearch.log_impressions(built, "q", ["r"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "vsearch", "judgments", "--index-dir", built], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert path.read_bytes() == damaged


def test_a_foreign_database_is_not_taken_over(built, photos):
    with sqlite3.connect(built / jd.DB_FILE) as db:
        db.execute("CREATE TABLE notes (x)")
    fails(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--relevant"), "tables that are not vsearch's")


def test_a_verdict_holds_for_every_indexed_copy_of_the_judged_bytes(built, photos):
    ok(cli("judge", photos / "p0.jpg", photos / "p1.jpg", "--relevant", "--grade", "2"))
    (photos / "p1-copy.jpg").write_bytes((photos / "p1.jpg").read_bytes())
    ok(cli("build-index", photos, "--model", "fake", "-q"))
    positives = [line.split(",")[1:] for line in ok(cli("judgments", "export")).stdout.splitlines()[1:]]
    assert positives == [[str((photos / "p1-copy.jpg").resolve()), "2"], [str((photos / "p1.jpg").resolve()), "2"]]
    got = json.loads(ok(cli("evaluate", "--judgments", "--k", "2", "-f", "json")).stdout)
    assert got["recall@2"] == 1.0 and got["ndcg@2"] == pytest.approx(1.0)  # the twins rank first
