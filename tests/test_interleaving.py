"""Team-draft interleaving: the merged list (fairness, duplicates, exact credit on hand cases),
the statistics (a known case, checked against scipy), the log in judgments.sqlite, and
``vsearch evaluate --interleaving``."""

from __future__ import annotations

import json
import math
import random

import pytest

from tests.helpers import cli, fails, ok
from vsearch import api
from vsearch.errors import VsearchError
from vsearch.learning.interleaving import (
    Interleaved,
    Outcome,
    credit,
    log_click,
    log_interleaved,
    read_log,
    reports,
    sign_test,
    summarize,
    team_draft,
    wilson_interval,
)


class Coin:
    """A stand-in rng whose coin flips are given: True = team A picks first on a tie."""

    def __init__(self, *flips: bool) -> None:
        self.flips = list(flips)

    def random(self) -> float:
        return 0.0 if self.flips.pop(0) else 0.9


# --- the merged list ---------------------------------------------------------------------------


def test_hand_case_with_a_shared_result():
    # A picks 1 (coin), B's best new is 2, tie again: A picks 3 (1 and 2 shown), then B's next new is 5.
    got = team_draft([1, 2, 3, 4], [2, 1, 5, 6], k=4, rng=Coin(True, True))
    assert got.results == (1, 2, 3, 5) and got.teams == ("A", "B", "A", "B")
    # B first on both ties: B picks 2, A's best is 1, B's next new is 5, A's next new is 3.
    got = team_draft([1, 2, 3, 4], [2, 1, 5, 6], k=4, rng=Coin(False, False))
    assert got.results == (2, 1, 5, 3) and got.teams == ("B", "A", "B", "A")


def test_identical_rankings_give_the_ranking_itself_shared_by_turns():
    got = team_draft(list("abcdef"), list("abcdef"), rng=random.Random(3))
    assert got.results == tuple("abcdef")
    assert sorted(got.teams.count(t) for t in "AB") == [3, 3]


def test_a_ranker_that_runs_out_leaves_the_rest_to_the_other():
    got = team_draft([1], [2, 3, 4], rng=Coin(True))
    assert got.results == (1, 2, 3, 4) and got.teams == ("A", "B", "B", "B")
    assert team_draft([], [], k=5).results == ()
    assert team_draft([1, 2], [1, 2], k=0).results == ()


@pytest.mark.parametrize("seed", range(20))
def test_fair_no_duplicates_and_each_team_picks_its_own_order(seed):
    rng = random.Random(seed)
    items = list(range(30))
    a = rng.sample(items, 15)
    b = rng.sample(items, 15)
    got = team_draft(a, b, k=20, rng=random.Random(seed))
    assert len(set(got.results)) == len(got.results) == min(20, len(set(a) | set(b)))
    count = {"A": 0, "B": 0}
    for depth, (item, team) in enumerate(zip(got.results, got.teams), start=1):
        count[team] += 1
        assert item in (a if team == "A" else b)
        # While both still have unshown results, the teams' counts differ by at most one.
        shown = set(got.results[:depth])
        if any(x not in shown for x in a) and any(x not in shown for x in b):
            assert abs(count["A"] - count["B"]) <= 1
    for team, ranking in (("A", a), ("B", b)):
        picks = [x for x, t in zip(got.results, got.teams) if t == team]
        assert picks == sorted(picks, key=ranking.index)  # in the team's own order
        # each pick is the team's best result not shown before it
        for item in picks:
            before = set(got.results[:got.results.index(item)])
            assert item == next(x for x in ranking if x not in before)


def test_each_team_leads_half_the_time():
    first = [team_draft([1, 2], [3, 4], rng=random.Random(s)).teams[0] for s in range(2000)]
    assert 900 < first.count("A") < 1100


def test_a_bad_k_is_refused():
    with pytest.raises(VsearchError, match="k="):
        team_draft([1], [2], k=-1)


# --- credit and statistics ---------------------------------------------------------------------


def test_credit_counts_each_clicked_rank_for_the_team_that_put_it_there():
    teams = ("A", "B", "A", "B")
    assert credit(teams, {1, 3}) == Outcome(2, 0) and credit(teams, {1, 3}).winner == "A"
    assert credit(teams, [2, 2, 4, 1]) == Outcome(1, 2) and credit(teams, [2, 4, 1]).winner == "B"
    assert credit(teams, {1, 2}).winner == "tie"
    assert credit(teams, ()).winner is None
    with pytest.raises(VsearchError, match="outside the list"):
        credit(teams, {5})


def test_sign_test_and_wilson_interval_on_a_known_case():
    # 9 wins, 1 loss: P(X <= 1 | n=10, p=1/2) = 11/1024, two-sided twice that.
    assert sign_test(9, 1) == pytest.approx(22 / 1024)
    assert sign_test(1, 9) == pytest.approx(22 / 1024)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    low, high = wilson_interval(9, 10)
    assert (low, high) == pytest.approx((0.5958, 0.9821), abs=1e-4)  # the textbook values
    scipy_stats = pytest.importorskip("scipy.stats")
    for w, n in ((9, 10), (37, 60), (500, 1000), (3, 4)):
        assert sign_test(w, n - w) == pytest.approx(scipy_stats.binomtest(w, n, 0.5).pvalue, rel=1e-9)
        ci = scipy_stats.binomtest(w, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(w, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_summarize_reports_wins_losses_ties_and_the_better_configuration():
    outcomes = [Outcome(1, 0)] * 9 + [Outcome(0, 2)] + [Outcome(1, 1)] * 3 + [Outcome(0, 0)] * 4
    rep = summarize(outcomes, "qe=2", "qe=0")
    assert (rep.lists, rep.wins, rep.losses, rep.ties, rep.unclicked) == (17, 9, 1, 3, 4)
    assert (rep.clicks_a, rep.clicks_b) == (12, 5)
    assert rep.share == pytest.approx(0.9) and rep.p_value == pytest.approx(22 / 1024)
    assert rep.better == "qe=2" and rep.verdict.startswith("qe=2 is better")
    even = summarize([Outcome(1, 0), Outcome(0, 1)], "x", "y")
    assert even.better is None and "no clear difference" in even.verdict


# --- the log -------------------------------------------------------------------------------


def test_the_log_round_trips_and_credits_clicks_per_experiment(tmp_path):
    shown = team_draft(["d1", "d2", "d3"], ["d2", "d4", "d5"], k=4, rng=Coin(True, True))
    assert shown.results == ("d1", "d2", "d3", "d4")
    first = log_interleaved(tmp_path, "q1", shown, "qe=0", "qe=2")
    assert log_click(tmp_path, first, "d2") == 2
    assert log_click(tmp_path, first, "d2") == 2  # a second click on it counts once
    second = log_interleaved(tmp_path, "q2", shown, "qe=0", "qe=2")
    log_click(tmp_path, second, "d1")
    log_click(tmp_path, second, "d3")
    other = log_interleaved(tmp_path, "q3", Interleaved(("d9",), ("B",)), "head", "no head")
    lists = read_log(tmp_path)
    assert [x.list_id for x in lists] == [first, second, other]
    assert lists[0].clicked == {2} and lists[0].outcome.winner == "B"
    assert lists[1].outcome == Outcome(2, 0)
    found = reports(lists)
    assert [(r.a, r.b, r.wins, r.losses, r.unclicked) for r in found] == [("qe=0", "qe=2", 1, 1, 0),
                                                                         ("head", "no head", 0, 0, 1)]
    with pytest.raises(VsearchError, match="did not show"):
        log_click(tmp_path, first, "d9")
    with pytest.raises(VsearchError, match="two configurations"):
        log_interleaved(tmp_path, "q", shown, "x", "x")
    with pytest.raises(VsearchError, match="team"):
        log_interleaved(tmp_path, "q", Interleaved(("d1",), ("C",)), "x", "y")
    assert len(read_log(tmp_path)) == 3  # nothing logged by the refused calls


def test_the_log_keeps_a_window_of_the_newest_lists(tmp_path):
    shown = Interleaved(("d1", "d2"), ("A", "B"))
    ids = [log_interleaved(tmp_path, f"q{i}", shown, "a", "b", keep_lists=3) for i in range(5)]
    log_click(tmp_path, ids[-1], "d1")
    assert [x.list_id for x in read_log(tmp_path)] == ids[-3:]


def test_no_log_reads_as_empty(tmp_path):
    assert read_log(tmp_path) == []


def test_the_interleaving_log_is_not_the_click_log(built):
    api.log_interleaved(built, "q", Interleaved(("d1",), ("A",)), "a", "b")
    assert api.click_report(built).lists == 0


# --- vsearch evaluate --interleaving ---------------------------------------------------------------


def test_evaluate_interleaving_reports_each_experiment(built):
    rng = random.Random(0)
    for i in range(30):
        shown = api.team_draft([f"a{j}" for j in range(5)], [f"b{j}" for j in range(5)], k=6, rng=rng)
        list_id = api.log_interleaved(built, f"q{i}", shown, "qe=2", "qe=0")
        # people click B's results only, on 20 of the 30 queries
        if i < 20:
            log_click_on = next(r for r, t in zip(shown.results, shown.teams) if t == "B")
            api.log_interleaved_click(built, list_id, log_click_on)
    got = json.loads(ok(cli("evaluate", "--interleaving", "-f", "json")).stdout)
    assert len(got) == 1
    row = got[0]
    assert (row["a"], row["b"], row["lists"], row["a_wins"], row["b_wins"], row["ties"], row["unclicked"]) == (
        "qe=2", "qe=0", 30, 0, 20, 0, 10)
    assert row["a_share"] == 0.0 and row["a_share_high"] < 0.2 and row["p_value"] < 1e-5 and row["better"] == "qe=0"
    table = ok(cli("evaluate", "--interleaving"))
    assert "a share [95% CI]" in table.stdout and "qe=0 is better" in table.stderr


def test_evaluate_interleaving_without_a_log_says_so(built):
    result = ok(cli("evaluate", "--interleaving", "-f", "json"))
    assert json.loads(result.stdout) == [] and "no interleaved list" in result.stderr
    fails(cli("evaluate", "--interleaving", "--augment", "3"), "--interleaving")
