"""The library's words in the command line's: one ordered table, applied to every library
message the CLI prints.

The library speaks its Python API: a parameter is ``name=value`` (or ``name=`` alone), a
remedy is a call, e.g. ``index_dir=/x is a file, not a folder`` or "`build_index(FOLDER,
rebuild=True)` repairs it". The CLI shows the same messages in its own words, as they have
always read: ``--index-dir /x is a file, not a folder``, "`vsearch build-index FOLDER --rebuild`
repairs it". :func:`cli_words` makes that translation, with :data:`WORDING`: each row replaces
a library phrase with the CLI's, in order (a plain ``str.replace``, or a regular expression
where a value sits between), so a specific phrase comes before the general rule that would
otherwise take it.

It is applied where library text reaches the terminal: the one error line of
:func:`vsearch.cli.app.user_errors`, library warnings logged while a command runs
(:func:`library_warnings`), and the library's lines a command prints itself (an index's
freshness warning, the reasons files were skipped, notes on the labels or a build's steps). The CLI's own messages name their flags
already, and no row changes them (tests/test_wording.py checks every string in vsearch/cli).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable, Iterator

__all__ = ["FLAGS", "WORDING", "cli_words", "library_warnings"]

#: The CLI flag of each API parameter that a library message names as ``name=``. Most are the
#: parameter's own name with dashes; ``path_glob`` is ``--path`` and ``build_index``'s
#: ``approximate`` (the kind of approximate index) is ``--index``. ``mode`` and ``adapter``
#: have rows of their own in :data:`WORDING` (``--exact``, ``--approximate``, ``--adapter off``).
FLAGS: dict[str, str] = {
    "index_dir": "--index-dir", "vectors": "--vectors", "model": "--model", "device": "--device",
    "max_pixels": "--max-pixels", "exclude": "--exclude", "engine": "--engine", "address": "--address",
    "approximate": "--index", "dba": "--dba", "k": "--k", "min_score": "--min-score", "dedupe": "--dedupe",
    "diverse": "--diverse", "qe": "--qe", "not_weight": "--not-weight", "path_glob": "--path",
    "verify": "--verify", "max_per_folder": "--max-per-folder", "max_per_day": "--max-per-day",
    "level": "--level", "keep": "--keep", "threshold": "--threshold", "move_to": "--move-to",
    "trash": "--trash", "augment": "--augment", "headline": "--headline", "out": "--out",
    "epochs": "--epochs", "dim": "--dim", "views": "--views", "seed": "--seed",
    "use_judgments": "--use-judgments", "trees": "--trees", "min_overlap": "--min-overlap",
    "batch_size": "--batch-size",
}

#: ``name=`` of a parameter in :data:`FLAGS`, where a message names it: at the start or after a
#: space (not inside a word, a path such as ``/x/model=1`` or a formula such as ``(k=8)``).
_NAME = r"(?<!\S)(?P<name>" + "|".join(sorted(FLAGS, key=len, reverse=True)) + r")="


def _flag(match: re.Match[str]) -> str:
    """``name=True`` -> ``--flag``; ``name=VALUE`` -> ``--flag VALUE``; ``name=`` -> ``--flag``."""
    flag, value = FLAGS[match["name"]], match["value"]
    return f"{flag} {value}" if value else flag


#: Library phrase -> CLI phrase, applied in this order. A row is (str, str), replaced as it
#: is, or (compiled pattern, replacement string or function) for ``re.sub``. Specific phrases
#: first; the general ``name=`` rules last.
Row = tuple[str, str] | tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]
WORDING: list[Row] = [
    # Calls that the CLI writes as commands without backticks (as they have always read).
    (re.compile(r"\(`build_index\((?P<folder>[^`]+?), index_dir=NEW_DIR\)`\)"),
     r"(vsearch build-index \g<folder> --index-dir NEW_DIR)"),
    (re.compile(r"\(`build_index\((?P<folder>[^`,]+?)\)`\)"), r"(vsearch build-index \g<folder>)"),
    ("call `build_index` to refresh the index", "run vsearch build-index to refresh the index"),
    ("call `build_index` first", "run vsearch build-index first"),
    ("(build_index with exclude=)", "(build-index --exclude)"),
    ("first (`Index.judge` or the page)", "first (vsearch judge / vsearch serve)"),
    ("record some with `Index.judge(QUERY, RESULTS, relevant=True)` or on the page",
     "record some with `vsearch judge QUERY RESULT... --relevant` or on the `vsearch serve` page"),
    ("; judge some results relevant", "; judge some results --relevant"),
    ("(`Index.marks()` lists the marks)", "(`vsearch duplicates --marks` lists them)"),
    # Calls as commands: `build_index(X, rebuild=True)`, `build_index(X, trees=None)` (embedding
    # only), `build_index(X)`, `build_index`, `train()`; one calls a function, one runs a command.
    ("call `build_index", "run `build_index"),
    ("Call `build_index", "Run `build_index"),
    ("call `train()`", "run `train()`"),
    (re.compile(r"`build_index\((?P<folder>[^`]+?), rebuild=True\)`"), r"`vsearch build-index \g<folder> --rebuild`"),
    (re.compile(r"`build_index\((?P<folder>[^`]+?), trees=None\)`"), r"`vsearch embed \g<folder>`"),
    (re.compile(r"`build_index\((?P<folder>[^`]+?)\)`"), r"`vsearch build-index \g<folder>`"),
    ("`build_index`", "`vsearch build-index`"),
    ("`train()`", "`vsearch train`"),
    ("`check()`", "`vsearch check`"),
    # Values the CLI gives as flags of their own, or unquoted.
    ("mode='exact'", "--exact"),
    ("mode='approximate'", "--approximate"),
    ("adapter=False", "--adapter off"),
    ("engine='ray'", "--engine ray"),
    ("approximate='annoy'", "--index annoy"),
    (re.compile(r"device='(?P<device>cpu|cuda|mps)'"), r"--device \g<device>"),
    (re.compile(r"(?<![^\s(`])model='(?P<model>[^'\s]+)'"), r"--model \g<model>"),
    ("ks= takes positive integers, e.g. ks=(1, 5, 10)", "--k takes positive integers, e.g. --k 1,5,10"),
    ("ks= takes at most", "--k takes at most"),
    ("give at least one Setup", "give at least one --index-dir"),
    # Any other parameter: name=True is the flag, name=VALUE the flag and its value.
    (re.compile(_NAME + r"(?P<value>)True\b"), _flag),
    (re.compile(_NAME + r"(?P<value>[^\s,;)]*)"), _flag),
]


def cli_words(message: str) -> str:
    """``message`` (a library error, warning or note) in the CLI's words: :data:`WORDING`, row by row."""
    for phrase, cli in WORDING:
        if isinstance(phrase, re.Pattern):
            message = phrase.sub(cli, message)
        elif isinstance(cli, str):
            message = message.replace(phrase, cli)
    return message


class _LastResort(logging.StreamHandler):
    """logging's handler of last resort (each message as it is, on the current sys.stderr),
    with the message in the CLI's words."""

    def __init__(self, level: int) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self):  # sys.stderr when written, as logging's own
        return sys.stderr

    def format(self, record: logging.LogRecord) -> str:
        return cli_words(super().format(record))


@contextlib.contextmanager
def library_warnings() -> Iterator[None]:
    """While a command runs, library warnings read in the CLI's words.

    The CLI configures no logging: a library warning reaches stderr through logging's handler of
    last resort (:data:`logging.lastResort`: WARNING and above, the message alone, used only when
    no handler is configured). This swaps in one that applies :func:`cli_words` and puts the
    original back afterwards; where logging is configured (a test runner), nothing changes.
    """
    previous = logging.lastResort
    if previous is not None:
        logging.lastResort = _LastResort(previous.level)
    try:
        yield
    finally:
        logging.lastResort = previous
