"""Evaluation that tells the truth: augmented labels, A/B with a bootstrap CI, ann_recall, reports."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FakeEmbedder, make_photo
from tests.helpers import cli, ok
from vsearch.imaging import augment
from vsearch.evaluation import compare
from vsearch.evaluation import metrics
from vsearch.models import loading as models
from vsearch.cli import render
from vsearch.cli import report
from vsearch.evaluation import labels as lbl
from vsearch.evaluation import evaluate as ev
from vsearch.errors import VsearchError
from vsearch.retrieval.search import Searcher

ISSUE3_KEYS = [f"{m}@{k}" for k in (1, 5, 10) for m in ("recall", "hit", "precision", "map", "ndcg")] + [
    "mrr", "num_queries"]


class GreyEmbedder(FakeEmbedder):
    """A worse model: the fake model's grid on a greyscale image (colour thrown away)."""

    def __init__(self) -> None:
        super().__init__("fake-grey", weights_sha256="1" * 64)

    def embed_images(self, batch):
        grey = batch.mean(axis=-1, keepdims=True).repeat(3, axis=-1)
        return super().embed_images(grey)


class NoiseEmbedder(FakeEmbedder):
    """A useless model: a random unit vector per image (seeded by its pixels)."""

    def __init__(self) -> None:
        super().__init__("fake-noise", weights_sha256="2" * 64)

    def embed_images(self, batch):
        self.calls += 1
        out = [np.random.default_rng(int(b.astype(np.int64).sum())).normal(size=48) for b in batch]
        return models.l2_normalise(np.array(out))


@pytest.fixture
def other_models(fake_model):
    grey, noise = GreyEmbedder(), NoiseEmbedder()
    models.register("fake-grey", lambda name, device, threads: grey)
    models.register("fake-noise", lambda name, device, threads: noise)
    yield {"fake": fake_model, "fake-grey": grey, "fake-noise": noise}
    models.unregister("fake-grey")
    models.unregister("fake-noise")


def build(folder: Path, index_dir: Path, model: str = "fake", annoy: bool = True) -> Path:
    ok(cli("build-index" if annoy else "embed", folder, "--index-dir", index_dir, "--model", model, "-q"))
    return index_dir


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """8 groups of 3 near-duplicates (one photo saved at three sizes and qualities), and groups.csv.

    Shared by the module's tests (none changes it): writing 24 JPEGs per test is most of a test's time.
    """
    base = tmp_path_factory.mktemp("photos")
    folder = base / "photos"
    folder.mkdir()
    rows = ["path,group"]
    for g in range(8):
        first = make_photo(folder / f"g{g}_0.jpg", seed=g, quality=92)
        Image.open(first).resize((288, 216)).save(folder / f"g{g}_1.jpg", quality=70)
        Image.open(first).resize((256, 192)).save(folder / f"g{g}_2.jpg", quality=50)
        rows += [f"photos/g{g}_{j}.jpg,g{g}" for j in range(3)]  # relative to the CSV's folder
    (base / "groups.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def distinct_photos(tmp_path_factory) -> Path:
    """12 different photos: no two are the same picture."""
    folder = tmp_path_factory.mktemp("distinct") / "photos"
    folder.mkdir()
    for i in range(12):
        make_photo(folder / f"p{i:02d}.jpg", seed=100 + i)
    return folder


@pytest.fixture
def groups_csv(photos) -> Path:
    return photos.parent / "groups.csv"


@pytest.fixture(scope="module")
def shared_index(photos, tmp_path_factory) -> Path:
    """An index of ``photos`` with the fake model, for tests that do not need one of their own."""
    embedder = FakeEmbedder("fake")
    models.register("fake", lambda name, device, threads: embedder)
    try:
        return build(photos, tmp_path_factory.mktemp("shared") / "idx")
    finally:
        models.unregister("fake")


def run_json(*args: str) -> dict:
    return json.loads(ok(cli(*args, "--format", "json")).stdout)


# --- augmentations -------------------------------------------------------------------------


def _photo(size=(200, 150), seed=3) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


@pytest.mark.parametrize("kind", list(augment.KINDS))
def test_each_kind_is_reproducible_and_edits(kind):
    img = _photo()
    a = augment.KINDS[kind](img, np.random.default_rng(7))
    b = augment.KINDS[kind](img, np.random.default_rng(7))
    assert a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    if a.size == img.size:
        assert not np.array_equal(np.asarray(a), np.asarray(img))
    if kind not in ("flip",):  # flip has no parameter
        seeds = {np.asarray(augment.KINDS[kind](img, np.random.default_rng(s))).tobytes() for s in range(4)}
        assert len(seeds) > 1


def test_strengths_stay_in_documented_ranges():
    img = Image.new("RGB", (400, 300), (120, 80, 40))
    for seed in range(10):
        def rng(seed=seed):
            return np.random.default_rng(seed)

        small = augment.downscale(img, rng())
        assert 0.25 * 400 - 1 <= small.size[0] <= 0.5 * 400 + 1
        # rotation crops away the exposed corners: a flat image stays flat, no black wedges
        turned = np.asarray(augment.rotate(img, rng()))
        assert turned.shape == (300, 400, 3)
        assert np.abs(turned.astype(int) - (120, 80, 40)).max() <= 2
        assert augment.random_resized_crop(img, rng()).size == (400, 300)
        # brightness and contrast x0.7-1.3 on a flat image: the grey level moves by at most 30% x 30%
        jittered = np.asarray(augment.colour_jitter(img, rng())).astype(float)
        assert jittered.mean() > 0.3 * 80 and jittered.mean() < 1.8 * 80
    assert np.array_equal(np.asarray(augment.flip(_photo(), None)), np.asarray(_photo())[:, ::-1])
    assert augment.downscale(Image.new("RGB", (40, 30)), np.random.default_rng(0)).size[0] >= 32


def test_rotate_turns_the_content():
    img = Image.new("RGB", (300, 300), "white")
    img.paste((0, 0, 0), (0, 140, 300, 160))  # a horizontal bar
    out = np.asarray(augment.rotate(img, np.random.default_rng(1)).convert("L"))
    dark_rows = [np.where(out[:, c] < 128)[0].mean() for c in (30, 270)]
    assert abs(dark_rows[0] - dark_rows[1]) > 5  # the bar is no longer level


def test_jpeg_copy_has_jpeg_artefacts_but_same_size():
    img = _photo()
    out = augment.jpeg_recompress(img, np.random.default_rng(0))
    assert out.size == img.size
    diff = np.abs(np.asarray(out).astype(int) - np.asarray(img).astype(int)).mean()
    assert diff > 5  # quality 20-50 on noise destroys a lot


def test_pick_is_seeded_sorted_and_independent_of_order(tmp_path):
    paths = [tmp_path / f"{i:03d}.jpg" for i in range(50)]
    a = augment.pick(paths, 10, seed=4)
    assert a == sorted(a) and len(set(a)) == 10
    assert augment.pick(list(reversed(paths)), 10, seed=4) == a
    assert augment.pick(paths, 10, seed=5) != a
    with pytest.raises(VsearchError, match="only 50 images"):
        augment.pick(paths, 51, seed=0)


def test_make_copies_writes_one_png_per_kind(tmp_path, photos):
    originals = sorted(photos.glob("*.jpg"))[:2]
    made = augment.make_copies(originals, tmp_path / "out", seed=1)
    assert len(made) == 2 * len(augment.KINDS)
    assert [c.kind for c in made[:len(augment.KINDS)]] == list(augment.KINDS)
    assert all(c.copy.suffix == ".png" and c.copy.exists() for c in made)
    again = augment.make_copies(originals, tmp_path / "again", seed=1)
    assert [c.copy.read_bytes() for c in made] == [c.copy.read_bytes() for c in again]
    # a copy's edit does not depend on which other kinds were made
    only = augment.make_copies(originals[:1], tmp_path / "only", seed=1, kinds=["jpeg"])
    assert only[0].copy.read_bytes() == next(c for c in made if c.kind == "jpeg").copy.read_bytes()
    with pytest.raises(VsearchError, match="unknown augmentation"):
        augment.make_copies(originals, tmp_path / "x", kinds=["sepia"])


# --- evaluate --augment -----------------------------------------------------------------------


def test_augment_run_scores_copies_and_leaves_no_trace(photos, tmp_path, fake_model, monkeypatch):
    index = build(photos, tmp_path / "idx")
    before = (index / "meta.json").read_text()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    out = run_json("evaluate", "--index-dir", index, "--augment", 5, "--seed", 3)
    kinds = list(augment.KINDS)
    assert list(out) == ["recall@1", "recall@10", "mrr", "num_queries", "folder_share@1", "folder_share@10"] + [
        f"{kind}/{m}" for kind in kinds for m in ("recall@1", "recall@10", "mrr")]
    assert out["num_queries"] == 5 * len(kinds)
    assert all(0.0 <= v <= 1.0 for k, v in out.items() if k != "num_queries")
    # mild edits keep the fake colour-grid model on the original
    for kind in ("jpeg", "blur", "colour"):
        assert out[f"{kind}/recall@10"] == 1.0, kind
    assert out["recall@1"] <= out["recall@10"]
    # the overall figure is the mean over kinds (each kind has the same number of copies)
    assert out["mrr"] == pytest.approx(np.mean([out[f"{k}/mrr"] for k in kinds]), abs=1e-5)
    assert list(scratch.iterdir()) == []  # the copies lived in a temporary folder, now gone
    assert (index / "meta.json").read_text() == before  # and never entered the index
    assert run_json("evaluate", "--index-dir", index, "--augment", 5, "--seed", 3) == out
    other = run_json("evaluate", "--index-dir", index, "--augment", 5, "--seed", 4)
    assert other["num_queries"] == out["num_queries"]


def test_augment_labels_point_copies_at_indexed_originals(photos, tmp_path, fake_model, open_store):
    searcher = Searcher(open_store(build(photos, tmp_path / "idx")))
    made = lbl.augment_labels(searcher, 3, 0, tmp_path / "copies")
    assert made.skipped == ()
    queries = made.queries
    assert len(queries) == 3 * len(augment.KINDS)
    root = Path(searcher.meta.root)
    for q in queries:
        assert q.query.parent == tmp_path / "copies" and q.kind in augment.KINDS
        (original,) = q.gains
        assert original.parent == root and q.gains[original] == 1.0
    result = ev.evaluate(searcher, queries, (1, 10))
    assert result.embedded_queries == len(queries)  # every copy is embedded, none looked up
    assert {r.kind for r in result.records} == set(augment.KINDS)
    assert set(result.by_kind) == set(augment.KINDS)


def test_an_indexed_duplicate_of_the_original_counts_as_the_original(photos, tmp_path, fake_model, open_store):
    # photos holds each picture three times (re-encoded and resized): g0_1 and g0_2 are g0_0's twins
    searcher = Searcher(open_store(build(photos, tmp_path / "idx")))
    g0 = [photos.resolve() / f"g0_{j}.jpg" for j in range(3)]
    twins = lbl.indexed_duplicates(searcher, [g0[0], photos.resolve() / "g1_0.jpg"])
    assert set(twins[g0[0]]) == {g0[1], g0[2]}
    assert all(p.name.startswith("g1_") for p in twins[photos.resolve() / "g1_0.jpg"])
    assert augment.same_picture(g0[0], g0[2]) and not augment.same_picture(g0[0], photos / "g1_0.jpg")
    # a copy whose nearest indexed image is a twin still finds "the original" at rank 1, counted once
    copy = tmp_path / "copy.png"
    Image.open(g0[2]).save(copy)
    plain = lbl.LabelledQuery(copy, {g0[0]: 1.0})
    aliased = lbl.LabelledQuery(copy, {g0[0]: 1.0}, "jpeg", {g0[1]: g0[0], g0[2]: g0[0]})
    result = ev.evaluate(searcher, [plain, aliased], (1, 10), "exact")
    (p, a) = result.records
    assert p.returned[0] == g0[2] and p.scores["recall@1"] == 0.0
    assert a.scores["recall@1"] == 1.0 and a.relevant_ranks == (1,) and a.scores["mrr"] == 1.0


def test_augment_more_than_indexed_is_an_error(shared_index, fake_model):
    result = cli("evaluate", "--index-dir", shared_index, "--augment", 999)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --augment 999: only 24 images to pick from; ask for 24 or fewer"


# --- make-pairs ------------------------------------------------------------------------------


def test_make_pairs_round_trips_through_evaluate(distinct_photos, tmp_path, fake_model):
    photos = distinct_photos
    index = build(photos, tmp_path / "idx")
    out_dir = tmp_path / "pairs"
    result = ok(cli("make-pairs", photos, "--augment", 4, "--seed", 2, "--out", out_dir))
    pairs_csv = out_dir / "pairs.csv"
    assert result.stdout.strip() == str(pairs_csv)
    rows = list(csv.DictReader(pairs_csv.open()))
    assert len(rows) == 4 * len(augment.KINDS)
    assert set(rows[0]) == {"query", "positive", "relevance", "augmentation"}
    assert all((out_dir / r["query"]).exists() and Path(r["positive"]).parent == photos.resolve() for r in rows)
    # the saved pairs score exactly as the on-the-fly augmentation with the same seed
    from_pairs = run_json("evaluate", "--index-dir", index, "--pairs", pairs_csv, "--k", "1,10")
    on_the_fly = run_json("evaluate", "--index-dir", index, "--augment", 4, "--seed", 2)
    for key, value in on_the_fly.items():
        assert from_pairs[key] == pytest.approx(value, abs=1e-6), key
    read = lbl.read_pairs(pairs_csv)
    assert {q.kind for q in read.queries} == set(augment.KINDS) and read.duplicates == 0


def test_make_pairs_refuses_an_out_folder_inside_the_images_or_not_empty(photos, tmp_path):
    result = cli("make-pairs", photos, "--augment", 2, "--out", photos / "copies")
    assert result.exit_code == 1 and "is inside" in result.stderr and "would be indexed" in result.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("x")
    result = cli("make-pairs", photos, "--augment", 2, "--out", busy)
    assert result.exit_code == 1 and "not an empty folder" in result.stderr


def test_make_pairs_via_subprocess(photos, tmp_path):
    out_dir = tmp_path / "p"
    proc = subprocess.run([sys.executable, "-m", "vsearch", "make-pairs", str(photos), "--augment", "1",
                           "--out", str(out_dir)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out_dir / "pairs.csv")
    assert len(list(out_dir.glob("*.png"))) == len(augment.KINDS)


# --- the plain evaluation keeps its contract ---------------------------------------------------


def test_plain_json_keeps_exactly_the_issue3_keys(photos, groups_csv, tmp_path, fake_model):
    index = build(photos, tmp_path / "idx")
    out = run_json("evaluate", "--index-dir", index, "--groups", groups_csv)
    assert list(out) == ISSUE3_KEYS + ["folder_share@1", "folder_share@5", "folder_share@10"]  # issue 12
    assert out["num_queries"] == 24 and out["hit@1"] == 1.0
    with_ann = run_json("evaluate", "--index-dir", index, "--groups", groups_csv, "--ann-recall")
    assert list(with_ann) == ISSUE3_KEYS + ["folder_share@1", "folder_share@5", "folder_share@10", "ann_recall@1", "ann_recall@5", "ann_recall@10"]
    assert all(0 <= with_ann[f"ann_recall@{k}"] <= 1 for k in (1, 5, 10))


def test_ann_recall_is_na_without_annoy(photos, groups_csv, tmp_path, fake_model):
    index = build(photos, tmp_path / "idx", annoy=False)
    out = run_json("evaluate", "--index-dir", index, "--groups", groups_csv, "--ann-recall", "--k", "5")
    assert out["ann_recall@5"] is None
    table = ok(cli("evaluate", "--index-dir", index, "--groups", groups_csv, "--ann-recall", "--k", "5"))
    assert re.search(r"┃ k\s+┃ recall\s+┃ hit\s+┃ precision\s+┃ map\s+┃ ndcg\s+┃ folder_share\s+┃ ann_recall\s+┃", table.stdout)
    assert re.search(r"│ 5\s+│( \d\.\d{4}\s+│){6} n/a\s+│", table.stdout)
    assert "ann_recall n/a (no Annoy index)" in table.stderr


class _StubSearcher:
    """Exact search over given vectors; "approximate" returns a fixed wrong answer for row 0's query."""

    def __init__(self, vectors: np.ndarray, approx: dict[int, list[int]]) -> None:
        self.vectors = self.search_vectors = vectors
        self.approx = approx

    def neighbours(self, vector, k, mode="auto", search_k=-1):
        scores = self.vectors @ vector
        if mode == "approximate":
            key = int(np.argmax(scores))
            rows = np.array(self.approx.get(key, list(np.argsort(-scores, kind="stable"))))[:k]
            return rows, scores[rows]
        rows = np.argsort(-scores, kind="stable")[:k]
        return rows, scores[rows]


def test_ann_recall_counts_overlap_with_exact_and_forgives_ties():
    rng = np.random.default_rng(0)
    vecs = models.l2_normalise(rng.normal(size=(20, 8)))
    q = vecs[0]
    exact = list(np.argsort(-(vecs @ q), kind="stable"))  # exact[0] == 0, the query's own row
    # Annoy "finds" the 1st and 3rd true neighbours (own row left out) and two far rows
    stub = _StubSearcher(vecs, {0: [0, exact[1], exact[19], exact[3], exact[18]]})
    got = ev.ann_recall_at(stub, q[None], [0], [1, 2, 4])
    assert got == {1: 1.0, 2: 0.5, 4: 0.5}
    # an out-of-index query (no own row): nothing is left out
    stub = _StubSearcher(vecs, {0: [exact[0], exact[19]]})
    assert ev.ann_recall_at(stub, q[None], [None], [2]) == {2: 0.5}
    # a duplicate of the K-th neighbour is as good as the neighbour itself
    twin = np.vstack([vecs, vecs[exact[1]]])
    stub = _StubSearcher(twin, {0: [0, 20]})
    assert ev.ann_recall_at(stub, q[None], [0], [1]) == {1: 1.0}


# --- side by side ----------------------------------------------------------------------------


def test_ab_table_has_a_column_per_index_and_the_difference(photos, groups_csv, tmp_path, other_models):
    a = build(photos, tmp_path / "A", "fake")
    b = build(photos, tmp_path / "B", "fake-noise")
    result = ok(cli("evaluate", "--index-dir", a, "--index-dir", b, "--groups", groups_csv))
    header = result.stdout.splitlines()
    assert any("A" in line and "B - A" in line for line in header)
    assert re.search(r"map@10 95% CI\s+│\s+│\s+│\s+[-+]\d\.\d{4} \[[-+]\d\.\d{4}, [-+]\d\.\d{4}\]", result.stdout)
    assert "A is better" in result.stdout  # the noise model is clearly worse
    assert "map@10: B - A = " in result.stderr

    out = run_json("evaluate", "--index-dir", a, "--index-dir", b, "--groups", groups_csv)
    assert out["headline"] == "map@10"
    assert [s["label"] for s in out["systems"]] == ["A", "B"]
    assert [s["model"] for s in out["systems"]] == ["fake", "fake-noise"]
    ma, mb = (s["metrics"] for s in out["systems"])
    assert list(ma)[:len(ISSUE3_KEYS)] == ISSUE3_KEYS
    diff = out["differences"]["B - A"]
    assert diff["map@10"] == pytest.approx(mb["map@10"] - ma["map@10"])
    (comp,) = out["comparisons"]
    assert comp["mean_diff"] == pytest.approx(diff["map@10"])
    assert comp["low"] <= comp["mean_diff"] <= comp["high"] < 0
    assert comp["num_queries"] == 24 and comp["n_resamples"] == 10_000 and comp["verdict"] == "A is better"


def test_ab_each_index_embeds_queries_with_its_own_model(photos, tmp_path, other_models):
    a = build(photos, tmp_path / "A", "fake")
    b = build(photos, tmp_path / "B", "fake-grey")
    fake, grey = other_models["fake"], other_models["fake-grey"]
    fake.calls = grey.calls = 0
    out = run_json("evaluate", "--index-dir", a, "--index-dir", b, "--augment", 3)
    assert fake.calls > 0 and grey.calls > 0
    assert [s["metrics"]["num_queries"] for s in out["systems"]] == [3 * len(augment.KINDS)] * 2
    assert out["headline"] == "recall@1"
    # Each column is its index scored alone: B's copies were embedded by B's own (grey) model,
    # not taken from the vectors A's model made of the same files.
    for index, system in zip((a, b), out["systems"]):
        alone = run_json("evaluate", "--index-dir", index, "--augment", 3)
        assert {key: system["metrics"][key] for key in alone} == pytest.approx(alone)
    assert out["systems"][0]["metrics"] != out["systems"][1]["metrics"]


def test_ab_same_model_embeds_each_query_once_and_compares_modes(photos, tmp_path, fake_model):
    index = build(photos, tmp_path / "idx")
    fake_model.calls = 0
    out = run_json("evaluate", "--index-dir", index, "--index-dir", index, "--mode", "exact,approximate",
                   "--augment", 2)
    n = 2 * len(augment.KINDS)
    assert fake_model.calls == -(-n // 16)  # one pass of batches of 16, shared by both columns
    assert [s["label"] for s in out["systems"]] == ["idx (exact)", "idx (approximate)"]
    assert [s["mode"] for s in out["systems"]] == ["exact", "approximate"]
    (comp,) = out["comparisons"]
    assert comp["baseline"] == "idx (exact)" and comp["other"] == "idx (approximate)"


def test_query_expansion_ranks_with_the_expanded_vector(photos, groups_csv, tmp_path, fake_model, open_store):
    searcher = Searcher(open_store(build(photos, tmp_path / "idx")))
    labels = lbl.read_groups(groups_csv).queries
    plain = ev.evaluate(searcher, labels, (1, 5), "exact")
    expanded = ev.evaluate(searcher, labels, (1, 5), "exact", expand=2, copy_first=False)  # the expansion alone
    rows = searcher.rows_of([q.query for q in labels])
    for q, result in zip(labels, expanded.per_query):
        own = rows[q.query]
        vec = searcher.expand(np.asarray(searcher.vectors[own]), 2, "exact", exclude_rows=[own])
        want = [int(r) for r in searcher.neighbours(vec, 6, "exact")[0] if int(r) != own][:5]
        assert list(result.ranked[:5]) == want
    assert [r.ranked for r in plain.per_query] != [r.ranked for r in expanded.per_query]
    # Through the CLI: one column per setting, labelled with the expansion.
    out = run_json("evaluate", "--index-dir", searcher.store.dir, "--index-dir", searcher.store.dir,
                   "--groups", groups_csv, "--qe", "0,2")
    assert [s["label"] for s in out["systems"]] == ["idx (auto)", "idx (auto, qe 2)"]
    assert cli("evaluate", "--groups", groups_csv, "--index-dir", searcher.store.dir, "--qe", "x").exit_code == 1


def test_identical_systems_differ_by_exactly_zero(photos, groups_csv, tmp_path, fake_model):
    index = build(photos, tmp_path / "idx")
    out = run_json("evaluate", "--index-dir", index, "--index-dir", index, "--groups", groups_csv,
                   "--headline", "mrr")
    (comp,) = out["comparisons"]
    assert (comp["metric"], comp["mean_diff"], comp["low"], comp["high"]) == ("mrr", 0.0, 0.0, 0.0)
    assert comp["verdict"].startswith("no clear difference")
    assert all(v == 0 for v in next(iter(out["differences"].values())).values())


def test_bootstrap_ci_matches_metrics_on_per_query_values(photos, groups_csv, tmp_path, other_models, open_store):
    searchers = [Searcher(open_store(build(photos, tmp_path / n, m))) for n, m in (("A", "fake"), ("B", "fake-grey"))]
    labels = lbl.read_groups(groups_csv).queries
    result = compare.evaluate_all([compare.Target(s, "exact", n) for s, n in zip(searchers, "AB")], labels, (1, 10), seed=5)
    a = [r.scores["map@10"] for r in result.reports[0].records]
    b = [r.scores["map@10"] for r in result.reports[1].records]
    assert result.comparisons[0].ci == metrics.paired_bootstrap_ci(a, b, n_resamples=10_000, seed=5)
    assert np.mean(a) == pytest.approx(result.reports[0].metrics["map@10"])


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --pairs FILE, --groups FILE or --augment N"),
    (["--augment", "2", "--groups", "g.csv"], "give exactly one of --pairs FILE, --groups FILE or --augment N"),
    (["--augment", "2", "--mode", "exact,approximate"], "--mode lists 2 modes for 1 --index-dir"),
    (["--augment", "2", "--mode", "fast"], "--mode 'fast': choose auto, exact or approximate"),
    (["--augment", "2", "--mode", "exact", "--exact"], "--exact and --mode exclude each other; use --mode exact"),
    (["--augment", "2", "--headline", "map@5"], "--headline 'map@5' is not a metric of this run"),
    (["--augment", "2", "--k", "1,x"], "--k takes comma-separated integers"),
])
def test_option_errors_are_one_line(shared_index, fake_model, args, message):
    result = cli("evaluate", "--index-dir", shared_index, *args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr


def test_target_labels_are_short_and_distinct(tmp_path):
    assert compare.target_labels([tmp_path / "a", tmp_path / "b"], ["auto", "auto"]) == ["a", "b"]
    assert compare.target_labels([tmp_path / "a", tmp_path / "a"], ["exact", "approximate"]) == [
        "a (exact)", "a (approximate)"]
    x, y = tmp_path / "1" / "idx", tmp_path / "2" / "idx"
    assert compare.target_labels([x, y], ["auto", "auto"]) == [str(x), str(y)]
    assert compare.target_labels([x, x], ["auto", "auto"]) == ["idx #1", "idx #2"]


# --- per-query CSV and the HTML report ----------------------------------------------------------


def test_per_query_csv_has_each_querys_ranks(photos, groups_csv, tmp_path, fake_model):
    index = build(photos, tmp_path / "idx")
    out = tmp_path / "pq.csv"
    ok(cli("evaluate", "--index-dir", index, "--groups", groups_csv, "--per-query", out, "--exact"))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 24
    assert list(rows[0])[:7] == ["system", "query", "kind", "num_relevant", "first_rank", "relevant_ranks",
                                 "top_result"]
    for r in rows:
        ranks = [int(x) for x in r["relevant_ranks"].split()]
        assert ranks == sorted(ranks) and int(r["num_relevant"]) == 2
        assert int(r["first_rank"]) == ranks[0]
        assert float(r["recall@10"]) == sum(x <= 10 for x in ranks) / 2
        assert float(r["mrr"]) == pytest.approx(1 / ranks[0], abs=1e-6)
        assert (float(r["hit@1"]) == 1.0) == (ranks[0] == 1)
        assert r["top_result"] != r["query"]  # the query's own entry is left out


def test_recall_curve_by_hand():
    def rec(ranks, n):
        return ev.QueryRecord(Path("q"), None, tuple(Path(f"e{i}") for i in range(n)), (), tuple(ranks), 5, {})

    r = ev.EvalReport({}, records=[rec([1, 3], 2), rec([5], 4), rec([], 1)])
    curve = report.recall_curve(r)
    # K=1: (0.5 + 0 + 0)/3; K=3: (1 + 0 + 0)/3; K=5: (1 + 0.25 + 0)/3
    assert curve == pytest.approx([0.5 / 3, 0.5 / 3, 1 / 3, 1 / 3, 1.25 / 3])


def test_html_report_is_self_contained(photos, groups_csv, tmp_path, other_models):
    a = build(photos, tmp_path / "A", "fake")
    b = build(photos, tmp_path / "B", "fake-grey", annoy=False)
    out = tmp_path / "report.html"
    ok(cli("evaluate", "--index-dir", a, "--index-dir", b, "--groups", groups_csv, "--report", out))
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing outside the file
    for text in ("Systems", "Metrics", "Recall against K", "Worst queries: A", "Worst queries: B",
                 "map@10 95% CI", "B - A", "fake-grey", "ann_recall@10", "n/a"):
        assert text in page, text
    (png,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert Image.open(io.BytesIO(base64.b64decode(png))).format == "PNG"
    thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(thumbs) >= 2 * (1 + 1 + 5)  # at least one worst query per system: query, expected, 5 results
    assert Image.open(io.BytesIO(base64.b64decode(thumbs[0]))).size[0] <= report.THUMB_SIDE


def test_html_report_of_an_augment_run_shows_the_copies(photos, tmp_path, fake_model):
    index = build(photos, tmp_path / "idx")
    out = tmp_path / "r.html"
    ok(cli("evaluate", "--index-dir", index, "--augment", 2, "--report", out))
    page = out.read_text()
    assert "edit: " in page and "unreadable" not in page  # the copies were still there to thumbnail
    assert "16 edited copies of 2 indexed images (seed 0), made in " in page


def test_worst_queries_are_the_lowest_scores():
    recs = [ev.QueryRecord(Path(f"q{i}"), None, (), (), (), 10, {"map@10": s, "mrr": s})
            for i, s in enumerate([0.5, 0.1, 0.9, 0.1])]
    r = ev.EvalReport({}, records=recs)
    assert [x.query.name for x in report.worst_queries(r, "map@10", 3)] == ["q1", "q3", "q0"]


# --- the real default model ------------------------------------------------------------------


@pytest.mark.slow
def test_augment_run_with_the_default_model_on_sample_images(sample_copy, tmp_path):
    index = tmp_path / "idx"
    ok(cli("build-index", sample_copy, "--index-dir", index, "-q"))
    out = run_json("evaluate", "--index-dir", index, "--augment", 4, "--seed", 1, "-q")
    assert out["num_queries"] == 4 * len(augment.KINDS)
    # a real CNN finds a mildly edited copy's original first, nearly always
    for kind in ("flip", "jpeg", "colour", "blur"):
        assert out[f"{kind}/recall@10"] == 1.0, kind
    assert out["recall@1"] >= 0.8 and out["mrr"] >= 0.85


# --- what evaluate prints ---------------------------------------------------------------------


def test_one_index_prints_a_k_by_metric_grid(shared_index, groups_csv, fake_model):
    table = ok(cli("evaluate", "--index-dir", shared_index, "--groups", groups_csv, "--k", "1,5"))
    lines = table.stdout.splitlines()
    assert re.search(r"┃ k\s+┃ recall\s+┃ hit\s+┃ precision\s+┃ map\s+┃ ndcg\s+┃ folder_share\s+┃$", "\n".join(lines), re.M)
    grid = [line for line in lines if re.match(r"│ \d+ ", line)]
    assert [line.split("│")[1].strip() for line in grid] == ["1", "5"]  # one row per K
    values = run_json("evaluate", "--index-dir", shared_index, "--groups", groups_csv, "--k", "1,5")
    for k, line in zip((1, 5), grid):
        cells = [c.strip() for c in line.split("│")[2:-1]]
        assert cells == [f"{values[f'{m}@{k}']:.4f}" for m in (*report.AT_K, "folder_share")]
    assert re.search(r"│ mrr\s+│ 1\.0000 │", table.stdout) and re.search(r"│ num_queries\s+│ 24\s+│", table.stdout)
    assert len(lines) < 20  # not one 28-row column

    rows = list(csv.DictReader(io.StringIO(ok(cli("evaluate", "--index-dir", shared_index, "--groups", groups_csv,
                                               "--k", "1,5", "-f", "csv")).stdout)))
    assert [r["k"] for r in rows] == ["1", "5"]
    assert list(rows[0]) == ["k", *report.AT_K, "folder_share", "mrr", "num_queries"]
    assert float(rows[1]["precision"]) == pytest.approx(values["precision@5"], abs=1e-6)
    assert {r["num_queries"] for r in rows} == {"24"}


def test_augment_run_prints_recall_by_k_and_a_grid_by_edit(shared_index, fake_model):
    table = ok(cli("evaluate", "--index-dir", shared_index, "--augment", 2)).stdout
    assert re.search(r"┃ k\s+┃ recall\s+┃", table) and "precision" not in table
    assert re.search(r"┃ edit\s+┃ recall@1\s+┃ recall@10\s+┃ mrr\s+┃ queries\s+┃", table)
    for kind in augment.KINDS:
        assert re.search(rf"│ {kind}\s+│( \d\.\d{{4}}\s+│){{3}} 2\s+│", table), kind
    rows = list(csv.DictReader(io.StringIO(ok(cli("evaluate", "--index-dir", shared_index, "--augment", 2,
                                               "-f", "csv")).stdout)))
    assert [r["k"] for r in rows] == ["1", "10"] and "crop/recall" in rows[0] and "crop/mrr" in rows[0]


def test_evaluate_format_offers_and_takes_only_metric_formats(shared_index, fake_model):
    help_text = cli("evaluate", "--help").stdout
    assert re.search(r"table\|json\|csv", help_text) and "paths" not in help_text
    result = cli("evaluate", "--index-dir", shared_index, "--augment", 2, "--format", "paths")
    assert result.exit_code != 0 and result.stdout == ""


def test_render_evaluation_refuses_paths_in_one_error():
    result = compare.Evaluation([ev.EvalReport({"recall@1": 1.0, "mrr": 1.0, "num_queries": 1})], (1,), "map@1", [], 0.0)
    with pytest.raises(VsearchError, match="an evaluation prints as table, json, csv, not paths"):
        report.render_evaluation(result, render.Format.paths)
    out = io.StringIO()
    report.render_evaluation(result, render.Format.json, out=out, err=io.StringIO(), quiet=True)
    assert json.loads(out.getvalue()) == {"recall@1": 1.0, "mrr": 1.0, "num_queries": 1}
