"""The Ray engine: read, digest, decode and embed pending files on a Ray cluster (``--engine ray``).

    driver: pending files -> Ray Data dataset of relative paths
    actors: map_batches(_EmbedFiles): read bytes, digest, decode, embed  (one model per actor)
    driver: batches of (path, digest, error, known, vector) -> the indexer's chunks and manifest

The driver keeps the index: it alone opens the store, and it commits chunks through the same
Store calls the local engine uses (indexer._Pipeline), so the index, its resumption after a
kill and every command that reads it are the same whichever engine embedded. Workers only read
image files, so every machine of the cluster must see the folder at the same path (a shared
filesystem); an actor that cannot see it fails at start with a message saying so.

Each actor reads and decodes through vsearch.imaging.images and embeds through an
:class:`embedders.ModelSource` bound to the index's model identity: the cached ONNX export where
the local engine would use it, else the torch model (switching to ONNX after its first batch,
as locally). Same pixels, same model, so the vectors match the local engine's.

Ray itself is an optional extra, imported only here and only when this engine runs.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vsearch.imaging import images
from vsearch.models import loading as models
from vsearch.models import onnxmodel
from vsearch.models.sources import ModelSource
from vsearch.errors import ImageDecodeError, VsearchError
from vsearch.models.loading import Embedder, ModelId
from vsearch.storage.store import file_digest

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'vsearch[ray]'"


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide the Ray engine runs.

    ``address``: an existing cluster (``ray.init(address=...)``, e.g. ``auto`` or
    ``ray://head:10001``); None starts a local one with a CPU per core. ``actors``: model actors
    (None: one per CPU of the cluster, or per GPU with ``device='cuda'``).
    """

    address: str | None = None
    actors: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """What an actor needs to load the index's model by itself (it crosses to the workers).

    ``given``: a model object to ship as it is, for a model no worker can load by name (one
    registered at run time in the driver, or handed to the API); None loads ``model_id`` the way
    the local engine would.
    """

    model_id: ModelId
    index_dir: Path | None
    device: str
    threads: int | None
    given: Embedder | None = None


@dataclass(frozen=True)
class FileResult:
    """One pending file after the workers: an error, content already in the index, or a vector."""

    rel: str
    digest: str | None
    error: str | None = None
    known: bool = False  # its digest is in the index: not embedded, the driver reuses that row


@dataclass(frozen=True)
class Batch:
    """Files back from the workers; ``vectors`` holds one row per file embedded, in order."""

    files: list[FileResult]
    vectors: np.ndarray

    @property
    def embedded(self) -> list[FileResult]:
        return [f for f in self.files if f.error is None and not f.known]


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or one VsearchError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the engine needs Ray Data, not only Ray core)
    except ImportError as exc:
        raise VsearchError(f"engine='ray' needs Ray Data, which is not installed ({exc}); "
                           f"install it with: {INSTALL_HINT}") from None
    return ray


def spec_for(embedder: Embedder, index_dir: Path | None, device: str, threads: int | None) -> ModelSpec:
    """The model spec for actors, from the model the driver resolved.

    The ONNX export and the built-in torch models load by identity on each worker (their own
    cache, their own session); any other model object is shipped to the workers as it is.
    """
    loadable = isinstance(embedder, (onnxmodel.OnnxEmbedder, models._TorchEmbedder))
    return ModelSpec(embedder.id, index_dir, device, threads, given=None if loadable else embedder)


def embed_files(root: Path, rels: list[str], model: ModelSpec, *, batch_size: int, max_pixels: int,
                known_digests: frozenset[str] = frozenset(), settings: RaySettings = RaySettings()) -> Iterator[Batch]:
    """Embed the files ``rels`` (relative to ``root``) on Ray; yield batches as they come back.

    Files whose content digest is in ``known_digests`` are read and digested but not decoded
    or embedded (the driver reuses the index's row). Connects to the cluster first (or starts a
    local one); a cluster this call started is shut down when the iteration ends.
    """
    if not rels:
        return
    ray = import_ray()
    if not Path(root).is_dir():  # the driver's own view first; each actor checks its own at start
        raise VsearchError(f"folder not found: {root}")
    started = _connect(ray, settings.address)
    try:
        yield from _run(ray, root, rels, model, batch_size, max_pixels, known_digests, settings)
    finally:
        if started:
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address``, or start a local one; True when this call started Ray."""
    if ray.is_initialized():  # the caller's own session (a test's local cluster, a notebook)
        return False
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "locally"
        raise VsearchError(f"could not start or reach a Ray cluster {where}: {exc}") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a HOST:PORT (or ray://HOST:PORT) nobody answers at, at once: Ray itself retries
    for minutes, printing a warning every few seconds. ``auto`` and other forms go to Ray as given.
    """
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise VsearchError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                           "`ray start --head` on the head node, or leave out address= for a local one") from None


def _run(ray: Any, root: Path, rels: list[str], model: ModelSpec, batch_size: int, max_pixels: int,
         known_digests: frozenset[str], settings: RaySettings) -> Iterator[Batch]:
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars,
             getattr(ctx, "print_on_execution_start", True))  # newer Ray Data only
    ctx.execution_options.preserve_order = True  # chunks hold files in scan order, as locally
    ctx.enable_progress_bars = False  # the CLI owns the progress bar
    ctx.print_on_execution_start = False
    try:
        yield from _execute(ray, root, rels, model, batch_size, max_pixels, known_digests, settings)
    finally:  # the caller's own Ray Data settings, as they were
        (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start) = saved


def _execute(ray: Any, root: Path, rels: list[str], model: ModelSpec, batch_size: int, max_pixels: int,
             known_digests: frozenset[str], settings: RaySettings) -> Iterator[Batch]:
    # Ray Data's notes and its own traceback of a failure would break the CLI's one-line manners:
    # a failure reaches the user as one VsearchError (its trace at debug level, in our logger).
    for name in ("ray.data", "ray.util"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    gpu = model.device == "cuda"
    resources = ray.cluster_resources()
    slots = int(resources.get("GPU" if gpu else "CPU", 0)) or 1
    blocks = max(1, min(-(-len(rels) // batch_size), 200))  # input blocks: a batch each, at most 200
    actors = max(1, min(settings.actors or slots, blocks))  # no more actors than there is work for
    threads = model.threads or max(1, int(resources.get("CPU", 1)) // actors)
    spec = ModelSpec(model.model_id, model.index_dir, model.device, threads, model.given)
    ds = ray.data.from_items([{"rel": rel} for rel in rels], override_num_blocks=blocks)
    with warnings.catch_warnings():  # max_restarts has no named parameter yet; its dict form warns
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = _map(ds, ray, root, spec, batch_size, max_pixels, known_digests, actors, gpu)
    dim = model.model_id.dim
    try:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield _to_batch(out, dim)
    except ray.exceptions.RayError as exc:
        log.debug("the Ray engine failed", exc_info=exc)
        raise _worker_error(exc) from None


def _map(ds: Any, ray: Any, root: Path, spec: ModelSpec, batch_size: int, max_pixels: int,
         known_digests: frozenset[str], actors: int, gpu: bool) -> Any:
    """The dataset of embedded files: ``actors`` model actors, a CPU (or a GPU) each."""
    return ds.map_batches(
        _EmbedFiles, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1,
        fn_constructor_kwargs={"root": str(root), "model": spec, "max_pixels": max_pixels,
                               "known_digests": known_digests},
        # A failing actor fails the run (the driver keeps what is committed; a rerun resumes)
        # rather than restarting without its constructor arguments (ray-project/ray#53727).
        max_restarts=0,
    )


def _worker_error(exc: Exception) -> VsearchError:
    """A failure on the workers as one line: a VsearchError raised in an actor (e.g. the folder is
    not visible there) keeps its own message."""
    cause: Any = exc
    for _ in range(8):  # Ray wraps the actor's own exception a few levels deep
        if cause is None or isinstance(cause, VsearchError):
            break
        cause = cause.__cause__ or getattr(cause, "cause", None)
    if isinstance(cause, VsearchError):
        return VsearchError(str(cause))
    # Ray Data may hand back only the remote traceback's text: find our error's line in it.
    text = str(exc)
    ours = re.findall(r"^vsearch\.errors\.\w+: (.+)$", text, re.MULTILINE)
    if ours:
        return VsearchError(ours[-1])
    last = re.findall(r"^(\w+(?:Error|Exception)): (.+)$", text, re.MULTILINE)
    first = text.strip().splitlines()
    why = ": ".join(last[0]) if last else (first[0] if first else type(exc).__name__)
    return VsearchError(f"the Ray engine failed: {why}")


def _to_batch(out: dict[str, np.ndarray], dim: int) -> Batch:
    files = [FileResult(str(rel), str(digest) or None, str(error) or None, bool(known))
             for rel, digest, error, known in zip(out["rel"], out["digest"], out["error"], out["known"])]
    embedded = np.array([not f.error and not f.known for f in files], dtype=bool)
    vectors = np.asarray(out["vector"], dtype=np.float32).reshape(len(files), dim)[embedded]
    return Batch(files, vectors)


class _EmbedFiles:
    """A Ray Data model actor: one model, loaded once, embeds batch after batch of paths."""

    def __init__(self, root: str, model: ModelSpec, max_pixels: int, known_digests: frozenset[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise VsearchError(
                f"folder {root} is not visible on Ray worker {socket.gethostname()}: every machine of the "
                "cluster must see the images at the same path (a shared filesystem)")
        self.model_id = model.model_id
        self.max_pixels = max_pixels
        self.known = known_digests
        self.source = ModelSource(model.model_id.name, known=model.model_id, index_dir=model.index_dir,
                                  device=model.device, threads=model.threads, given=model.given)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rels = [str(r) for r in batch["rel"]]
        n, dim = len(rels), self.model_id.dim
        digests, errors, known = [""] * n, [""] * n, np.zeros(n, dtype=bool)
        decoded: list[tuple[int, np.ndarray]] = []
        pre = self.model_id.preprocess
        for i, rel in enumerate(rels):
            try:
                data = images.read_image_bytes(self.root / rel)
                digests[i] = file_digest(data)
                if digests[i] in self.known:
                    known[i] = True
                    continue
                decoded.append((i, images.decode_for_model(data, pre.size, pre.framing,
                                                           max_pixels=self.max_pixels)))
            except ImageDecodeError as exc:
                errors[i] = str(exc)
        vectors = np.zeros((n, dim), dtype=np.float32)
        if decoded:
            embedded = self._embed(np.stack([pixels for _, pixels in decoded]))
            vectors[[i for i, _ in decoded]] = embedded
        return {"rel": np.array(rels, dtype=object), "digest": np.array(digests, dtype=object),
                "error": np.array(errors, dtype=object), "known": known, "vector": vectors}

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        if not self.source.ready:  # first batch: load, and refuse a model that makes other vectors
            embedder = self.source.get()
            if not embedder.id.same_vectors_as(self.model_id):
                raise VsearchError(
                    f"the model {self.model_id.name} loaded on Ray worker {socket.gethostname()} differs from "
                    f"the index's ({self.model_id.differences(embedder.id)})")
        return np.asarray(self.source.embed(pixels), dtype=np.float32)


__all__ = ["Batch", "FileResult", "ModelSpec", "RaySettings", "embed_files", "import_ray", "spec_for"]
