"""Compressed search vectors: the formats ``build-index --vectors`` takes, and the PCA transform.

    fp32      the float32 source vectors, searched as they are (no search copy)
    fp16      the same vectors stored as float16: half the memory, cosines within about 1e-3
    pcaD      centred and projected on the top D principal components of the collection,
              L2-normalised again, stored as float32
    pcaDw     the same, whitened (each component divided by its standard deviation)
    pcaD[w]-fp16  either, stored as float16 (half the bytes of the float32 copy)

The float32 source vectors stay the index's source of truth; a *search copy* in the chosen format
is made beside them at each commit (:func:`make_search_copy`, called by the storage layer's commit), and every query vector goes through the same
transform (:func:`to_space`), so the stored-row, torch and ONNX paths land in one space. Scores
are cosines in that space.

numpy only: the stored-vector fast path imports this module and must stay free of torch.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vsearch import atomic
from vsearch.errors import IndexCorruptError, VsearchError
from vsearch.storage import vectorfiles
from vsearch.storage.formats import ALLOWED, DEFAULT_FORMAT, FP32, VectorFormat, parse_format
from vsearch.storage.meta import FormatInfo
from vsearch.storage.store import TRANSFORM_KEY, Store
from vsearch.storage.regular import require_regular

log = logging.getLogger(__name__)

#: Rows transformed at a time: bounds the temporaries of :meth:`Pca.apply` and :func:`encode`.
BLOCK = 16384
#: Rows a PCA is fitted on, at most (a seeded sample of the collection).
DEFAULT_SAMPLE = 100_000
#: Added to each variance before whitening, relative to the largest: a component with (almost)
#: no variance is not blown up to the size of the others.
WHITEN_EPS = 1e-6

def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length; rows of zeros stay zero."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Pca:
    """A fitted PCA: ``mean`` (D,), ``components`` (d, D) (rows: unit principal axes, largest
    variance first), ``scale`` (d,) the whitening factors, or None when not whitened."""

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray | None = None

    @property
    def dim(self) -> int:
        """Dimensions out (d)."""
        return int(self.components.shape[0])

    @property
    def in_dim(self) -> int:
        """Dimensions in (the model's D)."""
        return int(self.components.shape[1])

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the transform's numbers: what ``meta.json`` records and checks."""
        h = hashlib.sha256()
        for part in (self.mean, self.components, self.scale):
            h.update(b"-" if part is None else np.ascontiguousarray(part, dtype="<f4").tobytes())
            h.update(b"|")
        return h.hexdigest()

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x`` (n, D) projected, whitened if fitted so, L2-normalised: float32 (n, d).

        Works block by block (``BLOCK`` rows), so a memory-mapped input is never copied whole.
        """
        x = np.asarray(x)  # a memory map stays one (a view, no copy)
        one = x.ndim == 1
        rows = x[None] if one else x
        if rows.ndim != 2 or rows.shape[1] != self.in_dim:
            raise ValueError(f"PCA of {self.in_dim}-d vectors applied to shape {x.shape}")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        comp_t = self.components.T
        for start in range(0, len(rows), BLOCK):
            block = np.asarray(rows[start:start + BLOCK], dtype=np.float32) - self.mean
            y = block @ comp_t
            if self.scale is not None:
                y *= self.scale
            out[start:start + BLOCK] = normalise_rows(y)
        return out[0] if one else out

    def with_whitening(self, whiten: bool, variances: np.ndarray | None = None) -> Pca:
        """The same axes, whitened or not (whitening needs the ``variances`` of the fit)."""
        if not whiten:
            return Pca(self.mean, self.components, None)
        assert variances is not None
        return Pca(self.mean, self.components, _whitening(variances))

    def save(self, path: Path) -> None:
        """Write the transform as ``.npz`` at ``path``, atomically."""
        buf = io.BytesIO()
        parts = {"mean": self.mean, "components": self.components}
        if self.scale is not None:
            parts["scale"] = self.scale
        arrays: dict[str, Any] = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in parts.items()}
        np.savez(buf, **arrays)
        atomic.write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: Path, *, remedy: str = "`build_index(FOLDER, rebuild=True)` repairs it") -> Pca:
        """Read a transform saved by :meth:`save`; IndexCorruptError (ending in ``remedy``) when it
        is missing, damaged, of inconsistent shapes or not finite."""
        path = Path(path)
        try:
            require_regular(path)  # np.load would wait on a FIFO forever
            with np.load(path, allow_pickle=False) as data:
                mean = np.asarray(data["mean"], dtype=np.float32)
                components = np.asarray(data["components"], dtype=np.float32)
                scale = np.asarray(data["scale"], dtype=np.float32) if "scale" in data.files else None
        except FileNotFoundError:
            raise IndexCorruptError(f"the vector transform {path} is missing; {remedy}") from None
        except Exception:  # OSError, ValueError, KeyError, zipfile.BadZipFile ...: a damaged file
            raise IndexCorruptError(f"cannot read the vector transform {path} (damaged); {remedy}") from None
        ok = (mean.ndim == 1 and components.ndim == 2 and components.shape[1] == mean.shape[0]
              and 0 < components.shape[0] and (scale is None or scale.shape == (components.shape[0],)))
        if not ok:
            raise IndexCorruptError(f"the vector transform {path} has inconsistent shapes; {remedy}")
        if not all(np.isfinite(a).all() for a in (mean, components, scale) if a is not None):
            raise IndexCorruptError(f"the vector transform {path} holds values that are not finite; {remedy}")
        return cls(mean, components, scale)


def _whitening(variances: np.ndarray) -> np.ndarray:
    variances = np.asarray(variances, dtype=np.float64)
    eps = WHITEN_EPS * max(float(variances.max(initial=0.0)), 1e-30)
    return (1.0 / np.sqrt(np.maximum(variances, 0.0) + eps)).astype(np.float32)


def fit_pca_with_variances(vectors: np.ndarray, dim: int, *, whiten: bool, sample: int = DEFAULT_SAMPLE,
                           seed: int = 0) -> tuple[Pca, np.ndarray]:
    """:func:`fit_pca`, also returning the variance along each kept axis (d,)."""
    n, full = vectors.shape
    if not 1 <= dim < full:
        raise VsearchError(f"a PCA to {dim} dimensions needs 1 <= D < {full} (the vectors' dimension)")
    if dim > n:
        raise VsearchError(f"a PCA to {dim} dimensions needs at least {dim} vectors, got {n}")
    take = min(n, max(sample, dim))
    rows = np.arange(n) if take == n else np.sort(np.random.default_rng(seed).choice(n, size=take, replace=False))
    # Two passes over the sample, block by block, in float64: the mean, then the covariance
    # (D x D). Memory: one block and one D x D matrix, whatever the collection size.
    total = np.zeros(full, dtype=np.float64)
    for start in range(0, take, BLOCK):
        total += np.asarray(vectors[rows[start:start + BLOCK]], dtype=np.float64).sum(axis=0)
    mean = total / take
    cov = np.zeros((full, full), dtype=np.float64)
    for start in range(0, take, BLOCK):
        block = np.asarray(vectors[rows[start:start + BLOCK]], dtype=np.float64) - mean
        cov += block.T @ block
    cov /= max(take - 1, 1)
    values, axes = np.linalg.eigh(cov)  # ascending
    order = np.argsort(values)[::-1][:dim]
    values, axes = values[order], axes[:, order].T  # (d, D), largest variance first
    # eigh's sign is arbitrary: fix it (largest entry positive) so a refit on the same vectors
    # gives the same transform, digest included.
    signs = np.sign(axes[np.arange(dim), np.abs(axes).argmax(axis=1)])
    axes *= np.where(signs == 0, 1.0, signs)[:, None]
    base = Pca(mean.astype(np.float32), axes.astype(np.float32), None)
    return base.with_whitening(whiten, values), values.astype(np.float32)


def fit_pca(vectors: np.ndarray, dim: int, *, whiten: bool, sample: int = DEFAULT_SAMPLE, seed: int = 0) -> Pca:
    """Fit a PCA to ``dim`` dimensions on at most ``sample`` rows of ``vectors`` (n, D), chosen
    with ``seed``; whitened when ``whiten``. ``vectors`` may be a memory map: it is read in blocks."""
    return fit_pca_with_variances(vectors, dim, whiten=whiten, sample=sample, seed=seed)[0]


def to_space(x: np.ndarray, fmt: VectorFormat, pca: Pca | None) -> np.ndarray:
    """Vectors (n, D) or one (D,) mapped into the search space, float32: what a query uses.

    The search copy holds the same values (:func:`encode`), rounded to its dtype.
    """
    if fmt.kind == "pca":
        if pca is None:
            raise ValueError(f"format {fmt.name} needs its PCA")
        return pca.apply(x)
    return np.asarray(x, dtype=np.float32)


def encode(x: np.ndarray, fmt: VectorFormat, pca: Pca | None) -> np.ndarray:
    """What the search copy holds for vectors ``x`` (n, D): :func:`to_space` in ``fmt.dtype``."""
    if fmt.kind == "fp16":
        out = np.empty(x.shape, dtype=np.float16)
        for start in range(0, len(x), BLOCK):
            out[start:start + BLOCK] = np.asarray(x[start:start + BLOCK], dtype=np.float32)
        return out
    return to_space(x, fmt, pca).astype(fmt.dtype, copy=False)


# --- the search copy of one generation, made at each commit --------------------------------


def make_search_copy(store: Store, source: np.ndarray, generation: int) -> FormatInfo | None:
    """Write the search copy of ``source`` (one generation's vectors) in the store's wanted format,
    block by block; None for fp32 (search reads the source vectors). A PCA is fitted only when
    the index has none for this format (first build, ``--refit``, another D or whitening)."""
    fmt = store.wanted_format()
    if not fmt.compressed:
        return None
    model = store.model_id
    assert model is not None
    fmt.check(model.dim, len(source))
    pca, transform = _pca_for(store, fmt, source) if fmt.kind == "pca" else (None, None)
    dim = model.dim if fmt.dim is None else fmt.dim
    name = vectorfiles.search_copy_name(generation, fmt.name, pca.digest[:8] if pca else "")
    step = BLOCK
    vectorfiles.write_blocks(store.dir / name, (len(source), dim), fmt.dtype,
                             (encode(source[i:i + step], fmt, pca) for i in range(0, len(source), step)))
    return FormatInfo(fmt.name, name, dim, fmt.dtype, transform, pca.digest if pca else None)


def _pca_for(store: Store, fmt: VectorFormat, source: np.ndarray) -> tuple[Pca, str]:
    """The index's PCA for ``fmt`` (fitted at the first build, then reused), or a new fit on
    ``source`` (a seeded sample) when it has none that fits."""
    known = store.manifest.get(TRANSFORM_KEY)
    if known:
        try:
            pca = Pca.load(store.dir / known)
            if pca.dim == fmt.dim and (pca.scale is not None) == fmt.whiten and pca.in_dim == source.shape[1]:
                return pca, known
        except IndexCorruptError as exc:  # the source vectors are the truth: a refit loses nothing
            log.warning("warning: %s; fitting it again", exc)
    log.info("fitting a PCA to %d dimensions on %d vectors", fmt.dim, min(len(source), DEFAULT_SAMPLE))
    pca = fit_pca(source, fmt.dim or 0, whiten=fmt.whiten)
    name = vectorfiles.transform_name(pca.digest)
    pca.save(store.dir / name)
    store.wrote(name)  # a refit to the same digest writes the file again: its checksum is made anew
    store.manifest.set(TRANSFORM_KEY, name)
    return pca, name


__all__ = ["ALLOWED", "DEFAULT_FORMAT", "FP32", "Pca", "VectorFormat", "encode", "fit_pca", "make_search_copy", "parse_format", "to_space"]
