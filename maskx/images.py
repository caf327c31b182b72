"""Reading user images safely (the app's uploads, ``predict`` on any file): one RGB uint8 array
[H, W, 3] or a clear ``ImageError``; huge images are downscaled with a note, never silently."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

MAX_SIDE = 1600  # longer side after reading; the model resizes to its own size anyway
MAX_DECODE_PIXELS = 200_000_000  # larger files are refused (decompression bombs)


class ImageError(ValueError):
    """Not a readable image; the message names the file and says what to do."""


def read_image(data: bytes, name: str = "upload", max_side: int = MAX_SIDE) -> tuple[np.ndarray, list[str]]:
    """Decode png/jpg/... bytes → (RGB uint8 [H, W, 3], notes about what was changed).

    RGBA is composited on white, grayscale/palette/16-bit converted to RGB, EXIF rotation applied,
    and an image whose long side exceeds ``max_side`` is downscaled (noted).
    """
    if not data:
        raise ImageError(f"{name}: the file is empty; choose a PNG or JPEG image")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_DECODE_PIXELS
            try:
                im = Image.open(io.BytesIO(data))
                fmt = im.format
                if im.width * im.height > MAX_DECODE_PIXELS:
                    raise ImageError(f"{name}: {im.width} x {im.height} pixels is too large (limit "
                                     f"{MAX_DECODE_PIXELS // 1_000_000} megapixels); downscale it first")
                if fmt == "JPEG" and max(im.size) > 2 * max_side:
                    im.draft("RGB", (max_side, max_side))  # decode a reduced JPEG directly
                im.load()
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: the image is too large to decode safely; downscale it first") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read; upload a PNG or JPEG") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ImageError(f"{name}: the image data is truncated or corrupt ({e}); re-export or re-upload it") from None
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
        notes.append("transparent areas were filled with white")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        span = max(arr.max() - arr.min(), 1.0)
        im = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8))
        notes.append("16-bit image scaled to 8 bits")
    if im.mode != "RGB":
        if im.mode in ("L", "1"):
            notes.append("grayscale image shown as RGB")
        im = im.convert("RGB")
    w, h = im.size
    if min(w, h) < 8:
        raise ImageError(f"{name}: {w} x {h} pixels is too small to segment")
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        notes.append(f"downscaled from {w} x {h} to {im.width} x {im.height} pixels")
    return np.asarray(im, dtype=np.uint8), notes
