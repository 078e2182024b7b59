"""A trained projection head: a linear map from an index's search space to a smaller one.

``vsearch train`` (train.py) fits the head; this module only loads, checks and applies it, with
numpy alone, so the stored-vector query path still imports no torch. The head is a float32
matrix ``W`` of shape (dim_in, dim_out); a vector ``x`` maps to ``normalise(x @ W)``, and scores
stay cosines in the projected space.

Files in the index folder (named in ``meta.json``'s optional ``adapter`` key):

    head.<sha12>.npz                      the matrix (``W``), content-addressed
    vectors.GGGGGG.head-<sha12>.npy       the projected copy of that generation's vectors,
                                          written with the head and at every later commit

Why a cached projected copy rather than projecting at open: a query process that reuses a
stored vector should not pay for a matmul over the whole collection. Measured here (numpy,
tiny-imagenet's 10,100 x 1280 Lite0 vectors @ 1280 x 256, a shared 2-core machine): 0.11-0.16 s
of CPU (0.5-1.0 s wall under load) per open, where mapping the cached file takes 0.5 ms; it
grows with the collection (about 10-15 CPU seconds at 1M rows). So the writer projects once per
commit and every reader maps the result. A reader that finds the cached copy missing or damaged
projects in memory and says so in the log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vsearch import atomic
from vsearch.storage import vectorfiles
from vsearch.vectors.compress import normalise_rows
from vsearch.errors import IndexCorruptError
from vsearch.storage.meta import IndexMeta, rebuild_hint
from vsearch.storage.regular import NotRegularError, require_regular

log = logging.getLogger(__name__)

#: The remedy for a head that cannot be used.
RETRAIN = "call `train()` again (or query with adapter=False)"
#: Rows projected per block: bounds the temporaries of a projection.
BLOCK = 65_536


def matrix_digest(matrix: np.ndarray) -> str:
    """SHA-256 of the head's float32 bytes and shape: its identity in ``meta.json``."""
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    h = hashlib.sha256(f"{m.shape[0]}x{m.shape[1]}:".encode())
    h.update(m.tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Head:
    """A linear projection head (``matrix``: float32 (dim_in, dim_out))."""

    matrix: np.ndarray

    @property
    def dim_in(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim_out(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def sha256(self) -> str:
        return matrix_digest(self.matrix)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Project rows (n, dim_in) or one vector (dim_in,) and L2-normalise: float32 out.

        The one function every path (stored copy, torch, ONNX, text) goes through, so they agree.
        """
        x = np.asarray(x, dtype=np.float32)
        single = x.ndim == 1
        rows = x[None] if single else x
        out = np.empty((len(rows), self.dim_out), dtype=np.float32)
        for start in range(0, len(rows), BLOCK):
            out[start:start + BLOCK] = normalise_rows(np.asarray(rows[start:start + BLOCK], dtype=np.float32) @ self.matrix)
        return out[0] if single else out

    def save(self, path: Path) -> None:
        """Write the head to ``path`` (an ``.npz``) through atomic."""
        buf = io.BytesIO()  # zip needs a seekable file; the bytes then go through atomic
        np.savez(buf, W=np.ascontiguousarray(self.matrix, dtype=np.float32))
        atomic.write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path, *, sha256: str, dim_in: int, dim_out: int) -> Head:
        """Read a head and check it against what ``meta.json`` recorded; IndexCorruptError with
        the remedy (train again) when it is missing, damaged or another head."""
        try:
            require_regular(path)  # np.load would wait on a FIFO forever
            with np.load(path, allow_pickle=False) as data:
                matrix = np.array(data["W"], dtype=np.float32)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # BadZipFile: a truncated file
            why = f": {exc}" if isinstance(exc, NotRegularError) else f" ({type(exc).__name__})"  # a FIFO: says so
            raise IndexCorruptError(f"the trained head {path} cannot be read{why}; {RETRAIN}") from None
        if matrix.shape != (dim_in, dim_out):
            raise IndexCorruptError(f"the trained head {path} is damaged (shape {matrix.shape}, expected "
                                    f"{(dim_in, dim_out)}); {RETRAIN}")
        if not np.isfinite(matrix).all():
            raise IndexCorruptError(f"the trained head {path} is damaged (it holds values that are not finite: "
                                    f"NaN or infinity); {RETRAIN}")
        head = cls(matrix)
        if head.sha256 != sha256:
            raise IndexCorruptError(f"the trained head {path} is not the one meta.json names (hash differs); {RETRAIN}")
        return head


def write_projected(index_dir: Path, head: Head, vectors: np.ndarray, vectors_file: str) -> str:
    """Write the projected copy of ``vectors`` (from ``vectors_file``) unless it is there; its name."""
    name = vectorfiles.projected_name(vectors_file, head.sha256)
    path = Path(index_dir) / name
    if not path.exists():
        vectorfiles.save(path, head.apply(vectors))
    return name


def load_projected(index_dir: Path, head: Head, vectors: np.ndarray, vectors_file: str) -> np.ndarray:
    """The projected copy of ``vectors``: the cached file (memory-mapped) when it is there and
    whole, else projected now in memory (a reader cannot write it)."""
    path = Path(index_dir) / vectorfiles.projected_name(vectors_file, head.sha256)
    if path.exists():
        try:
            require_regular(path)
            cached = np.load(path, mmap_mode="r")
            if cached.shape == (len(vectors), head.dim_out) and cached.dtype == np.float32:
                return cached
        except (OSError, ValueError, EOFError):  # EOFError: an emptied file
            pass
        log.warning("warning: the projected vectors %s are damaged; projecting in memory", path)
    else:
        log.info("no projected copy %s; projecting %d vectors in memory", path.name, len(vectors))
    return head.apply(vectors)


def with_projected(index_dir: Path, meta: IndexMeta) -> IndexMeta:
    """Before ``meta`` is committed (``Store.write_meta``): the trained head's projected copy of
    its vectors, written now (a new generation's rows); a head that can no longer be read is
    dropped with a warning, never a failed build."""
    if meta.adapter is None:
        return meta
    info = meta.adapter
    try:
        head = Head.load(index_dir / info.file, sha256=info.sha256, dim_in=info.dim_in, dim_out=info.dim_out)
    except IndexCorruptError as exc:
        log.warning("warning: %s; the index is committed without it", exc)
        return dataclasses.replace(meta, adapter=None)
    if info.dim_in != meta.space_dim:  # e.g. another vectors= format since training
        log.warning("warning: the trained head takes %d-d vectors, the search space now has %d; the index is "
                    "committed without it (call `train()` again)", info.dim_in, meta.space_dim)
        return dataclasses.replace(meta, adapter=None)
    fmt = meta.vectors_format
    vectors = vectorfiles.load(index_dir / meta.space_file, (meta.count, meta.space_dim), rebuild_hint(meta.root),
                               **({"dtype": fmt.dtype} if fmt is not None else {}))
    write_projected(index_dir, head, vectors, meta.space_file)
    return meta
