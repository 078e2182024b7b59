"""The index's model as an ONNX file, so a query that needs embedding does not need torch.

``build-index`` / ``embed`` export the loaded torch model once per model identity into the user's
model cache (``$XDG_CACHE_HOME/vsearch/models/model-<identity hash>.onnx``, by default
``~/.cache/vsearch/models``), after checking that ONNX Runtime's vectors equal torch's (max abs
difference below :data:`TOLERANCE`; measured 3e-7 for lite0). A query for a new photo then loads
that file through onnxruntime: no torch or timm import.

Why a user cache and not the index directory: the file depends only on the model identity, and a
13.5 MB copy in every index is waste. The file name is a hash of the whole identity (weights
hash, preprocessing, pooling), so a cached file can only ever serve indexes of that identity.
Writes go through atomic.py (a per-process temporary name, then ``os.replace``): two builds
exporting at once each write their own temporary and the last rename wins with an equal file.
Indexes from before the cache hold their ``model-*.onnx`` inside; it is still read when the cache
has none. Deleting the cache is always safe: the next build exports again.

Measured (lite0, batch 16, 2 cores): ONNX Runtime 47 img/s against 8.4 img/s for torch eager
under the same load; a whole query process that embeds a new photo drops from seconds (torch +
timm import and model build) to well under one (see README).

Only the image tower of EfficientNet-Lite models is exported; other models keep using torch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from vsearch import atomic
from vsearch.errors import VsearchError
from vsearch.models.loading import Embedder, ModelId, no_text_search

log = logging.getLogger(__name__)

#: Largest absolute difference from torch's vectors that an exported file may show.
TOLERANCE = 1e-4
EXPORTABLE_FAMILIES = ("efficientnet-lite",)


def cache_dir() -> Path:
    """The user's model cache: ``$XDG_CACHE_HOME/vsearch/models`` (default ``~/.cache/vsearch/models``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vsearch" / "models"


def onnx_path(folder: Path | None, model_id: ModelId) -> Path:
    """Where the ONNX file for ``model_id`` lives in ``folder`` (None: the user cache)."""
    key = hashlib.sha256(json.dumps(model_id.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return Path(folder if folder is not None else cache_dir()) / f"model-{key}.onnx"


def find(model_id: ModelId, index_dir: Path | None = None) -> Path | None:
    """The exported file for ``model_id``: the cache's, else an older index's own copy, else None."""
    for folder in (None, index_dir) if index_dir is not None else (None,):
        path = onnx_path(folder, model_id)
        if path.is_file():
            return path
    return None


def preferred(device: str) -> bool:
    """Whether to embed through ONNX Runtime: on the CPU, installed, and not turned off.

    ``VSEARCH_TORCH=1`` turns it off (for comparisons). With ``--device auto`` on a machine with
    an NVIDIA GPU, torch on the GPU is the better choice, and is kept.
    """
    if os.environ.get("VSEARCH_TORCH") or device not in ("auto", "cpu"):
        return False
    if device == "auto" and Path("/dev/nvidiactl").exists():  # cheap: no torch import to ask CUDA
        return False
    return available()


def available() -> bool:
    """Whether onnxruntime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export(embedder: Any, folder: Path | None, probe: np.ndarray) -> Path | None:
    """Export a loaded torch embedder into ``folder`` (None: the user cache); None when not
    exportable or not equal.

    ``probe``: a few real preprocessed images (uint8 NHWC) on which ONNX Runtime's vectors must
    equal torch's within :data:`TOLERANCE`; otherwise nothing is kept. A file already there is
    used as it is (its name is the identity's hash).
    """
    target = onnx_path(folder, embedder.id)
    if target.exists():
        return target
    if embedder.id.family not in EXPORTABLE_FAMILIES or not available() or len(probe) == 0:
        return None
    import torch

    class Graph(torch.nn.Module):
        """uint8 NHWC pixels in, unit vectors out: the whole embed path in one graph."""

        def __init__(self) -> None:
            super().__init__()
            self.module = embedder._module

        def forward(self, x: Any) -> Any:
            x = x.permute(0, 3, 1, 2).float()
            x = (x - embedder._mean) / embedder._std
            return torch.nn.functional.normalize(embedder._forward(x), dim=-1)

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(target) as tmp:
            # The TorchScript exporter: it handles timm's EfficientNet in seconds and matches torch
            # to 3e-7. Its notices are DeprecationWarnings raised in library code, which Python's
            # default filters already keep off the user's terminal; they are not silenced here,
            # because warnings.catch_warnings swaps the filters of the whole process (every
            # thread's warnings, and a race with any other thread that does the same).
            with torch.inference_mode(False), torch.no_grad():
                torch.onnx.export(
                    Graph().eval(), (torch.from_numpy(np.ascontiguousarray(probe)),), str(tmp),
                    input_names=["pixels"], output_names=["vectors"],
                    dynamic_axes={"pixels": {0: "n"}, "vectors": {0: "n"}}, opset_version=17, dynamo=False,
                )
            got = OnnxEmbedder(embedder.id, tmp).embed_images(probe)
            diff = float(np.abs(got - embedder.embed_images(probe)).max())
            if diff > TOLERANCE:  # raising here leaves no file behind
                raise ValueError(f"its vectors differ from torch's by {diff:.2g}")
    except Exception as exc:  # an exporter failure must never fail the indexing that triggered it
        log.warning("ONNX export of %s not used (%s); embedding stays on torch", embedder.id.name, exc)
        return None
    return target


class OnnxEmbedder:
    """An exported image model run by onnxruntime; same interface as the torch embedders.

    ``quick_start``: build the session from the saved optimised graph (see :func:`optimised_path`),
    saving it first when there is none; for a query process, whose whole life is one session.
    """

    def __init__(self, model_id: ModelId, path: Path, threads: int | None = None, *,
                 quick_start: bool = False) -> None:
        self.id = model_id
        self.path = path
        session = _optimised_session(path, threads) if quick_start else None
        self._session = session if session is not None else _open(path, _options(threads))

    @property
    def supports_text(self) -> bool:
        return False

    def embed_images(self, batch: np.ndarray) -> np.ndarray:
        """Float32 (N, dim), unit rows."""
        if len(batch) == 0:
            return np.zeros((0, self.id.dim), dtype=np.float32)
        return self._session.run(None, {"pixels": np.ascontiguousarray(batch, dtype=np.uint8)})[0]

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        raise no_text_search(self.id)


def load_for_index(index_dir: Path | None, model_id: ModelId, threads: int | None = None, *,
                   quick_start: bool = True) -> Embedder | None:
    """The exported model for ``model_id`` (see :func:`find`), if there is one and onnxruntime is installed.

    ``quick_start``: through the saved optimised graph (:class:`OnnxEmbedder`); the indexer, which
    keeps one session for a whole run, passes False.
    """
    path = find(model_id, index_dir)
    if path is None or not available():
        return None
    try:
        return OnnxEmbedder(model_id, path, threads, quick_start=quick_start)
    except VsearchError as exc:
        # Writes are atomic, so this is damage from outside (a disk error, a stray edit). The
        # file is only a cache: drop it, let the caller use torch, and the next build export again.
        log.warning("%s; using the torch model instead", str(exc).partition("; delete it")[0])
        if path.parent == cache_dir():
            with contextlib.suppress(OSError):
                path.unlink()
        return None


# --- the saved optimised graph -----------------------------------------------------------------


def optimised_path(plain: Path) -> Path | None:
    """Where the optimised graph of the exported file ``plain`` is kept, or None (no ``plain``).

    Building a session from the exported file costs most of its time optimising the graph (0.15 s
    of CPU for lite0, more than embedding the photo). onnxruntime can save the optimised graph,
    and a session built from that with optimisation off starts in a third of the time with the
    same outputs (max difference 0 measured; tests check 1e-5).

    Level: ORT_ENABLE_ALL, whose NCHWc layout makes a single image 2x faster to embed than the
    portable ORT_ENABLE_EXTENDED (measured: create + one image 0.10 s CPU against 0.14 s, and
    0.19 s today), but whose blocked weights suit this CPU's vector width only. So the file
    name is a hash of the plain file (identity hash in its name, size and mtime: a new export is
    a new key), the onnxruntime version, and the machine (OS, architecture, CPU model and flags
    from /proc/cpuinfo). Where the CPU cannot be read, the portable EXTENDED level is saved.
    The file sits beside the exports in the user cache, whatever folder ``plain`` is in.
    """
    import onnxruntime as ort

    try:
        st = plain.stat()
    except OSError:
        return None
    level, cpu = _saved_level()
    uname = os.uname()
    runtime = {"export": plain.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "onnxruntime": ort.__version__,
               "os": uname.sysname, "machine": uname.machine, "cpu": cpu, "level": level}
    key = hashlib.sha256(json.dumps(runtime, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{plain.stem}.opt-{key}.onnx"


@functools.cache
def _saved_level() -> tuple[str, str]:
    """("all", a digest of the CPU's model and flags), or ("extended", "") where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            lines = [line for line in fh.read(65536).splitlines()
                     if line.startswith(("model name", "flags", "Features", "CPU part"))]
    except OSError:
        lines = []
    if not lines:
        return "extended", ""
    # The first processor's lines are enough: the block layout depends on the instruction sets.
    cpu = "\n".join(dict.fromkeys(lines))
    return "all", hashlib.sha256(cpu.encode()).hexdigest()[:16]


def _options(threads: int | None, level: str | None = None, save_to: Path | None = None) -> Any:
    """Session options: ``level`` None keeps onnxruntime's default (all optimisations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if level is not None:
        options.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[level]
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
        # Its "may contain hardware specific optimizations" notice is what the key is for.
        options.log_severity_level = 3
    return options


def _open(path: Path, options: Any) -> Any:
    """An onnxruntime session on the CPU, or a VsearchError naming the file."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VsearchError(f"cannot load {path} ({why}); delete it and call `build_index`") from None


def _optimised_session(plain: Path, threads: int | None) -> Any:
    """A session from the saved optimised graph of ``plain``, saved first if missing; None to use
    ``plain`` as usual (the cache could not be written, or ``plain`` itself cannot be loaded)."""
    target = optimised_path(plain)
    if target is None:
        return None
    level, _ = _saved_level()
    if target.is_file():
        try:
            return _open(target, _options(threads, "none" if level == "all" else "all"))
        except VsearchError as exc:
            # Written atomically, so damaged from outside. Only a cache: drop it and save it again.
            log.warning("warning: %s; using %s instead", str(exc).partition("; delete it")[0], plain)
            with contextlib.suppress(OSError):
                target.unlink()
    session = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(target) as tmp:  # onnxruntime writes tmp while it builds the session
            session = _open(plain, _options(threads, level, save_to=tmp))
    except (VsearchError, OSError) as exc:  # a read-only or full cache: this query goes on without
        log.debug("optimised graph of %s not saved (%s)", plain, exc)
        return session
    for stale in target.parent.glob(f"{plain.stem}.opt-*.onnx"):  # an older export or onnxruntime
        if stale != target:
            with contextlib.suppress(OSError):
                stale.unlink()
    return session
