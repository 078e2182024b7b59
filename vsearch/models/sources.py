"""Getting hold of a model to embed with: which runtime, when to load, and the index's own model.

Two users:

* the indexer asks a :class:`ModelSource` for the model the first time a batch needs one
  (an unchanged re-run never asks, so it never imports torch);
* search asks :func:`model_for_index` for the model an index was built with.

The choice, in order (ONNX Runtime only on the CPU, see :func:`onnxmodel.preferred`):

1. a model the caller already loaded (benchmarks, several folders into one process);
2. the model's exported ONNX file from the user cache (onnxmodel.py) when its identity is known
   without torch: from the index (an incremental run), or from :func:`models.identify` (a new
   index with a model whose identity is a file hash, e.g. EfficientNet-Lite);
3. the torch model. When the source loaded torch itself, it embeds the first batch with torch,
   exports the model to the cache (checked on that very batch) and embeds the rest through
   ONNX Runtime: measured 47 against 8.4 img/s for the forward pass alone (lite0, batch 16,
   loaded 2-core machine).

This module knows nothing of storage: the index's model identity and folder are passed in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vsearch.models import loading as models
from vsearch.models import onnxmodel
from vsearch.errors import VsearchError
from vsearch.models.loading import Embedder, ModelId

log = logging.getLogger(__name__)


class ModelSource:
    """The model for one indexing run, loaded on first use.

    ``name``: the model to load. ``known``: the identity an existing index is bound to (None for
    a new index). ``index_dir``: where an index from before the model cache keeps its ONNX file.
    ``given``: an already loaded model to use as it is.
    """

    def __init__(self, name: str, *, known: ModelId | None = None, index_dir: Path | None = None,
                 device: str = "auto", threads: int | None = None, given: Embedder | None = None) -> None:
        self.name = name
        self.known = known
        self.index_dir = index_dir
        self.device = device
        self.threads = threads
        self._embedder = given
        self._may_switch = False  # set when this source loaded torch itself
        self.loaded = False  # whether this source loaded a model (a given one does not count)

    @property
    def ready(self) -> bool:
        """Whether a model is at hand without loading one."""
        return self._embedder is not None

    def get(self) -> Embedder:
        """The model, loaded now if this is the first use."""
        if self._embedder is None:
            self.loaded = True
            self._embedder = self._cached_onnx()
            if self._embedder is None:
                self._embedder = models.load_model(self.name, device=self.device, threads=self.threads)
                self._may_switch = True
        return self._embedder

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Embed one batch; after the first torch batch, move to ONNX Runtime when possible."""
        vectors = self.get().embed_images(pixels)
        if self._may_switch:
            self._switch_to_onnx(pixels)
        return vectors

    def _cached_onnx(self) -> Embedder | None:
        """The exported model, when its identity is known without torch and the file exists."""
        if not onnxmodel.preferred(self.device):
            return None
        model_id = self.known if self.known is not None and self.known.name == self.name else None
        if model_id is None and self.known is None:
            model_id = models.identify(self.name)
        if model_id is None:
            return None
        # One session serves the whole run: the saved optimised graph is for queries.
        return onnxmodel.load_for_index(self.index_dir, model_id, self.threads, quick_start=False)

    def _switch_to_onnx(self, probe: np.ndarray) -> None:
        """Export once (to the cache), check it on ``probe``, then embed through ONNX Runtime."""
        self._may_switch = False
        torch_model: Any = self._embedder
        if torch_model is None or not onnxmodel.preferred(self.device):
            return
        if onnxmodel.export(torch_model, None, probe[:4]) is not None:
            onnx = onnxmodel.load_for_index(None, torch_model.id, self.threads, quick_start=False)
            if onnx is not None:
                self._embedder = onnx


def model_for_index(store: Any, device: str = "auto", threads: int | None = None) -> Embedder:
    """The model an index was built with: its exported ONNX file when there is one (no torch),
    else the torch model, checked to make the same vectors as the index's.

    ``store``: an open index (anything with ``meta.model`` and ``dir``).
    """
    meta = store.meta
    if meta is None:
        raise VsearchError(f"index at {store.dir} has no vectors yet")
    model_id: ModelId = meta.model
    if onnxmodel.preferred(device):
        onnx = onnxmodel.load_for_index(store.dir, model_id, threads)
        if onnx is not None:
            return onnx
    embedder = models.load_model(model_id.name, device=device, threads=threads)
    if not embedder.id.same_vectors_as(model_id):
        raise VsearchError(
            f"the model {model_id.name} loaded here differs from the one that built the index "
            f"at {store.dir} ({model_id.differences(embedder.id)}); rebuild the index "
            f"(`build_index({meta.root}, index_dir=NEW_DIR)`)"
        )
    return embedder


__all__ = ["ModelSource", "model_for_index"]
