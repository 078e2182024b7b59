"""Every command and every option against generated values (hypothesis), in-process.

The commands and their options come from the Typer app itself (``typer.main.get_command``), so
a new option is fuzzed the day it is added. Values: numbers that are negative, zero, huge, NaN,
not numbers at all; empty and very long strings, names that are not UTF-8; and paths that are
folders, files, FIFOs, device files (made with ``os.mknod`` in tmp, never a real one), sockets,
missing, too long for the file system, through a file, or a loop of links.

What must hold for every run: status 0, or status 1 with exactly one ``error: ...`` line on
stderr; never a traceback, another status, or a hang (each run has 30 s).

Every run works on its own copy of a small world (six photos indexed with the fake model, in
tmp, HOME too), made afresh for each example, with the working folder in it: nothing outside
it is read or written. Nothing is ever acted on: ``--yes`` is never given with ``--trash`` or
``--move-to``. ``serve`` is left out (it would serve until stopped; tests/test_fuzz_page.py
fuzzes the page).

About a minute in ``make test`` (a fixed seed, so it is repeatable); ``VSEARCH_FUZZ_EXAMPLES=N``
runs N examples per command with fresh random draws.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest

hypothesis = pytest.importorskip("hypothesis")
import typer  # noqa: E402
from hypothesis import HealthCheck, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from tests.conftest import FakeEmbedder, make_photo  # noqa: E402
from vsearch import atomic  # noqa: E402
from vsearch.cli.main import app  # noqa: E402
from vsearch.indexing import pipeline  # noqa: E402
from vsearch.models import loading as models  # noqa: E402

#: Examples per command: VSEARCH_FUZZ_EXAMPLES, else a count that keeps the file near a minute.
LARGE = int(os.environ.get("VSEARCH_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=LARGE or 16, deadline=None, database=None, derandomize=not LARGE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
#: Seconds one run may take before it counts as a hang.
RUN_LIMIT_S = 30

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
#: serve serves until it is stopped.
FUZZED = sorted(name for name in COMMANDS if name != "serve")

NOT_UTF8 = os.fsdecode(b"caf\xe9.jpg")

#: Numbers, as the command line gives them: text.
INTS = ["0", "1", "-1", "2", "3", "10", "100", "2147483648", "9223372036854775808", "99999999999999999999",
        "-99999999999999999999", "1e22", "1.5", "nan", "inf", "", " ", "x", "0x10", "\u0663", "1_000"]
FLOATS = ["0", "0.5", "1", "-1", "2", "1e308", "1e400", "-1e400", "5e-324", "nan", "inf", "-inf", "", "x", "1,5"]
TEXTS = ["", " ", "x", "-", "--", "*", "[", "a,b", "0", "1,5,10", "off", "on", "off,2", "exact", "auto,exact",
         "text:a cat", "\n", "x" * 300, "y" * 5000, NOT_UTF8, "~", "~nobody-here/x.jpg", "map@10", "recall@1"]
#: Strings some options must never be given here: a model that loads torch or downloads, the
#: Ray engine, a host.
CHOSEN: dict[str, list[str]] = {
    "--model": ["fake", "", " ", "no-such-model", "efficientnet-lite9", "ARCH:TAG", "x" * 300, NOT_UTF8],
    "--engine": ["local", "", "bogus", "x" * 300, NOT_UTF8],
    "--address": ["", "auto", "ray://head:10001", NOT_UTF8],
    "--device": ["auto", "cpu", "", "bogus", "cuda:99", "x" * 300, NOT_UTF8],
    "--vectors": ["fp32", "fp16", "pca8", "pca8w", "pca8-fp16", "pca0", "pca99999999999999999999", "pca-1",
                  "fp8", "", NOT_UTF8],
    "--index": ["annoy", "auto", "bogus", "", NOT_UTF8],
}


class Hang(BaseException):
    """A run took longer than RUN_LIMIT_S (a BaseException: no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread after ``seconds`` (SIGALRM interrupts a blocking open or read)."""
    def ring(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- the world -----------------------------------------------------------------------------


class World:
    """A folder with six photos indexed with the fake model, restored before every run, and
    the paths the values are drawn from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.here = root / "w"  # the copy every run works in (and its working folder)
        self.pristine = root / "pristine"
        self.photos = self.here / "photos"
        self.index = self.here / "index"

    def build(self) -> None:
        self.photos.mkdir(parents=True)
        for i in range(6):
            make_photo(self.photos / f"p{i}.jpg", seed=i)
        shutil.copy(self.photos / "p0.jpg", self.photos / "p0-copy.jpg")  # a duplicate pair
        result = CliRunner().invoke(app, ["build-index", str(self.photos), "--index-dir", str(self.index),
                                          "--model", "fake", "-q"])
        assert result.exit_code == 0, result.output
        (self.here / "home").mkdir()
        (self.here / "empty").mkdir()
        (self.here / "notes.txt").write_text("not an image")
        (self.here / "groups.csv").write_text("path,group\n" + "".join(f"photos/p{i}.jpg,{i % 2}\n" for i in range(6)))
        (self.here / "pairs.csv").write_text("query,positive\nphotos/p0-copy.jpg,photos/p0.jpg\n")
        (self.here / "binary.csv").write_bytes(bytes(range(256)))
        with open(os.fsencode(self.here) + b"/caf\xe9.jpg", "wb") as fh:
            fh.write((self.photos / "p1.jpg").read_bytes())
        shutil.copytree(self.here, self.pristine, symlinks=True)

    def reset(self) -> None:
        """The world as built, with its special files made again (copytree would read a FIFO)."""
        shutil.rmtree(self.here)
        shutil.copytree(self.pristine, self.here, symlinks=True)
        os.mkfifo(self.here / "fifo")
        os.mkfifo(self.here / "fifo.jpg")
        os.symlink("loop-b", self.here / "loop-a")
        os.symlink("loop-a", self.here / "loop-b")
        with contextlib.suppress(OSError):  # a character device like /dev/null: root only
            os.mknod(self.here / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with contextlib.suppress(OSError):  # a socket's path has a length limit
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(os.fspath(self.here / "sock"))
            sock.close()

    def paths(self) -> list[str]:
        """Paths to draw from, relative to the world where that is how a person types them."""
        return [str(self.photos), "photos", "photos/p0.jpg", str(self.photos / "p3.jpg"), "photos/p0-copy.jpg",
                str(self.index), "index", "index/meta.json", "index/undo", "empty", "notes.txt", "groups.csv",
                "pairs.csv", "binary.csv", "missing", "missing/deeper/x.jpg", "new.html", "new.csv", "out",
                "notes.txt/x", "fifo", "fifo.jpg", "null", "sock", "loop-a", "x" * 300, "d/" * 2100,
                NOT_UTF8, "", ".", "..", "~", "~/x.html", "-"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    fake = FakeEmbedder("fake")
    models.register("fake", lambda name, device, threads: fake)
    here = World(tmp_path_factory.mktemp("fuzz-cli"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(here.here / "home"))
        mp.setenv("XDG_DATA_HOME", str(here.here / "home" / "data"))
        mp.setenv("VSEARCH_INDEX_DIR", str(here.index))
        mp.setattr(atomic, "FIFO_WAIT_S", 0.05)  # an output FIFO nobody reads: refused quickly
        # A new index made without --model gets the fake, never the real default (torch, seconds).
        mp.setattr(models, "DEFAULT_MODEL", "fake")
        mp.setattr(pipeline, "DEFAULT_MODEL", "fake")
        here.build()
        try:
            yield here
        finally:
            models.unregister("fake")


# --- values --------------------------------------------------------------------------------


def _leaf(annotation: Any) -> Any:
    """The element type of an option's annotation (``list[Path]`` -> Path; ``X | None`` -> X)."""
    if get_origin(annotation) is list:
        return get_args(annotation)[0]
    return annotation


def values_for(param: Any, world: World) -> st.SearchStrategy[str]:
    """What one value of ``param`` is drawn from, as command-line text."""
    opts = getattr(param, "opts", [])
    chosen = next((CHOSEN[o] for o in opts if o in CHOSEN), None)
    if chosen is not None:
        return st.sampled_from(chosen)
    leaf = _leaf(param.type_descriptor.annotation)
    if leaf is int:
        return st.one_of(st.sampled_from(INTS), st.integers(-3, 40).map(str))
    if leaf is float:
        return st.one_of(st.sampled_from(FLOATS), st.floats(allow_nan=True, allow_infinity=True).map(repr))
    if isinstance(leaf, type) and issubclass(leaf, Enum):
        return st.sampled_from([str(m.value) for m in leaf] + ["", "bogus", "TABLE"])
    if leaf is Path or get_origin(leaf) is tuple:
        return st.sampled_from(world.paths())
    # Text: words, numbers for options that parse them (evaluate's --k, --qe), and paths.
    return st.one_of(st.sampled_from(TEXTS), st.sampled_from(INTS), st.sampled_from(world.paths()),
                     st.text(max_size=20))


def arguments(draw: Any, name: str, world: World) -> list[str]:
    """A command line for command ``name``: its arguments, its required options, and up to
    three others (a few at a time, so that one bad value does not hide what another does)."""
    command = COMMANDS[name]
    options = [p for p in command.params if p.param_type_name == "option" and not p.required]
    picked = {p.name for p in draw(st.lists(st.sampled_from(options), max_size=3, unique_by=lambda p: p.name))}
    args: list[str] = [name]
    chosen: set[str] = set()
    for param in command.params:
        if param.param_type_name == "argument":
            if not param.required and draw(st.booleans()):
                continue
            count = draw(st.integers(1, 2)) if param.nargs == -1 else 1
            args += [draw(values_for(param, world)) for _ in range(count)]
            continue
        if param.name == "index_dir" and param.name not in picked:  # the world's index, unless fuzzed
            args += [param.opts[0], str(world.index)]
            continue
        if not param.required and param.name not in picked:
            continue
        opt = draw(st.sampled_from(param.opts + param.secondary_opts))
        chosen.add(param.name)
        if param.is_flag:
            args.append(opt)
            continue
        repeats = draw(st.integers(1, 2)) if param.multiple else 1
        for _ in range(repeats):
            args.append(opt)
            args += [draw(values_for(param, world)) for _ in range(param.nargs)]
    if name == "duplicates" and "yes" in chosen:
        # Never act: --yes stays only where it cannot confirm a move or a trash.
        args = _without(args, {"--move-to": 1, "--trash": 0})
    return args


def _without(args: list[str], options: dict[str, int]) -> list[str]:
    """``args`` without the options named (each with its number of values)."""
    out, skip = [], 0
    for i, arg in enumerate(args):
        if skip:
            skip -= 1
            continue
        if arg in options and (i == 0 or args[i - 1] not in options):
            skip = options[arg]
            continue
        out.append(arg)
    return out


# --- the property --------------------------------------------------------------------------


def check(result: Any, args: list[str]) -> None:
    """Status 0, or status 1 with exactly one ``error:`` line; no traceback, no other ending."""
    shown = f"vsearch {' '.join(map(repr, args[:12]))}: status {result.exit_code}\n{result.stderr[-2000:]}"
    assert not isinstance(result.exception, Hang), f"hung: {shown}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{shown}")
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, shown
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if result.exit_code == 0:
        assert not errors, shown
    else:
        assert result.exit_code == 1, shown
        assert len(errors) == 1, shown


@pytest.mark.parametrize("name", FUZZED)
def test_every_option_ends_in_status_0_or_one_error_line(world, name, monkeypatch):
    runner = CliRunner()

    @FUZZ
    @given(data=st.data())
    def run(data: Any) -> None:
        args = arguments(data.draw, name, world)
        note(repr(args))
        world.reset()
        with monkeypatch.context() as mp:
            mp.chdir(world.here)
            with time_limit(RUN_LIMIT_S):
                result = runner.invoke(app, args)
        check(result, args)

    run()


def test_the_fuzzer_reaches_every_command_but_serve():
    assert "serve" in COMMANDS and "serve" not in FUZZED
    assert {"query", "build-index", "duplicates", "evaluate", "judge", "undo", "train"} <= set(FUZZED)
