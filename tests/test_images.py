"""vsearch.imaging: scanning folders (scan), reading files (reading) and decoding images (images), on real files made in tmp_path."""

from __future__ import annotations

import io
import os
import resource
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import WRITERS, make_photo
from tests.helpers import cli, ok
from vsearch.indexing import pipeline as indexer
from vsearch.imaging import raw
from vsearch.errors import ImageDecodeError, VsearchError
from vsearch.imaging.images import (
    DEFAULT_MAX_PIXELS,
    PAD_COLOUR,
    decode_for_model,
    load_image,
    to_model_array,
)
from vsearch.imaging.reading import DEFAULT_MAX_BYTES, max_bytes_limit, read_image_bytes
from vsearch.imaging.scan import IMAGE_EXTENSIONS, FoundFile, ScanProblem, is_image_path, scan_folder

REPO = Path(__file__).resolve().parents[1]
RED = (220, 30, 40)
BLUE = (30, 60, 210)
GREEN = (40, 200, 60)


def close(pixel, expected, tol=12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


def centre(img: Image.Image):
    return img.getpixel((img.width // 2, img.height // 2))


def noise_photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth gradients plus noise, upscaled from a small one."""
    rng = np.random.default_rng(seed)
    sw, sh = max(8, w // 16), max(8, h // 16)
    y, x = np.mgrid[0:sh, 0:sw]
    base = np.stack([x * 255 / sw, y * 255 / sh, (x + y) * 127 / (sw + sh)], axis=-1)
    small = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------- formats


SAVERS = {
    "a.jpg": WRITERS["jpeg"],
    "UPPER.JPEG": WRITERS["jpeg"],
    "a.png": WRITERS["png"],
    "a.webp": WRITERS["webp"],
    "a.gif": WRITERS["gif"],
    "a.bmp": WRITERS["bmp"],
    "a.tif": WRITERS["tiff"],
    "a.tiff": WRITERS["tiff-lzw"],
    "a.heic": WRITERS["heif"],
    "a.avif": WRITERS["avif"],
}


@pytest.mark.parametrize("name", sorted(SAVERS))
def test_every_format_decodes_to_its_colour(tmp_path, name):
    path = tmp_path / name
    SAVERS[name](Image.new("RGB", (64, 48), RED), path)
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.size == (64, 48)
    assert close(centre(img), RED, tol=16), centre(img)  # GIF: first frame, not the blue one


def test_extension_set_and_is_image_path():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif",
            ".avif", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2"} == IMAGE_EXTENSIONS
    assert is_image_path(Path("x/Y.JPG"))
    assert is_image_path(Path("photo.HeIc"))
    assert is_image_path(Path("DSC_0001.NEF")) and is_image_path(Path("img.cr3"))
    assert not is_image_path(Path("notes.txt"))
    assert not is_image_path(Path("jpg"))  # a bare name is not an extension


def test_bytes_source_decodes(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), GREEN).save(buf, "PNG")
    img = load_image(buf.getvalue())
    assert img.size == (20, 10) and close(centre(img), GREEN)


def test_heif_opener_is_registered_lazily_and_on_unidentified_bytes(tmp_path):
    # A fresh interpreter: importing images.py must not import pillow_heif, and HEIC bytes
    # (no file name to go by) must still decode, by registering on the first miss.
    path = tmp_path / "x.heic"
    WRITERS["heif"](Image.new("RGB", (32, 32), RED), path)
    code = (
        "import sys; from pathlib import Path\n"
        "import vsearch.imaging.images as vi\n"
        "assert 'pillow_heif' not in sys.modules\n"
        f"img = vi.load_image(Path({str(path)!r}).read_bytes())\n"
        "assert 'pillow_heif' in sys.modules\n"
        "print(img.size, img.getpixel((16, 16)))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("(32, 32)")


# --------------------------------------------------------------------------- orientation


@pytest.mark.parametrize(("orientation", "marker_at"), [(6, "top_right"), (8, "bottom_left")])
def test_exif_orientation_is_applied(tmp_path, orientation, marker_at):
    # Stored 60 wide x 40 high, with a red marker in the stored top-left corner.
    stored = Image.new("RGB", (60, 40), BLUE)
    stored.paste(RED, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())

    img = load_image(path)
    assert img.size == (40, 60)  # displayed upright: transposed
    # 6 = rotate 90 clockwise to display: stored top-left goes to the top-right.
    # 8 = rotate 90 anticlockwise: stored top-left goes to the bottom-left.
    corners = {"top_left": (4, 4), "top_right": (35, 4), "bottom_left": (4, 55)}
    assert close(img.getpixel(corners[marker_at]), RED, tol=30)
    assert close(img.getpixel(corners["top_left"]), BLUE, tol=30)


def test_orientation_applies_with_draft_too(tmp_path):
    stored = noise_photo(1600, 1200)
    stored.paste(RED, (0, 0, 200, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "big_rotated.jpg"
    stored.save(path, "JPEG", quality=90, exif=exif.tobytes())
    img = load_image(path, min_side=100)
    assert img.width < img.height  # portrait once upright
    assert min(img.size) >= 100
    assert close(img.getpixel((img.width - 3, 3)), RED, tol=40)


# --------------------------------------------------------------------------- colour modes


def test_palette_with_transparency_goes_on_white(tmp_path):
    im = Image.new("P", (40, 20), 0)
    im.putpalette([*BLUE, *GREEN] + [0] * (256 * 3 - 6))
    im.paste(1, (20, 0, 40, 20))  # right half: green; left half: index 0, transparent
    path = tmp_path / "pal.png"
    im.save(path, transparency=0)
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((5, 10)) == (255, 255, 255)
    assert img.getpixel((35, 10)) == GREEN


def test_rgba_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (30, 10), (*RED, 0))  # fully transparent red: white
    im.paste((*BLUE, 255), (10, 0, 20, 10))  # opaque blue
    im.paste((0, 0, 0, 128), (20, 0, 30, 10))  # half-transparent black: mid grey
    path = tmp_path / "rgba.png"
    im.save(path)
    img = load_image(path)
    assert img.getpixel((5, 5)) == (255, 255, 255)
    assert img.getpixel((15, 5)) == BLUE
    assert close(img.getpixel((25, 5)), (127, 127, 127), tol=2)


def test_la_is_composited_on_white(tmp_path):
    im = Image.new("LA", (10, 10), (0, 0))
    path = tmp_path / "la.png"
    im.save(path)
    assert load_image(path).getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_becomes_rgb(tmp_path, fmt):
    im = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # no cyan, full magenta+yellow: red
    path = tmp_path / f"cmyk.{fmt.lower()}"
    im.save(path, fmt)
    img = load_image(path)
    assert img.mode == "RGB"
    assert close(centre(img), (255, 0, 0), tol=8), centre(img)


def test_greyscale_and_one_bit(tmp_path):
    Image.new("L", (10, 10), 100).save(tmp_path / "l.png")
    assert load_image(tmp_path / "l.png").getpixel((5, 5)) == (100, 100, 100)

    one = Image.new("1", (20, 10), 0)
    one.paste(1, (10, 0, 20, 10))
    one.save(tmp_path / "one.png")
    img = load_image(tmp_path / "one.png")
    assert img.getpixel((5, 5)) == (0, 0, 0)
    assert img.getpixel((15, 5)) == (255, 255, 255)


def test_sixteen_bit_greyscale_png_scaled_not_clipped(tmp_path):
    a = np.zeros((10, 30), np.uint16)
    a[:, 10:20] = 32768
    a[:, 20:] = 65535
    path = tmp_path / "g16.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode.startswith("I;16")  # the mode this test means to cover
    img = load_image(path)
    assert img.getpixel((5, 5)) == (0, 0, 0)
    assert close(img.getpixel((15, 5)), (128, 128, 128), tol=1)
    assert img.getpixel((25, 5)) == (255, 255, 255)


def test_sixteen_bit_big_endian_tiff(tmp_path):
    im = Image.new("I;16B", (10, 10), 65535)
    path = tmp_path / "g16b.tif"
    im.save(path)
    assert load_image(path).getpixel((5, 5)) == (255, 255, 255)


def test_float_tiff(tmp_path):
    a = np.zeros((10, 20), np.float32)
    a[:, 10:] = 0.5
    a[0, 0] = 1.0
    path = tmp_path / "f.tif"
    Image.fromarray(a, "F").save(path)
    assert Image.open(path).mode == "F"
    img = load_image(path)
    assert close(img.getpixel((15, 5)), (128, 128, 128), tol=1)
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((5, 5)) == (0, 0, 0)


def test_int32_greyscale_holding_16_bit_data(tmp_path):
    a = np.full((10, 10), 65535, np.int32)
    path = tmp_path / "i32.tif"
    Image.fromarray(a, "I").save(path)
    assert load_image(path).getpixel((5, 5)) == (255, 255, 255)


# --------------------------------------------------------------------------- bad files


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageDecodeError, match="empty file"):
        load_image(path)
    with pytest.raises(ImageDecodeError, match="empty file"):
        load_image(b"")


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    noise_photo(400, 300).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"^truncated or corrupt image \(.+\)$"):
        load_image(path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageDecodeError, match="not an image or unsupported format"):
        load_image(path)


def test_missing_file_and_folder_given(tmp_path):
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="folder"):
        load_image(tmp_path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that read a mode-000 file")
        with pytest.raises(ImageDecodeError, match=r"unreadable \(Permission denied\)"):
            load_image(path)
    finally:
        path.chmod(0o644)


def test_errors_are_single_lines(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- bombs


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_l_png(path: Path, w: int, h: int, *, rows: int | None = None) -> None:
    """A greyscale PNG of zeros, streamed (never the whole image in memory).

    ``rows`` writes only that many rows of data: a header that claims more than it holds.
    """
    comp = zlib.compressobj(1)
    row = b"\x00" * (w + 1)  # filter byte + pixels
    parts = []
    for _ in range(h if rows is None else rows):
        out = comp.compress(row)
        if out:
            parts.append(out)
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", ihdr))
        f.write(_png_chunk(b"IDAT", b"".join(parts)))
        f.write(_png_chunk(b"IEND", b""))


def test_png_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    _write_l_png(path, 12000, 12000)  # 144 MP, compresses to ~150 kB
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape
        with pytest.raises(ImageDecodeError) as info:
            load_image(path, max_pixels=10_000_000)
    message = str(info.value)
    assert "too large" in message and message.endswith("; raise it with max_pixels=)")
    assert "12000x12000" in message and "144 MP" in message and "10 MP" in message


def test_header_claiming_gigapixels_fails_fast(tmp_path):
    # 60000 x 60000 = 3.6 GP: decoding it would need 3.6 GB. It must be refused from the
    # header, under the default limit, without Pillow's own bomb error escaping.
    path = tmp_path / "claims.png"
    _write_l_png(path, 60000, 60000, rows=2)
    with pytest.raises(ImageDecodeError, match="too large"):
        load_image(path)
    assert 60000 * 60000 > DEFAULT_MAX_PIXELS


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    # Greyscale keeps the test's own memory at 48 MB; draft works the same on it.
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    im = Image.new("L", (8000, 6000), 90)
    im.paste(200, (0, 0, 4000, 6000))
    im.save(path, "JPEG", quality=80)
    return path


def test_large_jpeg_decodes_at_reduced_size_instead_of_failing(big_jpeg):
    img = load_image(big_jpeg, max_pixels=20_000_000)  # 48 MP > 20 MP, but 1/2 scale fits
    assert img.size == (4000, 3000)
    assert img.mode == "RGB"
    assert close(img.getpixel((1000, 1500)), (200, 200, 200), tol=3)
    assert close(img.getpixel((3000, 1500)), (90, 90, 90), tol=3)


def test_large_jpeg_refused_when_even_one_eighth_is_too_big(big_jpeg):
    with pytest.raises(ImageDecodeError, match=r"too large \(8000x6000 = 48 MP > limit 0.5 MP"):
        load_image(big_jpeg, max_pixels=500_000)


# --------------------------------------------------------------------------- draft / reduce


@pytest.fixture(scope="module")
def photo_12mp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    noise_photo(4000, 3000).save(path, "JPEG", quality=90)
    return path


def test_jpeg_draft_decodes_small(photo_12mp):
    img = load_image(photo_12mp, min_side=224)
    assert min(img.size) >= 224
    assert max(img.size) < 3000 / 4
    assert img.width > img.height  # aspect kept
    assert load_image(photo_12mp).size == (4000, 3000)  # no min_side: full size


def test_non_jpeg_is_reduced_keeping_min_side(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), GREEN).save(path)
    img = load_image(path, min_side=224)
    assert 224 <= min(img.size) < 2 * 224
    assert close(centre(img), GREEN, tol=1)


def test_small_image_is_not_enlarged(tmp_path):
    path = tmp_path / "small.jpg"
    Image.new("RGB", (100, 80), RED).save(path)
    assert load_image(path, min_side=224).size == (100, 80)


# --------------------------------------------------------------------------- model arrays


def _wide_with_red_left_stripe() -> Image.Image:
    im = Image.new("RGB", (300, 100), BLUE)
    im.paste(RED, (0, 0, 30, 100))
    return im


@pytest.mark.parametrize("framing", ["squash", "center_crop", "pad"])
def test_to_model_array_shape_and_type(framing):
    for im in (_wide_with_red_left_stripe(), Image.new("RGB", (50, 170), GREEN)):
        arr = to_model_array(im, 64, framing)
        assert arr.shape == (64, 64, 3)
        assert arr.dtype == np.uint8
        assert arr.flags.writeable


def test_squash_keeps_the_borders_and_center_crop_drops_them():
    im = _wide_with_red_left_stripe()
    squash = to_model_array(im, 64, "squash")
    crop = to_model_array(im, 64, "center_crop")
    assert close(squash[32, 1], RED, tol=20)
    assert close(crop[32, 1], BLUE, tol=20)
    assert close(crop[32, 62], BLUE, tol=20)


def test_pad_keeps_everything_and_pads_grey():
    arr = to_model_array(_wide_with_red_left_stripe(), 60, "pad")  # content is 60 x 20
    assert close(arr[2, 30], PAD_COLOUR, tol=0)  # above the content
    assert close(arr[57, 30], PAD_COLOUR, tol=0)  # below it
    assert close(arr[30, 1], RED, tol=20)
    assert close(arr[30, 50], BLUE, tol=20)


def test_unknown_framing_is_a_user_error():
    with pytest.raises(VsearchError, match="unknown framing"):
        to_model_array(Image.new("RGB", (10, 10)), 8, "stretch")


def test_decode_for_model(photo_12mp):
    arr = decode_for_model(photo_12mp, 224, "squash")
    assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8
    # Same framing of the full-size decode: draft must not change the picture much.
    full = to_model_array(load_image(photo_12mp), 224, "squash")
    assert np.abs(arr.astype(int) - full.astype(int)).mean() < 4
    arr2 = decode_for_model(photo_12mp.read_bytes(), 224, "center_crop")
    assert arr2.shape == (224, 224, 3)


def test_decode_for_model_raises_decode_error(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"nope")
    with pytest.raises(ImageDecodeError):
        decode_for_model(path, 224, "squash")


# --------------------------------------------------------------------------- scanning


def _img(path: Path, colour=RED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".png": "PNG", ".gif": "GIF"}.get(path.suffix.lower(), "JPEG")
    Image.new("RGB", (4, 4), colour).save(path, fmt)
    return path


def _scan(root: Path, **kwargs) -> tuple[list[FoundFile], list[ScanProblem]]:
    problems: list[ScanProblem] = []
    found = list(scan_folder(root, on_problem=problems.append, **kwargs))
    return found, problems


def test_scan_finds_images_sorted_and_ignores_the_rest(tmp_path):
    for rel in ["b.jpg", "a/x.PNG", "a.jpg", "a0.jpeg", "a/sub/deep.GIF", "B.JPG", "a-b.webp"]:
        _img(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a" / "data.json").write_text("{}")
    (tmp_path / "empty_dir").mkdir()

    found, problems = _scan(tmp_path)
    rels = [f.rel for f in found]
    assert rels == sorted(rels)
    assert rels == ["B.JPG", "a-b.webp", "a.jpg", "a/sub/deep.GIF", "a/x.PNG", "a0.jpeg", "b.jpg"]
    assert problems == []


def test_found_file_fields(tmp_path):
    path = _img(tmp_path / "one" / "two" / "p.jpg")
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (found,) = list(scan_folder(tmp_path))
    assert found.rel == "one/two/p.jpg"
    assert found.path == path.absolute() and found.path.is_absolute()
    assert found.size == path.stat().st_size > 0
    assert found.mtime_ns == 1_600_000_000_123_456_789


def test_scan_relative_root_gives_absolute_paths(tmp_path, monkeypatch):
    _img(tmp_path / "r" / "p.png")
    monkeypatch.chdir(tmp_path)
    (found,) = list(scan_folder(Path("r")))
    assert found.path == tmp_path / "r" / "p.png"
    assert found.rel == "p.png"


def test_hidden_skipped_unless_asked(tmp_path):
    _img(tmp_path / "seen.jpg")
    _img(tmp_path / ".hidden.jpg")
    _img(tmp_path / ".cache" / "thumb.jpg")
    found, _ = _scan(tmp_path)
    assert [f.rel for f in found] == ["seen.jpg"]
    found, _ = _scan(tmp_path, include_hidden=True)
    assert [f.rel for f in found] == [".cache/thumb.jpg", ".hidden.jpg", "seen.jpg"]


def test_excluded_dir_skipped(tmp_path):
    _img(tmp_path / "keep" / "a.jpg")
    _img(tmp_path / "index" / "thumbs" / "t.jpg")
    found, problems = _scan(tmp_path, exclude=[tmp_path / "index"])
    assert [f.rel for f in found] == ["keep/a.jpg"]
    assert problems == []
    # Any spelling of the same folder excludes it (it is compared by identity).
    found, _ = _scan(tmp_path, exclude=[tmp_path / "keep" / ".." / "index"])
    assert [f.rel for f in found] == ["keep/a.jpg"]
    # An exclude that does not exist excludes nothing.
    found, _ = _scan(tmp_path, exclude=[tmp_path / "nowhere"])
    assert len(found) == 2


def test_symlink_loop_reported_not_followed(tmp_path):
    _img(tmp_path / "a" / "p.jpg")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    found, problems = _scan(tmp_path)
    assert [f.rel for f in found] == ["a/p.jpg"]
    assert sorted((p.path.name, p.reason) for p in problems) == [
        ("loop", "symlink loop"),
        ("up", "symlink loop"),
    ]


def test_symlinked_dir_outside_is_followed_once(tmp_path):
    outside = tmp_path / "outside"
    _img(outside / "o.jpg")
    root = tmp_path / "root"
    _img(root / "r.jpg")
    (root / "link1").symlink_to(outside, target_is_directory=True)
    (root / "link2").symlink_to(outside, target_is_directory=True)
    found, problems = _scan(root)
    assert [f.rel for f in found] == ["link1/o.jpg", "r.jpg"]
    assert found[0].path == root / "link1" / "o.jpg"
    assert [(p.path.name, p.reason) for p in problems] == [
        ("link2", "already scanned via another path (symlink)")
    ]


def test_broken_symlink_reported(tmp_path):
    _img(tmp_path / "ok.jpg")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "good_link.jpg").symlink_to(tmp_path / "ok.jpg")
    found, problems = _scan(tmp_path)
    assert [f.rel for f in found] == ["good_link.jpg", "ok.jpg"]
    assert [(p.path.name, p.reason) for p in problems] == [("gone.jpg", "broken symlink")]


def test_unreadable_dir_reported_and_walk_goes_on(tmp_path):
    _img(tmp_path / "a" / "ok.jpg")
    locked = tmp_path / "b"
    _img(locked / "secret.jpg")
    _img(tmp_path / "c" / "ok.jpg")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with privileges that read a mode-000 folder")
        found, problems = _scan(tmp_path)
        assert [f.rel for f in found] == ["a/ok.jpg", "c/ok.jpg"]
        assert [(p.path, p.reason) for p in problems] == [
            (locked, "unreadable directory (Permission denied)")
        ]
    finally:
        locked.chmod(0o755)


def test_problems_are_logged_without_a_callback(tmp_path, caplog):
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    with caplog.at_level("WARNING", logger="vsearch.imaging.scan"):
        assert list(scan_folder(tmp_path)) == []
    assert "broken symlink" in caplog.text


def test_missing_root_or_file_root(tmp_path):
    with pytest.raises(VsearchError, match="folder not found"):
        scan_folder(tmp_path / "nope")  # raised at the call, not at the first next()
    f = _img(tmp_path / "f.jpg")
    with pytest.raises(VsearchError, match="not a folder"):
        scan_folder(f)


def test_scan_is_lazy(tmp_path):
    for i in range(5):
        _img(tmp_path / f"d{i}" / "p.jpg")
    it = scan_folder(tmp_path)
    assert iter(it) is it and not isinstance(it, list)
    first = next(it)
    assert first.rel == "d0/p.jpg"
    # Files added to a folder the walk has not reached yet are still seen: nothing was
    # listed up front beyond the folders on the current path.
    _img(tmp_path / "d4" / "late.jpg")
    assert [f.rel for f in it][-2:] == ["d4/late.jpg", "d4/p.jpg"]


def test_deep_tree_does_not_recurse(tmp_path):
    deep = tmp_path
    for i in range(60):
        deep = deep / f"d{i}"
    _img(deep / "bottom.jpg")
    (found,) = list(scan_folder(tmp_path))
    assert found.rel.count("/") == 60


# --------------------------------------------------------------------------- bounded reads


def _finishes(fn, timeout: float = 10.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it blocks."""
    outcome: list = []

    def target():
        try:
            outcome.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(("raised", e))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn} blocked for {timeout} s"
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return value


def _unblock(fifo: Path) -> None:
    """Release a reader that a regression left blocked in open() on ``fifo``."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waiting


# The real CLI in a fresh process, with the fake model registered (the index under test uses it).
_CLI_WITH_FAKE_MODEL = """
import sys
from tests.conftest import FakeEmbedder
from vsearch.models import loading as models
from vsearch.cli.main import app
embedder = FakeEmbedder("fake")
models.register("fake", lambda name, device, threads: embedder)
app(sys.argv[1:], prog_name="vsearch")
"""


def _run_vsearch(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    """``vsearch ARGS`` in a fresh process with a 2 GB address-space cap: a regression that
    reads without bound fails with MemoryError instead of taking the machine's memory, and
    one that blocks fails on the timeout instead of hanging the suite."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", _CLI_WITH_FAKE_MODEL, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=cap)


def test_read_image_bytes_reads_a_regular_file(tmp_path):
    path = make_photo(tmp_path / "p.jpg")
    assert read_image_bytes(path) == path.read_bytes()
    with pytest.raises(ImageDecodeError, match="file not found"):
        read_image_bytes(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="folder"):
        read_image_bytes(tmp_path)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    try:
        with pytest.raises(ImageDecodeError, match=r"^not a regular file \(a FIFO\)$"):
            _finishes(lambda: read_image_bytes(fifo))
        with pytest.raises(ImageDecodeError, match="not a regular file"):
            _finishes(lambda: load_image(fifo))
    finally:
        _unblock(fifo)


def test_file_over_the_byte_cap_is_refused_unread(tmp_path, monkeypatch):
    sparse = tmp_path / "huge.jpg"
    with open(sparse, "wb") as f:
        f.truncate(8 << 30)  # 8 GiB, sparse: no disk used, and reading it would take 8 GiB
    with pytest.raises(ImageDecodeError, match=r"file too large \(8 GiB > limit 256 MiB; raise it with VSEARCH_MAX_BYTES\)"):
        read_image_bytes(sparse)
    photo = make_photo(tmp_path / "p.jpg")
    size = photo.stat().st_size
    assert read_image_bytes(photo, max_bytes=size) == photo.read_bytes()
    with pytest.raises(ImageDecodeError, match="file too large"):
        read_image_bytes(photo, max_bytes=size - 1)
    monkeypatch.setenv("VSEARCH_MAX_BYTES", str(size - 1))
    with pytest.raises(ImageDecodeError, match="file too large"):
        load_image(photo)


def test_max_bytes_setting(monkeypatch):
    monkeypatch.delenv("VSEARCH_MAX_BYTES", raising=False)
    assert max_bytes_limit() == DEFAULT_MAX_BYTES == 256 << 20
    for text, value in [("1000", 1000), ("512M", 512 << 20), ("2g", 2 << 30), (" 64K ", 64 << 10)]:
        monkeypatch.setenv("VSEARCH_MAX_BYTES", text)
        assert max_bytes_limit() == value
    for bad in ["lots", "0", "-5", "12X"]:
        monkeypatch.setenv("VSEARCH_MAX_BYTES", bad)
        with pytest.raises(VsearchError, match="VSEARCH_MAX_BYTES must be a positive number of bytes"):
            max_bytes_limit()


@pytest.fixture
def built_index(tmp_path, fake_model) -> tuple[Path, Path]:
    """A folder of photos indexed with the fake model: (folder, index dir)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        make_photo(folder / f"p{i}.jpg", seed=i)
    index_dir = tmp_path / "idx"
    ok(cli("build-index", folder, "--model", "fake", "--index-dir", index_dir, "-q"))
    return folder, index_dir


def test_query_on_a_fifo_is_one_error_line_not_a_hang(built_index, tmp_path):
    folder, index_dir = built_index
    for fifo in (tmp_path / "x.jpg", folder / "p1.jpg"):  # a new path, and an indexed one swapped
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
        try:
            proc = _run_vsearch("query", fifo, "--index-dir", index_dir, timeout=60)
        finally:
            _unblock(fifo)
        assert proc.returncode == 1, proc.stderr
        # (The swapped one may also get the warning that the folder changed since indexing.)
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: cannot read query image {fifo}: not a regular file (a FIFO)"
        )


@pytest.mark.parametrize("target", ["/dev/zero", "sparse"])
def test_query_on_dev_zero_or_a_sparse_giant_is_refused_quickly(built_index, tmp_path, target):
    _, index_dir = built_index
    if target == "sparse":
        path = tmp_path / "giant.jpg"
        with open(path, "wb") as f:
            f.truncate(8 << 30)
        reason = "file too large (8 GiB > limit 256 MiB; raise it with VSEARCH_MAX_BYTES)"
    else:
        path = Path(target)
        reason = "not a regular file (a device)"
    proc = _run_vsearch("query", path, "--index-dir", index_dir, timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"error: cannot read query image {path}: {reason}"]


def test_file_swapped_for_a_fifo_mid_build_is_a_named_skip(tmp_path, fake_model, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        make_photo(folder / f"p{i}.jpg", seed=i)
    swapped = folder / "p2.jpg"
    real_scan = indexer.images.scan_folder

    scans = []

    def scan_then_swap(*args, **kwargs):
        # The indexer's walk (its second scan) sees a regular file; by the time the file is
        # read, it is a FIFO.
        found = list(real_scan(*args, **kwargs))
        scans.append(len(found))
        if len(scans) == 2:
            swapped.unlink()
            os.mkfifo(swapped)
        return iter(found)

    monkeypatch.setattr(indexer.images, "scan_folder", scan_then_swap)
    index_dir = tmp_path / "idx"
    try:
        result = ok(_finishes(lambda: cli("build-index", folder, "--model", "fake", "--index-dir", index_dir),
                              timeout=30))
    finally:
        _unblock(swapped)
    assert "skipped p2.jpg: not a regular file (a FIFO)" in result.stderr
    assert "skipped 1" in result.stderr


# --------------------------------------------------------------------------- bombs under the pixel cap


def _zeros_png(path: Path, w: int, h: int, colour_type: int = 0, channels: int = 1) -> Path:
    """A PNG of zeros (greyscale, RGB or RGBA), deflated at level 9, streamed row by row."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (w * channels + 1)
    idat = b"".join([comp.compress(row) for _ in range(h)] + [comp.flush()])
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


def _gif_bomb(path: Path, w: int, h: int) -> Path:
    """A true GIF bomb: w x h pixels of colour 1, LZW-coded by hand (the pixels never exist)."""
    acc = nbits = 0
    out = bytearray()

    def emit(code: int, size: int) -> None:
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    # Minimum code size 2: codes 0-3 are colours, 4 clears, 5 ends, 6.. are runs of 2, 3, ...
    size, nxt, length, left = 3, 6, 1, w * h
    emit(4, size)
    while left:
        n = min(length, left)
        emit(1 if n == 1 else n + 4, size)
        left -= n
        if nxt == 4095:  # the table is full: clear it and start again
            emit(4, size)
            size, nxt, length = 3, 6, 1
            continue
        nxt += 1  # the decoder now knows the run of n + 1
        length = n + 1
        if nxt > (1 << size) and size < 12:
            size += 1
    emit(5, size)
    if nbits:
        out.append(acc & 0xFF)
    blocks = b"".join(bytes([len(out[i:i + 255])]) + out[i:i + 255] for i in range(0, len(out), 255))
    path.write_bytes(b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
                     + b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x02" + blocks + b"\0;")
    return path


def _jpeg_claiming(path: Path, w: int, h: int) -> Path:
    """A tiny valid JPEG whose frame header is edited to claim w x h pixels."""
    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, "JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, h, w)
    path.write_bytes(bytes(data))
    return path


def test_gif_bomb_helper_makes_a_real_gif(tmp_path):
    path = _gif_bomb(tmp_path / "small.gif", 3000, 3001)  # past one LZW table reset
    with Image.open(path) as im:
        im.load()
        assert im.size == (3000, 3001) and im.convert("L").getextrema() == (255, 255)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> Path:
    """Bombs under the 200 MP cap that decoded to 0.3-1.7 GB before they were refused."""
    folder = tmp_path_factory.mktemp("bombs")
    _zeros_png(folder / "zeros.png", 14000, 14000)  # 196 MP from 186 kB
    _gif_bomb(folder / "lzw.gif", 14000, 14000)  # 196 MP from 134 kB
    _jpeg_claiming(folder / "claims.jpg", 65000, 65000)  # 4225 MP from 333 bytes
    return folder


BOMB_NAMES = ["claims.jpg", "lzw.gif", "zeros.png"]


def test_bombs_are_refused_from_the_header(bombs):
    for name in BOMB_NAMES:
        with pytest.raises(ImageDecodeError, match=r"^likely decompression bomb \(\d+x\d+ = \d+ MP claimed by a file of"
                                                   r" .+, over 500 pixels per byte; real photos stay under 20\)$"):
            load_image(bombs / name, min_side=224)
    with pytest.raises(ImageDecodeError, match=r"65000x65000 = 4225 MP claimed by a file of 333 bytes"):
        load_image(bombs / "claims.jpg")


def test_bombs_are_named_skips_in_a_build(bombs, tmp_path, fake_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in BOMB_NAMES:
        (folder / name).write_bytes((bombs / name).read_bytes())
    make_photo(folder / "ok.jpg")
    result = ok(cli("build-index", folder, "--model", "fake", "--index-dir", tmp_path / "idx"))
    assert "embedded 1," in result.stderr and "skipped 3" in result.stderr
    for name in BOMB_NAMES:
        assert f"skipped {name}: likely decompression bomb" in result.stderr


# Peak RSS from /proc (VmHWM, reset at exec), not getrusage: Linux carries ru_maxrss over from
# the parent at exec, so a child of a big pytest process would report the parent's peak.
_PEAK_RSS = """
import sys
from pathlib import Path
from vsearch.imaging import images
from vsearch.errors import ImageDecodeError
for name in sys.argv[1:]:
    try:
        images.decode_for_model(Path(name), 224, "squash")
        print(name, "decoded")
    except ImageDecodeError as e:
        print(name, e)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("peak_mb", int(hwm.split()[1]) // 1024)
"""


def test_bomb_memory_is_bounded(bombs):
    # Peak RSS of a fresh process that tries every bomb (before: 0.33-1.7 GB, 1.3-4.7 s each).
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, *(str(bombs / n) for n in BOMB_NAMES)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all("likely decompression bomb" in line for line in lines[:-1]), lines
    peak_mb = int(lines[-1].split()[1])
    assert peak_mb < 150, lines  # Python, numpy and Pillow alone take ~40 MB


def test_frame_memory_cap_refuses_what_only_decodes_whole(tmp_path, monkeypatch):
    # RGBA deflate tops out at ~258 pixels per byte, under the bomb bound: the cap on the
    # decoded frame (4 bytes a pixel) is what bounds it.
    path = _zeros_png(tmp_path / "rgba.png", 2100, 2100, colour_type=6, channels=4)
    monkeypatch.setenv("VSEARCH_MAX_BYTES", "8M")
    with pytest.raises(ImageDecodeError, match=r"^image too large to decode \(2100x2100 RGBA needs 16.8 MiB >"
                                               r" limit 8 MiB; raise it with VSEARCH_MAX_BYTES\)$"):
        load_image(path, min_side=224)
    monkeypatch.setenv("VSEARCH_MAX_BYTES", "17M")
    assert load_image(path, min_side=224).getpixel((0, 0)) == (255, 255, 255)  # transparent: white


def test_frame_memory_cap_picks_a_jpeg_draft_scale(big_jpeg):
    img = load_image(big_jpeg, max_bytes=20 << 20)  # 8000x6000 greyscale: 48 MB whole, 12 MB at 1/2
    assert img.size == (4000, 3000)


def test_large_palette_image_is_reduced_in_strips_exactly(tmp_path):
    # A palette image with a transparent index, reduced by 7 for min_side: converted strip by
    # strip, it must equal converting it whole and then reducing.
    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 16, (1900, 2900), dtype=np.uint8), "P")
    im.putpalette(list(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tolist()))
    path = tmp_path / "pal.png"
    im.save(path, transparency=5)
    rgba = Image.open(path).convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, (0, 0), rgba)
    expected = np.asarray(white.reduce(7))
    got = np.asarray(load_image(path, min_side=270))
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_real_photos_are_far_from_the_bomb_bound(tmp_path):
    # The sample photos, and the most compressible photo-like file: a flat 12 MP JPEG (~64 px/B).
    flat = tmp_path / "flat.jpg"
    Image.new("RGB", (4000, 3000), (200, 200, 200)).save(flat, "JPEG", quality=95)
    paths = [flat, *sorted((REPO / "sample_images").glob("*.jpg"))]
    for path in paths:
        with Image.open(path) as im:
            assert im.width * im.height / path.stat().st_size < 100
        assert decode_for_model(path, 224, "squash").shape == (224, 224, 3)


# --------------------------------------------------------------------------- camera RAW

_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10
_TIFF_SIZE = {_BYTE: 1, _ASCII: 1, _SHORT: 2, _LONG: 4, _RATIONAL: 8, _SRATIONAL: 8}
_TIFF_FMT = {_BYTE: "B", _ASCII: "B", _SHORT: "H", _LONG: "I", _RATIONAL: "II", _SRATIONAL: "ii"}


def _tiff(ifds: list[list[tuple]], blobs: list[bytes]) -> bytes:
    """Little-endian TIFF bytes: IFD0 then SubIFDs, then the data blobs.

    A tag's values may be ("blob", i) or ("ifd", k): the file offset of that blob or IFD.
    """
    ifd_at, pos = [], 8
    for tags in ifds:
        ifd_at.append(pos)
        pos += 2 + 12 * len(tags) + 4
        pos += sum(-(-_TIFF_SIZE[t] * len(v) // 2) * 2 for _, t, v in tags if _TIFF_SIZE[t] * len(v) > 4)
    blob_at = []
    for blob in blobs:
        blob_at.append(pos)
        pos += len(blob) + (len(blob) & 1)
    out = bytearray(b"II*\0" + struct.pack("<I", 8))
    for k, tags in enumerate(ifds):
        tags = sorted(tags, key=lambda e: e[0])
        extra_at = ifd_at[k] + 2 + 12 * len(tags) + 4
        entries, extra = bytearray(struct.pack("<H", len(tags))), bytearray()
        for tag, typ, values in tags:
            values = [(blob_at if v[0] == "blob" else ifd_at)[v[1]] if isinstance(v, tuple) and isinstance(v[0], str)
                      else v for v in values]
            data = b"".join(struct.pack("<" + _TIFF_FMT[typ], *(v if isinstance(v, tuple) else (v,))) for v in values)
            if len(data) <= 4:
                entries += struct.pack("<HHI", tag, typ, len(values)) + data.ljust(4, b"\0")
            else:
                entries += struct.pack("<HHII", tag, typ, len(values), extra_at + len(extra))
                extra += data + b"\0" * (len(data) & 1)
        out += entries + struct.pack("<I", 0) + extra
    for blob in blobs:
        out += blob + b"\0" * (len(blob) & 1)
    return bytes(out)


def _write_dng(path: Path, rgb: np.ndarray, *, preview: Image.Image | None = None, orientation: int = 1) -> Path:
    """A minimal valid DNG that LibRaw reads: ``rgb`` (H, W, 3 uint8) sampled into a 12-bit RGGB
    Bayer mosaic, an identity colour matrix, and optionally ``preview`` as the JPEG preview in
    IFD0 (the raw data then lives in a SubIFD, as cameras lay DNGs out)."""
    h, w, _ = rgb.shape
    mosaic = np.empty((h, w), np.uint16)
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    sensor = (mosaic.astype("<u2") * 16).tobytes()
    raw_ifd = [
        (254, _LONG, [0]), (256, _LONG, [w]), (257, _LONG, [h]), (258, _SHORT, [16]), (259, _SHORT, [1]),
        (262, _SHORT, [32803]), (273, _LONG, [("blob", 0)]), (277, _SHORT, [1]), (278, _LONG, [h]),
        (279, _LONG, [len(sensor)]), (284, _SHORT, [1]), (33421, _SHORT, [2, 2]), (33422, _BYTE, [0, 1, 1, 2]),
        (50717, _LONG, [4095]),  # WhiteLevel
    ]
    camera = [
        (271, _ASCII, list(b"vsearch\0")), (272, _ASCII, list(b"test\0")), (274, _SHORT, [orientation]),
        (50706, _BYTE, [1, 4, 0, 0]), (50707, _BYTE, [1, 1, 0, 0]), (50708, _ASCII, list(b"vsearch test\0")),
        (50721, _SRATIONAL, [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]),
        (50728, _RATIONAL, [(1, 1), (1, 1), (1, 1)]), (50778, _SHORT, [21]),  # AsShotNeutral, D65
    ]
    if preview is None:
        path.write_bytes(_tiff([raw_ifd + camera], [sensor]))
        return path
    buf = io.BytesIO()
    preview.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    pw, ph = preview.size
    ifd0 = camera + [
        (254, _LONG, [1]), (256, _LONG, [pw]), (257, _LONG, [ph]), (258, _SHORT, [8, 8, 8]), (259, _SHORT, [7]),
        (262, _SHORT, [6]), (273, _LONG, [("blob", 1)]), (277, _SHORT, [3]), (278, _LONG, [ph]),
        (279, _LONG, [len(jpeg)]), (284, _SHORT, [1]), (330, _LONG, [("ifd", 1)]),
    ]
    path.write_bytes(_tiff([ifd0, raw_ifd], [sensor, jpeg]))
    return path


def _red_left_blue_right(h: int = 64, w: int = 96) -> np.ndarray:
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, : w // 2] = RED
    rgb[:, w // 2:] = BLUE
    return rgb


def _reddish(pixel) -> bool:
    r, g, b = pixel
    return r > 150 and r > g + 80 and r > b + 50


def _bluish(pixel) -> bool:
    r, g, b = pixel
    return b > 150 and b > r + 80


def test_raw_files_are_scanned_and_recognised_by_content(tmp_path):
    for name in ["a.CR2", "b.cr3", "c.nef", "d.ARW", "e.dng", "f.raf", "g.orf", "h.rw2", "notes.xmp"]:
        (tmp_path / name).write_bytes(b"x")
    found, _ = _scan(tmp_path)
    assert [f.rel for f in found] == ["a.CR2", "b.cr3", "c.nef", "d.ARW", "e.dng", "f.raf", "g.orf", "h.rw2"]

    dng = _write_dng(tmp_path / "x.dng", _red_left_blue_right()).read_bytes()
    assert raw.is_raw(dng)
    assert raw.is_raw(b"II*\0\x10\0\0\0CR\x02\0" + bytes(8))  # CR2
    assert raw.is_raw(b"FUJIFILMCCD-RAW 0201")  # RAF
    assert raw.is_raw(b"IIRO\x08\0\0\0") and raw.is_raw(b"IIU\0\x08\0\0\0")  # ORF, RW2
    assert raw.is_raw(b"\0\0\0\x18ftypcrx \0\0\0\x01")  # CR3
    plain = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(plain, "TIFF")
    assert not raw.is_raw(plain.getvalue())  # an ordinary TIFF stays Pillow's
    assert not raw.is_raw(b"II*\0\xff\xff\xff\x7f")  # a truncated TIFF header: not RAW, not a crash
    assert not raw.is_raw((REPO / "sample_images" / "astronaut.jpg").read_bytes())


def test_raw_without_rawpy_is_a_named_skip_saying_how_to_install(tmp_path, fake_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "rawpy", None)  # what an install without the extra sees
    folder = tmp_path / "photos"
    folder.mkdir()
    _write_dng(folder / "IMG_0001.DNG", _red_left_blue_right())
    make_photo(folder / "ok.jpg")
    with pytest.raises(ImageDecodeError, match=r"^camera RAW file: reading it needs rawpy \(pip install 'vsearch\[raw\]'\)$"):
        load_image(folder / "IMG_0001.DNG")
    result = ok(cli("build-index", folder, "--model", "fake", "--index-dir", tmp_path / "idx"))
    assert "skipped IMG_0001.DNG: camera RAW file: reading it needs rawpy (pip install 'vsearch[raw]')" in result.stderr
    assert "embedded 1," in result.stderr and "skipped 1" in result.stderr


@pytest.fixture
def rawpy_installed():
    return pytest.importorskip("rawpy", reason="the optional extra vsearch[raw] is not installed")


def test_dng_without_preview_is_demosaiced_at_half_size(tmp_path, rawpy_installed):
    path = _write_dng(tmp_path / "x.dng", _red_left_blue_right())
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (48, 32)
    assert _reddish(img.getpixel((8, 16))) and _bluish(img.getpixel((40, 16))), (img.getpixel((8, 16)), img.getpixel((40, 16)))
    arr = decode_for_model(path, 24, "squash")
    assert arr.shape == (24, 24, 3)


def test_dng_preview_is_used_when_large_enough_and_turned_upright(tmp_path, rawpy_installed):
    preview = Image.new("RGB", (300, 200), GREEN)
    preview.paste(RED, (0, 0, 60, 60))  # a marker in the stored top-left corner
    path = _write_dng(tmp_path / "x.dng", _red_left_blue_right(), preview=preview, orientation=6)
    img = load_image(path, min_side=150)
    # The preview, not the red/blue sensor data; orientation 6: turned 90 degrees clockwise.
    assert img.size == (200, 300)
    assert close(img.getpixel((100, 150)), GREEN, tol=20)
    assert close(img.getpixel((190, 10)), RED, tol=40)  # stored top-left is now top-right
    # Smaller than the caller needs: the half-size demosaic instead (upright by LibRaw).
    img = load_image(path, min_side=250)
    assert img.size == (32, 48)


def test_raw_files_are_indexed(tmp_path, fake_model, rawpy_installed):
    folder = tmp_path / "photos"
    folder.mkdir()
    _write_dng(folder / "a.dng", _red_left_blue_right())
    _write_dng(folder / "b.dng", _red_left_blue_right(), preview=Image.new("RGB", (320, 240), GREEN))
    make_photo(folder / "c.jpg")
    result = ok(cli("build-index", folder, "--model", "fake", "--index-dir", tmp_path / "idx"))
    assert "embedded 3," in result.stderr and "skipped 0" in result.stderr


def test_damaged_raw_is_a_named_skip(tmp_path, rawpy_installed):
    data = _write_dng(tmp_path / "x.dng", _red_left_blue_right()).read_bytes()
    (tmp_path / "cut.dng").write_bytes(data[:300])
    with pytest.raises(ImageDecodeError, match="RAW file"):
        load_image(tmp_path / "cut.dng")
