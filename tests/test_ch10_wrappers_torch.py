"""Bidirectional(LSTM, LSTM) against torch.nn.LSTM(bidirectional=True) in float64: outputs, dX, gradients."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from handgrad.ch10_sequence import LSTM, Bidirectional  # noqa: E402


@pytest.mark.parametrize("shape", [(3, 6, 4, 5), (1, 1, 1, 2)], ids=str)
def test_bidirectional_lstm_matches_torch(shape):
    N, T, D, H = shape
    rng = np.random.default_rng(0)
    module = torch.nn.LSTM(D, H, batch_first=True, bidirectional=True).double()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1)
    layer = Bidirectional(LSTM(D, H, dtype=np.float64), LSTM(D, H, dtype=np.float64))
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    for prefix, suffix in (("fwd", "l0"), ("bwd", "l0_reverse")):
        layer.params[f"{prefix}.U"][...] = sd[f"weight_ih_{suffix}"].T
        layer.params[f"{prefix}.W"][...] = sd[f"weight_hh_{suffix}"].T
        layer.params[f"{prefix}.b"][...] = sd[f"bias_ih_{suffix}"] + sd[f"bias_hh_{suffix}"]
    X, dY = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, 2 * H))
    Y = layer.forward(X)
    dX = layer.backward(dY)
    Xt = torch.tensor(X, requires_grad=True)
    Yt, _ = module(Xt)
    (Yt * torch.from_numpy(dY)).sum().backward()
    np.testing.assert_allclose(Y, Yt.detach().numpy(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(dX, Xt.grad.numpy(), rtol=0, atol=1e-7)
    g = {k: v.grad.numpy() for k, v in module.named_parameters()}
    for prefix, suffix in (("fwd", "l0"), ("bwd", "l0_reverse")):
        np.testing.assert_allclose(layer.grads[f"{prefix}.U"], g[f"weight_ih_{suffix}"].T, rtol=0, atol=1e-7)
        np.testing.assert_allclose(layer.grads[f"{prefix}.W"], g[f"weight_hh_{suffix}"].T, rtol=0, atol=1e-7)
        np.testing.assert_allclose(layer.grads[f"{prefix}.b"], g[f"bias_ih_{suffix}"], rtol=0, atol=1e-7)
