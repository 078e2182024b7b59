"""The keep rule keeps the original (issue 19, item 1): evidence in the files (a RAW, camera EXIF,
pixels, the trace of an earlier JPEG compression, JPEG quality, a copy's name, mtime), the
``pixels`` rule kept as it was, and links never kept over their targets.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from tests.conftest import SAMPLE_IMAGES
from tests.helpers import cli, fails, ok
from tests.test_images import _write_dng
from vsearch.duplicates import keeper
from vsearch.imaging import provenance
from vsearch.imaging.provenance import PriorCompression, Provenance, jpeg_quality, prior_compression, read_provenance


def kept(paths: list[Path], root: Path, rule: str = "default") -> Path:
    files = {i: keeper.facts_of(p, root) for i, p in enumerate(paths)}
    return files[keeper.order(files, rule, {i: [j for j in files if j != i] for i in files})[0]].path


def with_camera_exif(jpeg: bytes) -> bytes:
    exif = Image.Exif()
    exif[271], exif[272] = "Camera maker", "Model 1"
    exif.get_ifd(0x8769)[0x9003] = "2019:05:01 10:20:30"
    payload = exif.tobytes()
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def jpeg(img: Image.Image, quality: int, exif: bytes = b"") -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buf.getvalue()


@pytest.fixture
def derivatives(tmp_path) -> tuple[Path, dict[str, Path]]:
    """chelsea.jpg (451 x 300, q90) with camera EXIF as the original in photos/, and one derivative
    of each kind in a/ (which sorts before photos/), every file with the same mtime: neither the
    path nor the time can pick the original."""
    root = tmp_path / "lib"
    (root / "photos").mkdir(parents=True)
    (root / "a").mkdir()
    data = with_camera_exif((SAMPLE_IMAGES / "chelsea.jpg").read_bytes())
    original = root / "photos" / "chelsea.jpg"
    original.write_bytes(data)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    exif = Image.open(io.BytesIO(data)).info["exif"]  # kept by the editor that made the edits
    w, h = img.size
    made = {
        "resave-high": jpeg(img, 98, exif), "resave-low": jpeg(img, 60, exif),
        "resized": jpeg(img.resize((w * 3 // 4, h * 3 // 4)), 95, exif),
        "brightened": jpeg(ImageEnhance.Brightness(img).enhance(1.2), 95, exif),
        # A mirror saved at 95 from this q90 photo carries too faint a trace of the old grid (the
        # limit of prior_compression: a fine earlier quantiser under a similar new one); at 97 it shows.
        "mirrored": jpeg(ImageOps.mirror(img), 97, exif),
        "cropped": jpeg(img.crop((20, 15, w - 20, h - 15)), 95, exif),
        "stripped": (SAMPLE_IMAGES / "chelsea.jpg").read_bytes(),  # the same JPEG data, no metadata
    }
    out = {}
    for kind, payload in made.items():
        out[kind] = root / "a" / f"{kind}.jpg"
        out[kind].write_bytes(payload)
    out["copy"] = root / "photos" / "chelsea (1).jpg"
    shutil.copyfile(original, out["copy"])
    for p in [original, *out.values()]:
        os.utime(p, (1_600_000_000, 1_600_000_000))
    return original, out


KINDS = ("resave-high", "resave-low", "resized", "brightened", "mirrored", "cropped", "stripped", "copy")


@pytest.mark.parametrize("kind", KINDS)
def test_the_default_keeps_the_original_over_each_kind_of_derivative(derivatives, kind):
    original, made = derivatives
    assert kept([made[kind], original], original.parent.parent) == original
    assert kept([original, made[kind]], original.parent.parent) == original  # whatever the order given


def test_the_default_keeps_the_original_over_all_of_them_at_once(derivatives):
    original, made = derivatives
    assert kept([*made.values(), original], original.parent.parent) == original


def test_without_camera_exif_the_pixels_still_tell(derivatives):
    """As the shared datasets are: no EXIF anywhere. The trace of the earlier compression and
    the quality tables still find the original among the same-size re-saves."""
    original, made = derivatives
    original.write_bytes((SAMPLE_IMAGES / "chelsea.jpg").read_bytes())
    img = Image.open(original).convert("RGB")
    made["resave-high"].write_bytes(jpeg(img, 98))
    made["brightened"].write_bytes(jpeg(ImageEnhance.Brightness(img).enhance(1.2), 97))
    made["mirrored"].write_bytes(jpeg(ImageOps.mirror(img), 97))
    made["resave-low"].write_bytes(jpeg(img, 60))
    for kind in ("resave-high", "brightened", "mirrored", "resave-low"):
        os.utime(made[kind], (1_600_000_000, 1_600_000_000))
        os.utime(original, (1_600_000_000, 1_600_000_000))
        assert kept([made[kind], original], original.parent.parent) == original, kind


def test_the_pixels_rule_is_the_old_default(derivatives):
    """``--keep pixels`` is the rule before: most pixels, then the largest file; it keeps the
    re-save at a higher quality, a bigger file (the issue: 42 originals kept in 319 groups)."""
    original, made = derivatives
    root = original.parent.parent
    assert kept([made["resave-high"], original], root, "pixels") == made["resave-high"]
    assert kept([made["resave-high"], original], root, "default") == original
    assert kept([made["resized"], original], root, "pixels") == original


def test_a_raw_file_is_kept_over_its_jpeg(tmp_path):
    """Never propose removing a RAW because its JPEG exists (Pillow reads a DNG's header as its
    small thumbnail's, so "most pixels" kept the JPEG)."""
    img = Image.open(SAMPLE_IMAGES / "chelsea.jpg").convert("RGB")
    raw = _write_dng(tmp_path / "IMG_0001.DNG", np.asarray(img), preview=img)
    rendition = tmp_path / "IMG_0001.JPG"
    rendition.write_bytes(jpeg(img, 95))
    assert read_provenance(raw).raw and not read_provenance(rendition).raw
    assert kept([rendition, raw], tmp_path) == raw
    for rule in ("largest", "newest", "shortest-path"):  # "first, then the default order"
        assert kept([rendition, raw], tmp_path, rule) in (raw, rendition)


def test_the_issue_s_example_through_the_command_line(tmp_path, fake_model):
    """The issue: `edited/image_0481_bright.jpg` was kept and the dry run said `would move
    flowers/image_0481.jpg`. A brightened copy saved at a higher quality is a bigger file."""
    lib = tmp_path / "lib"
    (lib / "flowers").mkdir(parents=True)
    (lib / "edited").mkdir()
    shutil.copyfile(SAMPLE_IMAGES / "chelsea.jpg", lib / "flowers" / "image_0481.jpg")
    img = Image.open(lib / "flowers" / "image_0481.jpg").convert("RGB")
    ImageEnhance.Brightness(img).enhance(1.2).save(lib / "edited" / "image_0481_bright.jpg", quality=97)
    assert (lib / "edited" / "image_0481_bright.jpg").stat().st_size > (lib / "flowers" / "image_0481.jpg").stat().st_size
    ok(cli("build-index", lib, "--index-dir", tmp_path / "idx", "--model", "fake", "-q"))
    base = ["duplicates", "--index-dir", tmp_path / "idx", "--level", "similar", "--threshold", "0.5"]
    members = json.loads(ok(cli(*base, "-f", "json", "-q")).stdout)
    assert [Path(m["path"]).name for m in members if m["keeper"]] == ["image_0481.jpg"]
    dry = ok(cli(*base, "--move-to", tmp_path / "dupes"))
    assert "would move " + str(lib / "edited" / "image_0481_bright.jpg") in dry.stderr
    old = json.loads(ok(cli(*base, "-f", "json", "-q", "--keep", "pixels")).stdout)
    assert [Path(m["path"]).name for m in old if m["keeper"]] == ["image_0481_bright.jpg"]
    fails(cli(*base, "--keep", "prettiest"), "prettiest")


@dataclass(frozen=True)
class Fake:
    path: Path
    rel: str
    bytes: int = 1000
    mtime: float = 0.0
    pixels: int | None = 100
    digest: str | None = "d"
    link: bool = False
    evidence: Provenance | None = None


@pytest.mark.parametrize("rule", keeper.KEEP_RULES)
def test_a_symbolic_link_is_never_kept_over_a_regular_file(rule):
    files = {0: Fake(Path("/p/a.jpg"), "a.jpg", bytes=9999, mtime=-1, pixels=10**6, link=True,
                     evidence=Provenance(raw=True, make="Cam")),
             1: Fake(Path("/p/z/b.jpg"), "z/b.jpg", bytes=10, mtime=5, pixels=10)}
    assert keeper.order(files, rule, {0: [1], 1: [0]}, prior=lambda p: PriorCompression(None, None))[0] == 1


def test_the_pixels_are_decoded_only_for_files_that_tie_with_a_neighbour():
    measured = []

    def prior(path: Path) -> PriorCompression:
        measured.append(path.name)
        return PriorCompression(None, None)

    files = {0: Fake(Path("/a.jpg"), "a.jpg", digest="1"), 1: Fake(Path("/b.jpg"), "b.jpg", digest="2"),
             2: Fake(Path("/c.jpg"), "c.jpg", digest="3", pixels=50), 3: Fake(Path("/d.jpg"), "d.jpg", digest="1"),
             4: Fake(Path("/e.jpg"), "e.jpg", digest="5")}
    # a-b tie and differ; c has fewer pixels; d is a's bytes; e ties with a but is no neighbour of it
    order = keeper.order(files, "default", {0: [1, 2, 3], 1: [0], 2: [0], 3: [0]}, prior=prior)
    assert sorted(measured) == ["a.jpg", "b.jpg"] and order[-1] == 2
    measured.clear()
    keeper.order(files, "pixels", {0: [1]}, prior=prior)
    assert measured == []  # the old rule never decodes


@pytest.mark.parametrize("name, copy", [
    ("x (1).jpg", True), ("x (12).JPG", True), ("x copy.jpg", True), ("x - Copy.jpg", True),
    ("x - Copy (2).jpg", True), ("x copy 2.jpg", True), ("Copy of x.jpg", True), ("x-copy.jpg", True),
    ("x_copy.jpg", True), ("IMG_0001.jpg", False), ("x.jpg", False), ("photocopy.jpg", False),
    ("2019 (summer)/x.jpg", False), ("x(1)b.jpg", False)])
def test_copy_like_names(name, copy):
    assert keeper.copy_like_name(name) is copy


@pytest.mark.parametrize("quality", [20, 50, 60, 75, 85, 90, 95, 98, 100])
def test_the_jpeg_quality_is_read_from_the_tables(tmp_path, quality):
    Image.open(SAMPLE_IMAGES / "coffee.jpg").save(tmp_path / "x.jpg", quality=quality)
    assert read_provenance(tmp_path / "x.jpg").quality == quality
    with Image.open(tmp_path / "x.jpg") as im:
        assert jpeg_quality(im.quantization) == quality
    assert jpeg_quality({}) is None and read_provenance(SAMPLE_IMAGES / "horse.png").quality is None


def test_the_camera_evidence_is_read_from_the_header(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(with_camera_exif((SAMPLE_IMAGES / "coffee.jpg").read_bytes()))
    found = read_provenance(path)
    assert (found.make, found.model, found.camera, found.format) == ("Camera maker", "Model 1", True, "JPEG")
    assert found.taken is not None and found.taken.isoformat() == "2019-05-01T10:20:30" and found.pixels == 600 * 400
    assert read_provenance(tmp_path / "missing.jpg") == Provenance()  # says nothing, never raises
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert not read_provenance(tmp_path / "junk.jpg").camera


def test_the_traces_of_an_earlier_compression(tmp_path):
    chelsea = SAMPLE_IMAGES / "chelsea.jpg"  # 451 wide: a mirror moves the old grid by 3 columns
    img = Image.open(chelsea).convert("RGB")
    img.save(tmp_path / "higher.jpg", quality=98)
    ImageOps.mirror(img).save(tmp_path / "mirrored.jpg", quality=97)
    img.save(tmp_path / "as.png")
    Image.new("RGB", (200, 200), (10, 20, 30)).save(tmp_path / "flat.png")
    assert not prior_compression(chelsea).found
    assert prior_compression(tmp_path / "higher.jpg").double > provenance.DQ_THRESHOLD
    assert prior_compression(tmp_path / "mirrored.jpg").grid > provenance.GRID_THRESHOLD
    saved = prior_compression(tmp_path / "as.png")
    assert not saved.found and saved.embedded is not None and abs(saved.embedded - 90) <= 2  # chelsea.jpg is q90
    assert prior_compression(tmp_path / "flat.png").embedded is None
    assert prior_compression(tmp_path / "missing.jpg") == PriorCompression(None, None)


def test_a_photo_too_small_for_a_histogram_is_not_measured(tmp_path):
    """Under 256 blocks (128 x 128) the histograms say nothing: no decode, no DCTs, nothing found."""
    Image.open(SAMPLE_IMAGES / "chelsea.jpg").convert("RGB").resize((120, 120)).save(tmp_path / "small.jpg", quality=75)
    Image.open(tmp_path / "small.jpg").save(tmp_path / "again.jpg", quality=95)
    assert prior_compression(tmp_path / "again.jpg") == PriorCompression(None, None)
    Image.open(SAMPLE_IMAGES / "chelsea.jpg").convert("RGB").resize((128, 128)).save(tmp_path / "enough.jpg", quality=75)
    assert prior_compression(tmp_path / "enough.jpg").double is not None


def test_a_copy_made_by_saving_a_file_again_is_reproduced_from_it(tmp_path):
    """provenance.reproduces: saving the original again (as it is, or mirrored) at the copy's own
    tables gives the copy's pixels exactly; never the other way round, nor for an edit."""
    original = tmp_path / "original.jpg"
    shutil.copyfile(SAMPLE_IMAGES / "chelsea.jpg", original)  # 451 x 300, q90: the mirror shifts the grid
    img = Image.open(original).convert("RGB")
    made = {"mirrored-same-quality": (ImageOps.mirror(img), 90), "mirrored-finer": (ImageOps.mirror(img), 95),
            "resave-higher": (img, 97), "resave-lower": (img, 60),
            "brightened": (ImageEnhance.Brightness(img).enhance(1.2), 90)}
    for name, (picture, quality) in made.items():
        picture.save(tmp_path / f"{name}.jpg", quality=quality)
    for name in made:
        copy = tmp_path / f"{name}.jpg"
        assert provenance.reproduces(original, copy) is (name != "brightened"), name
        assert not provenance.reproduces(copy, original), name
    img.resize((400, 266)).save(tmp_path / "resized.jpg", quality=90)
    img.save(tmp_path / "lossless.png")
    assert not provenance.reproduces(original, tmp_path / "resized.jpg")  # another size: nothing to say
    assert not provenance.reproduces(original, tmp_path / "lossless.png")  # no JPEG tables to save at
    assert not provenance.reproduces(original, tmp_path / "missing.jpg")
    img.resize((120, 80)).save(tmp_path / "small.jpg", quality=90)
    Image.open(tmp_path / "small.jpg").save(tmp_path / "small-again.jpg", quality=97)
    assert not provenance.reproduces(tmp_path / "small.jpg", tmp_path / "small-again.jpg")  # under 256 blocks


def test_a_mirror_saved_at_the_originals_quality_loses_to_it_whatever_the_times_and_paths(tmp_path):
    """What the pixels' traces cannot tell (a mirror at the original's own quality on its own
    grid: every coefficient stays on its lattice) the reproduction does: the mirror is what
    saving the original mirrored gives, not the other way round. The mirror is older and sorts
    first by path, so nothing after that step could pick the original."""
    root = tmp_path / "lib"
    (root / "z").mkdir(parents=True)
    original = root / "z" / "photo.jpg"
    img = Image.open(SAMPLE_IMAGES / "chelsea.jpg").convert("RGB").crop((0, 0, 448, 296))  # on the 8 px grid
    img.save(original, quality=85)
    mirrored = root / "a-photo.jpg"
    ImageOps.mirror(Image.open(original).convert("RGB")).save(mirrored, quality=85)
    os.utime(mirrored, (1_500_000_000, 1_500_000_000))
    os.utime(original, (1_600_000_000, 1_600_000_000))
    assert not prior_compression(mirrored).found  # no trace in its pixels
    assert kept([mirrored, original], root) == original
    assert kept([original, mirrored], root) == original


def test_a_brightened_copy_is_known_by_the_highlights_it_burnt_out(tmp_path):
    """provenance.brightened_from: a copy brightened from the original (mirrored or not) is
    brighter by one gain with white where the original still has detail; the other way round,
    and for a darkened copy (which cannot hold detail its original lost), it says nothing."""
    original = tmp_path / "original.jpg"
    shutil.copyfile(SAMPLE_IMAGES / "coffee.jpg", original)  # a white cup and saucer: highlights to burn out
    img = Image.open(original).convert("RGB")
    ImageEnhance.Brightness(img).enhance(1.25).save(tmp_path / "bright.jpg", quality=90)
    ImageOps.mirror(ImageEnhance.Brightness(img).enhance(1.2)).save(tmp_path / "bright-mirrored.jpg", quality=75)
    ImageEnhance.Brightness(img).enhance(0.8).save(tmp_path / "dark.jpg", quality=90)
    for name in ("bright.jpg", "bright-mirrored.jpg"):
        assert provenance.brightened_from(original, tmp_path / name), name
        assert not provenance.brightened_from(tmp_path / name, original), name
        assert provenance.made_from(original, tmp_path / name) and not provenance.made_from(tmp_path / name, original)
    assert not provenance.brightened_from(original, tmp_path / "dark.jpg")
    assert not provenance.brightened_from(tmp_path / "dark.jpg", original)  # the original is not "brightened"
    assert not provenance.brightened_from(original, SAMPLE_IMAGES / "coffee_cup.jpg")  # other pixels


def test_a_brightened_copy_at_the_originals_quality_loses_to_it_whatever_the_times_and_paths(tmp_path):
    root = tmp_path / "lib"
    (root / "z").mkdir(parents=True)
    original = root / "z" / "photo.jpg"
    Image.open(SAMPLE_IMAGES / "coffee.jpg").convert("RGB").save(original, quality=85)
    brighter = root / "a-photo.jpg"
    ImageEnhance.Brightness(Image.open(original).convert("RGB")).enhance(1.2).save(brighter, quality=85)
    os.utime(brighter, (1_500_000_000, 1_500_000_000))
    os.utime(original, (1_600_000_000, 1_600_000_000))
    assert kept([brighter, original], root) == original
    assert kept([original, brighter], root) == original


def test_a_grey_photo_mirrored_and_saved_in_colour_is_reproduced_from_it(tmp_path):
    """A grey original (camera.jpg) whose copy an editor saved in colour: the original's grey in
    every channel, saved again, gives the copy (a regression: each file was read in its own mode,
    and the pair was never compared)."""
    original = tmp_path / "camera.jpg"
    shutil.copyfile(SAMPLE_IMAGES / "camera.jpg", original)
    assert Image.open(original).mode == "L"
    ImageOps.mirror(Image.open(original).convert("RGB")).save(tmp_path / "mirrored.jpg", quality=95)
    assert provenance.reproduces(original, tmp_path / "mirrored.jpg")
    assert not provenance.reproduces(tmp_path / "mirrored.jpg", original)
