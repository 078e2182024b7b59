"""Vector file formats: the names ``meta.json`` and the manifest record for a search copy.

    fp32      the float32 source vectors, searched as they are (no search copy)
    fp16      the same vectors stored as float16
    pcaD[w][-fp16]  projected on D principal components (w: whitened), float32 or float16

Storage reads and checks these names; the codecs that make a copy live in
:mod:`vsearch.vectors.compress`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vsearch.errors import VsearchError

_FORMAT = re.compile(r"^(?:(fp32|fp16)|pca(\d+)(w?)(-fp16)?)$")
ALLOWED = ("fp32, fp16, pcaD or pcaDw (D an integer: the dimensions kept, w = whitened; add -fp16 to store "
           "them as float16), e.g. pca256w")


@dataclass(frozen=True)
class VectorFormat:
    """How the search copy stores vectors: ``kind`` fp32 | fp16 | pca, ``dim`` (pca: D, else
    None: the model's), ``whiten`` (pca only), ``dtype`` of the stored copy."""

    name: str
    kind: str
    dim: int | None = None
    whiten: bool = False
    dtype: str = "float32"

    @property
    def compressed(self) -> bool:
        """Whether this format has a search copy (everything but fp32)."""
        return self.kind != "fp32"

    def check(self, model_dim: int, count: int | None = None) -> None:
        """Refuse a PCA that cannot be fitted: D not below the model's dimension, or above
        the number of vectors (``count``; None: not known yet)."""
        if self.kind != "pca" or self.dim is None:
            return
        if self.dim >= model_dim:
            raise VsearchError(f"vectors={self.name}: {self.dim} dimensions is not fewer than the model's "
                               f"{model_dim}; choose a smaller D, or fp32/fp16")
        if count is not None and self.dim > count:
            raise VsearchError(f"vectors={self.name}: a PCA to {self.dim} dimensions needs at least {self.dim} "
                               f"images, the index holds {count}; choose a smaller D, or fp32/fp16")


FP32 = VectorFormat("fp32", "fp32")
#: The format of a new index (an existing one keeps its own). See docs/compression.md.
DEFAULT_FORMAT = "fp32"


def parse_format(text: str) -> VectorFormat:
    """``fp32``, ``fp16``, ``pcaD`` or ``pcaDw`` as a :class:`VectorFormat`; VsearchError otherwise."""
    found = _FORMAT.match(str(text).strip().lower())
    if not found:
        raise VsearchError(f"vectors= takes {ALLOWED} (got {text!r})")
    plain, dim, whiten, half = found.groups()
    if plain == "fp32":
        return FP32
    if plain == "fp16":
        return VectorFormat("fp16", "fp16", None, False, "float16")
    d = int(dim)
    if d < 1:
        raise VsearchError(f"vectors= takes {ALLOWED} (got {text!r}: D must be 1 or more)")
    return VectorFormat(f"pca{d}{whiten}{half or ''}", "pca", d, bool(whiten), "float16" if half else "float32")
