"""Chapter 7, dropout.py: dropout's scaling against torch.nn.functional.dropout, the PyTorch oracle."""

import numpy as np
import torch

from handgrad.ch07_regularization import Dropout


def test_dropout_scale_matches_torch(rng):
    """Same kept set as torch's mask, same values: x / (1 − p) for kept units, 0 for dropped ones."""
    X = rng.standard_normal((50, 40))
    torch.manual_seed(0)
    Yt = torch.nn.functional.dropout(torch.tensor(X), p=0.3, training=True).numpy()
    layer = Dropout(0.3, rng=0)
    Y = layer.forward(X)
    kept_t, kept = Yt != 0, Y != 0
    np.testing.assert_allclose(Yt[kept_t], X[kept_t] / 0.7, rtol=1e-15)
    np.testing.assert_allclose(Y[kept], X[kept] / 0.7, rtol=1e-15)
