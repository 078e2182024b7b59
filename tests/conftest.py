"""Shared fixtures: an isolated index dir per test, a fast fake model, small real images."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsearch.models import loading as models
from vsearch.storage.store import Store

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = REPO / "sample_images"
TESTS = Path(__file__).resolve().parent


class FakeEmbedder:
    """A deterministic, torch-free stand-in: a colour/layout histogram of the 32x32 input.

    Similar pictures get similar vectors, so search behaviour is testable in milliseconds.
    """

    def __init__(self, name: str, weights_sha256: str = "0" * 64) -> None:
        self.id = models.ModelId(
            name=name, family="fake", arch="colour-grid", pretrained="none", weights_sha256=weights_sha256,
            dim=48, preprocess=models.Preprocess(32, "squash", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), pooling="avg",
        )
        self.calls = 0

    @property
    def supports_text(self) -> bool:
        return False

    def embed_images(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        x = batch.astype(np.float32) / 255.0  # (N, 32, 32, 3)
        grid = x.reshape(len(x), 4, 8, 4, 8, 3).mean(axis=(2, 4))  # 4x4 cells x RGB = 48
        return models.l2_normalise(grid.reshape(len(x), -1) - 0.45)

    def embed_text(self, texts):  # pragma: no cover - image-only, like the default model
        from vsearch.errors import VsearchError

        raise VsearchError("text search needs a CLIP index")


@pytest.fixture(scope="session", autouse=True)
def isolated_model_cache(tmp_path_factory):
    """Exported models (onnxmodel.cache_dir) go to the session's own XDG_CACHE_HOME, never the user's.

    Session-wide, not per test: module-scoped fixtures build indexes too, and sharing the cache
    exports each real model once per run.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def isolated_index_dir(tmp_path, monkeypatch) -> Path:
    """Every test gets its own default index dir (VSEARCH_INDEX_DIR), never the user's."""
    index_dir = tmp_path / "index"
    monkeypatch.setenv("VSEARCH_INDEX_DIR", str(index_dir))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return index_dir


def _is_open(store: Store) -> bool:
    try:
        store.manifest.db.execute("SELECT 1")
    except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
        return False
    return True


@pytest.fixture(autouse=True)
def stores_closed(monkeypatch):
    """Fail a test whose own code leaves a ``Store.open(...)`` open (its manifest connection,
    and a writer's lock): use ``with Store.open(...) as store:``.

    Only stores the tests open count (the caller's file is under tests/), and only during the
    test: module-scoped fixtures are set up before this.
    """
    opened: list[tuple[str, Store]] = []
    real_open = Store.open.__func__

    def tracking_open(cls, *args, **kwargs):
        store = real_open(cls, *args, **kwargs)
        caller = sys._getframe(1).f_code
        if Path(caller.co_filename).parent == TESTS:
            opened.append((f"{Path(caller.co_filename).name}:{caller.co_name}", store))
        return store

    monkeypatch.setattr(Store, "open", classmethod(tracking_open))
    yield
    left = [where for where, store in opened if _is_open(store)]
    for _, store in opened:
        store.close()  # so one leak does not spill into the next test
    assert not left, f"Store.open(...) left open by {left}; use `with Store.open(...) as store:`"


@pytest.fixture
def open_store():
    """``open_store(index_dir, **kwargs)``: ``Store.open`` for a whole test, closed when it ends
    (for ``Searcher(open_store(...))``, where a ``with`` block would not fit)."""
    with contextlib.ExitStack() as stack:
        yield lambda *args, **kwargs: stack.enter_context(Store.open(*args, **kwargs))


@pytest.fixture
def fake_model():
    """Register the ``fake`` model for the duration of a test; yields the shared instance."""
    embedder = FakeEmbedder("fake")
    models.register("fake", lambda name, device, threads: embedder)
    yield embedder
    models.unregister("fake")


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A private copy of sample_images/ (images only) that a test may change."""
    dest = tmp_path / "photos"
    dest.mkdir()
    for p in SAMPLE_IMAGES.iterdir():
        if p.suffix.lower() in (".jpg", ".png"):
            shutil.copy2(p, dest / p.name)
    return dest


@pytest.fixture
def photos(tmp_path, request) -> Path:
    """A folder of distinct photo-like JPEGs p0.jpg, p1.jpg, ...: ``PHOTOS`` of them (a module
    constant; default 6)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(getattr(request.module, "PHOTOS", 6)):
        make_photo(folder / f"p{i}.jpg", seed=i)
    return folder


@pytest.fixture
def built(photos, fake_model, isolated_index_dir, request) -> Path:
    """``photos`` indexed with the fake model into the default index dir (``TREES`` Annoy
    trees, a module constant; default the CLI's)."""
    from tests.helpers import cli, ok

    trees = getattr(request.module, "TREES", None)
    ok(cli("build-index", photos, "--model", "fake", "-q", *(("--trees", trees) if trees else ())))
    return isolated_index_dir


def make_photo(path: Path, size=(320, 240), seed: int = 0, quality: int = 90) -> Path:
    """A photo-like JPEG/PNG (smooth gradients plus noise) that the fake model can tell apart."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-0.5, 0.5, (2, 3))
    img = base + xx[..., None] * slope[0] + yy[..., None] * slope[1] + rng.normal(0, 8, (h, w, 3))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=quality)
    return path


def _save_heif(img, path: Path) -> None:
    import pillow_heif

    pillow_heif.from_pillow(img).save(path, format="HEIF", quality=95)


def _save_gif_two_frames(img, path: Path) -> None:
    """A GIF whose second frame is blue: readers must use the first."""
    from PIL import Image

    img.save(path, save_all=True, append_images=[Image.new("RGB", img.size, (0, 0, 255))], duration=50, loop=0)


#: One writer per format vsearch reads: ``WRITERS[kind](pil_image, path)`` makes a real file.
WRITERS = {
    "jpeg": lambda im, p: im.save(p, "JPEG", quality=95),
    "png": lambda im, p: im.save(p, "PNG"),
    "webp": lambda im, p: im.save(p, "WEBP", quality=95),
    "gif": _save_gif_two_frames,
    "bmp": lambda im, p: im.save(p, "BMP"),
    "tiff": lambda im, p: im.save(p, "TIFF"),
    "tiff-lzw": lambda im, p: im.save(p, "TIFF", compression="tiff_lzw"),
    "heif": _save_heif,
    "avif": lambda im, p: im.save(p, "AVIF", quality=95),
}


_CLI_REPORTING_TORCH = """
import sys
from vsearch.cli.main import app
try:
    app(sys.argv[1:], prog_name="vsearch")
except SystemExit as exc:
    code = exc.code
print("TORCH" if "torch" in sys.modules else "NO-TORCH", file=sys.stderr)
sys.exit(code)
"""


def run_cli_reporting_torch(*args) -> subprocess.CompletedProcess[str]:
    """``vsearch ARGS`` in a fresh process whose last stderr line says whether torch was imported."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", _CLI_REPORTING_TORCH, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def trash(tmp_path, monkeypatch) -> Path:
    """The freedesktop home trash, in tmp: HOME and XDG_DATA_HOME point there (send2trash reads
    XDG_DATA_HOME once, at import, so its module's copy is pointed there too)."""
    from send2trash import plat_other

    home, data = tmp_path / "home", tmp_path / "xdg"
    home.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setattr(plat_other, "XDG_DATA_HOME", os.fsencode(data))
    monkeypatch.setattr(plat_other, "HOMETRASH_B", os.fsencode(data / "Trash"))
    monkeypatch.setattr(plat_other, "HOMETRASH", str(data / "Trash"))
    return data / "Trash"
