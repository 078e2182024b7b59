"""The click log and position bias: log_impressions' swaps, log_click, the propensity estimator
on simulated logs with a known curve, the IPW metric, and ``vsearch evaluate --clicks``."""

from __future__ import annotations

import json
from pathlib import Path
import random

import numpy as np
import pytest

import vsearch
from tests.helpers import cli, fails, ok
from vsearch.learning.clicks import SWAP_DEPTH, log_click, log_impressions, read_click_log
from vsearch.errors import VsearchError
from vsearch.learning.propensity import click_arrays, estimate_propensities, ipw_precision, raw_ctr


def simulate(n: int, examine: np.ndarray, rel_prob: np.ndarray, swap_fraction: float, seed: int):
    """Logged lists (clicked, swapped, shown) under the examination hypothesis, swaps as the logger makes them."""
    rng = np.random.default_rng(seed)
    depth = len(examine)
    relevant = rng.random((n, depth)) < rel_prob
    swapped = np.where(rng.random(n) < swap_fraction, rng.integers(1, depth, n), 0)
    rows = np.nonzero(swapped)[0]
    k = swapped[rows]
    shown = relevant.copy()
    shown[rows, k - 1], shown[rows, k] = relevant[rows, k], relevant[rows, k - 1]
    clicked = rng.random((n, depth)) < examine * np.where(shown, 0.9, 0.05)
    return clicked, swapped, np.full(n, depth), relevant


# --- the estimator ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_the_estimator_recovers_a_known_curve_that_raw_ctr_gets_wrong(seed):
    true = 1.0 / np.arange(1, 7) ** 0.8
    rel = np.linspace(0.9, 0.1, 6)  # relevance falls with rank: raw CTR overstates the bias
    clicked, swapped, shown, _ = simulate(60_000, true, rel, 0.5, seed)
    estimated = np.array(estimate_propensities(clicked, swapped, shown))
    np.testing.assert_allclose(estimated, true, rtol=0.08)
    naive = clicked[swapped == 0].mean(axis=0) / clicked[swapped == 0, 0].mean()
    assert abs(naive[-1] - true[-1]) > 3 * abs(estimated[-1] - true[-1])  # the confound the swaps remove


def test_no_position_bias_is_estimated_as_none():
    flat = np.ones(5)
    clicked, swapped, shown, _ = simulate(60_000, flat * 0.7, np.linspace(0.9, 0.2, 5), 0.5, 3)
    np.testing.assert_allclose(estimate_propensities(clicked, swapped, shown), flat, rtol=0.08)


def test_ranks_without_swap_data_get_no_estimate():
    clicked, swapped, shown, _ = simulate(5_000, 1.0 / np.arange(1, 6), np.full(5, 0.5), 0.3, 0)
    swapped[swapped >= 3] = 0  # no list swapped the pairs (3, 4) or (4, 5)
    p = estimate_propensities(clicked, swapped, shown)
    assert p[0] == 1.0 and p[1] is not None and p[2] is not None and p[3] is None and p[4] is None
    assert estimate_propensities(np.zeros((4, 3), bool), np.array([1, 2, 0, 0]), np.full(4, 3)) == [1.0, None, None]


def test_ipw_ranks_two_systems_by_their_relevance_where_raw_ctr_ranks_them_wrongly():
    true = 1.0 / np.arange(1, 11) ** 0.8
    top_heavy = np.array([0.85, 0.85] + [0.1] * 8)
    deeper = np.array([0.15, 0.15] + [0.55] * 8)
    a = simulate(40_000, true, top_heavy, 0.2, 0)
    b = simulate(40_000, true, deeper, 0.2, 1)
    estimated = estimate_propensities(*(np.concatenate([x, y]) for x, y in zip(a[:3], b[:3])))
    assert b[3].mean() > a[3].mean()  # B holds more relevant results
    assert raw_ctr(a[0], 10) > raw_ctr(b[0], 10)  # raw clicks prefer A
    assert ipw_precision(b[0], estimated) > ipw_precision(a[0], estimated)
    for system in (a, b):  # and IPW estimates the click probability of an examined result
        truth = 0.05 + 0.85 * system[3].mean()
        assert ipw_precision(system[0], estimated) == pytest.approx(truth, rel=0.15)


def test_ipw_hand_case():
    clicked = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)
    # list 1: 1/1 + 1/0.25; list 2: 1/0.5; mean 3.5, over 3 ranks
    assert ipw_precision(clicked, [1.0, 0.5, 0.25]) == pytest.approx(3.5 / 3)
    assert ipw_precision(clicked, [1.0, 0.5, None]) == pytest.approx(((1 + 0) + 2) / 2 / 2)
    assert raw_ctr(clicked, 3) == pytest.approx(1.5 / 3)
    assert ipw_precision(clicked, [1.0, 0.001, 0.001]) == pytest.approx((1 + 20 + 20) / 2 / 3)  # clipped at 0.05


# --- the logger ------------------------------------------------------------------------------


def test_log_impressions_swaps_one_adjacent_pair_on_its_share_and_logs_it(tmp_path):
    results = [f"d{i}" for i in range(6)]
    shown = log_impressions(tmp_path, "q", results, swap_fraction=1.0, rng=random.Random(4))
    k = shown.swapped
    assert 1 <= k <= 5
    assert list(shown) == results[:k - 1] + [results[k], results[k - 1]] + results[k + 1:]
    assert [results[i] for i in shown.order] == list(shown.results)
    plain = log_impressions(tmp_path, "q", results, swap_fraction=0.0)
    assert plain.swapped is None and list(plain) == results and plain.query_id == shown.query_id + 1
    assert log_click(tmp_path, shown.query_id, results[k - 1]) == k + 1  # shown one lower
    log_click(tmp_path, shown.query_id, results[k - 1])  # a second click on it counts once
    logged = read_click_log(tmp_path)
    assert [q.swapped for q in logged] == [k, None]
    assert logged[0].shown == shown.results and logged[0].clicked == {k + 1}
    assert logged[0].original_rank[k - 1:k + 1] == (k + 1, k)
    assert logged[1].clicked == frozenset()


def test_swaps_stay_within_the_swap_depth_and_follow_the_seed(tmp_path):
    results = [f"d{i}" for i in range(40)]
    a = [log_impressions(tmp_path, "q", results, swap_fraction=0.5, rng=random.Random(7)).swapped for _ in range(1)]
    rng = random.Random(1)
    ks = [log_impressions(tmp_path, "q", results, swap_fraction=0.5, rng=rng).swapped for _ in range(30)]
    assert {k for k in ks if k is not None} <= set(range(1, SWAP_DEPTH)) and None in ks and len(set(ks)) > 3
    assert a == [log_impressions(tmp_path, "q", results, swap_fraction=0.5, rng=random.Random(7)).swapped]
    assert log_impressions(tmp_path, "q", ["only"], swap_fraction=1.0).swapped is None  # no pair to swap


def test_bad_calls_are_refused_and_log_nothing(tmp_path):
    shown = log_impressions(tmp_path, "q", ["a", "b"], swap_fraction=0)
    with pytest.raises(VsearchError, match="did not show"):
        log_click(tmp_path, shown.query_id, "zzz")
    with pytest.raises(VsearchError, match="did not show"):
        log_click(tmp_path, shown.query_id + 5, "a")
    with pytest.raises(VsearchError, match="swap_fraction"):
        log_impressions(tmp_path, "q", ["a"], swap_fraction=1.5)
    with pytest.raises(VsearchError, match="at least one"):
        log_impressions(tmp_path, "q", [])
    with pytest.raises(VsearchError, match="query"):
        log_impressions(tmp_path, "", ["a"])
    with pytest.raises(VsearchError, match="no index"):
        log_impressions(tmp_path / "missing", "q", ["a"])
    assert [q.clicked for q in read_click_log(tmp_path)] == [frozenset()]


def test_a_list_showing_one_photo_twice_takes_the_click_at_its_first_rank(tmp_path):
    shown = log_impressions(tmp_path, "q", ["a", "twin", "twin"], swap_fraction=0)
    assert log_click(tmp_path, shown.query_id, "twin") == 2


def test_the_api_exports_the_logger():
    assert vsearch.log_impressions is log_impressions and vsearch.log_click is log_click


# --- vsearch evaluate --clicks ---------------------------------------------------------------


def test_evaluate_clicks_reports_ctr_and_estimated_propensities_from_a_real_log(built, photos):
    rng = random.Random(0)
    sim = np.random.default_rng(0)
    true = [1.0, 0.5, 0.3]
    for i in range(40):  # each call is a committed, fsynced transaction: a few dozen lists
        shown = log_impressions(built, f"q{i}", ["a", "b", "c"], swap_fraction=0.5, rng=rng)
        for rank, key in enumerate(shown.results, start=1):
            if sim.random() < true[rank - 1]:
                log_click(built, shown.query_id, key)
    got = json.loads(ok(cli("evaluate", "--clicks", "-f", "json")).stdout)
    assert got["lists"] == 40 and 10 <= got["swapped_lists"] <= 30 and got["k"] == 3
    by_rank = got["by_rank"]
    assert [r["rank"] for r in by_rank] == [1, 2, 3] and by_rank[0]["propensity"] == 1.0
    assert [r["impressions"] for r in by_rank] == [40, 40, 40] and sum(r["clicks"] for r in by_rank) == got["clicks"]
    assert by_rank[0]["ctr"] > by_rank[2]["ctr"]
    assert 0.2 < by_rank[1]["propensity"] < 1.0 and 0.05 < by_rank[2]["propensity"] < 0.8
    assert got["ipw@3"] > got["ctr@3"]
    table = ok(cli("evaluate", "--clicks"))
    assert "propensity" in table.stdout and "ipw@3" in table.stdout and "estimated from the swaps" in table.stderr


def test_evaluate_clicks_without_a_log_says_so(built):
    result = ok(cli("evaluate", "--clicks", "-f", "json"))
    assert json.loads(result.stdout)["lists"] == 0 and "no propensity could be estimated" in result.stderr
    fails(cli("evaluate", "--clicks", "--augment", "3"), "--clicks")


def test_click_arrays_reads_the_logged_lists(tmp_path):
    a = log_impressions(tmp_path, "q", ["a", "b", "c"], swap_fraction=1.0, rng=random.Random(0))
    log_click(tmp_path, a.query_id, a.results[0])
    clicked, swapped, shown = click_arrays(read_click_log(tmp_path), 4)
    assert clicked.tolist() == [[True, False, False, False]] and swapped.tolist() == [a.swapped]
    assert shown.tolist() == [3]


def test_the_log_keeps_a_window_of_the_newest_lists_and_the_file_stops_growing(tmp_path):
    """Each search the page answers logs a list (about 2.3 KB at 20 results): only the newest
    keep_lists stay, with their clicks, and SQLite reuses the pages of the older ones."""
    import sqlite3

    from vsearch.learning.judgments import DB_FILE

    rng = random.Random(0)
    digests = [f"{i:032x}" for i in range(500)]

    def search(n: int, click: bool = False) -> list[int]:
        ids = []
        for _ in range(n):
            shown = log_impressions(tmp_path, rng.choice(digests), rng.sample(digests, 20), keep_lists=10, rng=rng)
            if click:
                log_click(tmp_path, shown.query_id, shown.results[0])
            ids.append(shown.query_id)
        return ids

    def size() -> int:
        with sqlite3.connect(tmp_path / DB_FILE) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return (tmp_path / DB_FILE).stat().st_size

    ids = search(12, click=True)
    logged = read_click_log(tmp_path)
    assert [q.query_id for q in logged] == ids[-10:]  # the newest 10, oldest first
    assert all(q.clicked == {1} for q in logged)  # each with its click
    full = size()
    ids = search(40)  # 40 more lists would add about 90 KB if nothing were forgotten
    assert [q.query_id for q in read_click_log(tmp_path)] == ids[-10:]
    assert size() <= full + 4 * 4096  # the window's size (give or take a few pages), not the history's
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        assert db.execute("SELECT count(*) FROM clicks").fetchone()[0] == 0  # went with their lists
        assert db.execute("SELECT count(*) FROM impressions").fetchone()[0] == 10 * 20
    with pytest.raises(VsearchError, match="query .* did not show"):  # a forgotten list takes no click
        log_click(tmp_path, ids[0], digests[0])
    with pytest.raises(VsearchError, match="keep_lists"):
        log_impressions(tmp_path, "q", ["r"], keep_lists=0)


def test_the_page_default_window_is_documented():
    from vsearch.learning.clicks import MAX_LOGGED_LISTS

    assert f"{MAX_LOGGED_LISTS:,}" in (Path(__file__).parent.parent / "docs" / "clicks.md").read_text()
