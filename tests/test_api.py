"""The Python API (vsearch.api, exposed as ``vsearch.*``): every example in docs/api.md runs as
written, the API does what the CLI does, and ``import vsearch`` stays cheap."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vsearch
from tests.conftest import FakeEmbedder, make_photo
from tests.helpers import cli, ok
from vsearch.models import loading as models

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "api.md"
CLIP_NAME = "ViT-B-32:laion2b_s34b_b79k"  # the name the docs use; a fake answers to it here

# --- a folder like the docs' ---------------------------------------------------------------


def make_photos(work: Path) -> Path:
    """photos/ with a cat and its half-size copy, a dog and its re-encoded copy, and eight
    other pictures (two in beach/); new.jpg (a re-encoded beach/b7.jpg, outside the folder) and
    labels.csv (groups: the cats, the dogs) beside it."""
    photos = work / "photos"
    (photos / "beach").mkdir(parents=True)
    make_photo(photos / "cat.jpg", seed=1)
    Image.open(photos / "cat.jpg").resize((160, 120)).save(photos / "cat-small.png")
    make_photo(photos / "dog.jpg", seed=5)
    Image.open(photos / "dog.jpg").save(photos / "dog-copy.jpg", quality=60)
    for i in (6, 7, 8, 10, 12, 17, 22, 27):  # seeds the fake model scores below 0.75 with each other
        make_photo(photos / ("beach" if i < 8 else "") / f"b{i}.jpg", seed=i)
    make_photo(work / "new.jpg", seed=7, quality=70)
    (work / "labels.csv").write_text(
        "path,group\nphotos/cat.jpg,cat\nphotos/cat-small.png,cat\nphotos/dog.jpg,dog\nphotos/dog-copy.jpg,dog\n"
    )
    return photos


class FakeClip(FakeEmbedder):
    """Image-and-text fake: a text that names an animal is embedded as that animal's photo."""

    def __init__(self, name: str, photos: Path) -> None:
        super().__init__(name)
        self.id = models.ModelId(**{**self.id.to_dict(), "family": "open_clip", "preprocess": self.id.preprocess})
        self.photos = photos
        self.texts: list[str] = []

    @property
    def supports_text(self) -> bool:
        return True

    def embed_text(self, texts):
        self.texts += texts
        pictures = []
        for t in texts:
            name = "cat" if "cat" in t else "dog"
            pictures.append(np.asarray(Image.open(self.photos / f"{name}.jpg").convert("RGB").resize((32, 32))))
        return self.embed_images(np.stack(pictures))


@pytest.fixture
def default_is_fake(monkeypatch):
    """The default model name (what the docs' build_index uses) answers with the fake model."""
    embedder = FakeEmbedder(models.DEFAULT_MODEL)
    monkeypatch.setitem(models._REGISTRY, models.DEFAULT_MODEL, lambda name, device, threads: embedder)
    return embedder


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A working directory holding the docs' photos/, new.jpg and labels.csv."""
    work = tmp_path / "work"
    make_photos(work)
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def built(work, default_is_fake) -> Path:
    """``work`` with idx/ built from photos/ (as the first example does)."""
    vsearch.build_index("photos", index_dir="idx").close()
    return work


# --- every example in docs/api.md, as written -------------------------------------------------


def doc_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def run_example(n: int) -> dict:
    namespace: dict = {}
    exec(compile(doc_examples()[n], f"{DOC}:example{n + 1}", "exec"), namespace)
    return namespace


def check_build_and_query(ns, work, out):
    hits = ns["hits"]
    assert len(hits) == 5 and all(isinstance(h, vsearch.Hit) for h in hits)
    assert hits[0].path == work / "photos" / "cat.jpg" and hits[0].rank == 1
    assert hits[1].path.name == "cat-small.png"  # its half-size copy comes next
    # Query expansion (the default) orders them; each score is still the cosine to the query asked.
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and all(h.score <= hits[0].score + 1e-6 for h in hits)
    assert ns["idx"].closed and ns["idx"].summary.embedded == 12
    assert f"1 1.000 {work / 'photos' / 'cat.jpg'}" in out


def check_open_and_examples(ns, work, out):
    assert [h.path.name for h in ns["alike"]][:2] in (["cat.jpg", "cat-small.png"], ["cat-small.png", "cat.jpg"])
    unlike = [h.path.name for h in ns["unlike"]]
    assert len(unlike) == 10 and not {"cat.jpg", "dog.jpg"} & set(unlike)
    assert ns["new"][0].path == work / "photos" / "beach" / "b7.jpg"  # new.jpg re-encodes it
    assert f"{models.DEFAULT_MODEL} 12 {work / 'photos'}" in out


def check_refine(ns, work, out):
    hits = ns["hits"]
    assert hits and all(h.score >= 0.2 and h.path.suffix == ".jpg" for h in hits)
    assert hits[0].path.name == "cat.jpg"


def check_text(ns, work, out):
    assert ns["hits"][0].path.name in ("cat.jpg", "cat-small.png")
    assert len(ns["both"]) == 10 and ns["clip"].closed
    assert ns["fake_clip"].texts == ["a cat asleep on a sofa", "photos/cat.jpg", "on a sofa"]


def check_duplicates(ns, work, out):
    groups = [{Path(p).name for p in line.replace(" <- ", " ").split()} for line in out.splitlines()]
    assert {"cat.jpg", "cat-small.png"} in groups and {"dog.jpg", "dog-copy.jpg"} in groups


def check_evaluate(ns, work, out):
    report, edited = ns["report"], ns["edited"]
    assert isinstance(report, vsearch.EvalReport)
    assert report.metrics["num_queries"] == 4 and report.metrics["recall@1"] == 1.0  # copies find each other
    assert edited.metrics["num_queries"] > 0 and 0 <= edited.metrics["recall@1"] <= 1
    assert "recall@10" in edited.metrics and "recall@5" not in edited.metrics  # augment's default ks: 1, 10


def check_errors(ns, work, out):
    assert out.startswith(f"error: no index at {work / 'no-index-here'}")


EXAMPLE_CHECKS = [check_build_and_query, check_open_and_examples, check_refine, check_text, check_duplicates,
                  check_evaluate, check_errors]
NEEDS_INDEX = {check_open_and_examples, check_refine, check_duplicates, check_evaluate}


def test_every_doc_example_has_a_test():
    assert len(doc_examples()) == len(EXAMPLE_CHECKS)


@pytest.mark.parametrize("n", range(len(EXAMPLE_CHECKS)), ids=[c.__name__[6:] for c in EXAMPLE_CHECKS])
def test_doc_example_runs_as_written(n, work, default_is_fake, capsys):
    check = EXAMPLE_CHECKS[n]
    if check in NEEDS_INDEX:
        vsearch.build_index("photos", index_dir="idx").close()
    clip = FakeClip(CLIP_NAME, work / "photos")
    models.register(CLIP_NAME, lambda name, device, threads: clip)
    try:
        namespace = run_example(n)
    finally:
        models.unregister(CLIP_NAME)
    namespace["fake_clip"] = clip
    check(namespace, work, capsys.readouterr().out)


@pytest.mark.slow
def test_first_doc_example_with_the_real_default_model(work, capsys):
    check_build_and_query(run_example(0), work, capsys.readouterr().out)


# --- import vsearch stays cheap; every public name is documented --------------------------------


def _modules_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, env=env, check=True, timeout=60).stdout
    return set(out.split())


def test_import_vsearch_imports_no_numpy_torch_or_typer():
    loaded = _modules_after("import vsearch")
    assert not {"numpy", "torch", "typer", "PIL", "vsearch.api"} & loaded
    assert "vsearch.api" in _modules_after("import vsearch; vsearch.open_index")


def test_querying_an_indexed_photo_loads_no_model(built):
    loaded = _modules_after(
        f"import vsearch; hits = vsearch.open_index({str(built / 'idx')!r}).query({str(built / 'photos/dog.jpg')!r})\n"
        "assert hits[0].path.name == 'dog.jpg', hits"
    )
    assert "vsearch.api" in loaded and not {"torch", "onnxruntime", "PIL"} & loaded


def _own_doc(obj) -> str:
    doc = obj.__doc__ or ""
    # A dataclass without a docstring gets its signature as one.
    return "" if doc.startswith(f"{getattr(obj, '__name__', '')}(") else doc.strip()


def test_every_public_name_has_a_docstring():
    assert sorted(set(vsearch.__all__)) == sorted(vsearch.__all__)
    for name in vsearch.__all__:
        obj = getattr(vsearch, name)
        assert _own_doc(obj), name
        if inspect.isclass(obj) and not issubclass(obj, Exception):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (callable(member) or isinstance(member, property)):
                    assert _own_doc(member), f"{name}.{attr}"
    assert set(dir(vsearch)) >= set(vsearch.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vsearch.nope  # noqa: B018


# --- building ------------------------------------------------------------------------------------


def test_build_index_returns_an_open_index_and_reruns_touch_no_model(work, fake_model):
    progress = []
    with vsearch.build_index(work / "photos", work / "idx", model="fake", trees=7,
                             progress=lambda p: progress.append((p.done, p.total))) as idx:
        assert isinstance(idx, vsearch.Index) and not idx.closed
        assert (len(idx), idx.count, idx.model, idx.dim, idx.skipped) == (12, 12, "fake", 48, 0)
        assert idx.root == (work / "photos").resolve() and idx.index_dir == work / "idx"
        assert idx.annoy_trees == 7 and not idx.text_search and idx.meta.generation == idx.generation
        assert idx.summary.embedded == 12 and idx.summary.total == 12
        assert "fake, 12 images" in repr(idx)
    assert idx.closed and "closed" in repr(idx)
    assert progress and progress[-1] == (12, 12)
    calls = fake_model.calls
    with vsearch.build_index("photos", "idx", model="fake") as again:
        assert again.summary.embedded == 0 and again.summary.unchanged == 12 and not again.summary.loaded_model
        assert again.annoy_trees == 50
    assert fake_model.calls == calls


def test_build_index_with_trees_none_only_embeds_like_the_embed_command(work, fake_model):
    with vsearch.build_index("photos", "idx", model="fake", trees=None) as idx:
        assert idx.annoy_trees is None and len(idx) == 12
        with pytest.raises(vsearch.VsearchError, match="no Annoy index"):
            idx.query("photos/cat.jpg", mode="approximate")
    with pytest.raises(vsearch.VsearchError, match="dba needs the Annoy step"):
        vsearch.build_index("photos", "idx", trees=None, dba=3)


def test_build_index_with_dba_searches_the_augmented_vectors(work, fake_model):
    with vsearch.build_index("photos", "idx", model="fake", dba=2) as idx:
        assert idx.meta.dba is not None and idx.meta.dba.neighbours == 2
        hits = idx.query("photos/cat.jpg", k=3)  # ranked by the DBA copy, scored by the photos' own vectors
        assert hits[0].path.name == "cat.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_build_index_defaults_to_the_default_index_dir(work, fake_model, isolated_index_dir):
    vsearch.build_index("photos", model="fake").close()
    with vsearch.open_index() as idx:
        assert idx.index_dir == isolated_index_dir and len(idx) == 12


def test_build_index_errors_leave_nothing_behind(work, fake_model):
    with pytest.raises(vsearch.VsearchError, match="folder not found"):
        vsearch.build_index("no-such-folder", "idx", model="fake")
    with pytest.raises(vsearch.VsearchError, match="trees must be 1 or more"):
        vsearch.build_index("photos", "idx", model="fake", trees=0)
    assert not (work / "idx").exists()
    vsearch.build_index("photos", "idx", model="fake").close()
    with pytest.raises(vsearch.ModelMismatchError):
        vsearch.build_index("photos", "idx", model=models.DEFAULT_MODEL.replace("0", "1"))


def test_build_index_exclude_leaves_matching_files_out(work, fake_model):
    with vsearch.build_index("photos", "idx", model="fake", exclude=["beach/*", "*.png"]) as idx:
        assert len(idx) == 9


def test_a_failed_first_build_leaves_no_index_folder(work, fake_model):
    with pytest.raises(vsearch.VsearchError, match="unknown model"):
        vsearch.build_index("photos", "new/idx", model="no-such-model")
    assert not (work / "new").exists()


def test_default_index_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VSEARCH_INDEX_DIR", "~/somewhere")
    assert vsearch.default_index_dir() == Path.home() / "somewhere"
    monkeypatch.delenv("VSEARCH_INDEX_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert vsearch.default_index_dir() == tmp_path / "vsearch" / "index"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert vsearch.default_index_dir() == Path.home() / ".local" / "share" / "vsearch" / "index"


# --- the API does what the CLI does -------------------------------------------------------------


def cli_hits(*args) -> list[tuple[str, float]]:
    return [(h["path"], h["score"]) for h in json.loads(ok(cli("query", *args, "--format", "json")).stdout)]


@pytest.mark.parametrize("options, cli_options", [
    ({}, []),
    ({"negatives": ["photos/dog.jpg"], "exclude_self": True}, ["--not", "photos/dog.jpg", "--exclude-self"]),
    ({"not_weight": 0.8, "negatives": "photos/b8.jpg"}, ["--not", "photos/b8.jpg", "--not-weight", "0.8"]),
    ({"min_score": 0.3, "path_glob": "beach/*"}, ["--min-score", "0.3", "--path", "beach/*"]),
    ({"dedupe": 0.95, "diverse": 0.5, "qe": 2}, ["--dedupe", "0.95", "--diverse", "0.5", "--qe", "2"]),
    ({"mode": "approximate", "k": 4}, ["--approximate", "--k", "4"]),
])
def test_query_gives_what_the_cli_gives(built, options, cli_options):
    queries = ["photos/cat.jpg", "new.jpg"]
    with vsearch.open_index("idx") as idx:
        hits = idx.query(queries, **options)
    expected = cli_hits(*queries, "--index-dir", "idx", *cli_options)
    assert [(str(h.path), round(h.score, 6)) for h in hits] == expected
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_query_refuses_bad_options_with_a_vsearch_error(built):
    with vsearch.open_index("idx") as idx:
        for bad, match in [({"k": 0}, "k must be"), ({"k": 2.5}, "k must be"), ({"mode": "fast"}, "mode must be"),
                           ({"min_score": float("nan")}, "min_score must be a number"),
                           ({"dedupe": float("inf")}, "dedupe must be a number"),
                           ({"diverse": 1.5}, "diverse must be between"), ({"qe": -1}, "qe must be"),
                           ({"not_weight": -1.0}, "not_weight must be")]:
            with pytest.raises(vsearch.VsearchError, match=match):
                idx.query("photos/cat.jpg", **bad)
        with pytest.raises(vsearch.VsearchError, match="nothing to search for"):
            idx.query()
        with pytest.raises(vsearch.VsearchError, match="query image not found"):
            idx.query("photos/missing.jpg")
        with pytest.raises(vsearch.VsearchError, match="text search needs a CLIP index"):
            idx.query("a cat on a sofa")
        with pytest.raises(vsearch.VsearchError, match="text search needs a CLIP index"):
            idx.query(text="photos/cat.jpg")
        with pytest.raises(vsearch.VsearchError, match="query image not found"):
            idx.query("photos/cat.jpg", negatives="photos/missing.jpg")
    with pytest.raises(vsearch.VsearchError, match="is closed"):
        idx.query("photos/cat.jpg")
    idx.close()  # twice is harmless
    with pytest.raises(vsearch.IndexMissingError, match="no index at"):
        vsearch.open_index("photos")


def test_text_query_rules_on_a_clip_index(work):
    clip = FakeClip("clip", work / "photos")
    models.register("clip", lambda name, device, threads: clip)
    try:
        with vsearch.build_index("photos", "idx", model="clip") as idx:
            assert idx.text_search
            assert idx.query("a dog in the park", k=1)[0].path.name.startswith("dog") and clip.texts == ["a dog in the park"]
            assert idx.query("photos/cat.jpg", k=1)[0].path.name == "cat.jpg" and len(clip.texts) == 1  # a file
            assert idx.query(text="photos/dog.jpg", k=1)[0].path.name.startswith("dog")  # text= never a file
            assert clip.texts[-1] == "photos/dog.jpg"
            with pytest.raises(vsearch.VsearchError, match="query image not found"):
                idx.query(Path("a cat"))  # a Path is always an image
    finally:
        models.unregister("clip")


def test_duplicates_gives_what_the_cli_gives(built):
    with vsearch.open_index("idx") as idx:
        groups = idx.duplicates()
        weakest = min(g.copies[0].score for g in groups)
        strict = idx.duplicates(threshold=weakest + 1e-6, mode="exact")
        with pytest.raises(vsearch.VsearchError, match="mode must be"):
            idx.duplicates(mode="fast")
    members = json.loads(ok(cli("duplicates", "--index-dir", "idx", "--format", "json", "-q")).stdout)
    assert [(m.group, m.size, str(m.path), round(m.score, 6)) for g in groups for m in g] == [
        (m["group"], m["size"], m["path"], m["score"]) for m in members]
    assert all(isinstance(g, vsearch.DuplicateGroup) and g.keeper.keeper for g in groups)
    assert all(len(g) == len(g.copies) + 1 and g.members[0].group == g.number for g in groups)
    names = [{m.path.name for m in g} for g in groups]
    assert {"cat.jpg", "cat-small.png"} in names and {"dog.jpg", "dog-copy.jpg"} in names
    assert len(names) == 2 and [{m.path.name for m in g} for g in strict] == [
        n for g, n in zip(groups, names) if g.copies[0].score > weakest]


def test_evaluate_gives_what_the_cli_gives(built):
    pairs = built / "pairs.csv"
    pairs.write_text("query,positive\nnew.jpg,photos/beach/b7.jpg\nphotos/cat.jpg,photos/cat-small.png\n")
    with vsearch.open_index("idx") as idx:
        on_groups = idx.evaluate(groups="labels.csv", ks=[1, 5])
        on_pairs = idx.evaluate(pairs=pairs, mode="exact", qe=1)
        edited = idx.evaluate(augment=3, seed=4)
        for bad in ({}, {"pairs": pairs, "groups": "labels.csv"}):
            with pytest.raises(vsearch.VsearchError, match="exactly one of"):
                idx.evaluate(**bad)
        with pytest.raises(vsearch.VsearchError, match="positive integers"):
            idx.evaluate(groups="labels.csv", ks=[0])
    for report, args in [(on_groups, ["--groups", "labels.csv", "--k", "1,5"]),
                         (on_pairs, ["--pairs", pairs, "--exact", "--qe", "1"]),
                         (edited, ["--augment", "3", "--seed", "4"])]:
        printed = json.loads(ok(cli("evaluate", "--index-dir", "idx", *args, "--format", "json", "-q")).stdout)
        shared = printed.keys() & report.metrics.keys()
        assert {"recall@1", "num_queries"} <= shared
        assert {k: round(report.metrics[k], 6) for k in shared} == {k: printed[k] for k in shared}
    assert on_pairs.metrics["num_queries"] == 2 and on_pairs.metrics["recall@1"] == 1.0


def test_freshness_sees_a_new_photo(built):
    with vsearch.open_index("idx") as idx:
        assert not idx.freshness().stale and idx.freshness().warning() is None
        make_photo(built / "photos" / "beach" / "late.jpg", seed=40)
        assert idx.freshness().stale and "changed since the index was built" in idx.freshness().warning()


def test_an_open_index_follows_a_later_build(built, default_is_fake):
    with vsearch.open_index("idx") as old:
        assert old.query("photos/cat.jpg", k=1)[0].path.name == "cat.jpg"
        make_photo(built / "photos" / "late.jpg", seed=40)
        with vsearch.build_index("photos", "idx") as new:
            assert len(new) == 13
        assert old.query("photos/late.jpg", k=1)[0].path.name == "late.jpg"
        assert len(old) == 13 and old.generation == new.generation
        (built / "photos" / "late.jpg").unlink()
        vsearch.build_index("photos", "idx").close()
        assert len(old.duplicates()) == 2 and len(old) == 12

