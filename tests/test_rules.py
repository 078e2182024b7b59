"""Rules in re-ranking against concentration (issue 12, item 4): --max-per-folder, --max-per-day,
and the folder/day concentration that evaluate reports."""

from __future__ import annotations

import csv
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from tests.conftest import REPO, FakeEmbedder, make_photo
from tests.helpers import cli, fails, ok
from vsearch import api
from vsearch.imaging import images
from vsearch.models import loading as models
from vsearch.retrieval import rerank
from vsearch.errors import VsearchError
from vsearch.evaluation.evaluate import top_share

_EXIF_IFD, _DATETIME_ORIGINAL, _DATETIME = 0x8769, 0x9003, 0x0132


def variant(src: Path, dest: Path, shift: float, *, original: str | None = None, changed: str | None = None) -> Path:
    """``src`` brightened by ``shift`` (a near copy the fake model ranks by how small the shift is),
    saved as JPEG with the given EXIF dates."""
    arr = np.asarray(Image.open(src).convert("RGB"), dtype=np.float32)
    exif = Image.Exif()
    if changed is not None:
        exif[_DATETIME] = changed
    if original is not None:
        exif.get_ifd(_EXIF_IFD)[_DATETIME_ORIGINAL] = original
    Image.fromarray(np.clip(arr + shift, 0, 255).astype(np.uint8)).save(dest, quality=92, exif=exif)
    return dest


def _build(folder: Path, index_dir: Path) -> Path:
    models.register("fake", lambda name, device, threads: FakeEmbedder("fake"))
    try:
        ok(cli("build-index", folder, "--index-dir", index_dir, "--model", "fake", "-q"))
    finally:
        models.unregister("fake")
    return index_dir


@pytest.fixture(scope="module")
def albums(tmp_path_factory) -> tuple[Path, Path, Path]:
    """album/ holds 8 near copies of one photo (it floods every top k of that photo), other/ 4
    farther copies, misc/ three pairs of other photos; a groups CSV (the copies are one group)."""
    root = tmp_path_factory.mktemp("albums") / "photos"
    for name in ("album", "other", "misc"):
        (root / name).mkdir(parents=True)
    seed = make_photo(root.parent / "seed.jpg", seed=0)
    rows = []
    for i in range(8):
        rows.append((variant(seed, root / "album" / f"a{i}.jpg", 2.0 * i), "copies"))
    for i in range(4):
        rows.append((variant(seed, root / "other" / f"b{i}.jpg", 24.0 + 6 * i), "copies"))
    for s in (5, 6, 7):
        base = make_photo(root.parent / f"seed{s}.jpg", seed=s)
        rows += [(variant(base, root / "misc" / f"m{s}_{j}.jpg", 3.0 * j), f"g{s}") for j in range(2)]
    groups = root.parent / "groups.csv"
    with groups.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "group"])
        w.writerows((p, g) for p, g in rows)
    return root, _build(root, root.parent / "idx"), groups


def _paths(stdout: str) -> list[Path]:
    return [Path(line) for line in stdout.splitlines()]


# --- the capping function ----------------------------------------------------------------------


def _by_letter(limit: int) -> rerank.Cap[str]:
    return rerank.Cap(lambda s: s[0], limit, "--max-per-folder")


def test_cap_keeps_order_and_fills_in_from_other_keys():
    ranked = ["a1", "a2", "a3", "b1", "a4", "c1", "b2", "b3", "c2"]
    assert rerank.cap_per_key(ranked, [_by_letter(2)], k=5) == ["a1", "a2", "b1", "c1", "b2"]
    assert rerank.cap_per_key(ranked, [_by_letter(1)]) == ["a1", "b1", "c1"]
    assert rerank.cap_per_key(ranked, [], k=3) == ["a1", "a2", "a3"]  # no rule: the top k as they were


def test_cap_returns_fewer_than_k_when_the_pool_runs_out():
    assert rerank.cap_per_key(["a1", "a2", "a3", "b1"], [_by_letter(1)], k=10) == ["a1", "b1"]
    assert rerank.cap_per_key([], [_by_letter(1)], k=3) == []


def test_cap_leaves_items_without_a_key_uncapped_and_applies_rules_jointly():
    day = rerank.Cap(lambda s: None if s[1] == "?" else s[1], 1, "--max-per-day")
    ranked = ["a?", "a?", "a1", "b1", "b2", "c?", "c2"]
    # undated results pass the day cap; a result left out by one cap does not count against another
    assert rerank.cap_per_key(ranked, [day]) == ["a?", "a?", "a1", "b2", "c?"]
    assert rerank.cap_per_key(ranked, [_by_letter(2), day]) == ["a?", "a?", "b1", "b2", "c?"]


def test_cap_asks_for_keys_only_while_needed():
    asked: list[str] = []

    def key(s: str) -> str:
        asked.append(s)
        return s[0]

    rerank.cap_per_key(["a1", "b1", "c1", "d1", "e1"], [rerank.Cap(key, 1)], k=2)
    assert asked == ["a1", "b1"]  # a date is read from a file only for the candidates looked at


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_cap_refuses_a_limit_below_one(limit):
    with pytest.raises(VsearchError, match=r"^max_per_day= takes a whole number, 1 or more"):
        rerank.Cap(lambda s: s, limit, "max_per_day=")


# --- query --max-per-folder --------------------------------------------------------------------


def test_query_max_per_folder_caps_each_folder_and_fills_in_in_rank_order(albums):
    root, index, _ = albums
    query = root / "album" / "a0.jpg"
    base = ["query", query, "--index-dir", index, "--exclude-self", "-f", "paths"]
    plain = _paths(ok(cli(*base, "-k", 5)).stdout)
    assert {p.parent.name for p in plain} == {"album"}  # the album floods the top 5
    deep = _paths(ok(cli(*base, "-k", 30)).stdout)
    capped = _paths(ok(cli(*base, "-k", 5, "--max-per-folder", 2)).stdout)
    assert len(capped) == 5
    assert sum(p.parent.name == "album" for p in capped) == 2
    # exactly the uncapped ranking with every third and later result of a folder left out
    expected, seen = [], {}
    for p in deep:
        if seen.get(p.parent, 0) < 2:
            expected.append(p)
            seen[p.parent] = seen.get(p.parent, 0) + 1
    assert capped == expected[:5]
    assert capped[:2] == plain[:2]


def test_query_max_per_folder_grows_the_candidate_pool(albums):
    root, index, _ = albums
    # k=2 starts from 8 candidates (search.POOL_FACTOR x k): all eight album copies; the pool grows
    out = _paths(ok(cli("query", root / "album" / "a0.jpg", "--index-dir", index, "-k", 2,
                        "--max-per-folder", 1, "-f", "paths")).stdout)
    assert [p.parent.name for p in out] == ["album", "other"]


def test_query_max_per_folder_returns_fewer_when_the_index_runs_out(albums):
    root, index, _ = albums
    out = _paths(ok(cli("query", root / "album" / "a0.jpg", "--index-dir", index, "-k", 10,
                        "--max-per-folder", 1, "-f", "paths")).stdout)
    assert sorted(p.parent.name for p in out) == ["album", "misc", "other"]  # one per folder, all there is


def test_api_query_takes_the_caps_and_scores_stay_exact(albums):
    root, index, _ = albums
    with api.open_index(index) as idx:
        plain = idx.query(root / "album" / "a0.jpg", 12, mode="exact")
        capped = idx.query(root / "album" / "a0.jpg", 6, max_per_folder=3, mode="exact")
        assert idx.query(root / "album" / "a0.jpg", 6, max_per_folder=np.int64(3), mode="exact") == capped
    scores = {h.path: h.score for h in plain}
    assert [h.rank for h in capped] == [1, 2, 3, 4, 5, 6]
    assert max(sum(h.path.parent == f for h in capped) for f in {h.path.parent for h in capped}) == 3
    assert all(h.score == pytest.approx(scores[h.path]) for h in capped if h.path in scores)
    assert [h.score for h in capped] == sorted((h.score for h in capped), reverse=True)


def test_query_caps_in_a_real_process(albums):
    root, index, _ = albums
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "vsearch", "query", str(root / "album" / "a0.jpg"), "--index-dir",
                           str(index), "-k", "4", "--max-per-folder", "1", "--max-per-day", "1", "-f", "json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert len({Path(h["path"]).parent for h in hits}) == len(hits) == 3


@pytest.mark.parametrize("option", ["--max-per-folder", "--max-per-day"])
@pytest.mark.parametrize(("value", "says"), [("0", "0 is below the minimum, 1"), ("-2", "-2 is below the minimum, 1"),
                                             ("two", "'two' is not a whole number")])
def test_query_refuses_a_bad_cap_in_one_line(albums, option, value, says):
    root, index, _ = albums
    fails(cli("query", root / "album" / "a0.jpg", "--index-dir", index, option, value), f"{option}: {says}")


def test_api_refuses_a_bad_cap(albums):
    root, index, _ = albums
    with api.open_index(index) as idx:
        with pytest.raises(VsearchError, match=r"^max_per_folder= takes a whole number, 1 or more \(got 0\)"):
            idx.query(root / "album" / "a0.jpg", max_per_folder=0)
        with pytest.raises(VsearchError, match=r"^max_per_day= takes a whole number, 1 or more \(got -1\)"):
            idx.evaluate(augment=2, max_per_day=-1)


def test_help_says_files_without_a_date_are_not_capped():
    shown = " ".join(ok(cli("query", "--help")).stdout.replace("│", " ").split())
    assert "--max-per-folder" in shown and "--max-per-day" in shown
    assert "Files without a date are not capped" in shown


# --- query --max-per-day -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> tuple[Path, Path]:
    """One folder: six near copies taken 2024-05-01 (DateTimeOriginal), two on 2024-06-01 (only
    DateTime, the fallback), two without a date."""
    root = tmp_path_factory.mktemp("days") / "photos"
    root.mkdir()
    seed = make_photo(root.parent / "seed.jpg", seed=0)
    for i in range(6):
        variant(seed, root / f"may{i}.jpg", 2.0 * i, original="2024:05:01 10:00:00", changed="2024:07:01 10:00:00")
    for i in range(2):
        variant(seed, root / f"june{i}.jpg", 13.0 + 2 * i, changed="2024:06:01 09:00:00")
    for i in range(2):
        variant(seed, root / f"none{i}.jpg", 17.0 + 2 * i)
    return root, _build(root, root.parent / "idx")


def test_query_max_per_day_caps_by_exif_day_and_leaves_undated_uncapped(days):
    root, index = days
    base = ["query", root / "may0.jpg", "--index-dir", index, "-f", "paths", "-k", 10]
    assert len(_paths(ok(cli(*base)).stdout)) == 10
    capped = [p.name for p in _paths(ok(cli(*base, "--max-per-day", 1)).stdout)]
    assert capped == ["may0.jpg", "june0.jpg", "none0.jpg", "none1.jpg"]
    two = [p.name for p in _paths(ok(cli(*base, "--max-per-day", 2)).stdout)]
    assert two == ["may0.jpg", "may1.jpg", "june0.jpg", "june1.jpg", "none0.jpg", "none1.jpg"]


def test_exif_date_reads_original_then_changed_then_none(days, tmp_path):
    root, _ = days
    assert images.exif_date(root / "may0.jpg") == datetime.date(2024, 5, 1)  # DateTimeOriginal wins
    assert images.exif_date(root / "june0.jpg") == datetime.date(2024, 6, 1)  # DateTime, the fallback
    assert images.exif_date(root / "none0.jpg") is None
    bad = variant(root / "none0.jpg", tmp_path / "bad.jpg", 0, original="0000:00:00 00:00:00")
    assert images.exif_date(bad) is None
    png = tmp_path / "dated.png"
    exif = Image.Exif()
    exif[0x0110] = "camera"  # Pillow writes no PNG eXIf chunk for an empty IFD0
    exif.get_ifd(_EXIF_IFD)[_DATETIME_ORIGINAL] = "2023:12:31 23:59:59"
    Image.open(root / "may0.jpg").save(png, exif=exif)
    assert images.exif_date(png) == datetime.date(2023, 12, 31)
    (tmp_path / "text.jpg").write_text("not an image")
    assert images.exif_date(tmp_path / "text.jpg") is None
    assert images.exif_date(tmp_path / "missing.jpg") is None
    assert images.exif_date(tmp_path) is None


def test_exif_date_decodes_no_pixels_and_skips_a_fifo(days, tmp_path, monkeypatch):
    root, _ = days
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert images.exif_date(fifo) is None  # refused without blocking

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    images._exif_date_cached.cache_clear()
    assert images.exif_date(root / "may1.jpg") == datetime.date(2024, 5, 1)
    png = tmp_path / "big.png"
    monkeypatch.undo()
    Image.effect_noise((1200, 900), 60).convert("RGB").save(png)  # no EXIF, larger than the header read
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert images.exif_date(png) is None


def test_exif_date_is_read_again_when_the_file_changes(tmp_path):
    photo = make_photo(tmp_path / "p.jpg")
    variant(photo, tmp_path / "d.jpg", 0, original="2020:01:02 00:00:00")
    assert images.exif_date(tmp_path / "d.jpg") == datetime.date(2020, 1, 2)
    variant(photo, tmp_path / "d.jpg", 1, original="2021:03:04 00:00:00")
    os.utime(tmp_path / "d.jpg", ns=(1, 1))  # a different mtime, whatever the clock's resolution
    assert images.exif_date(tmp_path / "d.jpg") == datetime.date(2021, 3, 4)


# --- concentration in evaluate -----------------------------------------------------------------


def test_top_share_hand_cases():
    assert top_share(["a", "a", "b", "c"], 4) == 0.5
    assert top_share(["a", "a", "b", "c"], 2) == 1.0
    assert top_share(["a", "b", "c", "d"], 4) == 0.25
    assert top_share(["a", None, None, "b"], 4) == 0.25  # no date: in the denominator, never a day
    assert top_share([None, None], 2) == 0.0
    assert top_share([], 5) == 0.0
    assert top_share(["a", "a"], 10) == 1.0  # fewer results than K: share of those returned


def test_evaluate_reports_folder_share_and_what_a_cap_costs(albums):
    root, index, groups = albums
    out = json.loads(ok(cli("evaluate", "--index-dir", index, "--index-dir", index, "--groups", groups,
                            "--k", "1,5", "--mode", "exact", "--max-per-folder", "off,1", "-f", "json")).stdout)
    plain, capped = (s["metrics"] for s in out["systems"])
    assert [s["label"] for s in out["systems"]] == ["idx (exact)", "idx (exact, max 1 per folder)"]
    assert plain["folder_share@1"] == capped["folder_share@1"] == 1.0
    assert plain["folder_share@5"] > 0.6  # album and misc queries: 5 of 5 from their own folder
    assert capped["folder_share@5"] == pytest.approx(1 / 3)  # 3 folders: one each, all there is
    assert capped["recall@5"] < plain["recall@5"]
    assert "day_share@5" not in plain  # no result has a date
    assert set(out["differences"]["idx (exact, max 1 per folder) - idx (exact)"]) >= {"folder_share@5", "recall@5"}


def test_evaluate_folder_share_by_hand(albums, tmp_path):
    root, index, _ = albums
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"query,positive\n{root / 'album' / 'a0.jpg'},{root / 'other' / 'b0.jpg'}\n")
    with api.open_index(index) as idx:
        report = idx.evaluate(pairs=pairs, ks=(4,), mode="exact")
        capped = idx.evaluate(pairs=pairs, ks=(4,), mode="exact", max_per_folder=2)
        hits = idx.query(root / "album" / "a0.jpg", 4, exclude_self=True, mode="exact", max_per_folder=2)
    assert report.metrics["folder_share@4"] == 1.0  # a1..a4
    assert capped.records[0].returned[:4] == tuple(h.path for h in hits)  # evaluate ranks as query does
    assert capped.metrics["folder_share@4"] == 0.5
    assert capped.records[0].scores["folder_share@4"] == 0.5
    assert capped.metrics["recall@4"] == 1.0 > report.metrics["recall@4"]


def test_evaluate_reports_day_share_where_dates_exist(days, tmp_path):
    root, index = days
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"query,positive\n{root / 'may0.jpg'},{root / 'none0.jpg'}\n")
    table = ok(cli("evaluate", "--index-dir", index, "--pairs", pairs, "--k", "5", "--mode", "exact")).stdout
    assert "folder_share" in table and "day_share" in table
    out = json.loads(ok(cli("evaluate", "--index-dir", index, "--pairs", pairs, "--k", "5", "--mode", "exact",
                            "--max-per-day", "1", "-f", "json")).stdout)
    # may1..may5 without the cap (5 of 5 on one day); with it may1, june0, none0, none1
    assert out["day_share@5"] == pytest.approx(1 / 4)
    assert out["folder_share@5"] == 1.0
    assert out["recall@5"] == 1.0


@pytest.mark.parametrize(("value", "says"), [("0", "takes a whole number, 1 or more, or 'off' .got '0'."),
                                             ("-1", "1 or more, or 'off' .got '-1'."), ("x", "or 'off' .got 'x'."),
                                             ("off,2", "lists 2 caps for 1 --index-dir")])
def test_evaluate_refuses_a_bad_cap_in_one_line(albums, value, says):
    _, index, groups = albums
    fails(cli("evaluate", "--index-dir", index, "--groups", groups, "--max-per-folder", value), f"--max-per-folder .*{says}")
    fails(cli("evaluate", "--index-dir", index, "--groups", groups, "--max-per-day", value), f"--max-per-day .*{says}")
