"""Offline stage: bring an index up to date with a folder.

    scan folder -> compare with manifest (size, mtime; then content digest)
                -> decode new/changed files in worker threads -> embed in batches
                -> commit chunks as they fill -> consolidate a new generation

Decoding runs in threads, not processes: Pillow releases the GIL while it decodes and resizes,
so threads overlap with torch's own threads without pickling pixels between processes.
The model is loaded only when the first file that needs it arrives, so an unchanged re-run (or
one with only renames and deletions) never imports torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import images
from .errors import ImageDecodeError, VsearchError
from .models import DEFAULT_MODEL, Embedder, ModelId, load_model
from .store import FileEntry, Store

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16
DEFAULT_CHUNK_SIZE = 256


def default_workers() -> int:
    """Decode threads: one per core, at least two (decode waits on disk as well as CPU)."""
    return max(2, min(8, os.cpu_count() or 2))


@dataclass
class IndexSummary:
    """What one update did."""

    embedded: int = 0
    unchanged: int = 0
    moved: int = 0
    reused: int = 0  # new paths whose content was already embedded (copies, touched files)
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), this run
    skipped_before: int = 0  # unchanged files that were skipped on an earlier run
    scan_problems: list[tuple[str, str]] = field(default_factory=list)
    total: int = 0  # vectors in the index afterwards
    elapsed_s: float = 0.0
    model: str = ""
    loaded_model: bool = False


@dataclass(frozen=True)
class Progress:
    """Reported after each batch: files done of those that needed work."""

    done: int
    total: int
    embedded: int
    skipped: int


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class _Candidate:
    found: images.FoundFile
    previous: FileEntry | None  # same path, different stat


@dataclass(frozen=True)
class _Decoded:
    candidate: _Candidate
    digest: str | None
    pixels: np.ndarray | None = None
    reuse: FileEntry | None = None
    error: str | None = None


def file_digest(data: bytes) -> str:
    """Content digest used to recognise renamed, moved and copied files (BLAKE2b-128)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def update(
    store: Store,
    folder: Path,
    model_name: str | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    progress: ProgressFn | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> IndexSummary:
    """Embed what is new or changed under ``folder`` into ``store`` and commit a new generation.

    ``store`` must be open for writing. Returns counts of what happened; raises VsearchError for
    a missing or empty folder, or a model that does not match the index.
    """
    started = time.perf_counter()
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise VsearchError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise VsearchError(f"not a folder: {folder}")
    root = folder.resolve()
    store.bind(root, model_name)
    known = store.model_id
    model_name = known.name if known and not model_name else (model_name or DEFAULT_MODEL)
    summary = IndexSummary(model=model_name)

    # 1. Scan and compare by stat: unchanged files cost one stat and one indexed lookup.
    candidates: list[_Candidate] = []
    seen: set[str] = set()
    dirs: dict[str, int] = {}

    def problem(p: images.ScanProblem) -> None:
        summary.scan_problems.append((str(p.path), p.reason))

    found_any = False
    for found in images.scan_folder(root, exclude=[store.dir.resolve()], on_problem=problem):
        found_any = True
        seen.add(found.rel)
        parent = found.rel.rpartition("/")[0]
        if parent not in dirs:
            dirs[parent] = _mtime_ns(root / parent)
        entry = store.entry(found.rel)
        if entry is not None and entry.size == found.size and entry.mtime_ns == found.mtime_ns:
            summary.unchanged += 1
            if entry.skip_reason is not None:
                summary.skipped_before += 1
            continue
        candidates.append(_Candidate(found, entry))
    if not found_any and store.meta is None:
        raise VsearchError(f"no images found in {folder} (looked for {', '.join(sorted(images.IMAGE_EXTENSIONS))})")
    gone = {e.path: e for e in store.entries() if e.path not in seen}

    # 2. Decode (or recognise by digest) in threads; embed in batches; commit in chunks.
    embedder: Embedder | None = None
    preprocess = known.preprocess if known else None
    if candidates and preprocess is None:
        embedder = _load(store, model_name, device, threads, summary)
        preprocess = embedder.id.preprocess
    lookup_lock = threading.Lock()

    def known_vector(digest: str) -> FileEntry | None:
        with lookup_lock:
            return store.entry_by_digest(digest)

    def work(candidate: _Candidate) -> _Decoded:
        path = candidate.found.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            return _Decoded(candidate, None, error=f"unreadable ({exc.strerror or exc})")
        digest = file_digest(data)
        if store.meta is not None or candidate.previous is not None:
            reuse = known_vector(digest)
            if reuse is not None:
                return _Decoded(candidate, digest, reuse=reuse)
        try:
            assert preprocess is not None
            pixels = images.decode_for_model(data, preprocess.size, preprocess.framing, max_pixels=max_pixels)
        except ImageDecodeError as exc:
            return _Decoded(candidate, digest, error=str(exc))
        return _Decoded(candidate, digest, pixels=pixels)

    batch: list[_Decoded] = []
    pending_records: list[tuple[str, int, int, str]] = []
    pending_vectors: list[np.ndarray] = []
    done = 0

    def flush_chunk() -> None:
        if pending_records:
            store.add_chunk(list(pending_records), np.concatenate(pending_vectors))
            pending_records.clear()
            pending_vectors.clear()

    def run_batch() -> None:
        nonlocal embedder
        if not batch:
            return
        if embedder is None:
            embedder = _load(store, model_name, device, threads, summary)
        vectors = embedder.embed_images(np.stack([d.pixels for d in batch]))
        for d, _ in zip(batch, vectors):
            f = d.candidate.found
            pending_records.append((f.rel, f.size, f.mtime_ns, d.digest or ""))
        pending_vectors.append(vectors)
        summary.embedded += len(batch)
        batch.clear()
        if sum(len(v) for v in pending_vectors) >= chunk_size:
            flush_chunk()

    try:
        for d in _ordered_map(work, candidates, workers or default_workers(), prefetch=4 * batch_size):
            f = d.candidate.found
            if d.error is not None:
                store.record_skip(f.rel, f.size, f.mtime_ns, d.error)
                summary.skipped.append((f.rel, d.error))
                if on_skip:
                    on_skip(f.rel, d.error)
            elif d.reuse is not None:
                _apply_reuse(store, d, gone, summary)
            else:
                batch.append(d)
                if len(batch) >= batch_size:
                    run_batch()
            done += 1
            if progress and (not batch or done == len(candidates)):
                progress(Progress(done, len(candidates), summary.embedded, len(summary.skipped)))
        run_batch()
        flush_chunk()
    except KeyboardInterrupt:
        # Keep what is already embedded: the next run resumes after it.
        batch.clear()
        flush_chunk()
        raise

    # 3. Files gone from disk leave the index.
    summary.removed = store.mark_deleted(gone)
    store.record_dirs(dirs.items())
    if store.pending_changes():
        store.consolidate()
    summary.total = store.meta.count if store.meta else 0
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _apply_reuse(store: Store, d: _Decoded, gone: dict[str, FileEntry], summary: IndexSummary) -> None:
    f, source = d.candidate.found, d.reuse
    assert source is not None and d.digest is not None
    if source.path == f.rel:  # same file, only its mtime moved
        store.touch(source, f.size, f.mtime_ns)
        summary.unchanged += 1
    elif source.path in gone:  # renamed or moved: keep its row under the new path
        store.move(source, f.rel, f.size, f.mtime_ns)
        del gone[source.path]
        summary.moved += 1
    else:  # a copy of a file that is still there
        store.add_reference(f.rel, f.size, f.mtime_ns, d.digest, source)
        summary.reused += 1


def _load(store: Store, name: str, device: str, threads: int | None, summary: IndexSummary) -> Embedder:
    embedder = load_model(name, device=device, threads=threads)
    store.bind_model(embedder.id)
    summary.loaded_model = True
    return embedder


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _ordered_map(fn: Callable[[_Candidate], _Decoded], items: list[_Candidate], workers: int,
                 prefetch: int) -> Iterator[_Decoded]:
    """``map`` over a thread pool, in order, with at most ``prefetch`` results in flight.

    The bound keeps memory at a few batches of decoded pixels, whatever the collection size.
    """
    if not items:
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vsearch-decode") as pool:
        queue: deque[Future[_Decoded]] = deque()
        it = iter(items)
        try:
            for item in it:
                queue.append(pool.submit(fn, item))
                if len(queue) >= prefetch:
                    break
            while queue:
                result = queue.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    queue.append(pool.submit(fn, nxt))
                yield result
        finally:
            for fut in queue:
                fut.cancel()


def model_for_index(store: Store, device: str = "auto", threads: int | None = None) -> Embedder:
    """Load the model an index was built with, and check it still makes the same vectors."""
    assert store.meta is not None
    embedder = load_model(store.meta.model.name, device=device, threads=threads)
    if not embedder.id.same_vectors_as(store.meta.model):
        raise VsearchError(
            f"the model {store.meta.model.name} loaded here differs from the one that built the index "
            f"at {store.dir} (weights {embedder.id.weights_sha256[:12]} vs "
            f"{store.meta.model.weights_sha256[:12]}); rebuild the index"
        )
    return embedder


__all__ = ["IndexSummary", "Progress", "update", "model_for_index", "default_workers", "ModelId"]


def build_ann(store: Store, trees: int) -> "AnnInfo":
    """Build the Annoy index for the committed vectors (skipped when it already exists)."""
    from . import index as nn
    from .store import AnnInfo, ann_name

    meta = store.meta
    if meta is None:
        raise VsearchError(f"index at {store.dir} holds no vectors yet")
    if meta.ann is not None and meta.ann.trees == trees and (store.dir / meta.ann.file).exists():
        return meta.ann
    info = AnnInfo(file=ann_name(meta.generation), trees=trees)
    nn.build_annoy(store.vectors(), store.dir / info.file, trees)
    store.set_ann(info)
    return info
