"""Real models: the default EfficientNet-Lite0 (offline), and open_clip without a download.

Each real model is loaded once per module (a load costs seconds on these machines); the tests
that load one, or import open_clip, are marked slow. How open_clip weights are fetched (cache,
one quick look at the hub, download) is tested with a stand-in for open_clip, fast.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLE_IMAGES
from tests.helpers import cli, ok
from vsearch.imaging import images
from vsearch.models import loading as models
from vsearch.errors import ModelUnavailableError, VsearchError

#: The smallest open_clip architecture that loads fast here (ViT-B-32 takes ~1.5x as long).
CLIP_ARCH = "ViT-S-32"
PHOTOS = ["chelsea.jpg", "coins.jpg", "horse.png"]


def _no_network(*args, **kwargs):
    raise OSError("network disabled in tests")


@pytest.fixture(scope="module")
def lite0():
    """The default model, loaded with every socket connection refused."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        yield models.load_model(device="cpu")


@pytest.fixture(scope="module")
def clip_none():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        yield models.load_model(f"{CLIP_ARCH}:none", device="cpu")


def batch_for(model: models.Embedder, names=PHOTOS) -> np.ndarray:
    pre = model.id.preprocess
    return np.stack([images.decode_for_model(SAMPLE_IMAGES / n, pre.size, pre.framing) for n in names])


def assert_unit_rows(vectors: np.ndarray, dim: int) -> None:
    assert vectors.shape[1] == dim and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --- the default model --------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_is_efficientnet_lite0_from_the_wheel(lite0):
    assert models.DEFAULT_MODEL == "efficientnet-lite0"
    mid = lite0.id
    assert (mid.name, mid.family, mid.dim, mid.preprocess.size) == (
        "efficientnet-lite0", "efficientnet-lite", 1280, 224)
    weights = models._lite_weights_path("lite0")
    assert mid.weights_sha256 == models.file_sha256(weights)
    assert not lite0.supports_text
    with pytest.raises(VsearchError, match="text search needs a CLIP index"):
        lite0.embed_text(["a cat"])


@pytest.mark.slow
def test_framing_variants_are_separate_models_with_the_same_weights(lite0):
    assert lite0.id.preprocess.framing == "squash"  # the default keeps the whole frame
    crop = models.load_model("efficientnet-lite0-centrecrop", device="cpu")
    assert crop.id.name == "efficientnet-lite0-centrecrop"
    assert crop.id.preprocess.framing == "center_crop"
    assert crop.id.weights_sha256 == lite0.id.weights_sha256
    assert not crop.id.same_vectors_as(lite0.id)
    assert "preprocess.framing squash -> center_crop" in lite0.id.differences(crop.id)
    # Same pixels in, same vectors out: only the framing of the decode differs.
    batch = batch_for(lite0)
    np.testing.assert_allclose(crop.embed_images(batch), lite0.embed_images(batch), atol=1e-5)


@pytest.mark.slow
def test_lite0_embeddings_are_unit_deterministic_and_batch_independent(lite0):
    batch = batch_for(lite0)
    first = lite0.embed_images(batch)
    assert_unit_rows(first, 1280)
    np.testing.assert_array_equal(lite0.embed_images(batch), first)
    one = lite0.embed_images(batch[1:2])  # alone vs in a batch: the same vector
    np.testing.assert_allclose(one[0], first[1], atol=1e-5)
    sims = first @ first.T
    assert sims[np.triu_indices(len(PHOTOS), 1)].max() < 0.95  # different pictures differ
    assert lite0.embed_images(batch[:0]).shape == (0, 1280)


# --- open_clip ----------------------------------------------------------------------------


@pytest.mark.slow
def test_open_clip_without_pretrained_weights(clip_none):
    mid = clip_none.id
    assert (mid.family, mid.arch, mid.pretrained, mid.pooling) == ("open_clip", CLIP_ARCH, "none", "clip")
    assert mid.preprocess.framing == "center_crop"
    image_vecs = clip_none.embed_images(batch_for(clip_none))
    assert_unit_rows(image_vecs, mid.dim)
    assert clip_none.supports_text
    text_vecs = clip_none.embed_text(["a cat", "a rocket"])
    assert_unit_rows(text_vecs, mid.dim)


class _Payload:
    """Unpickling this would run code: a weights-only load must refuse it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A CLIP_ARCH model with its own weights, and the checkpoint file it was saved to."""
    import open_clip
    import torch

    torch.manual_seed(123)  # weights unlike the "none" model's, so a load that did nothing shows
    module = open_clip.create_model(CLIP_ARCH, pretrained=None).eval()
    ckpt = tmp_path_factory.mktemp("ckpt") / "my weights.pt"
    torch.save(module.state_dict(), ckpt)
    return module, ckpt


@pytest.mark.slow
def test_open_clip_checkpoint_round_trip(clip_none, checkpoint, caplog):
    import open_clip

    module, ckpt = checkpoint
    loaded = models.load_model(f"{CLIP_ARCH}:{ckpt}", device="cpu")
    assert "initialized randomly" not in caplog.text  # open_clip's warning, untrue here
    assert loaded.id.weights_sha256 == models.file_sha256(ckpt)
    assert loaded.id.pretrained == str(ckpt)
    assert not loaded.id.same_vectors_as(clip_none.id)

    saved = models.ClipEmbedder(loaded.id, module, "cpu", open_clip.get_tokenizer(CLIP_ARCH))
    batch = batch_for(loaded, PHOTOS[:2])
    from_loaded = loaded.embed_images(batch)
    np.testing.assert_array_equal(from_loaded, saved.embed_images(batch))
    np.testing.assert_array_equal(loaded.embed_text(["a cat"]), saved.embed_text(["a cat"]))
    assert not np.allclose(from_loaded[:1], clip_none.embed_images(batch[:1]), atol=1e-3)


@pytest.mark.slow
def test_a_checkpoint_is_loaded_weights_only(tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "extra": _Payload(str(marker))}, ckpt)
    refused = f"cannot load checkpoint {ckpt} into {CLIP_ARCH}"
    with pytest.raises(ModelUnavailableError, match=refused) as info:
        models.load_model(f"{CLIP_ARCH}:{ckpt}", device="cpu")
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.slow
def test_missing_weights_without_network_say_what_to_do(monkeypatch):
    import open_clip

    def download(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(open_clip, "download_pretrained", download)
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    with pytest.raises(ModelUnavailableError) as info:
        models.load_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "--model efficientnet-lite0" in message
    assert "--model ViT-B-32:/path/to/weights.pt" in message


@pytest.mark.slow
def test_unknown_names_and_tags_are_one_line_errors():
    with pytest.raises(VsearchError,
                       match=r"'no-such-tag' is neither a checkpoint file nor a pretrained tag of "
                       r"ViT-B-32 \(tags: .*laion2b_s34b_b79k.*\); .*--model efficientnet-lite0.*"
                       r"--model ViT-B-32:/path/to/weights\.pt") as info:
        models.load_model("ViT-B-32:no-such-tag", device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(VsearchError, match="'/no/such/weights.pt' is neither a checkpoint file"):
        models.load_model("ViT-B-32:/no/such/weights.pt", device="cpu")
    with pytest.raises(VsearchError, match="unknown open_clip architecture 'No-Such-Arch'"):
        models.load_model("No-Such-Arch:none", device="cpu")
    with pytest.raises(VsearchError, match="unknown model 'resnet9000'; known: .*efficientnet-lite0"):
        models.load_model("resnet9000")
    with pytest.raises(VsearchError, match="unknown model"):
        models.split_clip_name("ViT-B-32:")


@pytest.mark.slow
def test_model_id_survives_a_json_round_trip(lite0):
    data = json.loads(json.dumps(lite0.id.to_dict()))
    again = models.ModelId.from_dict(data)
    assert again == lite0.id and again.same_vectors_as(lite0.id)


@pytest.mark.slow
def test_cli_indexes_with_a_local_checkpoint(checkpoint, tmp_path):
    _, ckpt = checkpoint
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS[:3]:
        shutil.copy2(SAMPLE_IMAGES / name, photos / name)
    index_dir = tmp_path / "index"
    built = ok(cli("build-index", photos, "--index-dir", index_dir, "--model", f"{CLIP_ARCH}:{ckpt}"))
    assert f"holds 3 images ({CLIP_ARCH}:{ckpt})" in built.stderr
    model = json.loads((index_dir / "meta.json").read_text())["model"]
    assert model["pretrained"] == str(ckpt) and model["weights_sha256"] == models.file_sha256(ckpt)
    found = ok(cli("query", photos / "coins.jpg", "--index-dir", index_dir, "--format", "paths", "--k", "1"))
    assert found.stdout.strip() == str(photos / "coins.jpg")


# --- open_clip weights: the cache first, one quick look at the hub, then the download ----------


class _FakeOpenClip:
    """Stands in for open_clip.download_pretrained: a hit when ``cached`` and the hub is offline."""

    def __init__(self, cached: bool, download_ok: bool = True) -> None:
        self.cached, self.download_ok, self.calls = cached, download_ok, []

    def download_pretrained(self, cfg):
        from huggingface_hub import constants

        self.calls.append(constants.HF_HUB_OFFLINE)
        self.hub_log_level = logging.getLogger("huggingface_hub").getEffectiveLevel()
        if constants.HF_HUB_OFFLINE and self.cached or not constants.HF_HUB_OFFLINE and self.download_ok:
            return "/cache/open_clip_model.safetensors"
        raise FileNotFoundError("Failed to download file")


def test_cached_weights_are_used_without_asking_the_network(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(models, "_hub_unreachable", lambda endpoint: pytest.fail("the network was asked"))
    fake = _FakeOpenClip(cached=True)
    assert models._pretrained_weights(fake, {}, "A:tag", "A") == Path("/cache/open_clip_model.safetensors")
    assert fake.calls == [True] and constants.HF_HUB_OFFLINE is False


def test_without_network_one_quick_look_then_one_line(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_unreachable", lambda endpoint: f"{endpoint} did not answer: refused")
    fake = _FakeOpenClip(cached=False)
    with pytest.raises(ModelUnavailableError) as info:
        models._pretrained_weights(fake, {}, "ViT-B-32:laion2b_s34b_b79k", "ViT-B-32")
    assert fake.calls == [True]  # the cache only: no download with its retries
    assert str(info.value).startswith("could not get the weights for ViT-B-32:laion2b_s34b_b79k (no network: ")
    assert "--model ViT-B-32:/path/to/weights.pt" in str(info.value)


def test_with_network_the_download_runs_without_retry_chatter(monkeypatch):
    monkeypatch.setattr(models, "_hub_unreachable", lambda endpoint: None)
    fake = _FakeOpenClip(cached=False)
    before = logging.getLogger("huggingface_hub").level
    assert models._pretrained_weights(fake, {}, "A:tag", "A") == Path("/cache/open_clip_model.safetensors")
    assert fake.calls == [True, False] and fake.hub_log_level == logging.ERROR
    assert logging.getLogger("huggingface_hub").level == before
    with pytest.raises(ModelUnavailableError, match=r"could not get the weights for A:tag \(FileNotFoundError\)"):
        models._pretrained_weights(_FakeOpenClip(cached=False, download_ok=False), {}, "A:tag", "A")


def test_offline_mode_chosen_by_the_user_looks_in_the_cache_only(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(models, "_hub_unreachable", lambda endpoint: pytest.fail("the network was asked"))
    with pytest.raises(ModelUnavailableError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        models._pretrained_weights(_FakeOpenClip(cached=False), {}, "A:tag", "A")
    assert constants.HF_HUB_OFFLINE is True


def test_the_hub_probe_is_one_quick_request(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    started = time.monotonic()
    reason = models._hub_unreachable("https://huggingface.co")
    assert reason is not None and reason.startswith("https://huggingface.co did not answer: ")
    assert time.monotonic() - started < models.HUB_PROBE_TIMEOUT_S + 1


@pytest.mark.slow
def test_identify_knows_the_lite_models_without_loading_them(lite0):
    assert models.identify() == lite0.id
    assert models.identify("efficientnet-lite0-centrecrop").preprocess.framing == "center_crop"
    assert models.identify("ViT-B-32:laion2b_s34b_b79k") is None
