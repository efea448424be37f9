"""The user's own images, turned into MNIST-like inputs.

:func:`load_image` decodes anything Pillow reads; :func:`preprocess_image` then follows the procedure
that made MNIST (LeCun et al.): grayscale, white ink on black, the ink's bounding box scaled to fit a
20x20 box with its aspect ratio kept (anti-aliased, Lanczos), and pasted into a 28x28 field so that the
centre of mass falls on pixel (14, 14) (row and column index), moving by whole pixels.

The details, in order:

1. **Grayscale with transparency.** Images with an alpha channel (RGBA, LA, PA, palette with a
   transparent colour) are composited over a background that contrasts with their opaque pixels, so
   transparent pixels always count as background whether the strokes are dark or light. 16-bit and
   32-bit modes (``I;16``, ``I``, ``F``) are scaled by their range, other modes go through Pillow's
   luminance conversion (CMYK, YCbCr, palette, 1-bit ...). EXIF orientation is applied first.
2. **Polarity.** If the median of the border pixels is above 0.5 the image is dark ink on a light
   background (paper, a white canvas) and is inverted.
3. **Contrast.** The background level (border median) maps to 0 and the brightest ink (99.9th
   percentile) to 1; faint values below :data:`NOISE_FLOOR` of that range become 0, which removes paper
   texture and sensor noise. An image whose ink range is below :data:`MIN_CONTRAST` has no ink.
4. **Crop, scale, centre** as above; the bounding box ignores pixels below :data:`BOX_THRESHOLD`.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

from .errors import DatasetError

#: Images with more pixels than this are refused (decompression bombs); about 8000 x 6000.
MAX_IMAGE_PIXELS = 50_000_000
#: Ink values (after contrast stretching) below this are treated as background noise.
NOISE_FLOOR = 0.1
#: Pixels at or above this count toward the ink's bounding box.
BOX_THRESHOLD = 0.2
#: Smallest difference between background and brightest ink that counts as ink at all.
MIN_CONTRAST = 0.08
FIELD, BOX, CENTRE = 28, 20, 14


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError as e:  # pragma: no cover - Pillow is an app dependency
        raise ImportError("reading images needs Pillow: pip install 'handgrad[app]'") from e
    return Image, ImageOps


def load_image(source):
    """Read an image and return it MNIST-style: float32 ``(28, 28)`` in [0, 1], white digit on black.

    ``source`` is a path (str or PathLike), the file's raw ``bytes``, or a binary file object.

    Raises
    ------
    DatasetError
        Not an image Pillow can read, truncated or corrupt data, a decompression bomb (more than
        :data:`MAX_IMAGE_PIXELS` pixels), or an image without ink.
    OSError
        The file cannot be opened (``FileNotFoundError``, ``PermissionError``, ...).
    """
    Image, ImageOps = _pil()
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, stream = "the uploaded data", io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        with open(name, "rb") as f:  # OSError (e.g. FileNotFoundError) reaches the caller unchanged
            stream = io.BytesIO(f.read())
    elif hasattr(source, "read"):
        name, stream = str(getattr(source, "name", "the image stream")), source
    else:
        raise TypeError(f"load_image needs a path, bytes or a binary file object, got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(stream)
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DatasetError(f"{name}: {w}x{h} pixels is more than the {MAX_IMAGE_PIXELS:,} accepted "
                                   "(a decompression bomb, or a photo to shrink first)")
            img.load()
            img = ImageOps.exif_transpose(img)
    except DatasetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DatasetError(f"{name}: refused as a possible decompression bomb ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise DatasetError(f"{name} is not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP ...)") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        raise DatasetError(f"{name}: the image data is truncated or corrupt ({e})") from e
    return preprocess_image(img, name=name)


def to_grayscale(img):
    """A decoded Pillow image as float64 grayscale in [0, 1], transparency composited as background."""
    Image, _ = _pil()
    mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info) \
        or (mode in ("L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
        lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        alpha = rgba[..., 3]
        opaque = alpha > 0.5
        # The background is whatever contrasts with the opaque strokes.
        bg = 1.0 if (opaque.any() and np.median(lum[opaque]) < 0.5) else 0.0
        return lum * alpha + bg * (1.0 - alpha)
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            return a / 65535.0
        top = a.max() if a.size else 0.0
        if mode == "F" and top <= 1.0:
            return np.clip(a, 0.0, 1.0)
        scale = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        return np.clip(a / scale, 0.0, 1.0)
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def _border(g):
    return np.concatenate([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])


def preprocess_image(img, name="image"):
    """The MNIST procedure for an already decoded Pillow image (see the module docstring).

    Returns float32 ``(28, 28)`` in [0, 1]; raises :class:`DatasetError` when the image holds no ink.
    """
    Image, _ = _pil()
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    g = to_grayscale(img)
    if g.size == 0:
        raise DatasetError(f"{name}: the image is empty (0 pixels)")
    if np.median(_border(g)) > 0.5:
        g = 1.0 - g
    bg = np.median(_border(g))
    top = np.percentile(g, 99.9) if g.size >= 1000 else g.max()
    if top - bg < MIN_CONTRAST:
        raise DatasetError(f"{name}: no ink found (the image is a single flat colour); draw a digit first")
    ink = np.clip((g - bg) / (top - bg), 0.0, 1.0)
    ink = np.clip((ink - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0)
    rows = np.flatnonzero((ink >= BOX_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink >= BOX_THRESHOLD).any(axis=0))
    if rows.size == 0:
        raise DatasetError(f"{name}: no ink found; draw a digit first")
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    s = BOX / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        scaled = Image.fromarray(ink.astype(np.float32), mode="F").resize((nw, nh), Image.Resampling.LANCZOS)
        ink = np.clip(np.asarray(scaled, dtype=np.float64), 0.0, 1.0)
    total = ink.sum()
    if total <= 0:
        raise DatasetError(f"{name}: no ink left after scaling")
    cy = (ink.sum(axis=1) @ np.arange(nh)) / total
    cx = (ink.sum(axis=0) @ np.arange(nw)) / total
    top_row = int(np.clip(round(CENTRE - cy), 0, FIELD - nh))
    left = int(np.clip(round(CENTRE - cx), 0, FIELD - nw))
    out = np.zeros((FIELD, FIELD), dtype=np.float32)
    out[top_row:top_row + nh, left:left + nw] = ink
    return out
