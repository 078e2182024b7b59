"""vsearch.images: scanning folders and decoding images, on real files made in tmp_path."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import WRITERS
from vsearch.errors import ImageDecodeError, VsearchError
from vsearch.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    PAD_COLOUR,
    FoundFile,
    ScanProblem,
    decode_for_model,
    is_image_path,
    load_image,
    scan_folder,
    to_model_array,
)

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
            ".avif"} == IMAGE_EXTENSIONS
    assert is_image_path(Path("x/Y.JPG"))
    assert is_image_path(Path("photo.HeIc"))
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
        "import vsearch.images as vi\n"
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
    assert "too large" in message and "--max-pixels" in message
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
    with caplog.at_level("WARNING", logger="vsearch.images"):
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
