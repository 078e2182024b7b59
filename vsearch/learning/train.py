"""Contrastive adaptation: a small linear projection head fitted on an index's frozen embeddings.

    positives  edited views of the collection's own photos (augment.py's seeded edits, made in
               memory and embedded with the index's model as a new query photo would be: ONNX
               where it can), each
               paired with its original's stored vector; with ``use_judgments``, relevant judged
               pairs too, and irrelevant judged results as hard negatives of their query
    loss       symmetric InfoNCE (NT-Xent) with in-batch negatives at temperature ``tau``;
               pairs of one group (views of one photo, judged-relevant images joined into
               components) are not counted as each other's negatives
    head       W: (dim_in, dim_out), started from the top principal directions of the vectors
               (so an untrained head keeps the cosines as well as a linear map to dim_out can),
               pulled back towards that start by ``anchor`` * ||W - W0||^2 so that what the
               positives do not speak about is not forgotten; x -> normalise(x @ W)

The fit is numpy only (Adam, hand-written gradients), deterministic under ``seed``: the same
index and options give the same head, byte for byte. Embedding the views dominates the time
(see docs/learning.md for the measurements).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vsearch.vectors import head as adapter
from vsearch.imaging import augment
from vsearch.imaging import images
from vsearch.errors import VsearchError
from vsearch.retrieval.query import QueryEncoder
from vsearch.storage import vectorfiles
from vsearch.storage.meta import AdapterInfo
from vsearch.storage.store import Store
from vsearch.vectors.space import SearchFiles, SearchSpace

log = logging.getLogger(__name__)

#: Edit kinds used for views, in order: the heavy "all" edit first, then single edits.
VIEW_KINDS: tuple[str, ...] = ("all", "crop", "colour", "rotate", "blur", "downscale", "jpeg", "flip")
#: Length of the projected vectors unless --dim says otherwise (or the vectors are shorter).
DEFAULT_DIM = 256
#: Long side (pixels) a photo is reduced to before its views are edited: twice the model's
#: 224 input, so a crop still has the pixels the model sees, at a fifth of the work at 1024.
VIEW_SIDE = 448

ProgressFn = Callable[[str, int, int], None]


#: The most passes over the pairs a fit makes. The default, 10, fits a head; a thousand times
#: that on a large collection would run for days, so more is a typo (``epochs=10**11``).
MAX_EPOCHS = 10_000


@dataclass(frozen=True)
class TrainOptions:
    """How a head is fitted (the CLI's ``vsearch train`` options, and the rest at their defaults)."""

    epochs: int = 10
    dim: int | None = None  # default: 256, or the vectors' own length when shorter
    seed: int = 0
    views: int = 2
    use_judgments: bool = False
    temperature: float = 0.1
    batch_size: int = 256
    lr: float = 1e-3
    anchor: float = 0.01  # weight of ||W - W0||^2 (flowers17: 1.0 and 0.1 learned less)

    def check(self, dim_in: int) -> None:
        """Refuse options that cannot train (one error line each)."""
        if self.epochs < 1:
            raise VsearchError(f"epochs= takes 1 or more (got {self.epochs})")
        if self.epochs > MAX_EPOCHS:
            raise VsearchError(f"epochs= takes at most {MAX_EPOCHS} (got {self.epochs})")
        if self.dim is not None and not 1 <= self.dim <= dim_in:
            raise VsearchError(f"dim= takes 1 to {dim_in} (the index's vectors have {dim_in}); got {self.dim}")
        if not 0 <= self.views <= len(VIEW_KINDS):
            raise VsearchError(f"views= takes 0 to {len(VIEW_KINDS)} (got {self.views})")
        if self.views == 0 and not self.use_judgments:
            raise VsearchError("views=0 leaves nothing to train on; give use_judgments=True or 1 view or more")
        if self.seed < 0:
            raise VsearchError(f"seed= takes 0 or more (got {self.seed})")


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` did: the head recorded in ``meta.json``, its pairs, the loss, the time."""

    adapter: AdapterInfo
    view_pairs: int
    judged_pairs: int
    hard_negatives: int
    loss_start: float
    loss_end: float
    embed_s: float
    fit_s: float


@dataclass(frozen=True)
class Pairs:
    """Positive pairs as vectors (anchors[i] with positives[i]), each pair's group (pairs of one
    group are not each other's negatives), and hard negatives by anchor: neg_of[i] -> rows of
    ``negatives``."""

    anchors: np.ndarray
    positives: np.ndarray
    groups: np.ndarray
    negatives: np.ndarray
    neg_of: dict[int, list[int]]


# --- positives -------------------------------------------------------------------------------


def embed_views(encoder: QueryEncoder, originals: Sequence[Path], views: int, seed: int, *,
                keys: Sequence[int] | None = None, workers: int = 2,
                progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``views`` edited copies of each original, embedded by the index's model (raw space).

    Returns (which original each view is of: int64 (n,), the model's own vectors float32 (n, dim):
    map them with ``SearchSpace.to_space`` into a compressed search space). An original
    that cannot be read is skipped with a warning. View ``k`` of original ``i`` is edited with
    a generator seeded by (``seed``, ``keys[i]``, k) (keys default to positions; ``train``
    passes index rows), so a view does not depend on which other photos are trained on.

    The edits are augment.py's, made in memory on the photo reduced to :data:`VIEW_SIDE` on its
    long side (every edit's strength is relative to the image size), then framed as the model
    expects: no copy is written or decoded again.
    """
    if encoder.head is not None:
        raise ValueError("views are embedded in the raw space: give an encoder with adapter=False")
    keys = list(range(len(originals))) if keys is None else [int(k) for k in keys]
    kinds = list(VIEW_KINDS[:views])
    pre = encoder.meta.model.preprocess
    owner: list[int] = []
    vecs: list[np.ndarray] = []

    def edit(i: int) -> list[np.ndarray]:
        try:
            img = images.load_image(originals[i], min_side=VIEW_SIDE)
        except VsearchError as exc:
            log.warning("warning: no views of %s: %s", originals[i], exc)
            return []
        img.thumbnail((VIEW_SIDE, VIEW_SIDE), Image.Resampling.LANCZOS)
        return [images.to_model_array(augment.KINDS[kind](img, np.random.default_rng(
            [seed, keys[i], list(augment.KINDS).index(kind)])), pre.size, pre.framing) for kind in kinds]

    batch_photos = max(1, 16 // max(1, len(kinds)))
    # Pillow releases the GIL in decode, resize and filters, ONNX Runtime in its forward pass:
    # the next photos are edited in threads while a batch is embedded (a bounded window ahead).
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ahead: deque[tuple[int, Future[list[np.ndarray]]]] = deque()
        following = 0
        while ahead or following < len(originals):
            while following < len(originals) and len(ahead) < 4 * batch_photos:
                ahead.append((following, pool.submit(edit, following)))
                following += 1
            batch = [ahead.popleft() for _ in range(min(batch_photos, len(ahead)))]
            made = [(i, job.result()) for i, job in batch]
            pixels = [p for _, views_of in made for p in views_of]
            if pixels:
                vecs.append(encoder.embedder.embed_images(np.stack(pixels)))
                owner.extend(i for i, views_of in made for _ in views_of)
            if progress:
                progress(batch[-1][0] + 1, len(originals))
    if not vecs:
        return np.zeros(0, dtype=np.int64), np.zeros((0, encoder.meta.dim), dtype=np.float32)
    return np.asarray(owner, dtype=np.int64), np.concatenate(vecs).astype(np.float32)


def judged_rows(store: Store) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(relevant, irrelevant) judged pairs as (query row, result row), for judgments whose
    query and result are both in the index (by content digest); text queries are left out."""
    from vsearch.learning import judgments  # read through one function: the judgments store may change shape

    found = judgments.read_judgments(store.dir)
    latest = getattr(judgments, "latest_verdicts", None)  # a later verdict on a pair replaces an earlier one
    if latest is not None:
        found = latest(found)
    cache: dict[str, int | None] = {}

    def row(digest: str) -> int | None:
        if digest not in cache:
            entry = store.entry_by_digest(digest) if not digest.startswith("text:") else None
            cache[digest] = entry.row if entry is not None else None
        return cache[digest]

    relevant: list[tuple[int, int]] = []
    irrelevant: list[tuple[int, int]] = []
    for j in found:
        q, r = row(j.query), row(j.result)
        if q is None or r is None or q == r:
            continue
        (relevant if _is_relevant(j) else irrelevant).append((q, r))
    return relevant, irrelevant


def _is_relevant(judgment: object) -> bool:
    """A judgment's verdict, whichever way it is recorded (``label`` or ``relevant``/``grade``)."""
    label = getattr(judgment, "label", None)
    if label is not None:
        return label == "relevant"
    relevant = getattr(judgment, "relevant", None)
    if relevant is not None:
        return bool(relevant)
    return (getattr(judgment, "grade", 0) or 0) > 0


def make_pairs(vectors: np.ndarray, view_owner: np.ndarray, view_vectors: np.ndarray, view_rows: np.ndarray,
               relevant: Sequence[tuple[int, int]] = (), irrelevant: Sequence[tuple[int, int]] = ()) -> Pairs:
    """Pairs from views (original's stored vector, its view) and judged rows of ``vectors``.

    ``view_rows[view_owner[i]]`` is the index row of view i's original. Relevant pairs join
    their images into one group (union-find), so judged-alike images are never negatives of each other.
    """
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for q, r in relevant:
        parent[find(q)] = find(r)
    dim = vectors.shape[1]

    def rows_of(rows: Sequence[int]) -> np.ndarray:
        return np.asarray(vectors[list(rows)], dtype=np.float32).reshape(len(rows), dim)

    owners = [int(view_rows[o]) for o in view_owner]
    queries, results = [q for q, _ in relevant], [r for _, r in relevant]
    a_rows = owners + queries + results  # judged pairs both ways
    anchors = np.concatenate([rows_of(owners), rows_of(queries), rows_of(results)])
    positives = np.concatenate([np.asarray(view_vectors, dtype=np.float32).reshape(len(owners), dim),
                                rows_of(results), rows_of(queries)])
    groups = np.asarray([find(r) for r in a_rows], dtype=np.int64)
    neg_rows = sorted({r for _, r in irrelevant})
    neg_index = {r: i for i, r in enumerate(neg_rows)}
    by_query: dict[int, list[int]] = {}
    for q, r in irrelevant:
        by_query.setdefault(q, []).append(neg_index[r])
    neg_of = {i: by_query[r] for i, r in enumerate(a_rows) if r in by_query}
    negatives = rows_of(neg_rows)
    return Pairs(anchors, positives, groups, negatives, neg_of)


# --- the fit ---------------------------------------------------------------------------------


def initial_head(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The top ``dim`` principal directions (uncentred: the map that keeps dot products best)."""
    x = np.asarray(vectors, dtype=np.float64)
    if dim == x.shape[1]:
        return np.eye(dim, dtype=np.float32)
    values, vecs = np.linalg.eigh(x.T @ x)
    top = vecs[:, np.argsort(-values, kind="stable")[:dim]]
    top *= np.where(top.sum(axis=0) < 0, -1.0, 1.0)  # a sign fixed by the data, not by LAPACK
    return np.ascontiguousarray(top, dtype=np.float32)


def _normalise(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    return u / n, n


def _back_normalise(z: np.ndarray, n: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Gradient through z = u / ||u||."""
    return (dz - z * (z * dz).sum(axis=1, keepdims=True)) / n


def _softmax_grad(logits: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of each row against its diagonal entry, and d loss / d logits."""
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    idx = np.arange(len(logits))
    loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - logits[idx, idx]))
    g = e / s
    g[idx, idx] -= 1.0
    return loss, g / len(logits)


def batch_loss(w: np.ndarray, xa: np.ndarray, xp: np.ndarray, xn: np.ndarray, groups: np.ndarray,
               hard: np.ndarray, tau: float) -> tuple[float, np.ndarray]:
    """Symmetric InfoNCE of one batch and its gradient in ``w``.

    Row i's positive is column i; the other positives are negatives unless of the same group;
    ``xn`` are extra negatives (hard ones) seen by the anchors where ``hard`` (B, M) is True.
    """
    za, na = _normalise(xa @ w)
    zp, np_ = _normalise(xp @ w)
    b = len(xa)
    same = (groups[:, None] == groups[None, :]) & ~np.eye(b, dtype=bool)
    sim = za @ zp.T / tau
    sim = np.where(same, -1e9, sim)
    if len(xn):
        zn, nn_ = _normalise(xn @ w)
        simn = np.where(hard, za @ zn.T / tau, -1e9)
        logits = np.concatenate([sim, simn], axis=1)
    else:
        logits = sim
    loss_r, g_r = _softmax_grad(logits)
    loss_c, g_c = _softmax_grad(np.ascontiguousarray(sim.T))
    g_pp = g_r[:, :b] + g_c.T  # d loss / d sim (anchors x positives)
    loss = 0.5 * (loss_r + loss_c)
    g_pp *= 0.5
    dza = g_pp @ zp / tau
    dzp = g_pp.T @ za / tau
    grad = xa.T @ _back_normalise(za, na, dza) + xp.T @ _back_normalise(zp, np_, dzp)
    if len(xn):
        g_n = 0.5 * g_r[:, b:]
        dza_n = g_n @ zn / tau
        dzn = g_n.T @ za / tau
        grad += xa.T @ _back_normalise(za, na, dza_n) + xn.T @ _back_normalise(zn, nn_, dzn)
    return loss, grad


def fit_head(pairs: Pairs, w0: np.ndarray, options: TrainOptions) -> tuple[adapter.Head, list[float]]:
    """Fit W from ``w0`` on ``pairs`` with Adam; the head and the mean loss of each epoch."""
    if len(pairs.anchors) < 2:
        raise VsearchError("too few pairs to train on (need 2 or more): index more photos, add views or judgments")
    rng = np.random.default_rng(options.seed)
    w = w0.astype(np.float32).copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step = 0
    losses = []
    n = len(pairs.anchors)
    bs = min(options.batch_size, n)
    for _ in range(options.epochs):
        order = rng.permutation(n)
        total, batches = 0.0, 0
        for start in range(0, n - bs + 1, bs):  # a short last batch is dropped (fewer negatives)
            idx = np.sort(order[start:start + bs])
            neg_cols = sorted({c for i in idx for c in pairs.neg_of.get(int(i), [])})
            hard = np.zeros((len(idx), len(neg_cols)), dtype=bool)
            col = {c: j for j, c in enumerate(neg_cols)}
            for a, i in enumerate(idx):
                for c in pairs.neg_of.get(int(i), []):
                    hard[a, col[c]] = True
            xn = pairs.negatives[neg_cols] if neg_cols else np.zeros((0, w.shape[0]), dtype=np.float32)
            loss, grad = batch_loss(w, pairs.anchors[idx], pairs.positives[idx], xn, pairs.groups[idx], hard,
                                    options.temperature)
            grad = grad + 2.0 * options.anchor * (w - w0)
            step += 1
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            mhat = m / (1 - beta1 ** step)
            vhat = v / (1 - beta2 ** step)
            w = (w - options.lr * mhat / (np.sqrt(vhat) + eps)).astype(np.float32)
            total += loss
            batches += 1
        losses.append(total / max(batches, 1))
    return adapter.Head(np.ascontiguousarray(w, dtype=np.float32)), losses


# --- the command -----------------------------------------------------------------------------


def train(index_dir: Path, options: TrainOptions = TrainOptions(), *, device: str = "auto",
          progress: ProgressFn | None = None) -> TrainResult:
    """Fit a head on the index at ``index_dir`` and commit it (``meta.json``'s ``adapter``).

    Holds the writer's lock throughout, so no build commits in between. Raises
    :class:`VsearchError` for options that cannot train, no judgments with ``use_judgments``,
    and too few pairs.
    """
    with Store.open(Path(index_dir), write=True, derived=SearchFiles()) as store:
        if store.meta is None or store.meta.count == 0:
            raise VsearchError(f"index at {store.dir} holds no vectors yet; "
                               f"call `build_index({store.root or 'FOLDER'})` first")
        meta = store.meta
        dim_in = meta.space_dim  # the head works on the search space (after the vectors= transform)
        options.check(dim_in)
        if options.dim is None:
            options = dataclasses.replace(options, dim=min(DEFAULT_DIM, dim_in))
        assert options.dim is not None
        vectors = np.asarray(SearchSpace.of(store).vectors(), dtype=np.float32)
        started = time.perf_counter()
        relevant: list[tuple[int, int]] = []
        irrelevant: list[tuple[int, int]] = []
        if options.use_judgments:
            relevant, irrelevant = judged_rows(store)
            if not relevant:
                raise VsearchError(f"use_judgments=True: no relevant judged pair of indexed images in {store.dir}; "
                                   "judge some results first (`Index.judge` or the page)")
        owner = np.zeros(0, dtype=np.int64)
        views = np.zeros((0, dim_in), dtype=np.float32)
        rows = np.arange(meta.count)
        if options.views:
            paths = [store.abs_path(p) for p in store.paths_by_row()]
            encoder = QueryEncoder(store, device=device, adapter=False)
            owner, views = embed_views(encoder, paths, options.views, options.seed, keys=rows.tolist(),
                                       progress=(lambda d, t: progress("views", d, t)) if progress else None)
            views = SearchSpace.of(store).to_space(views) if len(views) else np.zeros((0, dim_in), dtype=np.float32)
        embed_s = time.perf_counter() - started
        started = time.perf_counter()
        pairs = make_pairs(vectors, owner, views, rows, relevant, irrelevant)
        head, losses = fit_head(pairs, initial_head(vectors, options.dim), options)
        fit_s = time.perf_counter() - started
        info = AdapterInfo(file=vectorfiles.head_name(head.sha256), sha256=head.sha256, dim_in=dim_in,
                           dim_out=options.dim, trained_on=len(pairs.anchors), epochs=options.epochs,
                           seed=options.seed, judgments=2 * len(relevant))
        head.save(store.dir / info.file)
        # The projected copy is made again from this head (a damaged one is repaired): a head
        # trained again to the same hash has the same file names. Both get new checksums.
        projected = vectorfiles.projected_name(meta.space_file, head.sha256)
        (store.dir / projected).unlink(missing_ok=True)
        store.wrote(info.file)
        store.wrote(projected)
        old = meta.adapter
        store.write_meta(dataclasses.replace(meta, adapter=info))  # writes the projected copy first
        if old is not None and old.file != info.file:
            (store.dir / old.file).unlink(missing_ok=True)
        return TrainResult(info, len(owner), 2 * len(relevant), len(irrelevant), losses[0], losses[-1],
                           embed_s, fit_s)


def remove_head(index_dir: Path) -> bool:
    """Drop the trained head from the index (``vsearch train --remove``); whether there was one."""
    with Store.open(Path(index_dir), write=True, derived=SearchFiles()) as store:
        if store.meta is None or store.meta.adapter is None:
            return False
        old = store.meta.adapter
        store.write_meta(dataclasses.replace(store.meta, adapter=None))
        (store.dir / old.file).unlink(missing_ok=True)
        return True
