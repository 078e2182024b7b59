"""The library speaks its API; the CLI speaks flags (vsearch/cli/wording.py).

No message of the library names a ``--flag`` or a ``vsearch`` command (an AST scan); the CLI
shows the same errors and warnings as it always has (round trips: one error through the API,
then through the command line, byte for byte); and the one table turns each library phrase into
the CLI's while leaving the CLI's own messages alone.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import vsearch
from tests.conftest import REPO, make_photo
from tests.helpers import cli, fails, ok
from vsearch.cli.main import app
from vsearch.cli.wording import WORDING, cli_words
from vsearch.errors import VsearchError

#: A command-line flag: ``--index-dir``, not ``a--b`` or ``-fp16``.
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
#: The CLI's commands, as ``vsearch --help`` lists them.
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
#: A command invocation, ``vsearch build-index`` or `` `vsearch train` `` ("a vsearch undo log" is not one).
COMMAND = re.compile(r"\bvsearch (?:" + "|".join(map(re.escape, COMMANDS)) + r")\b(?! log)")
#: Another program's command, which a message may well name.
NOT_OURS = ("`ray start --head`",)

LIBRARY = sorted(p for p in (REPO / "vsearch").rglob("*.py")
                 if p.relative_to(REPO / "vsearch").parts[0] not in ("cli", "serve"))
CLI_MODULES = sorted(p for p in (REPO / "vsearch" / "cli").glob("*.py") if p.name != "wording.py")


def _strings(source: str) -> list[tuple[int, str]]:
    """Every string constant of a module but its documentation (module, class and function
    docstrings, and bare string statements), with its line; f-strings give their literal parts."""
    tree = ast.parse(source)
    documentation = {id(node.value) for node in ast.walk(tree)
                     if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                     and isinstance(node.value.value, str)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in documentation]


def cli_names(text: str) -> list[str]:
    """The flags and command invocations ``text`` names."""
    for other in NOT_OURS:
        text = text.replace(other, "")
    return FLAG.findall(text) + COMMAND.findall(text)


def test_the_scan_finds_flags_and_commands():
    assert {"build-index", "embed", "train", "judge", "serve"} <= set(COMMANDS)
    assert cli_names("run `vsearch build-index FOLDER --rebuild`") == ["--rebuild", "vsearch build-index"]
    assert cli_names("judge some (vsearch judge / vsearch serve)") == ["vsearch judge", "vsearch serve"]
    assert cli_names(f"f-string part {1}; use --adapter off") == ["--adapter"]
    for clean in ("a vsearch undo log", "this vsearch (0.1.0)", "pcaDw, add -fp16", "use adapter=False",
                  "`build_index(FOLDER, rebuild=True)` repairs it", "start one with `ray start --head`"):
        assert cli_names(clean) == [], clean
    found = _strings('"""Docs may say --flag."""\nx = f"a {1} --vectors b"\ndef f():\n    """vsearch train."""\n')
    assert [(line, cli_names(text)) for line, text in found] == [(2, []), (2, ["--vectors"])]


def test_no_library_message_names_a_flag_or_a_command():
    named = [f"{path.relative_to(REPO)}:{line}: {names} in {text!r}"
             for path in LIBRARY for line, text in _strings(path.read_text()) if (names := cli_names(text))]
    assert not named, "library messages speak the API (name=, build_index(...)):\n" + "\n".join(named)


def test_the_cli_own_messages_pass_through_unchanged():
    changed = [f"{path.relative_to(REPO)}:{line}: {text!r} -> {cli_words(text)!r}"
               for path in CLI_MODULES for line, text in _strings(path.read_text()) if cli_words(text) != text]
    assert not changed, "\n".join(changed)


# --- the table, row by row -----------------------------------------------------------------------

#: (library message, the CLI's line): one or more for every row of WORDING, values as the CLI gives them.
PAIRS = [
    ("index_dir=/x/afile is a file, not a folder", "--index-dir /x/afile is a file, not a folder"),
    ("no index at /x; build one with `build_index(FOLDER)` (or point index_dir= / VSEARCH_INDEX_DIR at an existing one)",
     "no index at /x; build one with `vsearch build-index FOLDER` (or point --index-dir / VSEARCH_INDEX_DIR at an "
     "existing one)"),
    ("index at /i was never completed; call `build_index(FOLDER)` to finish it",
     "index at /i was never completed; run `vsearch build-index FOLDER` to finish it"),
    ("index at /i covers /a, not /b; use another index_dir= for this folder",
     "index at /i covers /a, not /b; use another --index-dir for this folder"),
    ("it cannot mix in vectors from fake2. Leave out model= to use fake, or use another index_dir=",
     "it cannot mix in vectors from fake2. Leave out --model to use fake, or use another --index-dir"),
    ("its vectors would not be comparable. Rebuild the index in a new index_dir=",
     "its vectors would not be comparable. Rebuild the index in a new --index-dir"),
    ("cannot write to the index folder /i (permission denied); choose another index_dir= or make it writable",
     "cannot write to the index folder /i (permission denied); choose another --index-dir or make it writable"),
    ("/i/meta.json is not a vsearch index; `build_index(FOLDER, rebuild=True)` repairs it",
     "/i/meta.json is not a vsearch index; `vsearch build-index FOLDER --rebuild` repairs it"),
    ("index at /i is damaged (generation 3 has no vectors file); `build_index(/my photos, rebuild=True)` repairs it",
     "index at /i is damaged (generation 3 has no vectors file); `vsearch build-index /my photos --rebuild` repairs it"),
    ("manifest /m has schema version 9, which this vsearch (0.1.0) does not read; upgrade vsearch, or "
     "`build_index(FOLDER, rebuild=True)`",
     "manifest /m has schema version 9, which this vsearch (0.1.0) does not read; upgrade vsearch, or "
     "`vsearch build-index FOLDER --rebuild`"),
    ("index at /i was interrupted while committing (manifest generation 2, meta.json generation 1); re-run "
     "`build_index(/p)` to finish it",
     "index at /i was interrupted while committing (manifest generation 2, meta.json generation 1); re-run "
     "`vsearch build-index /p` to finish it"),
    ("cannot read /i/vectors.000001.npy: no data; `build_index(/p)` repairs the index",
     "cannot read /i/vectors.000001.npy: no data; `vsearch build-index /p` repairs the index"),
    ("vectors=pca9999: 9999 dimensions is not fewer than the model's 48; choose a smaller D, or fp32/fp16",
     "--vectors pca9999: 9999 dimensions is not fewer than the model's 48; choose a smaller D, or fp32/fp16"),
    ("vectors= takes fp32, fp16, pcaD or pcaDw (got 'pca0': D must be 1 or more)",
     "--vectors takes fp32, fp16, pcaD or pcaDw (got 'pca0': D must be 1 or more)"),
    ("the trained head /i/head.npz cannot be read (ValueError); call `train()` again (or query with adapter=False)",
     "the trained head /i/head.npz cannot be read (ValueError); run `vsearch train` again (or query with --adapter off)"),
    ("index at /i has no trained head; call `train()`", "index at /i has no trained head; run `vsearch train`"),
    ("/i/vectors.000001.npy is damaged: stored vector 2 (a.jpg) holds values that are not finite (NaN or infinity); "
     "`build_index(/p, rebuild=True)` repairs it, and `check()` lists every damaged file",
     "/i/vectors.000001.npy is damaged: stored vector 2 (a.jpg) holds values that are not finite (NaN or infinity); "
     "`vsearch build-index /p --rebuild` repairs it, and `vsearch check` lists every damaged file"),
    ("/i/v.head-abc.npy is damaged: stored vector 0 (a.jpg) is not a unit vector (zeroed or changed); call `train()` "
     "again (or query with adapter=False), and `check()` lists every damaged file",
     "/i/v.head-abc.npy is damaged: stored vector 0 (a.jpg) is not a unit vector (zeroed or changed); run `vsearch "
     "train` again (or query with --adapter off), and `vsearch check` lists every damaged file"),
    ("no checksums recorded (the index was last committed by an older vsearch): `build_index(/p, rebuild=True)` adds "
     "them", "no checksums recorded (the index was last committed by an older vsearch): `vsearch build-index /p "
     "--rebuild` adds them"),
    ("cannot read /i/v.dba2.npy: no data; rebuild with `build_index`",
     "cannot read /i/v.dba2.npy: no data; rebuild with `vsearch build-index`"),
    ("cannot read the Annoy index /i/a.ann (damaged); `build_index(FOLDER)` rebuilds it, and mode='exact' searches "
     "without it",
     "cannot read the Annoy index /i/a.ann (damaged); `vsearch build-index FOLDER` rebuilds it, and --exact searches "
     "without it"),
    ("the Annoy index needs about 9 MB, 1 MB are free; free some space, or search without it (mode='exact')",
     "the Annoy index needs about 9 MB, 1 MB are free; free some space, or search without it (--exact)"),
    ("the IVF-PQ index needs faiss, which is not installed: pip install 'vsearch[scale]' (or build with "
     "approximate='annoy')",
     "the IVF-PQ index needs faiss, which is not installed: pip install 'vsearch[scale]' (or build with --index annoy)"),
    ("approximate= takes auto, annoy or ivfpq, not 'bogus'", "--index takes auto, annoy or ivfpq, not 'bogus'"),
    ("dba= takes a number of neighbours, 0 (off) or more", "--dba takes a number of neighbours, 0 (off) or more"),
    ("headline='bogus' is not a metric of this run; choose from mrr",
     "--headline 'bogus' is not a metric of this run; choose from mrr"),
    ("nothing to evaluate: give at least one Setup", "nothing to evaluate: give at least one --index-dir"),
    ("ks= takes positive integers, e.g. ks=(1, 5, 10)", "--k takes positive integers, e.g. --k 1,5,10"),
    ("1 labelled image(s) are not in the index at /i: /q.jpg; index their folder first (`build_index(FOLDER)`)",
     "1 labelled image(s) are not in the index at /i: /q.jpg; index their folder first (vsearch build-index FOLDER)"),
    ("no judgments recorded in /i: record some with `Index.judge(QUERY, RESULTS, relevant=True)` or on the page",
     "no judgments recorded in /i: record some with `vsearch judge QUERY RESULT... --relevant` or on the "
     "`vsearch serve` page"),
    ("none of the 1 judged queries in /i can be scored (1 query left out: no relevant result judged); judge some "
     "results relevant",
     "none of the 1 judged queries in /i can be scored (1 query left out: no relevant result judged); judge some "
     "results --relevant"),
    ("none of the 2 images picked is still on disk (the first: /p/a.jpg); call `build_index` to refresh the index",
     "none of the 2 images picked is still on disk (the first: /p/a.jpg); run vsearch build-index to refresh the index"),
    ("out=/p/out is inside /p: the copies would be indexed with the originals; choose a folder outside it",
     "--out /p/out is inside /p: the copies would be indexed with the originals; choose a folder outside it"),
    ("/q.jpg is not in the index at /i (judged results must be indexed images; call `build_index` first); nothing "
     "was recorded",
     "/q.jpg is not in the index at /i (judged results must be indexed images; run vsearch build-index first); "
     "nothing was recorded"),
    ("approximate duplicates need the raw vectors' Annoy index: use adapter=False",
     "approximate duplicates need the raw vectors' Annoy index: use --adapter off"),
    ("verify= needs exactly one query image (not text, not several images)",
     "--verify needs exactly one query image (not text, not several images)"),
    ("verify= takes 0 or more results (got -1)", "--verify takes 0 or more results (got -1)"),
    ("min_score= takes a number, not nan", "--min-score takes a number, not nan"),
    ("diverse= takes a number from 0 to 1, not 2.0", "--diverse takes a number from 0 to 1, not 2.0"),
    ("qe= takes 0 or more results, not -1", "--qe takes 0 or more results, not -1"),
    ("max_per_folder= takes a whole number, 1 or more (got 0)", "--max-per-folder takes a whole number, 1 or more (got 0)"),
    ("max_per_day= takes a whole number, 1 or more (got 0)", "--max-per-day takes a whole number, 1 or more (got 0)"),
    ("mode='approximate': the approximate index is over the raw vectors, not the trained head's; search exactly, "
     "or use adapter=False",
     "--approximate: the approximate index is over the raw vectors, not the trained head's; search exactly, "
     "or use --adapter off"),
    ("mode='approximate': index at /i has no Annoy index (nor IVF-PQ); call `build_index`",
     "--approximate: index at /i has no Annoy index (nor IVF-PQ); run `vsearch build-index`"),
    ("mode='approximate': index at /i has no Annoy index over its raw vectors; call `build_index` (without dba=)",
     "--approximate: index at /i has no Annoy index over its raw vectors; run `vsearch build-index` (without --dba)"),
    ("k= must be at least 1", "--k must be at least 1"),
    ("not_weight= must be zero or more", "--not-weight must be zero or more"),
    ("the negative examples cancel the positive ones out; lower not_weight=",
     "the negative examples cancel the positive ones out; lower --not-weight"),
    ("path_glob= needs a pattern, e.g. '*.png' or 'holiday/*'", "--path needs a pattern, e.g. '*.png' or 'holiday/*'"),
    ("dedupe= takes a cosine threshold between -1 and 1, e.g. 0.95",
     "--dedupe takes a cosine threshold between -1 and 1, e.g. 0.95"),
    ("warning: /p changed since the index was built (1 folder differs); call `build_index(/p, trees=None)` to update",
     "warning: /p changed since the index was built (1 folder differs); run `vsearch embed /p` to update"),
    ("image too large (9x9 = 0.0 MP > limit 0.0 MP; raise it with max_pixels=)",
     "image too large (9x9 = 0.0 MP > limit 0.0 MP; raise it with --max-pixels)"),
    ("augment= takes a positive number of images", "--augment takes a positive number of images"),
    ("augment=1000: only 7 images to pick from; ask for 7 or fewer", "--augment 1000: only 7 images to pick from; ask for 7 or fewer"),
    ("the model fake loaded here differs from the one that built the index at /i (weights); rebuild the index "
     "(`build_index(FOLDER, index_dir=NEW_DIR)`)",
     "the model fake loaded here differs from the one that built the index at /i (weights); rebuild the index "
     "(vsearch build-index FOLDER --index-dir NEW_DIR)"),
    ("text search needs a CLIP index; this index uses fake, an image-only model (build one with model='ARCH:TAG', "
     "e.g. ViT-B-32:laion2b_s34b_b79k)",
     "text search needs a CLIP index; this index uses fake, an image-only model (build one with --model ARCH:TAG, "
     "e.g. ViT-B-32:laion2b_s34b_b79k)"),
    ("device='cuda': no CUDA device is available here; use device='cpu'",
     "--device cuda: no CUDA device is available here; use --device cpu"),
    ("device='mps': no MPS device is available here; use device='cpu'",
     "--device mps: no MPS device is available here; use --device cpu"),
    ("unknown device='tpu'; choose auto, cpu, cuda or mps", "unknown --device 'tpu'; choose auto, cpu, cuda or mps"),
    ("without a network, use the default model (model='efficientnet-lite0') or a local checkpoint "
     "(model='ViT-B-32:/path/to/weights.pt')",
     "without a network, use the default model (--model efficientnet-lite0) or a local checkpoint "
     "(--model ViT-B-32:/path/to/weights.pt)"),
    ("cannot load /c/m.onnx (bad); delete it and call `build_index`",
     "cannot load /c/m.onnx (bad); delete it and run `vsearch build-index`"),
    ("level= takes one of exact, near, similar (got 'x')", "--level takes one of exact, near, similar (got 'x')"),
    ("keep= takes one of default, largest (got 'x')", "--keep takes one of default, largest (got 'x')"),
    ("threshold= takes a cosine between -1 and 1, e.g. 0.92", "--threshold takes a cosine between -1 and 1, e.g. 0.92"),
    ("min_overlap= takes a share between 0 and 1 (got 1.5)", "--min-overlap takes a share between 0 and 1 (got 1.5)"),
    ("only 0.31 of each image in common (needs 0.50): a heavier crop than min_overlap= allows",
     "only 0.31 of each image in common (needs 0.50): a heavier crop than --min-overlap allows"),
    ("/a.jpg and /b.jpg are not marked as not duplicates (`Index.marks()` lists the marks); nothing was taken back",
     "/a.jpg and /b.jpg are not marked as not duplicates (`vsearch duplicates --marks` lists them); nothing was "
     "taken back"),
    ("give one of move_to=DIR or trash=True", "give one of --move-to DIR or --trash"),
    ("move_to=/d does not exist; create it first (mkdir -p /d)", "--move-to /d does not exist; create it first (mkdir -p /d)"),
    ("move_to= is empty; give the folder to move the copies to", "--move-to is empty; give the folder to move the copies to"),
    ("move_to=/proc is on a proc file system, which holds no files; choose a folder on a disk",
     "--move-to /proc is on a proc file system, which holds no files; choose a folder on a disk"),
    ("move_to=/d/f/x: /d/f is a file; give a folder", "--move-to /d/f/x: /d/f is a file; give a folder"),
    ("keep= takes one of default, pixels (got 'x')", "--keep takes one of default, pixels (got 'x')"),
    ("/p/d/a.jpg is already under move_to=/p/d; choose another folder, or leave that folder out of the index "
     "(build_index with exclude=)",
     "/p/d/a.jpg is already under --move-to /p/d; choose another folder, or leave that folder out of the index "
     "(build-index --exclude)"),
    ("/d/a.jpg already exists; vsearch never overwrites a file (choose another move_to=)",
     "/d/a.jpg already exists; vsearch never overwrites a file (choose another --move-to)"),
    ("/p/a.jpg is not in the index (any more); call `build_index(/p)` first",
     "/p/a.jpg is not in the index (any more); run `vsearch build-index /p` first"),
    ("/p/a.jpg changed or is gone since it was indexed; nothing was done. Call `build_index(/p)` and look at the "
     "groups again",
     "/p/a.jpg changed or is gone since it was indexed; nothing was done. Run `vsearch build-index /p` and look at the "
     "groups again"),
    ("/u.jsonl is an undo log of another index (/i, folder /p); give that index with index_dir=",
     "/u.jsonl is an undo log of another index (/i, folder /p); give that index with --index-dir"),
    ("trash=True needs the send2trash package: pip install send2trash",
     "--trash needs the send2trash package: pip install send2trash"),
    ("engine='ray' needs Ray Data, which is not installed (x); install it with: pip install 'vsearch[ray]'",
     "--engine ray needs Ray Data, which is not installed (x); install it with: pip install 'vsearch[ray]'"),
    ("no Ray cluster answers at auto (refused); start one with `ray start --head` on the head node, or leave out "
     "address= for a local one",
     "no Ray cluster answers at auto (refused); start one with `ray start --head` on the head node, or leave out "
     "--address for a local one"),
    ("exclude= needs a pattern, e.g. '*.png', 'thumbs' or '2019/raw'",
     "--exclude needs a pattern, e.g. '*.png', 'thumbs' or '2019/raw'"),
    ("address= is for the Ray engine: add engine='ray'", "--address is for the Ray engine: add --engine ray"),
    ("no images found in /p (looked for .jpg, outside the exclude= patterns)",
     "no images found in /p (looked for .jpg, outside the --exclude patterns)"),
    ("epochs= takes 1 or more (got 0)", "--epochs takes 1 or more (got 0)"),
    ("dim= takes 1 to 48 (the index's vectors have 48); got 100000",
     "--dim takes 1 to 48 (the index's vectors have 48); got 100000"),
    ("views= takes 0 to 8 (got 9)", "--views takes 0 to 8 (got 9)"),
    ("views=0 leaves nothing to train on; give use_judgments=True or 1 view or more",
     "--views 0 leaves nothing to train on; give --use-judgments or 1 view or more"),
    ("seed= takes 0 or more (got -1)", "--seed takes 0 or more (got -1)"),
    ("use_judgments=True: no relevant judged pair of indexed images in /i; judge some results first "
     "(`Index.judge` or the page)",
     "--use-judgments: no relevant judged pair of indexed images in /i; judge some results first "
     "(vsearch judge / vsearch serve)"),
    ("warning: the trained head takes 48-d vectors, the search space now has 4; the index is committed without it "
     "(call `train()` again)",
     "warning: the trained head takes 48-d vectors, the search space now has 4; the index is committed without it "
     "(run `vsearch train` again)"),
    # Hardening, round two (issue 20): bounds, devices, a stale meta.json, a folder that cannot be made.
    ("k= takes at most 1000000000 results (got 10000000000)", "--k takes at most 1000000000 results (got 10000000000)"),
    ("ks= takes at most 1000000000 (got 10000000000)", "--k takes at most 1000000000 (got 10000000000)"),
    ("qe= takes at most 1000000000 results, not 10000000000", "--qe takes at most 1000000000 results, not 10000000000"),
    ("verify= takes at most 10000 results (got 10001)", "--verify takes at most 10000 results (got 10001)"),
    ("epochs= takes at most 10000 (got 10001)", "--epochs takes at most 10000 (got 10001)"),
    ("trees= takes at most 1000 (got 1001)", "--trees takes at most 1000 (got 1001)"),
    ("dba= takes 0 to 1000 neighbours (got 1001)", "--dba takes 0 to 1000 neighbours (got 1001)"),
    ("unknown device='bogus'; choose auto, cpu, cuda or mps", "unknown --device 'bogus'; choose auto, cpu, cuda or mps"),
    ("model= names no model; leave it out for the index's own model (or the default)",
     "--model names no model; leave it out for the index's own model (or the default)"),
    ("/i/meta.json names generation -1, which the manifest (at generation 3) no longer holds (a meta.json restored "
     "from an older copy, or edited); `build_index(/p)` rewrites it",
     "/i/meta.json names generation -1, which the manifest (at generation 3) no longer holds (a meta.json restored "
     "from an older copy, or edited); `vsearch build-index /p` rewrites it"),
    ("cannot make the index folder /f/x: Not a directory; choose another index_dir=",
     "cannot make the index folder /f/x: Not a directory; choose another --index-dir"),
    ("cannot read the Annoy index /i/a.ann (damaged); `build_index(/p)` rebuilds it, and mode='exact' searches "
     "without it",
     "cannot read the Annoy index /i/a.ann (damaged); `vsearch build-index /p` rebuilds it, and --exact searches "
     "without it"),
    # Leftovers of round two: remedies that name the folder, --batch-size's bound, long --move-to names.
    ("the model fake loaded here differs from the one that built the index at /i (weights); rebuild the index "
     "(`build_index(/my photos, index_dir=NEW_DIR)`)",
     "the model fake loaded here differs from the one that built the index at /i (weights); rebuild the index "
     "(vsearch build-index /my photos --index-dir NEW_DIR)"),
    ("1 labelled image(s) are not in the index at /i: /p/q.jpg; index their folder first (`build_index(/p)`)",
     "1 labelled image(s) are not in the index at /i: /p/q.jpg; index their folder first (vsearch build-index /p)"),
    ("1 labelled image(s) are not in the index at /i: /o/q.jpg; they are outside /p, the folder this index covers; "
     "index their folder first (`build_index(/o, index_dir=NEW_DIR)`)",
     "1 labelled image(s) are not in the index at /i: /o/q.jpg; they are outside /p, the folder this index covers; "
     "index their folder first (vsearch build-index /o --index-dir NEW_DIR)"),
    ("index at /i holds no vectors yet; call `build_index(/p)` first",
     "index at /i holds no vectors yet; run `vsearch build-index /p` first"),
    ("batch_size= takes at most 4096 images (got 4097)", "--batch-size takes at most 4096 images (got 4097)"),
    ("move_to=/d/xx: the name xx is 256 bytes, more than the file system takes (255); choose a shorter one",
     "--move-to /d/xx: the name xx is 256 bytes, more than the file system takes (255); choose a shorter one"),
    ("cannot move /p/a.jpg to /d/a.jpg: File name too long; choose another move_to=",
     "cannot move /p/a.jpg to /d/a.jpg: File name too long; choose another --move-to"),
]


@pytest.mark.parametrize(("library", "command_line"), PAIRS, ids=[library[:40] for library, _ in PAIRS])
def test_each_library_phrase_reads_as_the_cli_always_said_it(library, command_line):
    assert cli_names(library) == []
    assert cli_words(library) == command_line


def test_every_row_of_the_table_is_used():
    def used(phrase: str | re.Pattern[str]) -> bool:
        return any(phrase in library if isinstance(phrase, str) else phrase.search(library) for library, _ in PAIRS)

    assert [row[0] for row in WORDING if not used(row[0])] == []


@pytest.mark.parametrize("text", [
    "cannot read /i/v.npy: If you trust the file you can load it unsafely using the `allow_pickle=` keyword argument",
    "/photos/model=old/a.jpg is not in the index", "the k-means (k=8) did not converge", "ratio=0.5 in a path",
])
def test_words_that_only_look_like_parameters_stay(text):
    assert cli_words(text) == text


# --- round trips: the API's words, then the command line's, byte for byte ---------------------------


@pytest.fixture
def work(tmp_path, fake_model) -> Path:
    """photos/ (p0..p5 and p0copy, an exact copy of p0) indexed with the fake model in idx/."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        make_photo(photos / f"p{i}.jpg", seed=i)
    shutil.copy2(photos / "p0.jpg", photos / "p0copy.jpg")
    vsearch.build_index(photos, tmp_path / "idx", model="fake").close()
    return tmp_path


def round_trip(call, args, library: str, command_line: str) -> None:
    """``call()`` raises ``library`` (the API's words, no flag, no command); ``vsearch ARGS``
    prints ``error: command_line`` and nothing else."""
    with pytest.raises(VsearchError) as caught:
        call()
    assert str(caught.value) == library
    assert cli_names(library) == []
    assert fails(cli(*args), "") == f"error: {command_line}"


def test_no_index(work):
    empty = work / "empty"
    empty.mkdir()
    round_trip(lambda: vsearch.open_index(empty), ("query", work / "photos" / "p1.jpg", "--index-dir", empty),
               f"no index at {empty}; build one with `build_index(FOLDER)` (or point index_dir= / VSEARCH_INDEX_DIR "
               "at an existing one)",
               f"no index at {empty}; build one with `vsearch build-index FOLDER` (or point --index-dir / "
               "VSEARCH_INDEX_DIR at an existing one)")


def test_vector_formats(work):
    photos = work / "photos"
    round_trip(lambda: vsearch.build_index(photos, work / "a", model="fake", vectors="pca9999"),
               ("build-index", photos, "--index-dir", work / "b", "--model", "fake", "--vectors", "pca9999", "-q"),
               "vectors=pca9999: 9999 dimensions is not fewer than the model's 48; choose a smaller D, or fp32/fp16",
               "--vectors pca9999: 9999 dimensions is not fewer than the model's 48; choose a smaller D, or fp32/fp16")
    allowed = ("fp32, fp16, pcaD or pcaDw (D an integer: the dimensions kept, w = whitened; add -fp16 to store them "
               "as float16), e.g. pca256w (got 'bogus')")
    round_trip(lambda: vsearch.build_index(photos, work / "c", model="fake", vectors="bogus"),
               ("build-index", photos, "--index-dir", work / "d", "--model", "fake", "--vectors", "bogus", "-q"),
               f"vectors= takes {allowed}", f"--vectors takes {allowed}")


def test_another_folder(work):
    other = work / "other"
    other.mkdir()
    make_photo(other / "q.jpg", seed=9)
    idx, photos = work / "idx", work / "photos"
    round_trip(lambda: vsearch.build_index(other, idx, model="fake"),
               ("build-index", other, "--index-dir", idx, "--model", "fake", "-q"),
               f"index at {idx} covers {photos}, not {other}; use another index_dir= for this folder",
               f"index at {idx} covers {photos}, not {other}; use another --index-dir for this folder")


def test_query_options(work):
    idx, query = work / "idx", work / "photos" / "p1.jpg"
    with vsearch.open_index(idx) as index:
        round_trip(lambda: index.query(query, dedupe=5.0), ("query", query, "--index-dir", idx, "--dedupe", "5"),
                   "dedupe= takes a cosine threshold between -1 and 1, e.g. 0.95",
                   "--dedupe takes a cosine threshold between -1 and 1, e.g. 0.95")
        round_trip(lambda: index.query(query, negatives=[query], not_weight=1.0),
                   ("query", query, "--index-dir", idx, "--not", query, "--not-weight", "1"),
                   "the negative examples cancel the positive ones out; lower not_weight=",
                   "the negative examples cancel the positive ones out; lower --not-weight")


def test_approximate_without_an_approximate_index(work):
    photos, idx = work / "photos", work / "embedded"
    vsearch.build_index(photos, idx, model="fake", trees=None).close()
    with vsearch.open_index(idx) as index:
        round_trip(lambda: index.query(photos / "p1.jpg", mode="approximate"),
                   ("query", photos / "p1.jpg", "--index-dir", idx, "--approximate"),
                   f"mode='approximate': index at {idx} has no Annoy index (nor IVF-PQ); call `build_index`",
                   f"--approximate: index at {idx} has no Annoy index (nor IVF-PQ); run `vsearch build-index`")


def test_a_damaged_meta_json(work):
    idx = work / "idx"
    (idx / "meta.json").write_text("{garbage")
    why = "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    round_trip(lambda: vsearch.open_index(idx), ("info", "--index-dir", idx),
               f"cannot read {idx / 'meta.json'}: {why}; `build_index({work / 'photos'}, rebuild=True)` repairs it",
               f"cannot read {idx / 'meta.json'}: {why}; `vsearch build-index {work / 'photos'} --rebuild` repairs it")


def test_duplicates_and_evaluation(work):
    idx = work / "idx"
    with vsearch.open_index(idx) as index:
        groups = index.duplicates(level="exact")
        round_trip(lambda: index.plan_actions(groups, move_to=""),
                   ("duplicates", "--index-dir", idx, "--level", "exact", "--move-to", ""),
                   "move_to= is empty; give the folder to move the copies to",
                   "--move-to is empty; give the folder to move the copies to")
        (work / "afile").write_text("x")
        round_trip(lambda: index.plan_actions(groups, move_to=work / "afile" / "sub"),
                   ("duplicates", "--index-dir", idx, "--level", "exact", "--move-to", work / "afile" / "sub"),
                   f"move_to={work / 'afile' / 'sub'}: {work / 'afile'} is a file; give a folder",
                   f"--move-to {work / 'afile' / 'sub'}: {work / 'afile'} is a file; give a folder")
        round_trip(lambda: index.evaluate(augment=1000), ("evaluate", "--index-dir", idx, "--augment", "1000"),
                   "augment=1000: only 7 images to pick from; ask for 7 or fewer",
                   "--augment 1000: only 7 images to pick from; ask for 7 or fewer")
        round_trip(lambda: index.evaluate(judgments=True), ("evaluate", "--index-dir", idx, "--judgments"),
                   f"no judgments recorded in {idx}: record some with `Index.judge(QUERY, RESULTS, relevant=True)` "
                   "or on the page",
                   f"no judgments recorded in {idx}: record some with `vsearch judge QUERY RESULT... --relevant` or "
                   "on the `vsearch serve` page")


def test_a_stale_index_warns_in_each_one_s_words(work):
    idx, photos = work / "idx", work / "photos"
    make_photo(photos / "new.jpg", seed=42)
    with vsearch.open_index(idx) as index:
        warning = index.freshness().warning()
    assert warning == (f"warning: {photos} changed since the index was built (1 folder differs); "
                       f"call `build_index({photos}, trees=None)` to update")
    command_line = (f"{photos} changed since the index was built (1 folder differs); "
                    f"run `vsearch embed {photos}` to update")
    result = ok(cli("query", photos / "p1.jpg", "--index-dir", idx, "-f", "paths"))
    assert result.stderr.splitlines() == [f"warning: {command_line}"]
    assert json.loads(ok(cli("info", "--index-dir", idx, "-f", "json")).stdout)["freshness"] == command_line


_CLI_WITH_FAKE_MODEL = """
import sys
from tests.conftest import FakeEmbedder
from vsearch.models import loading
embedder = FakeEmbedder("fake")
loading.register("fake", lambda name, device, threads: embedder)
from vsearch.cli.main import app
app(sys.argv[1:], prog_name="vsearch")
"""


def test_a_library_warning_reads_in_flags_on_the_cli_s_stderr(work, caplog):
    """A warning logged by the library reaches a real CLI process's stderr through logging's last
    resort, in the CLI's words; a Python caller's logging gets the API's."""
    idx, photos = work / "idx", work / "photos"
    vectors = next(idx.glob("vectors.*.npy"))
    tail = "its 7 images will be embedded again"
    shutil.copytree(idx, work / "idx2")
    vectors.write_bytes(b"junk")
    vsearch.build_index(photos, idx, model="fake").close()
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(logged) == 1 and logged[0].startswith(f"warning: cannot read {vectors}: ")
    assert logged[0].endswith(f"; `build_index({photos})` repairs the index; {tail}")
    assert cli_names(logged[0]) == []

    vectors = next((work / "idx2").glob("vectors.*.npy"))
    vectors.write_bytes(b"junk")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _CLI_WITH_FAKE_MODEL, "build-index", photos, "--index-dir",
                           work / "idx2", "--model", "fake", "-q"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"warning: cannot read {vectors}: ")
    assert line.endswith(f"; `vsearch build-index {photos}` repairs the index; {tail}")
    assert line == cli_words(logged[0]).replace(str(idx), str(work / "idx2"))
