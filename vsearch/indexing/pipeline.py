"""Offline stage: bring an index up to date with a folder.

    scan folder -> compare with manifest (size, mtime; then content digest)
                -> read + digest + decode new/changed files in worker threads
                -> embed in batches (main thread) -> commit chunks as they fill
                -> consolidate a new generation

Why threads and not processes: Pillow releases the GIL while it decodes and resizes, and hashlib
while it hashes, so threads overlap with torch's own threads without pickling pixels between
processes. The model is loaded only when the first file that needs it arrives, so an unchanged
re-run (or one with only renames and deletions) never imports torch; which model, and through
which runtime, is embedders.py's business.

Files skipped before (unreadable, corrupt, too large) are tried again on every run: they are
few, and making a file readable or installing a codec changes no size or mtime.

What the run holds in memory: pixels for at most ``prefetch`` decoded files, vectors for at most
one chunk, plus a path and three integers per new or changed file (so that the progress bar knows
its total) and the set of paths seen (to find deletions). Nothing holds all the images or all
the vectors; consolidation streams them block by block (see Store.consolidate).

Crash safety: vectors reach the disk chunk by chunk (Store.add_chunk), so a killed run loses at
most the chunk being filled; the next run finds the committed files unchanged by stat and
carries on with the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from vsearch.vectors import compress
from vsearch.imaging import images
from vsearch.indexing import rayengine
from vsearch.models.sources import ModelSource
from vsearch.errors import ImageDecodeError, IndexBusyError, VsearchError
from vsearch.defaults import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE
from vsearch.models.loading import DEFAULT_MODEL, Embedder, ModelId, Preprocess, check_device
from vsearch.indexing.scan import Candidate, scan, walk
from vsearch.storage.store import FORMAT_KEY, LOCK_FILE, FileEntry, Store, file_digest
from vsearch.vectors.space import SearchFiles

log = logging.getLogger(__name__)

#: Vectors per committed chunk: what a crash can lose, and the most vectors held at once.
DEFAULT_CHUNK_SIZE = 256


#: Where files are read, decoded and embedded (IndexOptions.engine).
ENGINES = ("local", "ray")


def default_workers() -> int:
    """Decode threads: one per core, at least two, at most eight.

    At least two because a decode thread also waits on the disk. On the 2-core machines,
    benchmarks/bench_embed.py --sweep found 1 to 4 workers within noise of each other (5.1 to
    6.3 img/s on 12-MP JPEGs, load average 9.5): the CPU, not the worker count, is the limit.
    """
    return max(2, min(8, os.cpu_count() or 2))


@dataclass(frozen=True)
class IndexOptions:
    """How an update embeds: the model, batch and chunk sizes, threads, limits, exclusions.

    ``model``: a model name (None: the index's own model, else :data:`DEFAULT_MODEL`).
    ``batch_size``: images per forward pass. ``chunk_size``: vectors per committed chunk (what a
    crash can lose). ``workers``: decode threads (None: :func:`default_workers`). ``device``:
    auto, cpu, cuda or mps. ``threads``: the model runtime's CPU threads (None: its own default).
    ``max_pixels``: images larger than this are skipped (decompression bombs). ``engine``: where
    files are read, decoded and embedded: ``local`` (threads and the model in this process) or
    ``ray`` (Ray Data model actors, see rayengine.py; ``workers`` is then the number of actors),
    on the cluster at ``address`` (None: a local one). ``exclude``:
    shell-style globs (case-sensitive, ``*`` also crosses folders) for files to leave out, matched
    against the path relative to the folder, against each of its folders, and, for a pattern
    without ``/``, against each single name: ``*.png``, ``thumbs``, ``2019/raw``. A file that
    an exclusion leaves out leaves the index too; exclusions apply to the run that gives them.
    ``vectors``: the search copy's format (``compress.parse_format``: fp32, fp16, pcaD, pcaDw;
    None: the index's own, :data:`compress.DEFAULT_FORMAT` for a new index); a change remakes
    only the search copy. ``refit``: fit the PCA again on the current vectors.
    """

    model: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    workers: int | None = None
    device: str = "auto"
    threads: int | None = None
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    exclude: tuple[str, ...] = ()
    engine: str = "local"
    address: str | None = None
    vectors: str | None = None
    refit: bool = False

    def __post_init__(self) -> None:
        if self.vectors is not None:
            compress.parse_format(self.vectors)  # a bad name fails before anything is embedded
        # One pattern, a list or a generator is accepted and kept as a tuple (hashable); a bare
        # string must not become a tuple of one-character patterns ("*" would exclude everything).
        exclude = (self.exclude,) if isinstance(self.exclude, str) else tuple(self.exclude)
        object.__setattr__(self, "exclude", exclude)
        for name in ("batch_size", "chunk_size", "workers", "threads", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise VsearchError(f"{name.replace('_', '-')} must be 1 or more (got {value})")
        if self.batch_size > MAX_BATCH_SIZE:
            raise VsearchError(f"batch_size= takes at most {MAX_BATCH_SIZE} images (got {self.batch_size})")
        for pattern in self.exclude:
            if not pattern.strip("/"):
                raise VsearchError("exclude= needs a pattern, e.g. '*.png', 'thumbs' or '2019/raw'")
        if self.engine not in ENGINES:
            raise VsearchError(f"unknown engine {self.engine!r}; choose {' or '.join(ENGINES)}")
        if self.address and self.engine != "ray":
            raise VsearchError("address= is for the Ray engine: add engine='ray'")
        # Checked here, not when a model loads: a run with nothing new to embed loads none.
        check_device(self.device)
        if self.model is not None and not self.model.strip():
            raise VsearchError("model= names no model; leave it out for the index's own model (or the default)")


@dataclass
class IndexSummary:
    """What one update did."""

    embedded: int = 0
    unchanged: int = 0
    moved: int = 0
    reused: int = 0  # new paths whose content was already embedded (copies, touched files)
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), this run
    skipped_before: int = 0  # unchanged files skipped on an earlier run that failed the same way again
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
SkipFn = Callable[[str, str], None]


@dataclass(frozen=True)
class _Decoded:
    candidate: Candidate
    digest: str | None
    pixels: np.ndarray | None = None
    reuse: FileEntry | None = None
    error: str | None = None


@dataclass(frozen=True)
class _EmbeddedBatch:
    """What an engine hands back: files done, in order (each skipped, known content to reuse, or
    embedded), and one row of ``vectors`` per embedded file, in the same order."""

    files: list[_Decoded]
    vectors: np.ndarray | None = None


#: The seam between the pipeline and where embedding runs: pending files in, embedded batches out.
_Engine = Callable[[list[Candidate]], Iterator[_EmbeddedBatch]]


def check_folder(folder: Path) -> Path:
    """The folder to index, resolved; VsearchError when it is missing or not a folder.

    Callers check before they create an index directory, so a typo leaves nothing behind.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise VsearchError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise VsearchError(f"not a folder: {folder}")
    return folder.resolve()


@contextlib.contextmanager
def open_for_update(index_dir: Path, **open_args: Any) -> Iterator[Store]:
    """Open (or create) an index for writing; if the block fails before the index holds any
    work, leave the folder as it was found.

    A first build that fails (no network for its model, Ctrl-C before the first chunk, no
    images) would otherwise leave ``chunks/``, ``lock`` and ``manifest.sqlite`` behind, and the
    next query would report an index that was "never completed". So: a folder this call created
    is removed (with the parents it created); a folder that existed loses only what was added.
    An index with a committed generation or committed chunks is kept as it is: the next run
    resumes from it. Nothing is removed while another writer holds the index's lock.
    ``open_args`` go to :meth:`Store.open`.
    """
    index_dir = Path(index_dir).expanduser().absolute()
    created = _first_missing(index_dir)
    before = set(os.listdir(index_dir)) if created is None and index_dir.is_dir() else set()
    try:
        store = Store.open(index_dir, write=True, derived=SearchFiles(), **open_args)
    except IndexBusyError:
        raise  # another writer's index: not ours to touch
    except BaseException:
        _leave_as_found(index_dir, created, before)
        raise
    try:
        yield store
    except BaseException:
        try:
            keep = store.meta is not None or _holds_work(store)
        except Exception:  # cannot tell: removing nothing is the safe side
            keep = True
        store.close()
        if not keep:
            _leave_as_found(index_dir, created, before)
        raise
    finally:
        store.close()


def _first_missing(path: Path) -> Path | None:
    """The topmost folder on the way to ``path`` that does not exist yet (None: it exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _holds_work(store: Store) -> bool:
    """Whether the manifest holds a committed vector (a row or a chunk), not only skips."""
    return any(e.skip_reason is None for e in store.entries())


def _leave_as_found(index_dir: Path, created: Path | None, before: set[str]) -> None:
    """Remove what a failed first run added, holding the index's lock so no writer races it."""
    lock_path = index_dir / LOCK_FILE
    fd = None
    try:
        if lock_path.exists():
            fd = os.open(lock_path, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises when another writer came in
        if created is not None:
            shutil.rmtree(created)
            return
        for name in set(os.listdir(index_dir)) - before:
            path = index_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    except OSError as exc:  # the original error matters more than this one
        log.warning("could not remove the unfinished index at %s (%s)", index_dir, exc)
    finally:
        if fd is not None:
            os.close(fd)


def update(
    store: Store,
    folder: Path,
    options: IndexOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    on_skip: SkipFn | None = None,
    embedder: Embedder | None = None,
) -> IndexSummary:
    """Embed what is new or changed under ``folder`` into ``store`` and commit a new generation.

    ``store`` must be open for writing (see :func:`open_for_update`). Files are compared with
    the manifest by size and mtime, then by content digest: a renamed or moved file keeps its
    vector, a copy shares one, a deleted file leaves the vectors, and only new or changed
    content is decoded and embedded. Files skipped on an earlier run are tried again (a file
    made readable keeps its mtime); they are few, and one that fails the same way again is
    counted in ``skipped_before``, not reported again.

    ``options``: see :class:`IndexOptions`. ``embedder``: an already loaded model to use instead
    of loading ``options.model`` (a caller that indexes several folders, or a benchmark, pays
    the load once). ``progress`` gets a :class:`Progress` after each batch; ``on_skip`` gets
    ``(path, reason)`` for each file that cannot be embedded. The model is acquired through
    :class:`embedders.ModelSource` (ONNX Runtime from the user's model cache when it can).

    Returns counts of what happened; raises VsearchError for a missing or empty folder, or a
    model that does not match the index.
    """
    started = time.perf_counter()
    options = options or IndexOptions()
    root = check_folder(folder)
    model_name = options.model
    if embedder is not None:
        model_name = model_name or embedder.id.name
        if model_name != embedder.id.name:
            raise VsearchError(f"model name {model_name!r} differs from the given model {embedder.id.name!r}")
    # Checked before bind records the root: a failed first run must not tie the index to this
    # folder. Lazy: the walk stops at the first image.
    if store.meta is None and next(walk(store, root, options.exclude, lambda p: None), None) is None:
        raise VsearchError(
            f"no images found in {folder} (looked for {', '.join(sorted(images.IMAGE_EXTENSIONS))}"
            + (", outside the exclude= patterns)" if options.exclude else ")")
        )
    store.bind(root, model_name)
    known = store.model_id
    model_name = known.name if known and not model_name else (model_name or DEFAULT_MODEL)
    summary = IndexSummary(model=model_name)

    found = scan(store, root, options.exclude)
    summary.unchanged += found.unchanged
    summary.scan_problems.extend(found.problems)
    candidates, dirs = found.candidates, found.dirs
    gone = {e.path: e for e in store.entries() if e.path not in found.seen}
    found.seen.clear()  # the largest per-file structure; not needed past here

    if candidates:
        source = ModelSource(model_name, known=known, index_dir=store.dir, device=options.device,
                             threads=options.threads, given=embedder)
        pipeline = _Pipeline(store, options, source, summary, gone)
        try:
            pipeline.run(candidates, progress, on_skip)
        finally:
            summary.loaded_model = source.loaded

    # Files gone from disk (or now excluded) leave the index.
    summary.removed = store.mark_deleted(gone)
    store.record_dirs(dirs.items())
    _choose_format(store, options)
    if store.pending_changes():
        store.consolidate()  # makes the search copy too
    elif store.search_copy_stale():
        store.refresh_search_copy()  # another vectors= format, or refit=True: no image embedded again
    summary.total = store.meta.count if store.meta else 0
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _choose_format(store: Store, options: IndexOptions) -> None:
    """Record the search copy's format: the one asked for, else the index's own, else (a new
    index) the default; refuse a PCA the model cannot take before anything is committed."""
    fmt = compress.parse_format(options.vectors) if options.vectors is not None else None
    if fmt is None and store.manifest.get(FORMAT_KEY) is None:
        # A new index takes the default; one built before formats existed stays fp32.
        fmt = compress.parse_format(compress.DEFAULT_FORMAT if store.meta is None else "fp32")
    if fmt is not None and store.model_id is not None:
        fmt.check(store.model_id.dim)  # D below the model's dimension; the count is checked at the commit
    store.choose_format(fmt, refit=options.refit)


class _Pipeline:
    """Decode in worker threads, embed in batches, commit in chunks.

    The manifest connection is shared with the workers (their digest lookups), so every use of
    the store in this class goes through ``self._lock``. Which model embeds, and when it is
    loaded, is the :class:`ModelSource`'s business.
    """

    def __init__(self, store: Store, options: IndexOptions, source: ModelSource, summary: IndexSummary,
                 gone: dict[str, FileEntry]) -> None:
        self.store = store
        self.options = options
        self.source = source
        self.summary = summary
        self.gone = gone
        self._lock = threading.Lock()
        root = store.root
        assert root is not None  # store.bind recorded it
        self.root = root
        self._records: list[tuple[str, int, int, str]] = []
        self._vectors: list[np.ndarray] = []
        known = store.model_id
        self.preprocess: Preprocess | None = known.preprocess if known else None
        if source.ready:
            self._bind(source.get())
        # Digest lookups only find committed rows, which exist once a first generation does.
        self._lookup = store.meta is not None

    def run(self, candidates: list[Candidate], progress: ProgressFn | None, on_skip: SkipFn | None) -> None:
        if self.preprocess is None:  # a new index: the model decides the pixels it needs
            self._bind(self.source.get())
        engine: _Engine = self._ray_batches if self.options.engine == "ray" else self._local_batches
        summary, done = self.summary, 0
        try:
            with contextlib.closing(engine(candidates)) as batches:  # type: ignore[type-var]  # a generator: it has close()
                for batch in batches:
                    for d in batch.files:
                        if d.error is not None:
                            self._skip(d, on_skip)
                        elif d.reuse is not None:
                            self._reuse(d)
                    self._add(batch)
                    done += len(batch.files)
                    if progress:
                        progress(Progress(done, len(candidates), summary.embedded, len(summary.skipped)))
            self._flush()
        except BaseException:
            # Ctrl-C, or a failure: keep what is already embedded, so the next run resumes
            # after it. A partial batch is dropped (it has no vectors yet).
            try:
                self._flush()
            except VsearchError as exc:
                # A full or failing disk, usually the very failure being raised: the user gets that
                # one error line, not a traceback (or a second line saying the same).
                log.debug("could not save the last chunk: %s", exc)
            except Exception:
                log.exception("could not save the last chunk")
            raise

    def _local_batches(self, candidates: list[Candidate]) -> Iterator[_EmbeddedBatch]:
        """The local engine: decode in worker threads, embed in this process, batch by batch.

        A skipped or known file comes back at once; decoded ones wait for a full batch.
        """
        batch_size = self.options.batch_size
        workers = self.options.workers or default_workers()
        pending: list[_Decoded] = []
        for d in _ordered_map(self._work, candidates, workers, prefetch=4 * batch_size):
            if d.error is not None or d.reuse is not None:
                yield _EmbeddedBatch([d])
                continue
            pending.append(d)
            if len(pending) >= batch_size:
                yield self._embed(pending)
                pending = []
        if pending:
            yield self._embed(pending)

    def _embed(self, batch: list[_Decoded]) -> _EmbeddedBatch:
        if not self.source.ready:
            self._bind(self.source.get())
        # Only decoded files are batched: each has its pixels.
        vectors = self.source.embed(np.stack([cast(np.ndarray, d.pixels) for d in batch]))
        return _EmbeddedBatch(batch, vectors)

    def _ray_batches(self, candidates: list[Candidate]) -> Iterator[_EmbeddedBatch]:
        """The Ray engine (rayengine.py): workers read, decode and embed; this process keeps the index.

        The model is resolved here once (and checked against the index); each actor then loads
        the same one. Content already in the index is recognised by digest on the workers and
        reused here, as the local engine does.
        """
        embedder = self.source.get()
        self._bind(embedder)
        spec = rayengine.spec_for(embedder, self.store.dir, self.options.device, self.options.threads)
        settings = rayengine.RaySettings(self.options.address, self.options.workers)
        with self._lock:
            known = frozenset(e.digest for e in self.store.entries() if e.row is not None and e.digest)
        by_rel = {c.rel: c for c in candidates}
        todo = [c.rel for c in candidates]
        while todo:
            retry: list[str] = []
            for batch in rayengine.embed_files(self.root, todo, spec, batch_size=self.options.batch_size,
                                               max_pixels=self.options.max_pixels, known_digests=known,
                                               settings=settings):
                files: list[_Decoded] = []
                for f in batch.files:
                    c = by_rel[f.rel]
                    if f.error is not None:
                        files.append(_Decoded(c, f.digest, error=f.error))
                    elif f.known:
                        assert f.digest is not None
                        with self._lock:
                            reuse = self.store.entry_by_digest(f.digest)
                        if reuse is None:  # its row went while the workers ran: embed it after all
                            retry.append(f.rel)
                            continue
                        files.append(_Decoded(c, f.digest, reuse=reuse))
                    else:
                        files.append(_Decoded(c, f.digest))
                yield _EmbeddedBatch(files, batch.vectors)
            todo, known = retry, frozenset()

    def _add(self, batch: _EmbeddedBatch) -> None:
        """Hold the batch's vectors for the chunk being filled; commit the chunk once full."""
        embedded = [d for d in batch.files if d.error is None and d.reuse is None]
        if not embedded:
            return
        assert batch.vectors is not None and len(batch.vectors) == len(embedded)
        for d in embedded:
            c = d.candidate
            self._records.append((c.rel, c.size, c.mtime_ns, d.digest or ""))
        self._vectors.append(batch.vectors)
        self.summary.embedded += len(embedded)
        if len(self._records) >= self.options.chunk_size:
            self._flush()

    def _skip(self, d: _Decoded, on_skip: SkipFn | None) -> None:
        c, reason = d.candidate, d.error
        assert reason is not None
        if c.skipped == reason:  # retried, and failed as before: known, not news
            self.summary.unchanged += 1
            self.summary.skipped_before += 1
            return
        with self._lock:
            self.store.record_skip(c.rel, c.size, c.mtime_ns, reason)
        self.summary.skipped.append((c.rel, reason))
        if on_skip:
            on_skip(c.rel, reason)

    def _work(self, c: Candidate) -> _Decoded:
        """In a worker thread: read, digest, recognise known content, else decode."""
        path = self.root / c.rel
        try:
            data = images.read_image_bytes(path)
        except ImageDecodeError as exc:
            return _Decoded(c, None, error=str(exc))
        digest = file_digest(data)
        if self._lookup or c.known:
            with self._lock:
                reuse = self.store.entry_by_digest(digest)
            if reuse is not None:
                return _Decoded(c, digest, reuse=reuse)
        assert self.preprocess is not None
        try:
            pixels = images.decode_for_model(data, self.preprocess.size, self.preprocess.framing,
                                             max_pixels=self.options.max_pixels)
        except ImageDecodeError as exc:
            return _Decoded(c, digest, error=str(exc))
        return _Decoded(c, digest, pixels=pixels)

    def _flush(self) -> None:
        if self._records:
            with self._lock:
                self.store.add_chunk(list(self._records), np.concatenate(self._vectors))
            self._records.clear()
            self._vectors.clear()

    def _reuse(self, d: _Decoded) -> None:
        c, source, summary = d.candidate, d.reuse, self.summary
        assert source is not None and d.digest is not None
        with self._lock:
            if source.path == c.rel:  # same file, only its mtime moved
                self.store.touch(source, c.size, c.mtime_ns)
                summary.unchanged += 1
            elif source.path in self.gone:  # renamed or moved: keep its row under the new path
                self.store.move(source, c.rel, c.size, c.mtime_ns)
                del self.gone[source.path]
                summary.moved += 1
            else:  # a copy of a file that is still there
                self.store.add_reference(c.rel, c.size, c.mtime_ns, d.digest, source)
                summary.reused += 1

    def _bind(self, embedder: Embedder) -> None:
        with self._lock:
            self.store.bind_model(embedder.id)
        self.preprocess = embedder.id.preprocess


def _ordered_map(fn: Callable[[Candidate], _Decoded], items: list[Candidate], workers: int,
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


__all__ = [
    "IndexOptions",
    "IndexSummary",
    "ModelId",
    "Progress",
    "check_folder",
    "default_workers",
    "open_for_update",
    "update",
]
