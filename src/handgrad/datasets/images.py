"""The user's own images, turned into inputs of a dataset's shape.

:func:`load_image` decodes anything Pillow reads and prepares it for an example shape ``input_shape``;
:func:`procedure_for` is the one place that decides how (see there):

* **digits**, for grayscale ``(H, W)`` datasets (MNIST, Fashion-MNIST, the synthetic digits):
  :func:`preprocess_image` follows the procedure that made MNIST (LeCun et al.): grayscale, white ink on
  black, the ink's bounding box scaled to fit a box of 20/28 of the field with its aspect ratio kept
  (anti-aliased: area averaging when shrinking, Lanczos when enlarging), and pasted into the H x W field
  so that the centre of mass falls on its centre pixel (for 28x28: a 20x20 box, centre of mass on pixel
  (14, 14), row and column index), moving by whole pixels and clipped so that no ink falls off the field;
* **resize**, for channels-first ``(C, H, W)`` datasets with 3 channels (RGB) or 1 (grayscale):
  :func:`resize_image` scales the whole picture to H x W (area averaging when shrinking, bicubic when
  enlarging; transparency composited over black) and returns it channels first in [0, 1].

The digit procedure in detail:

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
4. **Crop, scale, centre** as above. In images bigger than twice the field (56x56 for 28x28) the
   brightest-ink estimate and the bounding box use a 3x3 median filter and the box ignores ink below
   :data:`LARGE_BOX_THRESHOLD`, so specks, blur and JPEG ringing neither set the contrast nor stretch the
   box.
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
#: MNIST's digit box as a fraction of its field: 20 of 28 pixels.
BOX_RATIO = 20 / 28
#: The two ways of preparing an image (see :func:`procedure_for`).
PROCEDURES = ("digits", "resize")


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError as e:  # pragma: no cover - Pillow is an app dependency
        raise ImportError("reading images needs Pillow: pip install 'handgrad[app]'") from e
    return Image, ImageOps


def procedure_for(input_shape):
    """How an image is prepared for examples of ``input_shape``: ``"digits"`` for ``(H, W)`` (the MNIST
    procedure), ``"resize"`` for ``(C, H, W)`` with C = 3 (RGB) or 1 (grayscale).

    This is the one place that decides: prediction passes the shape the model was trained on (its
    checkpoint's architecture, which came from the dataset's spec). Other shapes raise DatasetError.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 2 and min(shape) > 0:
        return "digits"
    if len(shape) == 3 and shape[0] in (1, 3) and min(shape) > 0:
        return "resize"
    raise DatasetError(
        f"cannot prepare images for examples of shape {shape}: expected (H, W) grayscale or "
        "(C, H, W) with 1 or 3 channels"
    )


def _default_shape():
    from .registry import MNIST_SHAPE

    return MNIST_SHAPE


def load_image(source, input_shape=None):
    """Read an image and prepare it for examples of ``input_shape`` (default: MNIST's).

    For ``(H, W)``: MNIST-style, float32 ``(H, W)`` in [0, 1], white digit on black. For ``(C, H, W)``:
    resized to H x W, float32 ``(C, H, W)`` in [0, 1], RGB (C = 3) or grayscale (C = 1); see
    :func:`procedure_for`. ``source`` is a path (str or PathLike), the file's raw ``bytes``, or a binary
    file object.

    Raises
    ------
    DatasetError
        Not an image Pillow can read, truncated or corrupt data, a decompression bomb (more than
        :data:`MAX_IMAGE_PIXELS` pixels), a digit image without ink, or a shape no procedure handles.
    OSError
        The file cannot be opened (``FileNotFoundError``, ``PermissionError``, ...).
    """
    input_shape = tuple(_default_shape() if input_shape is None else input_shape)
    procedure = procedure_for(input_shape)
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
        raise TypeError(
            f"load_image needs a path, bytes or a binary file object, got {type(source).__name__}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(stream)
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DatasetError(
                    f"{name}: {w}x{h} pixels is more than the {MAX_IMAGE_PIXELS:,} accepted "
                    "(a decompression bomb, or a photo to shrink first)"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
    except DatasetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DatasetError(f"{name}: refused as a possible decompression bomb ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise DatasetError(
            f"{name} is not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP ...)"
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        raise DatasetError(f"{name}: the image data is truncated or corrupt ({e})") from e
    if procedure == "resize":
        return resize_image(img, input_shape, name=name)
    return preprocess_image(img, name=name, field=input_shape)


def resize_image(img, input_shape, name="image"):
    """A decoded Pillow image scaled to ``input_shape`` = (C, H, W): float32 channels first in [0, 1].

    C = 3 gives RGB, C = 1 luminance; transparent pixels are composited over black. Shrinking averages
    areas (box filter), enlarging is bicubic; the aspect ratio follows the target, as in the dataset.
    """
    Image, _ = _pil()
    channels, h, w = input_shape
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if img.width == 0 or img.height == 0:
        raise DatasetError(f"{name}: the image is empty (0 pixels)")
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    rgb = Image.alpha_composite(black, rgba).convert("RGB" if channels == 3 else "L")
    shrinking = w <= rgb.width and h <= rgb.height
    out = rgb.resize((w, h), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
    a = np.asarray(out, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(a.transpose(2, 0, 1)) if channels == 3 else a[None]


def to_grayscale(img):
    """A decoded Pillow image as float64 grayscale in [0, 1], transparency composited as background."""
    _Image, _ = _pil()
    mode = img.mode
    has_alpha = (
        mode in ("RGBA", "LA", "PA", "RGBa", "La")
        or (mode == "P" and "transparency" in img.info)
        or (mode in ("L", "RGB") and "transparency" in img.info)
    )
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
    return np.median(np.stack([p[i : i + h, j : j + w] for i in range(3) for j in range(3)]), axis=0)


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


def preprocess_image(img, name="image", field=None):
    """The MNIST procedure for an already decoded Pillow image (see the module docstring), into a field of
    ``field`` = (H, W) pixels (default: MNIST's 28 x 28).

    Returns float32 ``(H, W)`` in [0, 1]; raises :class:`DatasetError` when the image holds no ink.
    """
    Image, _ = _pil()
    field_h, field_w = tuple(_default_shape() if field is None else field)
    box = max(1, round(BOX_RATIO * min(field_h, field_w)))
    centre_row, centre_col = field_h / 2, field_w / 2
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    g = to_grayscale(_shrink(img))
    if g.size == 0:
        raise DatasetError(f"{name}: the image is empty (0 pixels)")
    if (
        max(g.shape) > WORK_SIZE
    ):  # work at most at WORK_SIZE: plenty for a 20x20 result, and it averages noise
        s = WORK_SIZE / max(g.shape)
        size = (max(1, round(g.shape[1] * s)), max(1, round(g.shape[0] * s)))
        g = np.asarray(
            Image.fromarray(g.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX),
            dtype=np.float64,
        )
    if np.median(_border(g)) > 0.5:
        g = 1.0 - g
    border = _border(g)
    bg = np.median(border)
    sigma = 1.4826 * np.median(np.abs(border - bg))  # robust noise level of the background
    large = min(g.shape) > 2 * max(field_h, field_w)
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
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = ink.shape
    s = box / max(h, w)
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
    top_row = int(np.clip(round(centre_row - cy), 0, field_h - nh))
    left = int(np.clip(round(centre_col - cx), 0, field_w - nw))
    out = np.zeros((field_h, field_w), dtype=np.float32)
    out[top_row : top_row + nh, left : left + nw] = ink
    return out
