"""Dataset augmentation (book §7.4): train on transformed copies of the images to which the labels are
invariant — small translations, rotations and elastic distortions of handwritten digits.

Every transformation here is one *resampling*: for each output pixel p (row, column) we compute where in the
input it comes from, a real-valued source point s(p), and read the input there by bilinear interpolation
(zero — or ``fill`` — outside the image). With c the image centre ((H − 1)/2, (W − 1)/2), t a shift,
θ a rotation angle and Δ a displacement field,

    s(p) = c + R(θ)ᵀ (p − c − t) + Δ(p),        R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]] acting on (y, x)

    i.e. the image is rotated by θ counter-clockwise as displayed (row 0 at the top) about its centre,
    then moved by t = (down, right) pixels, then warped by Δ. (A 90° rotation of a square image is
    exactly ``np.rot90``; an integer shift moves every pixel by exactly t.)

Elastic distortion (Simard, Steinkraus & Platt 2003): Δ = α · (G_σ ∗ U), with U a field of independent
uniform(−1, 1) displacements per pixel and G_σ a Gaussian of standard deviation σ pixels (truncated at 4σ,
zero beyond the border); small σ gives random jitter, large σ nearly a translation, σ ≈ 4 and α ≈ 34 look
like natural variations of handwriting on 28×28 digits. The Gaussian blur is written as two matrix products,
G_H U G_Wᵀ, so the whole batch is smoothed at once.

Everything is vectorised over the batch (index arithmetic and ``np.take_along_axis``; no loop over images),
deterministic for a given ``rng`` (a ``np.random.Generator`` or a seed), and keeps the input's shape and
dtype. Batches are (N, H, W) or (N, C, H, W); all channels of an image get the same transformation.
Augment the images *before* standardising them, or pass the background value as ``fill``.

    X_aug = augment_batch(X, rng, max_shift=2, max_degrees=10)             # a fresh draw per call
    augment = Augmenter(max_shift=2, max_degrees=10, elastic_alpha=34, rng=0); X_aug = augment(X)
"""

import numpy as np

from .. import ShapeError
from .._checks import check_int, check_number

__all__ = ["augment_batch", "Augmenter", "transform_images", "elastic_displacement"]


def _check_images(X):
    X = np.asarray(X)
    if X.ndim not in (3, 4) or X.shape[-1] < 1 or X.shape[-2] < 1:
        raise ShapeError(f"expected an image batch (N, H, W) or (N, C, H, W), got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ValueError(f"images must have a real number dtype, got {X.dtype}")
    return X


def _check_settings(max_shift, max_degrees, elastic_alpha, elastic_sigma, fill):
    check_int(max_shift, "max_shift", low=0)
    check_number(max_degrees, "max_degrees", low=0, high=180)
    check_number(elastic_alpha, "elastic_alpha", low=0)
    check_number(elastic_sigma, "elastic_sigma", low=0, low_open=True)
    check_number(fill, "fill")


def _per_image(value, n, name, width=None):
    """A scalar, or one entry (or one ``width``-vector) per image, as float64 (N,) or (N, width)."""
    a = np.asarray(value, dtype=np.float64)
    shape = (n,) if width is None else (n, width)
    if a.ndim == 0 or (width is not None and a.shape == (width,)):
        a = np.broadcast_to(a, shape)
    if a.shape != shape:
        raise ShapeError(f"{name} must be a scalar or have shape {shape} for {n} images, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _bilinear(flat, ys, xs, H, W, fill):
    """Read images ``flat`` (N, C, H·W) at real points (ys, xs), each (N, P): bilinear, ``fill`` outside.

    The bilinear read of a point (y, x) with y₀ = ⌊y⌋, x₀ = ⌊x⌋, u = y − y₀, v = x − x₀ is

        I(y, x) = (1 − u)(1 − v) I[y₀, x₀] + (1 − u) v I[y₀, x₀+1] + u (1 − v) I[y₀+1, x₀] + u v I[y₀+1, x₀+1]

    with I = ``fill`` at every neighbour outside the image. The fast form here pads each image with a
    border of ``fill`` (one row and column before, two after) and clips the point into [−1, H] × [−1, W]
    first: a clipped point's neighbours are then all border, or the weight of the neighbours inside stays
    what it was, so no "inside" masks are needed; the four gathers are one flat ``take`` each, and the sum is
    written as two interpolations along x and one along y, a + v (b − a), which equals the four-weight sum
    to rounding (``tests/test_ch07_augmentation.py`` checks it against the masked four-weight form).
    """
    work = flat.dtype if np.issubdtype(flat.dtype, np.floating) else np.dtype(np.float64)
    N, C, P = flat.shape[0], flat.shape[1], ys.shape[1]
    Hp, Wp = H + 3, W + 3
    padded = np.full((N, C, Hp, Wp), fill, work)
    padded[:, :, 1 : H + 1, 1 : W + 1] = flat.reshape(N, C, H, W)
    ys, xs = np.clip(ys, -1, H), np.clip(xs, -1, W)  # float64: the weights below are exact to float32
    y0, x0 = np.floor(ys), np.floor(xs)
    ys -= y0
    xs -= x0
    u, v = ys.astype(work, copy=False), xs.astype(work, copy=False)  # the lower and right neighbours' weights
    index = y0.astype(np.intp)  # (N, P) into a padded image: (y₀ + 1)·Wp + (x₀ + 1) ...
    index *= Wp
    index += x0.astype(np.intp)
    index += (np.arange(N) * (C * Hp * Wp) + Wp + 1)[:, None]  # ... into the flattened batch
    if C > 1:  # every channel is read at the same points
        index = index[:, None, :] + (np.arange(C) * (Hp * Wp))[None, :, None]
        u, v = u[:, None, :], v[:, None, :]
    source = padded.reshape(-1)
    after = source[1:]  # after[i] = source[i + 1]: the right neighbours without an index + 1 array
    a, b = np.take(source, index), np.take(after, index)
    index += Wp
    c, d = np.take(source, index), np.take(after, index)
    b -= a  # the row y₀ read at x: a + v (b − a); the row y₀ + 1: c + v (d − c); then between them
    b *= v
    a += b
    d -= c
    d *= v
    c += d
    c -= a
    c *= u
    a += c
    return a.reshape(N, C, P)


def _source_points(H, W, t, theta):
    """s(p) of the module docstring without Δ, for every output pixel p of every image: (ys, xs), each
    float64 (N, H·W). It is affine in p = (r, c), s(p) = a + M p with M = R(θ)ᵀ and a = c − M (c + t), so all
    images' points come from one (N, 3) · (3, H·W) product of the coefficients (a, M's row) with (1, r, c)."""
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    cos, sin = np.cos(theta), np.sin(theta)
    oy, ox = -cy - t[:, 0], -cx - t[:, 1]  # p − c − t = (r + oy, c + ox)
    rows, cols = np.divmod(np.arange(H * W, dtype=np.float64), W)
    basis = np.stack([np.ones(H * W), rows, cols])  # (3, H·W)
    ys = np.stack([cy + cos * oy + sin * ox, cos, sin], axis=1) @ basis  # cy + cos·(r+oy) + sin·(c+ox)
    xs = np.stack([cx - sin * oy + cos * ox, -sin, cos], axis=1) @ basis  # cx − sin·(r+oy) + cos·(c+ox)
    return ys, xs


def transform_images(X, shifts=0.0, degrees=0.0, displacement=None, fill=0.0):
    """Rotate, shift and warp every image of a batch by the given amounts (module docstring's s(p)).

    ``shifts``: (N, 2) or (2,) pixels (down, right), integers for an exact translation; ``degrees``: (N,) or
    a scalar, counter-clockwise; ``displacement``: None or an (N, 2, H, W) field Δ = (Δy, Δx) in pixels, read
    at each output pixel (the content moves by −Δ). Returns a new array of X's shape and dtype (integer
    images are rounded and clipped to their dtype's range).
    """
    X = _check_images(X)
    N, H, W = X.shape[0], X.shape[-2], X.shape[-1]
    t = _per_image(shifts, N, "shifts", width=2)
    theta = np.deg2rad(_per_image(degrees, N, "degrees"))
    ys, xs = _source_points(H, W, t, theta)
    if displacement is not None:
        D = np.asarray(displacement, dtype=np.float64)
        if D.shape != (N, 2, H, W):
            raise ShapeError(f"displacement must have shape {(N, 2, H, W)}, got {D.shape}")
        ys = ys + D[:, 0].reshape(N, -1)
        xs = xs + D[:, 1].reshape(N, -1)
    flat = X.reshape(N, -1, H * W)  # (N, C, H·W), C = 1 for (N, H, W) batches
    out = _bilinear(flat, ys, xs, H, W, float(fill)).reshape(X.shape)
    if np.issubdtype(X.dtype, np.integer):
        info = np.iinfo(X.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(X.dtype, copy=False)


def _gaussian_matrix(n, sigma):
    """The (n, n) matrix of a Gaussian blur along one axis: G[i, k] ∝ exp(−(i − k)² / 2σ²), |i − k| ≤ 4σ."""
    d = np.subtract.outer(np.arange(n), np.arange(n)).astype(np.float64)
    radius = int(np.ceil(4 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    G = np.exp(-0.5 * (d / sigma) ** 2) / taps.sum()
    G[np.abs(d) > radius] = 0
    return G


def elastic_displacement(rng, n, height, width, alpha=34.0, sigma=4.0):
    """Simard et al.'s random displacement fields: α · (G_σ ∗ U), U ~ uniform(−1, 1), for n images.

    Returns float64 (n, 2, height, width): Δy then Δx per pixel, for ``transform_images``.
    """
    check_number(alpha, "elastic_alpha", low=0)
    sigma = check_number(sigma, "elastic_sigma", low=0, low_open=True)
    rng = np.random.default_rng(rng)
    U = rng.uniform(-1.0, 1.0, size=(n, 2, height, width))
    GH, GW = _gaussian_matrix(height, sigma), _gaussian_matrix(width, sigma)
    return alpha * (GH @ U @ GW.T)  # blur the columns, then the rows: (H, H) @ (…, H, W) @ (W, W)


def augment_batch(X, rng, max_shift=2, max_degrees=10.0, elastic_alpha=0.0, elastic_sigma=4.0, fill=0.0):
    """A randomly augmented copy of an image batch (book §7.4): one random transformation per image.

    Per image: an integer shift (down, right) uniform in {−max_shift, …, max_shift}², a rotation uniform in
    [−max_degrees, max_degrees] degrees and, when ``elastic_alpha`` > 0, an elastic distortion with
    parameters (α, σ) = (elastic_alpha, elastic_sigma). ``rng`` is a ``np.random.Generator`` (advanced by the
    call) or a seed; the same seed gives the same batch. Shape and dtype are kept.

    Shapes: X (N, H, W) or (N, C, H, W) -> the same.
    """
    X = _check_images(X)
    _check_settings(max_shift, max_degrees, elastic_alpha, elastic_sigma, fill)
    rng = np.random.default_rng(rng)
    N, H, W = X.shape[0], X.shape[-2], X.shape[-1]
    shifts = rng.integers(-max_shift, max_shift + 1, size=(N, 2))
    degrees = rng.uniform(-max_degrees, max_degrees, size=N)
    field = elastic_displacement(rng, N, H, W, elastic_alpha, elastic_sigma) if elastic_alpha > 0 else None
    return transform_images(X, shifts, degrees, field, fill)


class Augmenter:
    """``augment_batch`` with its settings and generator held, for a training loop: ``X_aug = augmenter(X)``.

    Successive calls draw fresh transformations from the one generator, so a run is reproducible from
    ``rng`` (a seed or a ``np.random.Generator``).
    """

    def __init__(
        self, max_shift=2, max_degrees=10.0, elastic_alpha=0.0, elastic_sigma=4.0, fill=0.0, rng=None
    ):
        self.settings = dict(
            max_shift=max_shift,
            max_degrees=max_degrees,
            elastic_alpha=elastic_alpha,
            elastic_sigma=elastic_sigma,
            fill=fill,
        )
        _check_settings(**self.settings)
        self.rng = np.random.default_rng(rng)

    def __repr__(self):
        return "Augmenter(" + ", ".join(f"{k}={v!r}" for k, v in self.settings.items()) + ")"

    def __call__(self, X):
        return augment_batch(X, self.rng, **self.settings)
