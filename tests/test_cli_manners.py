"""Unix manners of the command line: one error line for usage mistakes, quiet exit on a closed
pipe, NUL-separated paths, plain flags, names that are not UTF-8, and a quick start-up.

In-process through the real CLI with the fast ``fake`` model; the pipe, byte-path and import
checks through a real ``python -m vsearch`` process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.conftest import make_photo
from tests.helpers import cli, fails, ok
from vsearch.cli.main import app

REPO = Path(__file__).resolve().parent.parent


def vsearch(*args: object, index_dir: Path, **kwargs) -> subprocess.Popen:
    """``python -m vsearch ARGS`` in a fresh process, pipes on stdout and stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "VSEARCH_INDEX_DIR": str(index_dir)}
    argv = [sys.executable, "-m", "vsearch", *(a if isinstance(a, bytes) else str(a) for a in args)]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


# --- usage mistakes: one line, status 1 ---------------------------------------------------


@pytest.mark.parametrize("args, pattern", [
    (["query", "{p0}", "--k", "0"], r"^error: --k: 0 is below the minimum, 1"),
    (["query", "{p0}", "--k", "-1"], r"^error: --k: -1 is below the minimum, 1"),
    (["query", "{p0}", "--k", "ten"], r"^error: --k: 'ten' is not a whole number"),
    (["query", "{p0}", "--format", "bogus"], r"^error: --format: 'bogus' is not one of the choices: table, json, csv"),
    (["query", "{p0}", "--index-dir", "{p0}"], r"^error: --index-dir: .*p0\.jpg is a file; give a folder"),
    (["query", "{p0}", "--sheet", "{photos}"], r"^error: --sheet: .*photos is a folder; give a file name"),
    (["query", "{p0}", "--min-score", "nan"], r"^error: --min-score: 'nan' is not a finite number"),
    (["build-index", "{photos}", "--max-pixels", "0"], r"^error: --max-pixels: 0 is below the minimum, 1"),
    (["make-pairs", "{photos}", "--augment", "2", "--out", "{p0}"], r"^error: --out: .*p0\.jpg is a file; give a folder"),
    (["query"], r"^error: missing argument 'IMAGE' \(see `vsearch query --help`\)$"),
    (["query", "{p0}", "--no-such-flag"], r"^error: no such option: --no-such-flag"),
    (["no-such-command"], r"^error: no such command 'no-such-command'"),
])
def test_a_usage_mistake_is_one_error_line_and_status_1(built, photos, args, pattern):
    args = [a.format(p0=photos / "p0.jpg", photos=photos) for a in args]
    line = fails(cli(*args), pattern)
    assert "Usage:" not in line and "╭" not in line


def test_vsearch_alone_and_help_show_the_help_with_status_0():
    for args in ([], ["--help"], ["query", "--help"]):
        result = ok(cli(*args))
        assert "Usage:" in result.stdout and result.stderr == ""


# --- flags --------------------------------------------------------------------------------


def test_flags_are_plain_flags_without_a_type_in_the_help():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        flags = [p for p in command.params if p.param_type_name == "option" and getattr(p, "is_flag", False)]
        assert all(p.type_descriptor.annotation is bool for p in flags)
        help_text = ok(cli(name, "--help")).stdout
        assert "<bool>" not in help_text, name
    assert "<bool>" not in ok(cli("--help")).stdout


def test_a_word_after_a_flag_is_not_its_value(built, photos):
    # `--exact true` is the flag and then a second query, named as such, never a silent second meaning.
    fails(cli("query", photos / "p0.jpg", "--exact", "true"), "no file 'true' exists")
    result = ok(cli("query", photos / "p0.jpg", "--exact", "--exclude-self", "-f", "paths", "-k", "2"))
    assert len(result.stdout.splitlines()) == 2 and str(photos / "p0.jpg") not in result.stdout


def test_query_has_quiet(built, photos):
    loud = ok(cli("query", photos / "p0.jpg", "--min-score", "1.5"))
    assert loud.stderr.strip() == "no results passed the filters"
    quiet = ok(cli("query", photos / "p0.jpg", "--min-score", "1.5", "-q"))
    assert quiet.stderr == "" and quiet.stdout.count("\n") > 0  # the (empty) table still prints


# --- paths out: NUL-separated, and not UTF-8 ------------------------------------------------


def test_null_separates_paths_with_nul_bytes(built, photos):
    lines = ok(cli("query", photos / "p0.jpg", "-f", "paths", "-k", "3")).stdout
    nul = ok(cli("query", photos / "p0.jpg", "-f", "paths", "-k", "3", "--null")).stdout
    assert nul == "".join(f"{p}\0" for p in lines.splitlines()) and "\n" not in nul
    copy = photos / "p0\ncopy.jpg"  # a newline in a name: why --null exists
    copy.write_bytes((photos / "p0.jpg").read_bytes())
    dups = ok(cli("duplicates", photos, "-f", "paths", "--null", "-q")).stdout
    listed = dups.split("\0")
    assert listed[-1] == "" and len(listed) >= 2  # the copy beyond the kept one, at least
    assert all(Path(p).is_file() for p in listed[:-1]) and {str(photos / "p0.jpg"), str(copy)} & set(listed)


def test_a_query_path_that_is_not_utf8_is_one_line(built, photos):
    name = os.fsencode(photos) + b"/caf\xe9.jpg"
    with open(name, "wb") as fh:
        fh.write((photos / "p1.jpg").read_bytes())
    proc = vsearch(b"query", name, "-f", "paths", index_dir=built)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert out == b"" and b"Traceback" not in err
    assert err.decode().splitlines() == [f"error: file name is not valid UTF-8: {photos}/caf\\xe9.jpg; "
                                         "rename it (vsearch reads only UTF-8 names)"]


# --- pipes --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["paths", "table", "json"])
def test_a_reader_that_closes_early_ends_vsearch_quietly_with_status_0(built, photos, fmt):
    # The reader is gone before vsearch writes a byte: every write raises EPIPE. Deterministic,
    # unlike `| head -1`, which races the writer.
    proc = vsearch("query", photos / "p0.jpg", "-f", fmt, index_dir=built)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert err == b""


def test_head_1_on_a_longer_listing_ends_quietly(built, photos):
    # Like `| head -1`: the reader takes one line and closes while vsearch may still be writing.
    for i in range(6, 40):
        make_photo(photos / f"q{i}.jpg", seed=i)
    ok(cli("build-index", photos, "-q"))
    for _ in range(3):
        proc = vsearch("query", photos / "p0.jpg", "-f", "json", "-k", "40", index_dir=built)
        assert proc.stdout.readline().strip() == b"["
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 0 and err == b"", err


def test_help_into_a_closed_pipe_is_quiet(built):
    proc = vsearch("query", "--help", index_dir=built)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == b"", err


# --- start-up -----------------------------------------------------------------------------

_IMPORTS = """
import sys
from vsearch.cli.main import app
try:
    app(sys.argv[1:], prog_name="vsearch")
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pydantic", "rich", "torch", "PIL", "onnxruntime"})
print("IMPORTED", *heavy, file=sys.stderr)
sys.exit(code)
"""


def test_a_query_of_an_indexed_photo_imports_nothing_heavy(built, photos):
    env = {**os.environ, "PYTHONPATH": str(REPO), "VSEARCH_INDEX_DIR": str(built)}
    proc = subprocess.run([sys.executable, "-c", _IMPORTS, "query", photos / "p0.jpg", "-k", "3"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("p0.jpg") == 1  # the table, printed to a pipe
    assert proc.stderr.strip().splitlines()[-1] == "IMPORTED"  # no pydantic, rich, torch, Pillow


def test_json_output_is_unchanged_by_the_fast_option_parsing(built, photos):
    hits = json.loads(ok(cli("query", photos / "p0.jpg", "-f", "json", "-k", "2", "--not-weight", "0.25")).stdout)
    assert [h["rank"] for h in hits] == [1, 2] and Path(hits[0]["path"]) == photos / "p0.jpg"
