"""Chapter 6, losses.py: cross entropy against torch.nn.functional.cross_entropy (float64), the PyTorch
oracle.
"""

import numpy as np
import pytest
import torch
from test_ch06_losses import SEEDS

from handgrad.ch04_numerical import softmax
from handgrad.ch06_feedforward import SoftmaxCrossEntropy, cross_entropy_from_logits, cross_entropy_grad


def torch_cross_entropy(logits, y):
    tL = torch.from_numpy(logits).requires_grad_(True)
    target = torch.from_numpy(y) if y.ndim == 2 else torch.from_numpy(y.astype(np.int64))
    loss = torch.nn.functional.cross_entropy(tL, target)
    loss.backward()
    return loss.item(), tL.grad.numpy()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("targets", ["labels", "onehot", "probabilities"])
def test_cross_entropy_matches_torch(seed, targets):
    rng = np.random.default_rng(seed)
    n, c = 8, 5
    logits = 4 * rng.standard_normal((n, c))
    labels = rng.integers(0, c, n)
    y = {
        "labels": labels,
        "onehot": np.eye(c)[labels],
        "probabilities": softmax(rng.standard_normal((n, c))),
    }[targets]
    t_loss, t_grad = torch_cross_entropy(logits, y)
    assert cross_entropy_from_logits(logits, y) == pytest.approx(t_loss, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(cross_entropy_grad(logits, y), t_grad, rtol=1e-6, atol=1e-12)
    fused = SoftmaxCrossEntropy()
    assert fused.forward(logits, y) == pytest.approx(t_loss, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(fused.backward(), t_grad, rtol=1e-6, atol=1e-12)
