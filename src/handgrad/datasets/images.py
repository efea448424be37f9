"""The user's own images, turned into MNIST-like inputs.

:func:`load_image` decodes anything Pillow reads; :func:`preprocess_image` then follows the procedure
that made MNIST (LeCun et al.): grayscale, white ink on black, the ink's bounding box scaled to fit a
20x20 box with its aspect ratio kept (anti-aliased: area averaging when shrinking, Lanczos when
enlarging), and pasted into a 28x28 field so that the centre of mass falls on pixel (14, 14) (row and
column index), moving by whole pixels and clipped so that no ink falls off the field.

The details, in order:

1. **Grayscale with transparency.** Images with an alpha channel (RGBA, LA, PA, palette with a
   transparent colour) are composited over a background that contrasts with their opaque pixels, so
   transparent pixels always count as background whether the strokes are dark or light. 16-bit and
   32-bit modes (``I;16``, ``I``, ``F``) are scaled by their range, other modes go through Pillow's
   luminance conversion (CMYK, YCbCr, palette, 1-bit ...). EXIF orientation is applied first.
2. **Polarity.** If the median of the border pixels is above 0.5 the image is dark ink on a light
   background (paper, a white canvas) and is inverted.
3. **Contrast.** Images larger than :data:`WORK_SIZE` are first box-reduced. The background level (border
   median) maps to 0 and the brightest ink to 1; values within :data:`NOISE_SIGMAS` robust standard
   deviations of the border's noise become 0, which removes paper texture and sensor noise but keeps
   every grey level of a clean drawing. An image whose ink range is below :data:`MIN_CONTRAST` has no ink.
4. **Crop, scale, centre** as above. In images bigger than 56x56 the brightest-ink estimate and the
   bounding box use a 3x3 median filter and the box ignores ink below :data:`LARGE_BOX_THRESHOLD`, so
   specks, blur and JPEG ringing neither set the contrast nor stretch the box.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

from .errors import DatasetError

#: Images with more pixels than this are refused (decompression bombs); about 8000 x 6000.
MAX_IMAGE_PIXELS = 50_000_000
#: Values within this many noise standard deviations (measured on the border) of the background are
#: background; a clean image (constant border) keeps every grey level.
NOISE_SIGMAS = 4.0
#: Big images are reduced to at most this many pixels per side before the steps below.
WORK_SIZE = 512
#: In images bigger than 56x56, only ink (3x3 median filtered) above this sets the bounding box, so
#: blur, JPEG ringing and specks around the strokes do not enlarge it.
LARGE_BOX_THRESHOLD = 0.2
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


def _median3(a):
    """3x3 median filter (edges replicated): removes isolated specks, keeps strokes."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    return np.median(np.stack([p[i:i + h, j:j + w] for i in range(3) for j in range(3)]), axis=0)


def _shrink(img):
    """Reduce a big decoded image cheaply (whole-factor box reduction) before converting it to floats."""
    if max(img.size) <= 2 * WORK_SIZE:
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    try:
        return img.reduce(max(img.size) // WORK_SIZE)
    except (ValueError, NotImplementedError):  # a mode reduce() does not handle: convert in full
        return img


def preprocess_image(img, name="image"):
    """The MNIST procedure for an already decoded Pillow image (see the module docstring).

    Returns float32 ``(28, 28)`` in [0, 1]; raises :class:`DatasetError` when the image holds no ink.
    """
    Image, _ = _pil()
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    g = to_grayscale(_shrink(img))
    if g.size == 0:
        raise DatasetError(f"{name}: the image is empty (0 pixels)")
    if max(g.shape) > WORK_SIZE:  # work at most at WORK_SIZE: plenty for a 20x20 result, and it averages noise
        s = WORK_SIZE / max(g.shape)
        size = (max(1, round(g.shape[1] * s)), max(1, round(g.shape[0] * s)))
        g = np.asarray(Image.fromarray(g.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX),
                       dtype=np.float64)
    if np.median(_border(g)) > 0.5:
        g = 1.0 - g
    border = _border(g)
    bg = np.median(border)
    sigma = 1.4826 * np.median(np.abs(border - bg))  # robust noise level of the background
    large = min(g.shape) > 2 * FIELD
    smooth = _median3(g) if large else g
    top = smooth.max()
    if top - bg < MIN_CONTRAST:
        raise DatasetError(f"{name}: no ink found (the image is a single flat colour); draw a digit first")
    floor = min(0.5, NOISE_SIGMAS * sigma / (top - bg))
    ink = np.clip(((g - bg) / (top - bg) - floor) / (1.0 - floor), 0.0, 1.0)
    mask = _median3(ink) > LARGE_BOX_THRESHOLD if large else ink > 0  # specks and blur do not stretch the box
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise DatasetError(f"{name}: no ink found; draw a digit first")
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    s = BOX / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        # Enlarging: Lanczos, for smooth strokes. Shrinking: area averaging (box), the anti-aliasing that
        # drew MNIST, which unlike Lanczos leaves no ringing halo around the strokes.
        resample = Image.Resampling.LANCZOS if s > 1 else Image.Resampling.BOX
        scaled = Image.fromarray(ink.astype(np.float32), mode="F").resize((nw, nh), resample)
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
