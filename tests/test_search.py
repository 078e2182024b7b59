"""Search people trust: exact vs Annoy, the stored-vector fast path, text, several examples,
filters and re-ranking, QE/DBA, galleries, and near-duplicate groups."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FakeEmbedder, make_photo, run_cli_reporting_torch
from tests.helpers import cli
from vsearch.vectors import nearest
from vsearch.models import loading as models
from vsearch.retrieval import rerank
from vsearch.vectors import dba
from vsearch.duplicates import grouping
from vsearch.duplicates.grouping import find_groups
from vsearch.cli.wording import cli_words
from vsearch.errors import VsearchError
from vsearch.retrieval.search import Refine, Searcher
from vsearch.storage.store import Store

REPO = Path(__file__).resolve().parent.parent


def solid(path: Path, colour, size=(96, 64)) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), colour, dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """Built once per module: twenty distinct photo-like images (four in sub/), a re-encoded copy
    of p01 and a half-size PNG copy of p02, indexed with the fake model."""
    folder = tmp_path_factory.mktemp("shared") / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(20):
        make_photo(folder / ("sub" if i % 4 == 0 else "") / f"p{i:02d}.jpg", seed=i)
    Image.open(folder / "p01.jpg").save(folder / "p01_copy.jpg", quality=60)
    Image.open(folder / "p02.jpg").resize((160, 120)).save(folder / "p02_small.png")
    index_dir = folder.parent / "idx"
    models.register("fake", lambda name, device, threads: FakeEmbedder("fake"))
    try:
        result = cli("build-index", folder, "--index-dir", index_dir, "--model", "fake", "-q")
    finally:
        models.unregister("fake")
    assert result.exit_code == 0, result.output
    return folder, index_dir


@pytest.fixture
def photos(built) -> Path:
    return built[0]


@pytest.fixture
def indexed(built, fake_model, tmp_path) -> Path:
    """A private copy of the built index (tests may rebuild it)."""
    return Path(shutil.copytree(built[1], tmp_path / "idx"))


def paths_of(output: str) -> list[str]:
    return [Path(line).name for line in output.splitlines() if line.strip()]


def query_paths(index_dir: Path, *args: str) -> list[str]:
    result = cli("query", *args, "--index-dir", index_dir, "--format", "paths")
    assert result.exit_code == 0, result.output
    return paths_of(result.stdout)


# --- 1. exact vs approximate -----------------------------------------------------------------


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.4 * rng.standard_normal((n, dim))
    return models.l2_normalise(x)


def test_annoy_agrees_with_exact_search_at_the_defaults(tmp_path):
    vectors = clustered(3000, 32, seed=0)
    queries = clustered(50, 32, seed=1)
    nearest.build_annoy(vectors, tmp_path / "a.ann")
    ann = nearest.AnnoySearcher(tmp_path / "a.ann", 32)
    exact_rows, _ = nearest.exact_search(vectors, queries, 10)
    approx_rows, approx_scores = nearest.approximate_search_batch(ann, vectors, queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_rows, exact_rows)])
    assert recall >= 0.95
    # Every approximate score is the exact cosine of that row, not Annoy's own distance.
    for rows, scores, q in zip(approx_rows, approx_scores, queries):
        np.testing.assert_allclose(scores, vectors[rows] @ q, rtol=0, atol=1e-5)
        assert list(scores) == sorted(scores, reverse=True)
    single_rows, _ = nearest.approximate_search(ann, vectors, queries[0], 10)
    assert list(single_rows) == list(approx_rows[0])


def test_exact_search_blocks_give_the_same_answer():
    vectors = clustered(1000, 16, seed=2)
    q = clustered(5, 16, seed=3)
    whole = nearest.exact_search(vectors, q, 7)
    blocked = nearest.exact_search(vectors, q, 7, block=64)
    np.testing.assert_array_equal(whole[0], blocked[0])
    brute = np.argsort(-(q @ vectors.T), axis=1)[:, :7]
    np.testing.assert_array_equal(whole[0], brute)


def test_query_exact_and_approximate_agree_through_the_cli(indexed, photos):
    exact = query_paths(indexed, photos / "p03.jpg", "--exact", "--k", "5")
    approx = query_paths(indexed, photos / "p03.jpg", "--approximate", "--k", "5")
    assert exact[0] == "p03.jpg" and approx == exact
    result = cli("query", photos / "p03.jpg", "--exact", "--approximate", "--index-dir", indexed)
    assert result.exit_code == 1 and "exclude each other" in result.output


def test_auto_mode_switches_to_annoy_above_the_limit(indexed, monkeypatch, open_store):
    searcher = Searcher(open_store(indexed))
    assert not searcher.use_approximate("auto")
    monkeypatch.setattr(nearest, "EXACT_LIMIT", 5)
    assert searcher.use_approximate("auto")


# --- 2. instant queries --------------------------------------------------------------------


def test_indexed_query_uses_the_stored_vector_without_torch_or_the_model(indexed, photos, tmp_path):
    # The subprocess has no "fake" model registered: any attempt to load one would fail.
    done = run_cli_reporting_torch("query", photos / "p05.jpg", "--index-dir", indexed, "--format", "json", "--k", "3")
    assert done.returncode == 0, done.stderr
    assert "NO-TORCH" in done.stderr
    hits = json.loads(done.stdout)
    assert Path(hits[0]["path"]).name == "p05.jpg" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    # Same content elsewhere (different path and mtime): found by content hash, still no model.
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(photos / "p05.jpg", outside)
    done = run_cli_reporting_torch("query", outside, "--index-dir", indexed, "--format", "paths", "--k", "1")
    assert done.returncode == 0, done.stderr
    assert "NO-TORCH" in done.stderr and paths_of(done.stdout) == ["p05.jpg"]


def test_help_does_not_import_torch():
    done = run_cli_reporting_torch("--help")
    assert done.returncode == 0 and "NO-TORCH" in done.stderr and "query" in done.stdout


def test_new_query_image_is_embedded_with_the_index_model(indexed, photos, fake_model, tmp_path, open_store):
    searcher = Searcher(open_store(indexed))
    assert searcher.image_vector(photos / "p07.jpg").source == "stored"
    calls = fake_model.calls
    new = make_photo(tmp_path / "new.jpg", seed=7, quality=70)  # same picture, re-encoded
    vec = searcher.image_vector(new)
    assert vec.source == "embedded" and fake_model.calls == calls + 1
    assert searcher.path(searcher.search(vec.vector, 1)[0].row).name == "p07.jpg"


# --- 3. text queries -------------------------------------------------------------------------


class FakeClip(FakeEmbedder):
    """Image-and-text fake: a text names a colour, embedded as a picture of that colour."""

    COLOURS = {"red": (220, 20, 20), "green": (20, 200, 30), "blue": (20, 30, 220)}

    def __init__(self) -> None:
        super().__init__("fakeclip")
        self.id = models.ModelId(**{**self.id.to_dict(), "family": "open_clip",
                                    "preprocess": self.id.preprocess})

    @property
    def supports_text(self) -> bool:
        return True

    def embed_text(self, texts):
        colours = [next(c for word, c in self.COLOURS.items() if word in t) for t in texts]
        return self.embed_images(np.array([np.full((32, 32, 3), c, dtype=np.uint8) for c in colours]))


def test_text_query_with_a_clip_index(tmp_path):
    clip = FakeClip()
    models.register("fakeclip", lambda name, device, threads: clip)
    try:
        folder = tmp_path / "colours"
        folder.mkdir()
        for name, colour in FakeClip.COLOURS.items():
            solid(folder / f"{name}.png", colour)
        index_dir = tmp_path / "clip-index"
        assert cli("build-index", folder, "--index-dir", index_dir, "--model", "fakeclip", "-q").exit_code == 0
        assert query_paths(index_dir, "a green meadow", "--k", "1") == ["green.png"]
        assert query_paths(index_dir, "something blue", "--k", "1") == ["blue.png"]
    finally:
        models.unregister("fakeclip")


def test_text_query_on_an_image_only_index_says_what_is_needed(indexed):
    result = cli("query", "a dog on the beach", "--index-dir", indexed)
    assert result.exit_code == 1
    assert "text search needs a CLIP index" in result.output and "Traceback" not in result.output
    result = cli("query", "missing/photo.jpg", "--index-dir", indexed)
    assert result.exit_code == 1 and "query image not found" in result.output


# --- 4. several examples ----------------------------------------------------------------------


def test_combine_examples_is_normalised_mean_minus_weighted_negatives():
    a, b, c = np.eye(3, dtype=np.float32)
    q = rerank.combine_examples(np.stack([a, b]), c[None], 0.5)
    expected = (0.5 * a + 0.5 * b - 0.5 * c)
    np.testing.assert_allclose(q, expected / np.linalg.norm(expected), atol=1e-6)
    np.testing.assert_allclose(rerank.combine_examples(a[None]), a)
    with pytest.raises(VsearchError, match="cancel"):
        rerank.combine_examples(a[None], a[None], 1.0)


def test_negative_example_pushes_its_look_alikes_down(tmp_path, fake_model, open_store):
    folder = tmp_path / "shades"
    folder.mkdir()
    solid(folder / "red.png", (200, 40, 40))
    solid(folder / "wine.png", (180, 40, 100))  # red with some blue: closest to red alone
    solid(folder / "rust.png", (200, 110, 60))  # red with some yellow
    solid(folder / "blue.png", (40, 40, 200))
    index_dir = tmp_path / "i"
    assert cli("build-index", folder, "--index-dir", index_dir, "--model", "fake", "-q").exit_code == 0
    plain = query_paths(index_dir, folder / "red.png", "--exclude-self", "--k", "2")
    assert plain == ["wine.png", "rust.png"]
    result = cli("query", folder / "red.png", "--not", folder / "blue.png", "--exclude-self",
                 "--index-dir", index_dir, "--format", "json")
    hits = json.loads(result.stdout)
    assert [Path(h["path"]).name for h in hits] == ["rust.png", "wine.png"]  # negatives leave too
    # Scores are exact cosines against normalise(red - 0.5 * blue).
    searcher = Searcher(open_store(index_dir))
    red, blue = (searcher.image_vector(folder / n).vector for n in ("red.png", "blue.png"))
    q = (red - 0.5 * blue) / np.linalg.norm(red - 0.5 * blue)
    for h in hits:
        assert h["score"] == pytest.approx(float(searcher.vectors[h["row"]] @ q), abs=1e-5)
    # Two positives: their mean, which lies between red and blue, where wine is.
    assert query_paths(index_dir, folder / "red.png", folder / "blue.png", "--k", "1") == ["wine.png"]


# --- 5. re-rank and filter --------------------------------------------------------------------


def test_exclude_self_min_score_and_path_filters(indexed, photos):
    assert query_paths(indexed, photos / "p03.jpg", "--k", "1") == ["p03.jpg"]
    assert "p03.jpg" not in query_paths(indexed, photos / "p03.jpg", "--exclude-self")
    result = cli("query", photos / "p03.jpg", "--index-dir", indexed, "--min-score", "0.5", "--k", "30",
                 "--format", "json")
    scores = [h["score"] for h in json.loads(result.stdout)]
    assert scores and min(scores) >= 0.5 and len(scores) < 22
    # The glob is matched against the path relative to the indexed folder; filtering happens
    # before the cut to k, so k matching results come back even when they rank low.
    sub = query_paths(indexed, photos / "p03.jpg", "--path", "sub/*", "--k", "5")
    assert sub and len(sub) == 5 and all(p in {"p00.jpg", "p04.jpg", "p08.jpg", "p12.jpg", "p16.jpg"} for p in sub)
    assert query_paths(indexed, photos / "p03.jpg", "--path", "*.png") == ["p02_small.png"]
    result = cli("query", photos / "p03.jpg", "--index-dir", indexed, "--path", "*.gif", "--format", "paths")
    assert result.exit_code == 0 and result.stdout == "" and "no results" in result.stderr


def test_dedupe_collapses_copies_to_one_representative(indexed, photos):
    plain = query_paths(indexed, photos / "p01.jpg", "--k", "3")
    assert plain[:2] == ["p01.jpg", "p01_copy.jpg"] or plain[:2] == ["p01_copy.jpg", "p01.jpg"]
    deduped = query_paths(indexed, photos / "p01.jpg", "--k", "3", "--dedupe", "0.98")
    assert len(deduped) == 3 and deduped[0] == plain[0] and "p01_copy.jpg" not in deduped


def test_dedupe_and_mmr_functions():
    v = np.array([[1, 0, 0], [0.999, 0.045, 0], [0.8, 0.6, 0], [0, 1, 0]], dtype=np.float32)
    v = models.l2_normalise(v)
    kept, counts = rerank.dedupe(v, 0.99)
    assert list(kept) == [0, 2, 3] and list(counts) == [2, 1, 1]
    # 0 and 1 are near-copies (cosine 0.9999); 2 is a little less relevant but different.
    v = models.l2_normalise(np.array([[1, 1, 0.1], [1, 1, 0.12], [1, 0.6, -0.5], [0, 0, 1]], dtype=np.float32))
    q = models.l2_normalise(np.array([1, 1, 0], dtype=np.float32))
    assert list(rerank.mmr(q, v, 3, 1.0)) == [0, 1, 2]  # lambda 1: plain relevance
    assert list(rerank.mmr(q, v, 3, 0.5)) == [0, 2, 1]  # the near-copy waits its turn


def test_diverse_reranks_the_results(indexed, photos):
    plain = query_paths(indexed, photos / "p01.jpg", "--k", "4")
    diverse = query_paths(indexed, photos / "p01.jpg", "--k", "4", "--diverse", "0.3")
    assert diverse[0] == plain[0] and diverse[1] != plain[1] and len(diverse) == 4
    bad = cli("query", photos / "p01.jpg", "--index-dir", indexed, "--diverse", "1.5")
    assert bad.exit_code != 0


def test_query_expansion_and_dba(indexed, photos):
    store = Store.open(indexed)
    searcher = Searcher(store)
    q = searcher.image_vector(photos / "p05.jpg")
    rows, _ = searcher.neighbours(q.vector, 3)
    expanded = searcher.expand(q.vector, 2, exclude_rows=[q.row])
    others = [r for r in rows if r != q.row][:2]
    mean = (q.vector + searcher.vectors[others].sum(axis=0)) / 3
    np.testing.assert_allclose(expanded, mean / np.linalg.norm(mean), atol=1e-6)
    assert searcher.search(q.vector, 3, refine=Refine(expand=2))[0].row == q.row
    raw = np.array(store.vectors())
    store.close()

    result = cli("build-index", photos, "--index-dir", indexed, "--model", "fake", "-q", "--dba", "2")
    assert result.exit_code == 0, result.output
    meta = json.loads((indexed / "meta.json").read_text())
    assert meta["dba"]["neighbours"] == 2 and (indexed / meta["dba"]["file"]).exists()
    with Store.open(indexed) as store:
        searcher = Searcher(store)
        np.testing.assert_array_equal(np.asarray(store.vectors()), raw)  # raw vectors untouched
        graph, _ = nearest.neighbour_graph(raw, 2)
        expected = raw + raw[graph].sum(axis=1)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(np.asarray(searcher.search_vectors), expected, atol=1e-5)
        hits = searcher.search(searcher.image_vector(photos / "p05.jpg").vector, 3)
        # ordered by the DBA copy, scored by the photo's own vector: the cosine to the query asked
        assert hits[0].row == q.row and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert all(h.score == pytest.approx(float(raw[h.row] @ raw[q.row]), abs=1e-5) for h in hits)
        assert meta["ann"] is not None  # Annoy rebuilt over the augmented vectors
    result = cli("build-index", photos, "--index-dir", indexed, "--model", "fake", "-q")
    assert result.exit_code == 0
    assert "dba" not in json.loads((indexed / "meta.json").read_text())
    assert not any(p.name.startswith("vectors.") and ".dba" in p.name for p in indexed.iterdir())


def test_dba_helper_averages_each_vector_with_its_neighbours():
    v = models.l2_normalise(np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32))
    out = np.empty_like(v)
    dba.database_side_augmentation(v, np.array([[1], [0], [-1]]), out)
    np.testing.assert_allclose(out[0], models.l2_normalise(v[0] + v[1]), atol=1e-6)
    np.testing.assert_allclose(out[2], v[2], atol=1e-6)


# --- 7. results people can look at ---------------------------------------------------------------


class Gallery(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def test_html_gallery_embeds_the_query_and_each_result(indexed, photos, tmp_path):
    out = tmp_path / "out.html"
    result = cli("query", photos / "p06.jpg", "--index-dir", indexed, "--k", "4", "--html", out,
                 "--format", "json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    parser = Gallery()
    parser.feed(out.read_text())
    assert len(parser.images) == 1 + 4
    assert parser.images[0]["title"] == str(photos / "p06.jpg")
    assert [img["title"] for img in parser.images[1:]] == [h["path"] for h in hits]
    for img in parser.images:
        assert img["src"].startswith("data:image/jpeg;base64,")  # self-contained: no file links
        thumb = Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1])))
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
    text = " ".join(parser.text)
    for h in hits:
        assert f"{h['score']:.4f}" in text


def test_contact_sheet_png(indexed, photos, tmp_path):
    out = tmp_path / "sheet.png"
    result = cli("query", photos / "p06.jpg", "--index-dir", indexed, "--k", "6", "--sheet", out)
    assert result.exit_code == 0, result.output
    sheet = Image.open(out)
    assert sheet.format == "PNG" and sheet.width > 5 * 150 and sheet.height > 2 * 150  # 7 tiles, 5 a row
    bad = cli("query", photos / "p06.jpg", "--index-dir", indexed, "--sheet", tmp_path / "no" / "s.png")
    assert bad.exit_code == 1 and "does not exist" in bad.output


def test_output_formats_for_scripts(indexed, photos):
    base = ["query", photos / "p09.jpg", "--index-dir", indexed, "--k", "3"]
    table = cli(*base)
    assert "rank" in table.stdout and "p09.jpg" in table.stdout
    rows = list(csv.DictReader(io.StringIO(cli(*base, "--format", "csv").stdout)))
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and set(rows[0]) == {"rank", "score", "path"}
    paths = cli(*base, "--format", "paths").stdout.splitlines()
    assert len(paths) == 3 and all(Path(p).is_file() for p in paths)


# --- 6. near-duplicate groups -----------------------------------------------------------------


def test_duplicates_finds_the_planted_copies(indexed, photos):
    result = cli("duplicates", "--index-dir", indexed, "--level", "similar", "--threshold", "0.98", "--format", "json")
    assert result.exit_code == 0, result.output
    members = json.loads(result.stdout)
    groups: dict[int, set[str]] = {}
    for m in members:
        groups.setdefault(m["group"], set()).add(Path(m["path"]).name)
    assert sorted(map(sorted, groups.values())) == [["p01.jpg", "p01_copy.jpg"], ["p02.jpg", "p02_small.png"]]
    reps = [m for m in members if m["keeper"]]
    assert len(reps) == 2 and all(m["score"] == pytest.approx(1.0) for m in reps)
    paths = cli("duplicates", "--index-dir", indexed, "--level", "similar", "--threshold", "0.98", "--format", "paths", "-q")
    assert len(paths.stdout.splitlines()) == 2  # one per group beyond its keeper


def test_duplicates_exact_and_annoy_agree_and_chain(tmp_path, fake_model, monkeypatch):
    folder = tmp_path / "lib"
    folder.mkdir()
    for i in range(12):
        make_photo(folder / f"a{i}.jpg", seed=100 + i)
    src = Image.open(folder / "a0.jpg")
    for j, q in enumerate((85, 70, 55)):  # three re-encodes: one group of four
        src.save(folder / f"a0_v{j}.jpg", quality=q)
    index_dir = tmp_path / "i"
    assert cli("build-index", folder, "--index-dir", index_dir, "--model", "fake", "-q").exit_code == 0
    with Store.open(index_dir) as store:
        exact = find_groups(store, 0.98, level="similar", mode="exact")
        approx = find_groups(store, 0.98, level="similar", mode="approximate")
        monkeypatch.setattr(grouping, "CLUSTERED_FROM", 0)  # auto: the clustered search, at any size
        clustered = find_groups(store, 0.98, level="similar")
    names = [sorted(m.path.name for m in g) for g in exact]
    assert names == [["a0.jpg", "a0_v0.jpg", "a0_v1.jpg", "a0_v2.jpg"]]
    assert [sorted(m.path.name for m in g) for g in approx] == names
    assert [sorted(m.path.name for m in g) for g in clustered] == names
    assert exact[0].keeper.keeper and exact[0].keeper.size == 4
    # With FOLDER, the index is brought up to date first: a new copy joins the group.
    src.save(folder / "a0_v3.jpg", quality=75)
    result = cli("duplicates", folder, "--index-dir", index_dir, "--threshold", "0.98", "--format", "csv", "-q")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["size"] for r in rows} == {"5"} and "a0_v3.jpg" in {Path(r["path"]).name for r in rows}


def test_commands_have_help():
    for command in ("query", "duplicates"):
        result = cli(command, "--help")
        assert result.exit_code == 0
    text = cli("query", "--help").stdout
    for option in ("--not", "--exclude-self", "--min-score", "--path", "--dedupe", "--diverse", "--qe",
                   "--html", "--sheet", "--format", "--exact", "--approximate"):
        assert option in text
    assert "--threshold" in cli("duplicates", "--help").stdout


# --- 8. stale results, refused refinements, the query encoder -----------------------------------


def test_results_whose_file_is_gone_are_dropped_and_refilled(tmp_path, fake_model):
    folder = tmp_path / "lib"
    folder.mkdir()
    for i in range(8):
        make_photo(folder / f"s{i}.jpg", seed=200 + i)
    index_dir = tmp_path / "i"
    assert cli("build-index", folder, "--index-dir", index_dir, "--model", "fake", "-q").exit_code == 0
    query = tmp_path / "q.jpg"
    shutil.copy(folder / "s0.jpg", query)
    before = query_paths(index_dir, query, "--k", "4", "--exact", "--qe", "0")  # as the library's search below
    # The two best results go away after indexing: one deleted, one moved.
    (folder / before[0]).unlink()
    (folder / before[1]).rename(tmp_path / "moved.jpg")
    result = cli("query", query, "--index-dir", index_dir, "--k", "4", "--exact", "--format", "paths", "--qe", "0")
    assert result.exit_code == 0, result.output
    shown = paths_of(result.stdout)
    assert shown == before[2:] + shown[2:] and len(shown) == 4  # refilled from the next candidates
    assert all((folder / name).exists() for name in shown)
    assert ("2 results dropped: files no longer on disk (run vsearch build-index to refresh)"
            in result.stderr.splitlines())
    # The library names the dropped files through its callback, once.
    with Store.open(index_dir) as store:
        searcher = Searcher(store)
        dropped: list[list[Path]] = []
        hits = searcher.search(searcher.image_vector(query).vector, 4, "exact", on_missing=dropped.append)
    assert [h.path.name for h in hits] == shown
    assert [sorted(p.name for p in d) for d in dropped] == [sorted(before[:2])]
    # Nothing gone, nothing said.
    clean = cli("query", folder / shown[0], "--index-dir", index_dir, "--k", "2")
    assert clean.exit_code == 0 and "dropped" not in clean.stderr


def test_when_every_file_is_gone_the_query_says_so_and_stops(tmp_path, fake_model):
    folder = tmp_path / "lib"
    folder.mkdir()
    for i in range(30):
        make_photo(folder / f"s{i:02d}.jpg", seed=300 + i)
    index_dir = tmp_path / "i"
    assert cli("build-index", folder, "--index-dir", index_dir, "--model", "fake", "-q").exit_code == 0
    query = shutil.copy(folder / "s00.jpg", tmp_path / "q.jpg")
    shutil.rmtree(folder)
    result = cli("query", query, "--index-dir", index_dir, "--k", "3", "--exact", "--format", "paths")
    assert result.exit_code == 0 and result.stdout == ""
    # REFILL_ROUNDS + 1 searches of 3: a moved-away folder costs a bounded number of stats
    assert "15 results dropped: files no longer on disk" in result.stderr and "no results" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--min-score", "nan"], "error: --min-score: 'nan' is not a finite number (see `vsearch query --help`)"),
    (["--dedupe", "nan"], "error: --dedupe: 'nan' is not a finite number (see `vsearch query --help`)"),
])
def test_nan_refinements_are_refused_in_one_line(indexed, photos, args, message):
    result = cli("query", photos / "p03.jpg", "--index-dir", indexed, *args)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [message]
    with pytest.raises(VsearchError, match="^min_score= takes a number"):
        Refine(min_score=float("inf"))
    with pytest.raises(VsearchError, match="^qe= takes 0 or more"):
        Refine(expand=-1)
    with pytest.raises(VsearchError, match="^diverse= takes a number, not nan"):
        Refine(diverse=float("nan"))  # the CLI's 0..1 range check stops it first there


def test_text_search_error_is_the_models_one(indexed, open_store):
    searcher = Searcher(open_store(indexed))
    expected = str(models.no_text_search(searcher.meta.model, "a dog on the beach"))
    with pytest.raises(VsearchError) as caught:
        searcher.query_vector("a dog on the beach")
    assert str(caught.value) == expected and "(build one with model='ARCH:TAG', e.g." in expected
    result = cli("query", "a dog on the beach", "--index-dir", indexed)
    assert result.stderr.strip() == f"error: {cli_words(expected)}"  # the CLI names the flag
    assert "(build one with --model ARCH:TAG, e.g. ViT-B-32:laion2b_s34b_b79k)" in result.stderr


def test_query_encoder_batches_new_images_with_the_index_model(indexed, photos, fake_model, tmp_path):
    from vsearch.retrieval.query import QueryEncoder

    with Store.open(indexed) as store:
        encoder = QueryEncoder(store)
        new = [make_photo(tmp_path / f"n{i}.jpg", seed=i, quality=70) for i in (3, 4)]
        calls = fake_model.calls
        batch = encoder.embed_images(new)
        assert fake_model.calls == calls + 1 and batch.shape == (2, store.meta.dim)
        one = encoder.image_vector(new[0])
        assert one.source == "embedded" and np.allclose(one.vector, batch[0], atol=1e-6)
        assert encoder.stored_row(photos / "p03.jpg") is not None
        assert encoder.embed_images([]).shape == (0, store.meta.dim)
