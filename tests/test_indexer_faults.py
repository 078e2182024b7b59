"""A full disk while indexing: the last chunk's save, and the ``--dba`` copy of the vectors.

ENOSPC is injected through the atomic write seam (``atomic.write_some``), for writes into one
kind of file only. Each run ends in one ``error:`` line and exit 1, leaves no temporary file, and
the index it started from still answers.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import cli, ok
from tests.conftest import REPO, make_photo
from vsearch import atomic
from vsearch.vectors import dba
from vsearch.vectors import nearest
from vsearch.storage.store import Store

#: How many photos the shared ``photos`` fixture (conftest) makes for these tests.
PHOTOS = 5
TREES = 3


def one_error_line(stderr: str, pattern: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert re.search(pattern, lines[0]), lines[0]


def temporaries(index_dir: Path) -> list[Path]:
    return [p for p in index_dir.rglob("*") if p.name.endswith(".tmp")]


def top_hit(photos: Path, name: str) -> str:
    return ok(cli("query", photos / name, "--format", "paths", "--k", "1")).stdout.strip()


def _full_for(monkeypatch, marker: str) -> None:
    """Every write into a file whose (temporary) name contains ``marker`` fails with ENOSPC."""
    real = atomic.write_some

    def write_some(fh, data):
        if marker in str(getattr(fh, "name", "")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fh, data)

    monkeypatch.setattr(atomic, "write_some", write_some)


# A real process: log records reach its stderr as a user sees them (pytest would capture them).
_BUILD_ON_A_FULL_DISK = """
import errno, os, sys
from tests.conftest import FakeEmbedder
from vsearch import atomic
from vsearch.models import loading as models
from vsearch.cli.main import app
embedder = FakeEmbedder("fake")
models.register("fake", lambda name, device, threads: embedder)
real = atomic.write_some
def write_some(fh, data):
    if "/chunks/" in str(getattr(fh, "name", "")):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fh, data)
atomic.write_some = write_some
app(sys.argv[1:], prog_name="vsearch")
"""


def test_a_full_disk_at_the_last_chunk_save_is_one_error_line_without_a_traceback(built, photos):
    for i in (5, 6):
        make_photo(photos / f"new{i}.jpg", seed=50 + i)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _BUILD_ON_A_FULL_DISK, "build-index", str(photos),
                           "--index-dir", str(built), "-q"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    one_error_line(proc.stderr, r"^error: no space left on device writing .*chunks")
    assert not temporaries(built)
    assert top_hit(photos, "p3.jpg") == str(photos / "p3.jpg")  # the old generation answers
    result = cli("build-index", photos, "-q")  # and with space again, the run finishes
    assert result.exit_code == 0, result.stderr
    assert top_hit(photos, "new6.jpg") == str(photos / "new6.jpg")


def test_a_full_disk_while_writing_the_dba_vectors_is_one_error_line(built, photos, monkeypatch):
    with monkeypatch.context() as m:
        _full_for(m, ".dba2.npy")
        result = cli("build-index", photos, "-q", "--dba", "2")
    assert result.exit_code == 1, (result.stderr, result.exception)
    one_error_line(result.stderr, r"^error: no space left on device writing .*\.dba2\.npy")
    assert not temporaries(built)
    meta = json.loads((built / "meta.json").read_text())
    assert "dba" not in meta and not list(built.glob("*.dba*"))
    assert top_hit(photos, "p2.jpg") == str(photos / "p2.jpg")


def test_the_dba_vectors_written_block_by_block_equal_the_in_memory_result(built, photos):
    result = cli("build-index", photos, "-q", "--dba", "2")
    assert result.exit_code == 0, result.stderr
    with Store.open(built) as store:
        raw = np.array(store.vectors())
        written = np.load(built / store.meta.dba.file)
    rows, _ = nearest.neighbour_graph(raw, 2)
    expected = dba.database_side_augmentation(raw, rows, np.empty_like(raw))
    assert written.dtype == np.float32 and np.array_equal(written, expected)
