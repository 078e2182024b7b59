"""The vector files of an index: their names, checked loads, and merging a new generation.

Every file is a plain ``.npy`` of float32 (rows, dim); a compressed search copy may be float16. Writes go through ``atomic`` with
ordinary buffered writes, never a writable memory map: on a full disk a write through a map
is a SIGBUS (``Bus error``) that no handler can turn into a message, where a ``write`` fails
with ENOSPC and becomes one error line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from pathlib import Path

import numpy as np

from vsearch import atomic
from vsearch.errors import IndexCorruptError
from vsearch.storage.regular import require_regular

CHUNK_DIR = "chunks"
_GENERATION = re.compile(r"^(?:vectors|index)\.(\d{6,})\.")


def vectors_name(generation: int) -> str:
    """File name of one generation's vectors."""
    return f"vectors.{generation:06d}.npy"


def dba_name(generation: int, neighbours: int) -> str:
    """File name of the database-side augmented vectors for one generation."""
    return f"vectors.{generation:06d}.dba{neighbours}.npy"


def search_copy_name(generation: int, fmt: str, tag: str = "") -> str:
    """File name of one generation's search copy in format ``fmt`` (``tag``: the transform's
    short hash, so a refit never overwrites a copy a reader may still map)."""
    return f"vectors.{generation:06d}.{fmt}{'.' + tag if tag else ''}.npy"


def transform_name(digest: str) -> str:
    """File name of a PCA transform (``compress.Pca``), by its digest."""
    return f"pca.{digest[:16]}.npz"


def is_transform(name: str) -> bool:
    """Whether ``name`` is a transform file's name (see :func:`transform_name`)."""
    return name.startswith("pca.") and name.endswith(".npz")


def ann_name(generation: int) -> str:
    """File name of the Annoy index for one generation."""
    return f"index.{generation:06d}.ann"


def head_name(sha256: str) -> str:
    """File name of a head, by the hash of its matrix."""
    return f"head.{sha256[:12]}.npz"


def projected_name(vectors_file: str, sha256: str) -> str:
    """File name of the projected copy of a vectors file (``vectors.000003.npy`` ->
    ``vectors.000003.head-<sha12>.npy``): a generation that maps the same vectors file shares it."""
    stem = vectors_file[:-4] if vectors_file.endswith(".npy") else vectors_file
    return f"{stem}.head-{sha256[:12]}.npy"


def chunk_path(index_dir: Path, number: int) -> Path:
    """Path of one chunk of vectors embedded since the last consolidation."""
    return index_dir / CHUNK_DIR / f"{number:06d}.npy"


def generation_of(name: str) -> int | None:
    """The generation a vectors/Annoy file name belongs to, or None for other names."""
    found = _GENERATION.match(name)
    return int(found.group(1)) if found else None


def save(path: Path, array: np.ndarray) -> None:
    """Save a float32 array as ``.npy`` at ``path``, atomically."""
    with atomic.open_replacing(path) as out:
        np.save(out, np.ascontiguousarray(array, dtype=np.float32))


def load(path: Path, shape: tuple[int, int] | None, remedy: str, dtype: Any = np.float32) -> np.ndarray:
    """Memory-map a ``.npy`` of ``dtype`` (float32 unless said) read-only; refuse one that cannot
    be read or has another shape or dtype."""
    try:
        require_regular(path)  # np.load would wait on a FIFO forever
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an emptied file ("No data left in file")
        raise IndexCorruptError(f"cannot read {path}: {exc}; {remedy}") from None
    dtype = np.dtype(dtype)
    if array.dtype != dtype or array.ndim != 2 or (shape is not None and array.shape != shape):
        want = f"({shape[0]}, {shape[1]}) {dtype}" if shape else f"{dtype} rows"
        raise IndexCorruptError(f"{path} holds {array.shape} {array.dtype}, but meta.json says {want}; {remedy}")
    return array


#: How far a stored row's length may be from 1: float32 rows are within 1e-6, a float16 copy's
#: within about 5e-4 (11 bits of mantissa); a zeroed or rescaled row is far outside.
UNIT_TOLERANCE = 1e-2


def bad_rows(array: np.ndarray, block: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Rows an L2-normalised vectors file cannot hold, read block by block (memory: one block):
    (rows with a value that is not finite (NaN, infinity), other rows whose length is not 1
    within :data:`UNIT_TOLERANCE`, e.g. zeroed), each as sorted row numbers."""
    not_finite: list[np.ndarray] = []
    not_unit: list[np.ndarray] = []
    for start in range(0, len(array), block):
        rows = np.asarray(array[start:start + block], dtype=np.float32)
        finite = np.asarray(np.isfinite(rows).all(axis=1))
        norms = np.linalg.norm(np.where(finite[:, None], rows, 0.0), axis=1)
        not_finite.append(np.flatnonzero(~finite) + start)
        not_unit.append(np.flatnonzero(finite & (np.abs(norms - 1.0) > UNIT_TOLERANCE)) + start)
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(not_finite) if not_finite else empty), (np.concatenate(not_unit) if not_unit else empty)


def rows_problem(array: np.ndarray) -> str | None:
    """What :func:`bad_rows` finds in ``array``, in words (None when every row is a unit vector)."""
    not_finite, not_unit = bad_rows(array)
    parts = []
    for rows, what in ((not_finite, "values that are not finite (NaN or infinity)"),
                       (not_unit, "a length other than 1 (zeroed or changed)")):
        if len(rows):
            more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
            parts.append(f"row {int(rows[0])}{more} hold{'s' if len(rows) == 1 else ''} {what}")
    return "; ".join(parts) or None


def chunk_problem(path: Path, rows: int, dim: int) -> str | None:
    """Why a chunk cannot give ``rows`` vectors of ``dim`` (missing, truncated, damaged), or None."""
    try:
        require_regular(path)
        array = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, EOFError) as exc:
        return f"damaged ({(str(exc).splitlines() or ['empty'])[0][:80]})"
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[1] != dim or array.shape[0] < rows:
        return f"damaged (holds {array.shape} {array.dtype})"
    return None


def write_blocks(target: Path, shape: tuple[int, int], dtype: Any, blocks: Iterable[np.ndarray]) -> None:
    """Write a ``.npy`` of ``shape`` and ``dtype`` at ``target`` from ``blocks`` of rows, in order,
    with buffered writes (memory: one block), atomically."""
    dtype = np.dtype(dtype)
    rows = 0
    with atomic.open_replacing(target) as out:
        np.lib.format.write_array_header_1_0(out, {
            "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=dtype).reshape(-1, shape[1])
            rows += len(block)
            out.write(block.tobytes())
        if rows != shape[0]:
            raise ValueError(f"{target}: wrote {rows} rows, expected {shape[0]}")


def merge(target: Path, sources: Sequence[tuple[int | None, int | None]], dim: int,
          old: Callable[[], np.ndarray], chunk: Callable[[int], np.ndarray], block: int = 4096) -> None:
    """Write a new generation's vectors to ``target``: row j = ``sources[j]``, one of
    ``(None, row)`` (the committed vectors' row), or ``(chunk, chunk_row)``.

    Memory stays at one block of rows: the sources are memory maps, the output is written
    block by block with buffered writes.
    """
    opened: dict[int, np.ndarray] = {}
    old_vectors: np.ndarray | None = None  # opened only when a row comes from it
    with atomic.open_replacing(target) as out:
        np.lib.format.write_array_header_1_0(out, {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False, "shape": (len(sources), dim)})
        for start in range(0, len(sources), block):
            part = sources[start:start + block]
            buf = np.empty((len(part), dim), dtype=np.float32)
            for j, (number, row) in enumerate(part):
                if number is None:
                    if old_vectors is None:
                        old_vectors = old()
                    buf[j] = old_vectors[row]
                else:
                    if number not in opened:
                        if len(opened) > 64:  # bound open maps on huge collections
                            opened.clear()
                        opened[number] = chunk(number)
                    buf[j] = opened[number][row]
            out.write(buf.tobytes())
