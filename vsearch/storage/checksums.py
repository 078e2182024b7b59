"""Checksums of a generation's files: recorded in ``meta.json`` at each commit, verified by
``check()`` (:mod:`vsearch.api.check`) and by a rebuild before it keeps the old vectors.

Every file a generation names (vectors, search copy, transform, DBA copy, Annoy or IVF-PQ
index, head, projected copy) gets its size and SHA-256 in ``meta.json``'s optional
``checksums`` key. A checksum is computed once, when the file is written (the writer says so:
:meth:`~vsearch.storage.store.Store.wrote`), and carried from commit to commit after that: a
file damaged after its commit is never blessed by a later one. Reading never hashes: a query
stays as fast as it was (a cheap guard on its scores catches what matters there).

Why SHA-256: the fastest of hashlib's on these machines (SHA-NI: 868 MB/s against BLAKE2b's
456 MB/s on the shared 2-core box), and what the PCA and IVF-PQ records already use.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileSum", "file_sum", "problem", "record"]

#: Bytes read (and hashed) at a time: large enough that hashlib, which releases the GIL for
#: each update, spends its time hashing.
BLOCK = 8 << 20


@dataclass(frozen=True)
class FileSum:
    """What ``meta.json`` records of one file of a generation: its name in the index folder,
    its size in bytes and the SHA-256 (hex) of its bytes."""

    name: str
    size: int
    sha256: str


def file_sum(path: Path) -> FileSum:
    """The :class:`FileSum` of the file at ``path``, read in blocks (memory stays at one block)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            h.update(block)
            size += len(block)
    return FileSum(Path(path).name, size, h.hexdigest())


def problem(path: Path, recorded: FileSum) -> str | None:
    """What is wrong with the file at ``path`` against what was recorded at its commit (missing,
    not a file, another size, other bytes), or None when it is the file that was committed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not path.is_file():
        return "a folder or special file, not the file that was committed"
    if st.st_size != recorded.size:
        return f"{st.st_size} bytes, {recorded.size} recorded at its commit"
    try:
        found = file_sum(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if found.sha256 != recorded.sha256:
        return "its bytes differ from the SHA-256 recorded at its commit"
    return None


def record(index_dir: Path, names: Iterable[str], previous: Mapping[str, FileSum],
           fresh: Mapping[str, FileSum | None]) -> tuple[FileSum, ...]:
    """The checksums a commit records for ``names``: those in ``fresh`` (written since the last
    commit) as given, or computed now when given as None; the others carried over from
    ``previous`` (the last commit's), or computed now when it has none (a file from before
    checksums). A file that cannot be read gets no record (``check()`` reports it missing).

    Files to hash are hashed in threads (hashlib releases the GIL): a commit's vectors and its
    search copy take the time of the larger one on two cores.
    """
    wanted = sorted(set(names))
    known: dict[str, FileSum] = {}
    todo: list[str] = []
    for name in wanted:
        given = fresh.get(name) if name in fresh else previous.get(name)
        if given is not None:
            known[name] = given
        else:
            todo.append(name)

    def hashed(name: str) -> FileSum | None:
        try:
            return file_sum(Path(index_dir) / name)
        except OSError:  # missing or unreadable: nothing to record, check() says so
            return None

    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 1))) as pool:
            for name, found in zip(todo, pool.map(hashed, todo)):
                if found is not None:
                    known[name] = found
    return tuple(known[name] for name in wanted if name in known)
