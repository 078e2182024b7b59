"""What decides the vectors an index holds: a model's identity and its preprocessing.

Plain records, no model code: storage (``store``, ``manifest``, ``vectorfiles``) records a
model's identity as data and compares it, without importing anything that loads a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Preprocess:
    """How pixels become the model's input: side in pixels, framing, normalisation."""

    size: int
    framing: str  # "squash" | "center_crop" | "pad": see images.to_model_array
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class ModelId:
    """Everything that decides what vectors a model makes; an index is bound to one."""

    name: str  # as the user names it, e.g. "efficientnet-lite0"
    family: str  # "efficientnet-lite" | "open_clip"
    arch: str
    pretrained: str  # tag, checkpoint path, package name, or "none"
    weights_sha256: str
    dim: int
    preprocess: Preprocess
    pooling: str  # "gem3" | "avg" | "clip"

    @property
    def supports_text(self) -> bool:
        """Whether this model embeds text queries too (CLIP): read from the identity alone, so an
        image-only index refuses text without loading its model."""
        return self.family == "open_clip"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, as stored in ``meta.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelId:
        """Inverse of :meth:`to_dict`."""
        pre = data["preprocess"]
        preprocess = Preprocess(
            size=int(pre["size"]),
            framing=pre["framing"],
            mean=tuple(pre["mean"]),
            std=tuple(pre["std"]),
        )
        return cls(**{**data, "preprocess": preprocess})

    def same_vectors_as(self, other: ModelId) -> bool:
        """True when both would map an image to the same vector."""
        return self.to_dict() == other.to_dict()

    def differences(self, other: ModelId) -> str:
        """What differs, e.g. ``preprocess.framing squash -> center_crop``, for error messages."""

        def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in d.items():
                if isinstance(value, dict):
                    out.update(flat(value, f"{prefix}{key}."))
                else:
                    out[f"{prefix}{key}"] = value
            return out

        mine, theirs = flat(self.to_dict()), flat(other.to_dict())
        diffs = [f"{k} {_short(mine.get(k))} -> {_short(theirs.get(k))}" for k in mine if mine.get(k) != theirs.get(k)]
        return "; ".join(diffs) or "nothing"


def _short(value: Any) -> str:
    text = str(list(value) if isinstance(value, tuple) else value)
    return text[:12] if len(text) == 64 else text  # a SHA-256 is recognisable by its first 12


