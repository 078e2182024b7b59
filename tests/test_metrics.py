"""Tests for vsearch.evaluation.metrics: hand-computed cases, properties, sklearn cross-checks, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vsearch.evaluation import metrics
from vsearch.evaluation.metrics import (
    BootstrapCI,
    QueryResult,
    average_precision_at_k,
    hit_at_k,
    ndcg_at_k,
    paired_bootstrap_ci,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
    score_query,
    summarize,
)

# Shared hand-computed example: relevant at positions 1, 3, 5; "d" is relevant but never retrieved.
RANKED = ["a", "x", "b", "y", "c"]
RELEVANT = {"a", "b", "c", "d"}


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 1 / 4),  # {a} of 4 relevant
        (2, 1 / 4),  # {a}; x irrelevant
        (3, 2 / 4),  # {a, b}
        (5, 3 / 4),  # {a, b, c}; d never retrieved
        (10, 3 / 4),  # k past the end: same as k = 5
    ],
)
def test_recall_hand(k: int, expected: float) -> None:
    assert recall_at_k(RANKED, RELEVANT, k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, 1 / 1),  # a
        (2, 1 / 2),  # a, x
        (3, 2 / 3),  # a, x, b
        (5, 3 / 5),  # a, b, c of 5
        (10, 3 / 10),  # denominator is k, not len(ranked[:k]) = 5
    ],
)
def test_precision_hand(k: int, expected: float) -> None:
    assert precision_at_k(RANKED, RELEVANT, k) == pytest.approx(expected)


def test_hit_hand() -> None:
    ranked = ["x", "y", "a"]
    assert hit_at_k(ranked, {"a"}, 1) == 0.0  # x
    assert hit_at_k(ranked, {"a"}, 2) == 0.0  # x, y
    assert hit_at_k(ranked, {"a"}, 3) == 1.0  # a at 3
    assert hit_at_k(ranked, {"a"}, 50) == 1.0  # k past the end
    assert hit_at_k(ranked, {"z"}, 50) == 0.0  # relevant never retrieved


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, (1 / 1) / 1),  # min(4, 1) = 1; P@1 = 1
        (2, (1 / 1) / 2),  # min(4, 2) = 2; only a in top 2: P@1 = 1
        (3, (1 / 1 + 2 / 3) / 3),  # min(4, 3) = 3; P@1 = 1, P@3 = 2/3 -> 5/9
        (5, (1 / 1 + 2 / 3 + 3 / 5) / 4),  # min(4, 5) = 4; + P@5 = 3/5 -> 17/30
        (10, (1 / 1 + 2 / 3 + 3 / 5) / 4),  # k past the end: same sum, same divisor -> 17/30
    ],
)
def test_average_precision_hand(k: int, expected: float) -> None:
    assert average_precision_at_k(RANKED, RELEVANT, k) == pytest.approx(expected)


def test_average_precision_divides_by_k_when_fewer_than_relevant() -> None:
    # 4 relevant, k = 2, both top slots relevant: (1/1 + 2/2) / min(4, 2) = 1.0
    assert average_precision_at_k(["a", "b", "x"], {"a", "b", "c", "d"}, 2) == pytest.approx(1.0)


def test_reciprocal_rank_hand() -> None:
    assert reciprocal_rank(RANKED, RELEVANT) == 1.0  # a at rank 1
    assert reciprocal_rank(["x", "y", "a"], {"a"}) == pytest.approx(1 / 3)  # a at rank 3
    assert reciprocal_rank(["x", "y"], {"a"}) == 0.0  # never retrieved
    assert reciprocal_rank([], {"a"}) == 0.0  # nothing retrieved


def test_graded_ndcg_hand() -> None:
    gains = {"a": 3.0, "b": 1.0}
    ranked = ["b", "x", "a"]
    # DCG@3 = 1/log2(2) + 0/log2(3) + 3/log2(4) = 1 + 0 + 1.5 = 2.5
    # IDCG@3 = 3/log2(2) + 1/log2(3) = 3 + 0.6309... = 3.6309...
    assert ndcg_at_k(ranked, gains, 3) == pytest.approx(2.5 / (3 + 1 / math.log2(3)))  # ~0.68853
    # DCG@1 = 1/1 = 1; IDCG@1 = 3/1 = 3
    assert ndcg_at_k(ranked, gains, 1) == pytest.approx(1 / 3)
    # DCG@2 = 1 + 0 = 1; IDCG@2 = 3 + 1/log2(3)
    assert ndcg_at_k(ranked, gains, 2) == pytest.approx(1 / (3 + 1 / math.log2(3)))
    # k past the end: DCG and IDCG as at k = 3 (only two gains exist)
    assert ndcg_at_k(ranked, gains, 10) == pytest.approx(2.5 / (3 + 1 / math.log2(3)))
    # ideal order [a, b]: DCG = IDCG = 3 + 1/log2(3)
    assert ndcg_at_k(["a", "b"], gains, 2) == pytest.approx(1.0)


def test_binary_ndcg_hand() -> None:
    gains = {item: 1.0 for item in RELEVANT}
    # DCG@5 = 1/log2(2) + 1/log2(4) + 1/log2(6) = 1 + 0.5 + 0.38685 = 1.88685
    # IDCG@5 = 1/log2(2) + 1/log2(3) + 1/log2(4) + 1/log2(5)  (4 relevant ids, d included)
    dcg = 1 + 1 / 2 + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / 2 + 1 / math.log2(5)
    assert ndcg_at_k(RANKED, gains, 5) == pytest.approx(dcg / idcg)  # ~0.7098


def test_no_relevant_retrieved_is_zero_everywhere() -> None:
    ranked = ["x", "y", "z"]
    relevant = {"a", "b"}
    for k in (1, 3, 10):
        assert recall_at_k(ranked, relevant, k) == 0.0
        assert hit_at_k(ranked, relevant, k) == 0.0
        assert precision_at_k(ranked, relevant, k) == 0.0
        assert average_precision_at_k(ranked, relevant, k) == 0.0
        assert ndcg_at_k(ranked, {"a": 2.0, "b": 1.0}, k) == 0.0
    assert reciprocal_rank(ranked, relevant) == 0.0


def test_empty_relevant_and_empty_ranking_score_zero() -> None:
    for k in (1, 5):
        assert recall_at_k(["a"], set(), k) == 0.0
        assert average_precision_at_k(["a"], set(), k) == 0.0
        assert ndcg_at_k(["a"], {}, k) == 0.0
        assert ndcg_at_k(["a"], {"a": 0.0}, k) == 0.0  # all-zero gains: IDCG = 0
        assert recall_at_k([], {"a"}, k) == 0.0
        assert precision_at_k([], {"a"}, k) == 0.0
    assert reciprocal_rank(["a"], set()) == 0.0


def test_duplicate_ids_count_once() -> None:
    ranked = ["a", "a", "b"]
    relevant = {"a", "b"}
    assert recall_at_k(ranked, relevant, 2) == pytest.approx(1 / 2)  # a counted once
    assert precision_at_k(ranked, relevant, 2) == pytest.approx(1 / 2)  # second a is a wasted slot
    assert precision_at_k(ranked, relevant, 3) == pytest.approx(2 / 3)  # a, b
    # (P@1 + P@3) / min(2, 3) = (1/1 + 2/3) / 2 = 5/6
    assert average_precision_at_k(ranked, relevant, 3) == pytest.approx(5 / 6)
    # DCG@3 = 1/1 + 0 + 1/log2(4) = 1.5; IDCG@3 = 1 + 1/log2(3)
    assert ndcg_at_k(ranked, {"a": 1.0, "b": 1.0}, 3) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))


def test_relevant_given_as_list() -> None:
    assert recall_at_k(RANKED, ["a", "b", "c", "d"], 3) == pytest.approx(2 / 4)
    assert average_precision_at_k(RANKED, ["a", "b", "c", "d"], 3) == pytest.approx(5 / 9)


@pytest.mark.parametrize("bad_k", [0, -1, True, 1.5])
def test_bad_k_rejected(bad_k: object) -> None:
    for fn in (recall_at_k, hit_at_k, precision_at_k, average_precision_at_k):
        with pytest.raises(ValueError):
            fn(RANKED, RELEVANT, bad_k)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ndcg_at_k(RANKED, {"a": 1.0}, bad_k)  # type: ignore[arg-type]


def test_numpy_integer_k_accepted() -> None:
    assert recall_at_k(RANKED, RELEVANT, np.int64(3)) == pytest.approx(2 / 4)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_gain", [-1.0, float("nan"), float("inf")])
def test_bad_gain_rejected(bad_gain: float) -> None:
    with pytest.raises(ValueError):
        ndcg_at_k(["a"], {"a": bad_gain}, 1)


# ---------------------------------------------------------------------------------------------
# QueryResult / score_query / summarize
# ---------------------------------------------------------------------------------------------


def _expected_keys(ks: list[int]) -> list[str]:
    keys = []
    for k in ks:
        keys += [f"recall@{k}", f"hit@{k}", f"precision@{k}", f"map@{k}", f"ndcg@{k}"]
    return keys + ["mrr"]


def test_query_result_stores_tuple_and_is_frozen() -> None:
    result = QueryResult(query="q", ranked=["a", "b"], gains={"a": 1.0})  # type: ignore[arg-type]
    assert result.ranked == ("a", "b")
    with pytest.raises(AttributeError):
        result.query = "other"  # type: ignore[misc]


def test_score_query_hand() -> None:
    result = QueryResult(query="q", ranked=tuple(RANKED), gains={"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0})
    scores = score_query(result, [1, 3])
    assert list(scores) == _expected_keys([1, 3])
    assert scores["recall@1"] == pytest.approx(1 / 4)
    assert scores["hit@1"] == 1.0
    assert scores["precision@3"] == pytest.approx(2 / 3)
    assert scores["map@3"] == pytest.approx(5 / 9)  # (1/1 + 2/3) / 3
    # DCG@3 = 1 + 1/2; IDCG@3 = 1 + 1/log2(3) + 1/2
    assert scores["ndcg@3"] == pytest.approx(1.5 / (1.5 + 1 / math.log2(3)))
    assert scores["mrr"] == 1.0


def test_score_query_zero_gain_is_not_relevant() -> None:
    result = QueryResult(query="q", ranked=("a", "b"), gains={"a": 0.0, "b": 2.0})
    scores = score_query(result, [1])
    assert scores["hit@1"] == 0.0
    assert scores["recall@1"] == 0.0
    assert scores["mrr"] == pytest.approx(1 / 2)  # b at rank 2


def test_score_query_rejects_empty_ks() -> None:
    with pytest.raises(ValueError):
        score_query(QueryResult(query="q", ranked=("a",), gains={"a": 1.0}), [])


def test_summarize_keys_order_and_means() -> None:
    results = [
        QueryResult(query="q1", ranked=("a", "x"), gains={"a": 1.0}),  # hit at rank 1
        QueryResult(query="q2", ranked=("x", "b"), gains={"b": 1.0}),  # hit at rank 2
    ]
    summary = summarize(results, [1, 2])
    assert list(summary) == _expected_keys([1, 2]) + ["num_queries"]
    assert summary["num_queries"] == 2
    assert type(summary["num_queries"]) is int
    assert summary["recall@1"] == pytest.approx((1 + 0) / 2)
    assert summary["recall@2"] == pytest.approx((1 + 1) / 2)
    assert summary["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert summary["map@2"] == pytest.approx((1 + 1 / 2) / 2)  # AP: 1/1 and (1/2)/1
    assert summary["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)  # q2: DCG 1/log2(3), IDCG 1
    assert summary["mrr"] == pytest.approx((1 + 1 / 2) / 2)


def test_summarize_empty_raises() -> None:
    with pytest.raises(ValueError):
        summarize([], [1, 5])


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

IDS = st.integers(min_value=0, max_value=40)
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


@st.composite
def ranking_case(draw: st.DrawFn) -> tuple[list[int], dict[int, float], int]:
    """A duplicate-free ranking, graded gains (relevant ids may be unretrieved), and a k."""
    ranked = draw(st.lists(IDS, unique=True, max_size=25))
    gains = draw(st.dictionaries(IDS, st.floats(min_value=0.1, max_value=5.0), max_size=15))
    k = draw(st.integers(min_value=1, max_value=len(ranked) + 5))
    return ranked, gains, k


def _all_metrics(ranked: list[int], gains: dict[int, float], k: int) -> list[float]:
    relevant = set(gains)
    return [
        recall_at_k(ranked, relevant, k),
        hit_at_k(ranked, relevant, k),
        precision_at_k(ranked, relevant, k),
        average_precision_at_k(ranked, relevant, k),
        ndcg_at_k(ranked, gains, k),
        reciprocal_rank(ranked, relevant),
    ]


@PROPERTY_SETTINGS
@given(ranking_case())
def test_all_metrics_in_unit_interval(case: tuple[list[int], dict[int, float], int]) -> None:
    for value in _all_metrics(*case):
        assert 0.0 <= value <= 1.0


@PROPERTY_SETTINGS
@given(ranking_case(), st.lists(IDS, max_size=30))
def test_unit_interval_even_with_duplicates(case: tuple[list[int], dict[int, float], int], noisy: list[int]) -> None:
    _, gains, k = case
    for value in _all_metrics(noisy, gains, k):
        assert 0.0 <= value <= 1.0


@PROPERTY_SETTINGS
@given(
    st.dictionaries(IDS, st.floats(min_value=0.1, max_value=5.0), min_size=1, max_size=15),
    st.lists(st.integers(min_value=100, max_value=200), unique=True, max_size=10),
    st.integers(min_value=1, max_value=30),
)
def test_all_relevant_first_is_perfect(gains: dict[int, float], irrelevant: list[int], k: int) -> None:
    # Relevant ids in ideal (gain-descending) order, then irrelevant ones (disjoint id range).
    ranked = sorted(gains, key=lambda item: -gains[item]) + irrelevant
    relevant = set(gains)
    assert recall_at_k(ranked, relevant, len(ranked)) == pytest.approx(1.0)
    assert average_precision_at_k(ranked, relevant, k) == pytest.approx(1.0)
    assert ndcg_at_k(ranked, gains, k) == pytest.approx(1.0)
    assert reciprocal_rank(ranked, relevant) == 1.0


@PROPERTY_SETTINGS
@given(ranking_case())
def test_recall_and_hit_monotone_in_k(case: tuple[list[int], dict[int, float], int]) -> None:
    ranked, gains, _ = case
    relevant = set(gains)
    ks = range(1, len(ranked) + 4)
    recalls = [recall_at_k(ranked, relevant, k) for k in ks]
    hits = [hit_at_k(ranked, relevant, k) for k in ks]
    assert all(x <= y for x, y in zip(recalls, recalls[1:]))
    assert all(x <= y for x, y in zip(hits, hits[1:]))


@PROPERTY_SETTINGS
@given(ranking_case())
def test_precision_and_recall_count_the_same_hits(case: tuple[list[int], dict[int, float], int]) -> None:
    ranked, gains, k = case
    relevant = set(gains)
    hits = len(relevant & set(ranked[:k]))
    assert precision_at_k(ranked, relevant, k) * k == pytest.approx(hits)
    assert recall_at_k(ranked, relevant, k) * len(relevant) == pytest.approx(hits)


@PROPERTY_SETTINGS
@given(ranking_case(), st.data())
def test_permuting_irrelevant_items_changes_nothing(
    case: tuple[list[int], dict[int, float], int], data: st.DataObject
) -> None:
    ranked, gains, k = case
    slots = [i for i, item in enumerate(ranked) if item not in gains]
    shuffled = data.draw(st.permutations([ranked[i] for i in slots]))
    permuted = list(ranked)
    for slot, item in zip(slots, shuffled):
        permuted[slot] = item
    assert _all_metrics(permuted, gains, k) == _all_metrics(ranked, gains, k)


# ---------------------------------------------------------------------------------------------
# Cross-checks against scikit-learn
# ---------------------------------------------------------------------------------------------


def _scores_by_position(n: int) -> np.ndarray:
    # Strictly decreasing scores: sklearn averages over tied scores, our rankings have no ties.
    return np.arange(n, 0, -1, dtype=np.float64)[None, :]


@pytest.mark.parametrize("seed", range(50))
def test_ndcg_matches_sklearn(seed: int) -> None:
    sk_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    ranking = [int(i) for i in rng.permutation(n)]
    grades = rng.integers(0, 4, size=n).astype(np.float64)
    grades[rng.integers(0, n)] = max(1.0, grades.max())  # at least one relevant
    gains = {item: float(grades[item]) for item in range(n) if grades[item] > 0}
    y_true = np.array([grades[item] for item in ranking])[None, :]
    y_score = _scores_by_position(n)

    k = int(rng.integers(1, n + 5))
    expected = sk_metrics.ndcg_score(y_true, y_score, k=k)
    assert ndcg_at_k(ranking, gains, k) == pytest.approx(expected, abs=1e-12)

    # Truncated retrieval: only the first m ids come back, relevant ids after them still count
    # towards IDCG. With k <= m sklearn's top k are the same m-prefix ids.
    m = int(rng.integers(1, n + 1))
    k = int(rng.integers(1, m + 1))
    expected = sk_metrics.ndcg_score(y_true, y_score, k=k)
    assert ndcg_at_k(ranking[:m], gains, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(50))
def test_average_precision_matches_sklearn(seed: int) -> None:
    sk_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(1, 40))
    ranking = [int(i) for i in rng.permutation(n)]
    labels = rng.random(n) < rng.uniform(0.05, 0.6)
    labels[rng.integers(0, n)] = True  # at least one relevant, so sklearn's AP is defined
    relevant = {item for item in range(n) if labels[item]}
    y_true = np.array([labels[item] for item in ranking], dtype=int)
    expected = sk_metrics.average_precision_score(y_true, _scores_by_position(n)[0])
    assert average_precision_at_k(ranking, relevant, len(ranking)) == pytest.approx(expected, abs=1e-12)
    # Any k past the end gives the same value.
    assert average_precision_at_k(ranking, relevant, len(ranking) + 3) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_identical_systems() -> None:
    scores = np.random.default_rng(1).random(40).tolist()
    ci = paired_bootstrap_ci(scores, scores, n_resamples=2_000)
    assert isinstance(ci, BootstrapCI)
    assert ci.mean_diff == 0.0
    assert ci.low <= 0.0 <= ci.high
    assert ci.n_resamples == 2_000
    assert ci.confidence == 0.95


def test_bootstrap_b_better_by_constant() -> None:
    a = np.random.default_rng(2).uniform(0.0, 0.9, size=50)
    b = a + 0.1
    ci = paired_bootstrap_ci(a.tolist(), b.tolist(), n_resamples=2_000)
    assert ci.mean_diff == pytest.approx(0.1)
    assert ci.low > 0.0
    assert ci.low == pytest.approx(0.1)  # the difference is constant, so every resample agrees
    assert ci.high == pytest.approx(0.1)


def test_bootstrap_noisy_improvement_interval() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(200)
    b = a + 0.05 + rng.normal(0.0, 0.1, size=200)
    ci = paired_bootstrap_ci(a, b, n_resamples=4_000, confidence=0.9)
    diff = b - a
    assert ci.mean_diff == pytest.approx(diff.mean())
    assert ci.low < ci.mean_diff < ci.high
    # Normal approximation of the 90% interval: mean ± 1.645 * sd / sqrt(n), loose tolerance.
    half = 1.645 * diff.std(ddof=1) / math.sqrt(diff.size)
    assert ci.high - ci.low == pytest.approx(2 * half, rel=0.15)


def test_bootstrap_reproducible_with_seed() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.random(30).tolist(), rng.random(30).tolist()
    first = paired_bootstrap_ci(a, b, n_resamples=1_000, seed=7)
    assert paired_bootstrap_ci(a, b, n_resamples=1_000, seed=7) == first
    assert paired_bootstrap_ci(a, b, n_resamples=1_000, seed=8) != first


def test_bootstrap_result_independent_of_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random(30).tolist(), rng.random(30).tolist()
    whole = paired_bootstrap_ci(a, b, n_resamples=1_000, seed=3)
    monkeypatch.setattr(metrics, "_BOOTSTRAP_BATCH_ELEMENTS", 30 * 7)  # 7 resamples per batch
    assert paired_bootstrap_ci(a, b, n_resamples=1_000, seed=3) == whole


@pytest.mark.parametrize(
    ("a", "b", "kwargs"),
    [
        ([0.1, 0.2], [0.1], {}),  # length mismatch
        ([], [], {}),  # empty
        ([0.1, float("nan")], [0.1, 0.2], {}),  # non-finite
        ([0.1], [0.2], {"n_resamples": 0}),
        ([0.1], [0.2], {"confidence": 1.0}),
        ([0.1], [0.2], {"confidence": 0.0}),
    ],
)
def test_bootstrap_rejects_bad_input(a: list[float], b: list[float], kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        paired_bootstrap_ci(a, b, **kwargs)  # type: ignore[arg-type]


# --- graded relevance (judgments' grades are nDCG's gains) -----------------------------------


def test_integer_grades_hand_case_with_an_irrelevant_verdict() -> None:
    # Grades as `vsearch judge --grade` records them: 0 for an irrelevant verdict.
    result = QueryResult("q", ("x", "b", "a", "c"), {"a": 3, "b": 1, "x": 0})
    scores = score_query(result, [3])
    dcg = 1 / math.log2(3) + 3 / math.log2(4)
    assert scores["ndcg@3"] == pytest.approx(dcg / (3 + 1 / math.log2(3)))  # ~0.6845
    assert scores["precision@3"] == pytest.approx(2 / 3)  # binary: a and b relevant, x not
    assert scores["mrr"] == pytest.approx(1 / 2)


@PROPERTY_SETTINGS
@given(ranking_case(), st.floats(min_value=0.5, max_value=10.0))
def test_graded_ndcg_ignores_the_scale_of_the_grades(case: tuple[list[int], dict[int, float], int],
                                                     scale: float) -> None:
    ranked, gains, k = case
    scaled = {item: gain * scale for item, gain in gains.items()}
    assert ndcg_at_k(ranked, scaled, k) == pytest.approx(ndcg_at_k(ranked, gains, k), abs=1e-9)


@PROPERTY_SETTINGS
@given(ranking_case(), st.integers(min_value=0, max_value=24))
def test_putting_the_higher_grade_first_never_lowers_graded_ndcg(case: tuple[list[int], dict[int, float], int],
                                                                 at: int) -> None:
    ranked, gains, k = case
    if at + 1 >= len(ranked):
        return
    a, b = ranked[at], ranked[at + 1]
    if gains.get(a, 0.0) >= gains.get(b, 0.0):
        return
    better = ranked[:at] + [b, a] + ranked[at + 2:]
    assert ndcg_at_k(better, gains, k) >= ndcg_at_k(ranked, gains, k) - 1e-12
