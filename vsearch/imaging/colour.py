"""Turn a decoded Pillow image of any mode into 8-bit RGB, and say what a mode costs in memory.

Pillow may hand back any of its modes: palette and greyscale with or without transparency,
1-bit, CMYK, 16-bit and float greyscale. :func:`to_rgb` turns each into 8-bit RGB (alpha
composited on white, high bit depths scaled instead of clipped); :func:`reduce_to_rgb` does
it while box-reducing a large frame, a strip at a time, so that the conversion adds little
to the memory of the decode.
"""

from __future__ import annotations

from PIL import Image

from vsearch.errors import ImageDecodeError


def frame_bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow keeps per pixel of a decoded ``mode`` image (RGB is stored as 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


# Rows converted at a time by reduce_to_rgb: about 4 MB of RGBA for a 4000-pixel-wide image.
_STRIP_PIXELS = 1 << 20


def reduce_to_rgb(im: Image.Image, factor: int) -> Image.Image:
    """``to_rgb(im).reduce(factor)``, converting a strip of rows at a time.

    Converting a whole large frame first (a 50 MP palette or RGBA image becomes a 200 MB
    RGBA copy plus a 200 MB RGB result) would double or triple the decode's memory; strips
    keep the extra to a few MB. Strips are whole multiples of ``factor`` rows, so the box
    averages are the ones a whole-image reduce takes. Modes "I" and "F" are scaled by the
    range of the whole image, so they are converted whole.
    """
    if im.mode in ("I", "F"):
        return to_rgb(im).reduce(factor)
    w, h = im.size
    rows = max(factor, _STRIP_PIXELS // max(1, w) // factor * factor)
    out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    for top in range(0, h, rows):
        strip = to_rgb(im.crop((0, top, w, min(h, top + rows))))
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, compositing transparency on white."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        return high_depth_to_rgb(im)
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if mode == "P" and im.palette is not None and im.palette.mode == "RGBA":
        has_alpha = True
    if has_alpha:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, (0, 0), rgba)  # the alpha band is the mask: a true "over" blend
        return out
    try:
        return im.convert("RGB")  # CMYK, L, 1, P, YCbCr, LAB, HSV, RGBX
    except ValueError:
        raise ImageDecodeError(f"unsupported colour mode {mode}") from None


def high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8-bit RGB.

    Pillow's own conversion clips these at 255 (a 16-bit photo comes out white), so scale
    instead: I;16 by the range of the type (x / 257, so 65535 -> 255). Modes "I" and "F"
    carry no range of their own; "I" almost always holds 16-bit data (older Pillow read
    16-bit PNGs so) and is scaled like I;16 when it fits; "F" is taken as 0..1 when it
    fits, else 0..255, else 0..65535; anything else is stretched from its min to its max.
    """
    import numpy as np

    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        grey = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    else:
        f = a.astype(np.float64)
        finite = np.isfinite(f)
        lo = float(f[finite].min()) if finite.any() else 0.0
        hi = float(f[finite].max()) if finite.any() else 0.0
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            top = 1.0
        elif im.mode == "F" and lo >= 0.0 and hi <= 255.0:
            top = 255.0
        elif lo >= 0.0 and hi <= 65535.0:
            top = 65535.0
        else:
            f = f - lo
            top = max(hi - lo, 1e-12)
        f = np.where(finite, f, 0.0)
        grey = np.clip(np.rint(f * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")
