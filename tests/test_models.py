"""Real models: the default EfficientNet-Lite0 (offline), and open_clip without a download.

Each real model is loaded once per module (a load costs seconds on these machines); the tests
that load one, or import open_clip, are marked slow. How open_clip weights are fetched (cache,
one quick look at the hub, download) is tested with a stand-in for open_clip, fast.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
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
REPO = Path(__file__).resolve().parents[1]
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
    assert "the default model (model='efficientnet-lite0')" in message
    assert "a local checkpoint (model='ViT-B-32:/path/to/weights.pt')" in message


@pytest.mark.slow
def test_unknown_names_and_tags_are_one_line_errors():
    with pytest.raises(VsearchError,
                       match=r"'no-such-tag' is neither a checkpoint file nor a pretrained tag of "
                       r"ViT-B-32 \(tags: .*laion2b_s34b_b79k.*\); .*\(model='efficientnet-lite0'\).*"
                       r"\(model='ViT-B-32:/path/to/weights\.pt'\)") as info:
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

#: A pretrained config as open_clip keeps them: a hub repository and, after the slash, a file.
HUB_CFG = {"hf_hub": "org/clip-model/"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _FakeOpenClip:
    """Stands in for open_clip.download_pretrained, the download (the cache is looked up before)."""

    def __init__(self, download_ok: bool = True, on_download=None) -> None:
        self.download_ok, self.on_download, self.calls = download_ok, on_download, 0

    def download_pretrained(self, cfg):
        self.calls += 1
        if self.on_download is not None:
            self.on_download()
        if self.download_ok:
            return "/downloaded/open_clip_model.safetensors"
        raise FileNotFoundError("Failed to download file")


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache; ``put(repo, file)`` stores a file in it as the hub does."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def put(repo: str, filename: str) -> Path:
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(COMMIT)
        path = folder / "snapshots" / COMMIT / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        return path

    return put


@pytest.fixture()
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.setattr(models, "_hub_unreachable", lambda endpoint: pytest.fail("the network was asked"))


def _process_state():
    from huggingface_hub import constants, hf_hub_download  # noqa: F401 - its modules' loggers exist from here

    hub_levels = {name: logging.getLogger(name).level for name in list(logging.root.manager.loggerDict)
                  if name.startswith("huggingface_hub")}
    return dict(os.environ), constants.HF_HUB_OFFLINE, hub_levels, list(logging.getLogger().filters)


def test_cached_weights_are_used_without_asking_the_network(hub_cache, no_network):
    # open_clip prefers the .safetensors alternative of its default file name; the .bin is a fallback.
    cached = hub_cache("org/clip-model", "open_clip_model.safetensors")
    before = _process_state()
    fake = _FakeOpenClip()
    assert models._pretrained_weights(fake, HUB_CFG, "A:tag", "A").resolve() == cached.resolve()
    assert fake.calls == 0 and _process_state() == before  # no environment, flag or logger touched


def test_a_cached_bin_and_a_named_file_are_found_too(hub_cache, no_network):
    cached = hub_cache("org/other", "open_clip_pytorch_model.bin")
    assert models._pretrained_weights(_FakeOpenClip(), {"hf_hub": "org/other/"}, "A:t", "A").resolve() == cached.resolve()
    named = hub_cache("org/named", "epoch_32.pt")
    assert models._pretrained_weights(_FakeOpenClip(), {"hf_hub": "org/named/epoch_32.pt"}, "A:t", "A").resolve() \
        == named.resolve()


def test_without_network_one_quick_look_then_one_line(hub_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(models, "_hub_unreachable", lambda endpoint: f"{endpoint} did not answer: refused")
    fake = _FakeOpenClip()
    with pytest.raises(ModelUnavailableError) as info:
        models._pretrained_weights(fake, HUB_CFG, "ViT-B-32:laion2b_s34b_b79k", "ViT-B-32")
    assert fake.calls == 0  # the cache only: no download with its retries
    assert str(info.value).startswith("could not get the weights for ViT-B-32:laion2b_s34b_b79k (no network: ")
    assert "(model='ViT-B-32:/path/to/weights.pt')" in str(info.value)


def test_with_network_the_download_runs_without_retry_chatter(hub_cache, monkeypatch, caplog):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "_hub_unreachable", lambda endpoint: None)
    http_log = logging.getLogger("huggingface_hub.utils._http")

    def retry_lines():
        http_log.warning("Retrying in 1s [Retry 1/5].")  # this thread's: dropped
        other = threading.Thread(target=http_log.warning, args=("another thread's warning",))
        other.start()
        other.join()
        http_log.error("a real failure")  # errors still pass

    fake = _FakeOpenClip(on_download=retry_lines)
    before = _process_state()
    with caplog.at_level(logging.WARNING):
        assert models._pretrained_weights(fake, HUB_CFG, "A:tag", "A") == Path("/downloaded/open_clip_model.safetensors")
    assert fake.calls == 1 and _process_state() == before
    assert "Retrying" not in caplog.text
    assert "another thread's warning" in caplog.text and "a real failure" in caplog.text
    assert not any(f for name in logging.root.manager.loggerDict if name.startswith("huggingface_hub")
                   for f in logging.getLogger(name).filters)  # the quiet filters are gone again
    with pytest.raises(ModelUnavailableError, match=r"could not get the weights for A:tag \(FileNotFoundError\)"):
        models._pretrained_weights(_FakeOpenClip(download_ok=False), HUB_CFG, "A:tag", "A")


def test_offline_mode_chosen_by_the_user_looks_in_the_cache_only(hub_cache, no_network, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    fake = _FakeOpenClip()
    with pytest.raises(ModelUnavailableError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        models._pretrained_weights(fake, HUB_CFG, "A:tag", "A")
    assert fake.calls == 0 and constants.HF_HUB_OFFLINE is True
    cached = hub_cache("org/clip-model", "open_clip_model.safetensors")
    assert models._pretrained_weights(fake, HUB_CFG, "A:tag", "A").resolve() == cached.resolve()


def test_load_model_leaves_the_environment_alone():
    # load_model used to set OMP_WAIT_POLICY for the whole process; only an entry point may
    # (models.passive_openmp). A fresh process, so that torch is not loaded yet.
    code = (
        "import os\n"
        "from vsearch.models import loading as models\n"
        "before = dict(os.environ)\n"
        "models.register('fake', lambda name, device, threads: 'loaded')\n"
        "assert models.load_model('fake') == 'loaded'\n"
        "print(dict(os.environ) == before, os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         check=False, timeout=60)
    assert out.stdout.split() == ["True", "None"], out.stderr


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
