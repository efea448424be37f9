"""clip_grad_norm against torch.nn.utils.clip_grad_norm_ (float64 and float32, clipped or not)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from handgrad.ch10_sequence import clip_grad_norm  # noqa: E402


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch(max_norm, dtype):
    rng = np.random.default_rng(0)
    grads = {k: rng.standard_normal(s).astype(dtype) for k, s in (("U", (3, 8)), ("W", (2, 8)), ("b", (8,)))}
    params = [torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype) for g in grads.values()]
    for p, g in zip(params, grads.values()):
        p.grad = torch.from_numpy(g.copy())
    expected_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    norm = clip_grad_norm(grads, max_norm)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert norm == pytest.approx(expected_norm, rel=tol)
    for p, g in zip(params, grads.values()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=tol, atol=0)
