"""load_image: the user's own pictures turned into MNIST-style digits, and its errors."""

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import real_data_dir
from PIL import Image, ImageDraw

from handgrad.datasets import DatasetError, images, load_dataset, load_image, preprocess_image


def png_bytes(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def centre_of_mass(a):
    total = a.sum()
    return (a.sum(1) @ np.arange(a.shape[0])) / total, (a.sum(0) @ np.arange(a.shape[1])) / total


def ink_box(a, threshold=0.0):
    rows = np.flatnonzero((a > threshold).any(1))
    cols = np.flatnonzero((a > threshold).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def assert_mnist_like(a):
    assert a.shape == (28, 28) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.max() > 0.9
    cy, cx = centre_of_mass(a)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)
    h, w = ink_box(a)
    assert max(h, w) in (19, 20), (h, w)
    assert ink_box(a, 0.3) >= (h - 3, min(w, w - 3))  # the box is real ink, not faint fringe


def draw_seven(size, box, ink=255, paper=0, width=None, mode="L"):
    """A '7' drawn with thick strokes inside box=(x0, y0, x1, y1) on a canvas of the given size."""
    img = Image.new(mode, size, paper)
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box
    width = width or max(2, (x1 - x0) // 6)
    d.line([(x0, y0), (x1, y0), (x0 + (x1 - x0) // 3, y1)], fill=ink, width=width, joint="curve")
    return img


@pytest.fixture(scope="module")
def mnist_digits():
    """Real MNIST test digits: from HANDGRAD_DATA when set, else from the bundled sample."""
    try:
        X, y = load_dataset("mnist", real_data_dir(), "test", download=False)
    except BaseException:  # pytest's Skipped: fall back to the bundled real digits
        X, y = load_dataset("mnist-sample", split="test")
    return X[:200], y[:200]


# ---------------------------------------------------------------- recovering MNIST digits


def test_mnist_digit_round_trip_through_png(mnist_digits, tmp_path):
    X, _ = mnist_digits
    path = tmp_path / "digit.png"
    Image.fromarray(X[0]).save(path)
    out = load_image(path)
    np.testing.assert_allclose(out, X[0] / 255.0, atol=1e-6)  # already MNIST-normalised: nothing changes
    for x in X:  # and every one of 200 digits comes back (almost) unchanged
        out = load_image(png_bytes(Image.fromarray(x)))
        assert np.corrcoef(out.ravel(), x.ravel())[0, 1] > 0.99


def best_shift_correlation(a, b):
    """Correlation of a and b allowing a 1-pixel shift (centring by whole pixels may round either way)."""
    return max(
        np.corrcoef(np.roll(a, (dy, dx), (0, 1)).ravel(), b.ravel())[0, 1]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def test_inverted_and_enlarged_mnist_digit_is_recovered(mnist_digits):
    # Black on white, 10x larger and blurred by bicubic upscaling, as JPEG: the same digit comes back.
    X, _ = mnist_digits
    plain = []
    for x in X[:40]:
        big = Image.fromarray(255 - x).resize((280, 280), Image.Resampling.BICUBIC)
        out = load_image(png_bytes(big, "JPEG", quality=90))
        assert_mnist_like(out)
        plain.append(np.corrcoef(out.ravel(), x.ravel())[0, 1])
        assert best_shift_correlation(out, x / 255.0) > 0.85
        assert np.abs(out - x / 255.0).mean() < 0.08
    assert np.median(plain) > 0.95


# ---------------------------------------------------------------- photos, off-centre, modes


def test_dark_on_light_photo_like_image(rng):
    img = draw_seven((300, 200), (110, 40, 190, 170), ink=30, paper=235, width=14)
    a = np.asarray(img, dtype=np.float64)
    a += np.linspace(-15, 15, 300)[None, :]  # uneven lighting
    a += rng.normal(0, 6, a.shape)  # sensor noise
    a[rng.random(a.shape) < 0.001] = 0  # dust specks
    photo = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB")
    out = load_image(png_bytes(photo, "JPEG", quality=85))
    assert_mnist_like(out)
    clean = preprocess_image(draw_seven((300, 200), (110, 40, 190, 170), width=14))
    assert np.corrcoef(out.ravel(), clean.ravel())[0, 1] > 0.9
    assert out[:3].max() == 0 and out[:, :3].max() == 0  # no noise left in the margins


@pytest.mark.parametrize("mode", ["RGB", "P", "L"])
def test_big_phone_photo_is_reduced_first(rng, mode):
    img = draw_seven((2400, 1600), (900, 300, 1500, 1300), ink=20, paper=220, width=90)
    a = np.asarray(img, dtype=np.float64) + rng.normal(0, 5, (1600, 2400))
    photo = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert(mode)
    out = load_image(png_bytes(photo, "JPEG" if mode != "P" else "PNG"))
    assert_mnist_like(out)
    clean = preprocess_image(draw_seven((300, 200), (112, 37, 187, 162), width=11))
    assert best_shift_correlation(out, clean) > 0.9


def test_small_off_centre_digit_is_scaled_and_centred():
    img = draw_seven((200, 160), (5, 6, 17, 22), width=3)  # 12x16 px in the top-left corner
    out = load_image(png_bytes(img))
    assert_mnist_like(out)
    h, w = ink_box(out)
    assert h == 20 and 12 <= w <= 17  # aspect ratio kept (12:16 -> about 15:20 with the stroke width)


def test_wide_digit_fits_in_20_by_20():
    img = Image.new("L", (400, 100), 0)
    ImageDraw.Draw(img).line([(20, 50), (380, 50)], fill=255, width=20)  # a very wide '-'
    out = load_image(png_bytes(img))
    h, w = ink_box(out)
    assert w == 20 and h <= 3
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_centring_never_pushes_ink_off_the_field():
    # All the mass at one end: centring by mass would move the box off the field; it is clipped instead.
    img = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(img).rectangle([0, 0, 39, 5], fill=255)
    ImageDraw.Draw(img).line([(20, 0), (20, 39)], fill=40, width=1)
    out = load_image(png_bytes(img))
    assert out.sum() == pytest.approx(preprocess_image(img).sum())
    assert ink_box(out)[0] == 20


@pytest.fixture(scope="module")
def reference():
    img = draw_seven((90, 110), (20, 15, 70, 95), width=9)  # white on black, L mode
    return img, preprocess_image(img)


def variants(img):
    a = np.asarray(img)
    rgb = Image.merge("RGB", [img, img, img])
    yield "RGB", rgb
    yield "P", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    yield "LA", Image.merge("LA", [img, Image.new("L", img.size, 255)])
    yield "I;16", Image.fromarray(a.astype(np.uint16) * 257)
    yield "I", Image.fromarray(a.astype(np.int32) * 257)
    yield "F", Image.fromarray(a.astype(np.float32) / 255.0)
    yield "CMYK", Image.merge("RGB", [Image.eval(img, lambda v: 255 - v)] * 3).convert("CMYK")
    yield "1", img.point(lambda v: 255 if v > 127 else 0).convert("1")
    black_ink = Image.eval(img, lambda v: 255 - v)
    # Transparent background (RGBA (0, 0, 0, 0), as a canvas exports it) with black or white strokes.
    yield "RGBA black strokes", Image.merge("RGBA", [black_ink] * 3 + [img])
    yield "RGBA white strokes", Image.merge("RGBA", [Image.new("L", img.size, 255)] * 3 + [img])
    pa = Image.merge("RGB", [black_ink] * 3).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pa.info["transparency"] = int(np.asarray(pa)[0, 0])  # the background's palette index is transparent
    yield "P with transparency", pa


@pytest.mark.parametrize("which", [name for name, _ in variants(Image.new("L", (2, 2)))])
def test_modes_give_the_same_digit(reference, which):
    img, expected = reference
    converted = dict(variants(img))[which]
    out = preprocess_image(converted)
    assert np.corrcoef(out.ravel(), expected.ravel())[0, 1] > 0.97, which
    fmt = {"CMYK": "TIFF", "F": "TIFF", "I": "TIFF"}.get(which, "PNG")
    assert np.corrcoef(load_image(png_bytes(converted, fmt)).ravel(), expected.ravel())[0, 1] > 0.97


def test_sources_path_bytes_and_file_object(tmp_path, reference):
    img, expected = reference
    path = tmp_path / "seven.png"
    img.save(path)
    with open(path, "rb") as f:
        from_file = load_image(f)
    for out in (load_image(path), load_image(str(path)), load_image(path.read_bytes()), from_file):
        np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------- bad files


def huge_png(width, height):
    """A valid PNG header declaring width x height pixels, with a tiny (incomplete) payload."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(DatasetError, match="notes.png is not an image Pillow can read"):
        load_image(path)
    with pytest.raises(DatasetError, match="not an image Pillow can read"):
        load_image(b"")


@pytest.mark.parametrize("colour", [0, 255, 128])
def test_empty_image_has_no_ink(colour):
    with pytest.raises(DatasetError, match="no ink"):
        load_image(png_bytes(Image.new("L", (50, 40), colour)))
    with pytest.raises(DatasetError, match="no ink"):  # fully transparent
        load_image(png_bytes(Image.new("RGBA", (50, 40), (0, 0, 0, 0))))


def test_decompression_bomb(monkeypatch):
    with pytest.raises(DatasetError, match="decompression bomb"):
        load_image(huge_png(100_000, 100_000))  # 10^10 pixels: refused from the header
    with pytest.raises(DatasetError, match="decompression bomb"):
        load_image(huge_png(9_000, 7_000))  # above handgrad's own limit, below Pillow's
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DatasetError, match="more than the 100 accepted"):
        load_image(png_bytes(Image.new("L", (11, 10), 255)))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(reference, fmt):
    img, _ = reference
    data = png_bytes(img.resize((300, 300)).convert("RGB"), fmt)
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_missing_file_is_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.png")
    with pytest.raises(TypeError, match="path, bytes or a binary file object"):
        load_image(12)
