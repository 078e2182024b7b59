"""verify.py: edited copies are the same photo, look-alikes and tiles are not; mirrored and tiny copies too."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageOps

from vsearch.imaging.images import ImageDecodeError
from vsearch.imaging.verify import Verdict, Verifier, verify_pair

from conftest import SAMPLE_IMAGES


def edited_copy(src: Path, dest: Path, *, crop: float = 0.07, brightness: float = 1.15, quality: int = 85) -> Path:
    """``src`` cropped by ``crop`` on every side, brightened, recompressed."""
    im = Image.open(src).convert("RGB")
    w, h = im.size
    box = (round(w * crop), round(h * crop), round(w * (1 - crop)), round(h * (1 - crop)))
    ImageEnhance.Brightness(im.crop(box)).enhance(brightness).save(dest, quality=quality)
    return dest


@pytest.fixture
def verified_pair(tmp_path) -> tuple[Path, Path]:
    """A photo and its 7%-cropped, 15%-brightened, recompressed copy."""
    return SAMPLE_IMAGES / "chelsea.jpg", edited_copy(SAMPLE_IMAGES / "chelsea.jpg", tmp_path / "edit.jpg")


@pytest.fixture
def lookalike_pair() -> tuple[Path, Path]:
    """Two tiles of one Hubble field: alike to an embedding (0.926), different photos."""
    return SAMPLE_IMAGES / "hubble_deep_field_tile_ne.jpg", SAMPLE_IMAGES / "hubble_deep_field_tile_nw.jpg"


def test_an_edited_copy_is_verified(verified_pair):
    verdict = verify_pair(*verified_pair, min_overlap=0.5)
    assert isinstance(verdict, Verdict)
    assert verdict.same and verdict.reason == "verified" and not verdict.mirrored
    assert verdict.inliers >= 50 and verdict.matches >= verdict.inliers
    assert verdict.transform is not None and len(verdict.transform) == 6
    assert 0.6 < verdict.overlap <= 1.0  # a 7% crop on each side keeps about 74% of the picture


def test_lookalikes_are_not_verified(lookalike_pair):
    verdict = verify_pair(*lookalike_pair)
    assert not verdict.same and verdict.inliers < 15
    assert not verify_pair(SAMPLE_IMAGES / "chelsea.jpg", SAMPLE_IMAGES / "coffee.jpg").same


def test_a_mirrored_copy_is_verified_mirrored(tmp_path):
    mirror = tmp_path / "mirror.jpg"
    ImageOps.mirror(Image.open(SAMPLE_IMAGES / "chelsea.jpg")).save(mirror, quality=90)
    verdict = verify_pair(SAMPLE_IMAGES / "chelsea.jpg", mirror)
    assert verdict.same and verdict.mirrored


def test_a_tile_is_a_crop_but_not_a_near_copy():
    whole, tile = SAMPLE_IMAGES / "hubble_deep_field.jpg", SAMPLE_IMAGES / "hubble_deep_field_tile_nw.jpg"
    assert verify_pair(whole, tile).same  # query --verify: the original of a crop
    verdict = verify_pair(whole, tile, min_overlap=0.5)  # duplicates: a quarter is not a copy
    assert not verdict.same and verdict.reason == "too little overlap" and verdict.overlap == pytest.approx(0.25, abs=0.03)


def test_a_64px_photo_saved_again_at_80px_q60_is_verified(tmp_path):
    small = tmp_path / "small.png"
    Image.open(SAMPLE_IMAGES / "chelsea.jpg").convert("RGB").resize((64, 64)).save(small)
    Image.open(small).resize((80, 80)).save(tmp_path / "again.jpg", quality=60)
    assert verify_pair(small, tmp_path / "again.jpg", min_overlap=0.5).same
    other = tmp_path / "other.png"
    Image.open(SAMPLE_IMAGES / "coffee.jpg").convert("RGB").resize((64, 64)).save(other)
    assert not verify_pair(small, other, min_overlap=0.5).same


def test_flat_images_are_aligned_by_their_pixels(tmp_path):
    """Too few keypoints: a copy is told by its aligned pixels; a flat picture matches nothing."""
    import numpy as np

    yy, xx = np.mgrid[0:48, 0:48]
    waves = 128 + 60 * np.sin(xx / 4.0) + 50 * np.cos(yy / 6.0 + xx / 9.0)  # smooth: no corners for ORB
    Image.fromarray(waves.clip(0, 255).astype("uint8")).convert("RGB").save(tmp_path / "ramp.png")
    Image.open(tmp_path / "ramp.png").resize((60, 60)).save(tmp_path / "ramp2.png")
    Image.open(tmp_path / "ramp.png").rotate(90).save(tmp_path / "turned.png")
    Image.new("RGB", (48, 48), (90, 90, 90)).save(tmp_path / "flat.png")
    Image.fromarray((xx * 5).astype("uint8")).convert("RGB").save(tmp_path / "gradient.png")
    same = verify_pair(tmp_path / "ramp.png", tmp_path / "ramp2.png")
    assert same.same and same.reason == "verified (pixels)" and same.agreement == pytest.approx(1.0, abs=0.05)
    assert not verify_pair(tmp_path / "ramp.png", tmp_path / "turned.png").same
    assert verify_pair(tmp_path / "flat.png", tmp_path / "ramp.png").reason == "too few keypoints"
    # Any two gradients correlate: only the detail beyond one is compared, and a gradient has none.
    assert verify_pair(tmp_path / "gradient.png", tmp_path / "gradient.png").reason == "too few keypoints"


def test_verdicts_repeat_and_keypoints_are_cached(verified_pair, lookalike_pair):
    verifier = Verifier(min_overlap=0.5)
    first = [verifier.verify(*verified_pair), verifier.verify(*lookalike_pair)]
    cached = len(verifier._cache)
    again = [verifier.verify(*verified_pair), verifier.verify(*lookalike_pair)]
    assert first == again and len(verifier._cache) == cached  # no image decoded twice


def test_an_unreadable_file_raises_a_decode_error(tmp_path, verified_pair):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError):
        verify_pair(verified_pair[0], bad)


# --- query --verify N: the original of a crop first ----------------------------------------------


def test_query_verify_puts_the_original_of_a_crop_first(tmp_path, fake_model):
    import shutil

    import vsearch
    from helpers import cli, fails, ok

    lib = tmp_path / "lib"
    lib.mkdir()
    for p in SAMPLE_IMAGES.glob("*.jpg"):
        shutil.copy(p, lib / p.name)
    ok(cli("build-index", lib, "--index-dir", tmp_path / "idx", "--model", "fake", "-q"))
    im = Image.open(lib / "coins.jpg").convert("RGB")
    w, h = im.size
    crop = im.crop((w // 2, round(h * 0.4), round(w * 0.95), round(h * 0.95)))  # 25% of the picture
    crop.resize((round(crop.width * 0.8), round(crop.height * 0.8))).save(tmp_path / "crop.jpg", quality=70)

    def top(*options: object) -> list[str]:
        out = ok(cli("query", tmp_path / "crop.jpg", "--index-dir", tmp_path / "idx", "-f", "paths", "-k", "3",
                     *options)).stdout
        return [Path(p).name for p in out.split()]

    plain, verified = top(), top("--verify", 10)
    assert plain[0] != "coins.jpg" and "coins.jpg" not in plain[:1]  # the fake embedding misses it
    assert verified[0] == "coins.jpg" and len(verified) == 3
    assert top("--verify", 0) == plain
    with vsearch.open_index(tmp_path / "idx") as idx:
        hits = idx.query(tmp_path / "crop.jpg", k=2, verify=10)
        assert [h.rank for h in hits] == [1, 2] and hits[0].path.name == "coins.jpg"
        with pytest.raises(vsearch.VsearchError, match="exactly one query image"):
            idx.query([tmp_path / "crop.jpg", lib / "brick.jpg"], verify=5)
        with pytest.raises(vsearch.VsearchError, match="verify must be"):
            idx.query(tmp_path / "crop.jpg", verify=-1)
    fails(cli("query", tmp_path / "crop.jpg", lib / "brick.jpg", "--index-dir", tmp_path / "idx", "--verify", "5"),
          "exactly one query image")


# --- pixels first (the duplicates' near level): the same answers, fewer keypoints ----------------


def _pairs_of_every_kind(tmp_path: Path) -> dict[str, tuple[Path, Path, bool]]:
    """(a, b, whether b is a copy of a) for each kind the near level meets."""
    from test_bursts import burst_of  # the burst frame the bursts tests use

    cat = SAMPLE_IMAGES / "chelsea.jpg"
    ImageOps.mirror(Image.open(cat)).save(tmp_path / "mirror.jpg", quality=90)
    Image.open(cat).save(tmp_path / "q40.jpg", quality=40)
    Image.open(cat).convert("RGB").resize((200, 150)).save(tmp_path / "small.jpg", quality=60)
    ImageEnhance.Brightness(Image.open(cat)).enhance(1.25).save(tmp_path / "bright.jpg", quality=85)
    return {
        "edited": (cat, edited_copy(cat, tmp_path / "edit.jpg"), True),
        "mirrored": (cat, tmp_path / "mirror.jpg", True),
        "recompressed": (cat, tmp_path / "q40.jpg", True),
        "small": (cat, tmp_path / "small.jpg", True),
        "brightened": (cat, tmp_path / "bright.jpg", True),
        "burst": (cat, burst_of(cat, tmp_path / "burst.jpg"), False),
        "tile": (SAMPLE_IMAGES / "hubble_deep_field.jpg", SAMPLE_IMAGES / "hubble_deep_field_tile_nw.jpg", False),
        "lookalike": (SAMPLE_IMAGES / "hubble_deep_field_tile_ne.jpg", SAMPLE_IMAGES / "hubble_deep_field_tile_nw.jpg",
                      False),
        "other": (cat, SAMPLE_IMAGES / "coffee.jpg", False),
    }


def test_pixels_first_gives_the_keypoint_fits_answers(tmp_path):
    from vsearch.imaging.verify import MIN_AGREEMENT

    first = Verifier(min_overlap=0.5, min_agreement=MIN_AGREEMENT, pixels_first=True)
    fit = Verifier(min_overlap=0.5, min_agreement=MIN_AGREEMENT)
    for kind, (a, b, copy) in _pairs_of_every_kind(tmp_path).items():
        assert first.verify(a, b).same is copy, kind
        assert fit.verify(a, b).same is copy, kind


def test_pixels_first_skips_the_keypoints_of_a_copy_the_frames_show(tmp_path):
    from vsearch.imaging.verify import FIRST_LOOK_AGREEMENT, MIN_AGREEMENT

    pairs = _pairs_of_every_kind(tmp_path)
    first = Verifier(min_overlap=0.5, min_agreement=MIN_AGREEMENT, pixels_first=True)
    a, b, _ = pairs["recompressed"]
    verdict = first.verify(a, b)
    assert verdict.same and verdict.reason == "verified (pixels)" and verdict.agreement >= FIRST_LOOK_AGREEMENT
    assert first._cache == {} and len(first._looks) == 3  # looks (b mirrored too), no keypoints for either image
    a, b, _ = pairs["burst"]  # agrees too little for a first look; the keypoint fit says why
    verdict = first.verify(a, b)
    assert verdict.reason == "pixels differ" and verdict.inliers >= 50
    assert {key for key, _ in first._cache} == {str(a), str(b)}


def test_a_mirrored_look_is_the_straight_one_flipped():
    verifier = Verifier()
    straight = verifier.look(SAMPLE_IMAGES / "chelsea.jpg")
    flipped = verifier.look(SAMPLE_IMAGES / "chelsea.jpg", mirrored=True)
    assert (flipped.pixels == straight.pixels[:, ::-1]).all() and (flipped.thumb == straight.thumb[:, ::-1]).all()
    features = verifier.features(SAMPLE_IMAGES / "chelsea.jpg", mirrored=True)
    assert (features.pixels == flipped.pixels).all() and len(features.points) > 100
