"""Importing or using vsearch changes nothing process-wide in the program that uses it.

Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``), the environment, the
warnings filters and Pillow's plugin registry (the HEIF opener) belong to the whole process.
Each check runs in a fresh interpreter, so that nothing this test process imported or set
earlier can hide a change.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import WRITERS
from vsearch.errors import ImageDecodeError
from vsearch.imaging import images, opening

REPO = Path(__file__).resolve().parents[1]

#: The refusal of an image whose header claims more than --max-pixels, word for word as before.
OVER_CAP = "image too large (30000x30000 = 900 MP > limit 200 MP; raise it with max_pixels=)"


def _run(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _png_claiming(path: Path, w: int, h: int) -> Path:
    """A greyscale PNG whose header claims w x h pixels, with two rows of data (a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (w + 1) * 2)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


_IMPORT_EVERYTHING = r"""
import importlib, importlib.util, json, os, pkgutil, sys, warnings
from PIL import Image

limit, environ, filters, openers = Image.MAX_IMAGE_PIXELS, dict(os.environ), list(warnings.filters), set(Image.OPEN)
import vsearch

names = []
for info in pkgutil.walk_packages(vsearch.__path__, "vsearch."):
    if info.name.split(".")[-1] == "__main__":
        continue  # running the command line is not importing a module
    if info.name.startswith("vsearch.serve") and importlib.util.find_spec("starlette") is None:
        continue  # the page's optional dependency is not installed here
    importlib.import_module(info.name)
    names.append(info.name)

added = [f for f in warnings.filters if f not in filters]
print(json.dumps({
    "modules": names,
    "limit": [limit, Image.MAX_IMAGE_PIXELS],
    "environ": sorted(k for k in set(environ) | set(os.environ) if environ.get(k) != os.environ.get(k)),
    # Filters that third-party libraries add on import are theirs; none may be about Pillow's bomb
    # warning, nor silence every warning.
    "filters": [repr(f) for f in added if "DecompressionBomb" in repr(f) or (f[0] == "ignore" and f[1] is None
                                                                              and f[2] in (Warning, UserWarning))],
    "openers": sorted(set(Image.OPEN) - openers),
    "pillow_heif": "pillow_heif" in sys.modules,
}))
"""


def test_importing_every_vsearch_module_changes_nothing_process_wide():
    got = _run(_IMPORT_EVERYTHING)
    assert "vsearch.imaging.images" in got["modules"] and "vsearch.models.loading" in got["modules"]
    assert len(got["modules"]) > 30
    before, after = got["limit"]
    assert before is not None and after == before  # Pillow's bomb limit: still Pillow's default
    assert got["environ"] == []
    assert got["filters"] == []
    assert got["openers"] == [] and not got["pillow_heif"]  # no HEIF opener until a HEIF file is met


_DECODE = r"""
import json, sys, warnings
from pathlib import Path
from PIL import Image

limit = Image.MAX_IMAGE_PIXELS
filters = list(warnings.filters)
from vsearch.imaging import images
from vsearch.errors import ImageDecodeError

out = {}
normal, over_cap, big_jpeg = (Path(p) for p in sys.argv[1:])
img = images.load_image(normal)
out["normal"] = [img.size, img.mode]
out["after_normal"] = Image.MAX_IMAGE_PIXELS == limit
try:
    images.load_image(over_cap)
    out["over_cap"] = "decoded"
except ImageDecodeError as e:
    out["over_cap"] = str(e)
# Past Pillow's own limit (it would warn on Image.open), but fine for vsearch's caps: a draft.
with warnings.catch_warnings():
    warnings.simplefilter("error")  # this script's own choice: any warning fails the decode
    out["big_jpeg"] = images.load_image(big_jpeg, min_side=224).size
out["limit_after"] = Image.MAX_IMAGE_PIXELS == limit
out["limit"] = limit
out["filters_after"] = list(warnings.filters) == filters
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def jpeg_past_pillows_limit(tmp_path_factory) -> Path:
    """A real JPEG of 10000x9000 (90 MP, past Pillow's default 89.5 MP warning limit)."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    im = Image.new("L", (10000, 9000), 60)
    im.paste(200, (0, 0, 5000, 9000))
    im.save(path, "JPEG", quality=75)
    return path


def test_decoding_keeps_pillows_limit_and_still_refuses_over_cap_images(tmp_path, jpeg_past_pillows_limit):
    normal = tmp_path / "normal.png"
    Image.new("RGB", (64, 48), (200, 30, 40)).save(normal)
    over_cap = _png_claiming(tmp_path / "claims.png", 30000, 30000)
    got = _run(_DECODE, str(normal), str(over_cap), str(jpeg_past_pillows_limit))
    assert got["normal"] == [[64, 48], "RGB"]
    assert got["limit"] is not None and 10000 * 9000 > got["limit"]  # Pillow's default: the JPEG is past it
    assert got["after_normal"] is True and got["limit_after"] is True and got["filters_after"] is True
    assert got["over_cap"] == OVER_CAP  # the same one-line refusal as when Pillow's limit was switched off
    assert got["big_jpeg"] == [250, 225]  # drafted at 1/8 by libjpeg (then box-reduced), with no warning


def test_over_cap_refusals_in_this_process(tmp_path, monkeypatch):
    with pytest.raises(ImageDecodeError) as info:
        images.load_image(_png_claiming(tmp_path / "claims.png", 30000, 30000))
    assert str(info.value) == OVER_CAP
    # A stricter limit the program chose is left as it is, and vsearch's own caps still decide.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    normal = tmp_path / "n.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(normal)
    assert images.load_image(normal).size == (64, 48)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_pillows_own_refusal_is_one_line(tmp_path, monkeypatch):
    # Some plugins check Pillow's limit themselves while reading (here TIFF, past 2x the limit):
    # the program's setting wins there, and the refusal is still a one-line ImageDecodeError.
    path = tmp_path / "a.tif"
    Image.new("L", (300, 200), 90).save(path, "TIFF")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ImageDecodeError) as info:
        images.load_image(path)
    message = str(info.value)
    assert message.startswith("image too large for Pillow's limit in this process (") and "\n" not in message


def test_register_heif_is_public(tmp_path):
    assert images.register_heif is opening.register_heif
    path = tmp_path / "x.heic"
    WRITERS["heif"](Image.new("RGB", (40, 30), (200, 30, 40)), path)
    images.register_heif()
    assert images.register_heif() is False  # once per process
    with Image.open(path) as im:  # a caller's own Image.open reads HEIF once it is registered
        assert im.size == (40, 30)
    header = images.read_header(path)
    assert (header.width, header.height, header.format, header.pixels) == (40, 30, "HEIF", 1200)


def test_read_header_needs_no_decode_and_refuses_what_is_not_an_image(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (20, 10)).save(buf, "PNG")
    assert images.read_header(buf.getvalue()) == images.ImageHeader(20, 10, "PNG")
    # A header past every limit is still read (Pillow's limit is neither checked nor changed).
    limit = Image.MAX_IMAGE_PIXELS
    assert images.read_header(_png_claiming(tmp_path / "claims.png", 30000, 30000)).pixels == 900_000_000
    assert Image.MAX_IMAGE_PIXELS == limit
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageDecodeError, match="^not an image or unsupported format$"):
        images.read_header(tmp_path / "notes.jpg")
    with pytest.raises(ImageDecodeError, match="^file not found$"):
        images.read_header(tmp_path / "missing.jpg")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageDecodeError, match=r"^not a regular file \(a FIFO\)$"):
        images.read_header(fifo)  # refused without blocking
