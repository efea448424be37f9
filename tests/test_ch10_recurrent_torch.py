"""RNN, LSTM and GRU against torch.nn.RNN/LSTM/GRU in float64: outputs, final states, dX, the gradient of
the initial state and every parameter gradient, with random non-zero biases, on awkward shapes.

The weights convert by a transpose (U = weight_ih.T, W = weight_hh.T, b = bias_ih + bias_hh; the GRU's n
block keeps bias_hh apart as b_hn), both ways: ``to_torch`` and ``from_torch`` below.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from handgrad.ch10_sequence import GRU, LSTM, RNN  # noqa: E402

TOL = 1e-7


def to_torch(layer):
    """The layer's parameters as the ``state_dict()`` of the matching single-layer torch module."""
    p, H = layer.params, layer.hidden_size
    bias_hh = np.zeros_like(p["b"])
    bias_ih = p["b"].copy()
    if isinstance(layer, GRU) and layer.reset_after:
        bias_hh[2 * H :] = p["b_hn"]
    sd = {"weight_ih_l0": p["U"].T, "weight_hh_l0": p["W"].T, "bias_ih_l0": bias_ih, "bias_hh_l0": bias_hh}
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def from_torch(layer, state_dict):
    """Write a torch module's ``state_dict()`` into the layer's parameters (in place)."""
    sd = {k: v.detach().numpy() for k, v in state_dict.items()}
    p, H = layer.params, layer.hidden_size
    p["U"][...] = sd["weight_ih_l0"].T
    p["W"][...] = sd["weight_hh_l0"].T
    p["b"][...] = sd["bias_ih_l0"] + sd["bias_hh_l0"]
    if isinstance(layer, GRU):
        p["b"][2 * H :] = sd["bias_ih_l0"][2 * H :]
        p["b_hn"][...] = sd["bias_hh_l0"][2 * H :]


def torch_module(layer):
    D, H = layer.input_size, layer.hidden_size
    if isinstance(layer, LSTM):
        return torch.nn.LSTM(D, H, batch_first=True).double()
    if isinstance(layer, GRU):
        return torch.nn.GRU(D, H, batch_first=True).double()
    return torch.nn.RNN(D, H, nonlinearity=layer.nonlinearity, batch_first=True).double()


def grads_from_torch(module, layer):
    """The torch module's parameter gradients in the layer's layout (the same conversion as from_torch)."""
    g = {k: v.grad for k, v in module.named_parameters()}
    H = layer.hidden_size
    out = {"U": g["weight_ih_l0"].numpy().T, "W": g["weight_hh_l0"].numpy().T}
    out["b"] = g["bias_ih_l0"].numpy().copy()  # d/db = d/dbias_ih = d/dbias_hh, where they are summed
    if isinstance(layer, GRU):
        out["b_hn"] = g["bias_hh_l0"].numpy()[2 * H :]
    return out


LAYERS = [
    lambda D, H, seed: RNN(D, H, rng=seed, dtype=np.float64),
    lambda D, H, seed: RNN(D, H, nonlinearity="relu", rng=seed, dtype=np.float64),
    lambda D, H, seed: LSTM(D, H, rng=seed, dtype=np.float64),
    lambda D, H, seed: GRU(D, H, reset_after=True, rng=seed, dtype=np.float64),
]
SHAPES = [(3, 5, 4, 6), (1, 1, 1, 1), (1, 7, 1, 3), (4, 1, 2, 5), (2, 12, 3, 2)]  # N, T, D, H


@pytest.mark.parametrize("make", LAYERS, ids=["rnn-tanh", "rnn-relu", "lstm", "gru"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-T{}-D{}-H{}".format(*s))
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "state"])
def test_matches_torch(make, shape, with_state):
    N, T, D, H = shape
    rng = np.random.default_rng(sum(shape))
    layer = make(D, H, int(rng.integers(1000)))
    for p in layer.params.values():  # larger than the default, biases far from zero, every gate different
        p[...] = rng.uniform(-1.0, 1.0, p.shape)
    module = torch_module(layer)
    module.load_state_dict(to_torch(layer))
    X = rng.standard_normal((N, T, D))
    dH = rng.standard_normal((N, T, H))
    is_lstm = isinstance(layer, LSTM)
    if with_state:
        h0, c0 = rng.standard_normal((2, N, H))
        state = (h0, c0) if is_lstm else h0
    else:
        state = None

    dfinal = [rng.standard_normal((N, H)) for _ in range(2 if is_lstm else 1)]
    Y = layer.forward(X, state)
    dX = layer.backward(dH, tuple(dfinal) if is_lstm else dfinal[0])

    Xt = torch.tensor(X, requires_grad=True)
    if with_state:
        st = tuple(torch.tensor(s[None], requires_grad=True) for s in (state if is_lstm else (state,)))
        Yt, final_t = module(Xt, st if is_lstm else st[0])
    else:
        Yt, final_t = module(Xt)
    finals = final_t if is_lstm else (final_t,)
    # a loss that reaches the final states too, as an encoder's or a truncated sequence's does
    loss = (Yt * torch.from_numpy(dH)).sum()
    loss = loss + sum((f[0] * torch.from_numpy(g)).sum() for f, g in zip(finals, dfinal))
    loss.backward()

    np.testing.assert_allclose(Y, Yt.detach().numpy(), rtol=0, atol=TOL)
    ours_final = layer.final_state if is_lstm else (layer.final_state,)
    for ours, theirs in zip(ours_final, finals):
        np.testing.assert_allclose(ours, theirs[0].detach().numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(dX, Xt.grad.numpy(), rtol=0, atol=TOL)
    expected = grads_from_torch(module, layer)
    assert expected.keys() == layer.grads.keys()
    for k in expected:
        np.testing.assert_allclose(layer.grads[k], expected[k], rtol=0, atol=TOL, err_msg=k)
    ours_sg = layer.state_grad if is_lstm else (layer.state_grad,)
    if with_state:
        for ours, theirs in zip(ours_sg, st):
            np.testing.assert_allclose(ours, theirs.grad.numpy()[0], rtol=0, atol=TOL)


@pytest.mark.parametrize("make", LAYERS, ids=["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_weights_convert_from_torch_and_back(make):
    """A torch module's state_dict() read into the layer (from_torch) gives torch's outputs, and to_torch
    gives an equivalent state_dict back (the biases may be split differently, their sum is the same)."""
    layer = make(3, 4, 0)
    module = torch_module(layer)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1)
    from_torch(layer, module.state_dict())
    X = np.random.default_rng(0).standard_normal((2, 5, 3))
    np.testing.assert_allclose(layer.forward(X), module(torch.from_numpy(X))[0].detach().numpy(), atol=TOL)
    back = torch_module(layer)
    back.load_state_dict(to_torch(layer))
    np.testing.assert_allclose(back(torch.from_numpy(X))[0].detach().numpy(), layer.forward(X), atol=TOL)


def test_the_books_gru_is_a_different_function_from_torchs():
    """reset_after=False (eq. 10.46) with the same weights does not give torch.nn.GRU's outputs, and
    reset_after=True does: the two forms are not interchangeable."""
    rng = np.random.default_rng(1)
    book, cudnn = GRU(3, 4, reset_after=False, dtype=np.float64), GRU(3, 4, dtype=np.float64)
    module = torch.nn.GRU(3, 4, batch_first=True).double()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1)
        module.bias_hh_l0[8:] = 0  # b_hn = 0, so that the book's form has every parameter torch has
    from_torch(cudnn, module.state_dict())
    for k in book.params:
        book.params[k][...] = cudnn.params[k]
    X = rng.standard_normal((2, 6, 3))
    expected = module(torch.from_numpy(X))[0].detach().numpy()
    np.testing.assert_allclose(cudnn.forward(X), expected, atol=TOL)
    assert np.abs(book.forward(X) - expected).max() > 1e-3
