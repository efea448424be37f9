"""§10.10 Gated RNNs: the LSTM (§10.10.1, eqs. 10.40–10.44) and the GRU (§10.10.2, eqs. 10.45–10.46).

A gate is a sigmoid unit, between 0 and 1, that multiplies another signal: how much of the old cell to
keep, how much of the new candidate to write, how much of the cell to show. Gates let the gradient pass
through many steps without vanishing (the path through the cell c_t = f ⊙ c_{t−1} + … is multiplied only
by the forget gate), which the simple RNN of §10.2 cannot do. Both layers share ``Recurrent``'s
conventions (module ``recurrent``): batch-first input, parameters U, W, b in PyTorch's gate order,
``final_state``, ``state_grad`` and the carried state for truncated BPTT.

The LSTM computes the sigmoid of three gates and the tanh of the candidate as one tanh over the whole
row of pre-activations, σ(a) = (1 + tanh(a/2)) / 2, with per-column constants (the ½ folded into the
columns of U, W and b once per forward): three element-wise passes over (N, 4H) per step instead of
four per gate. Tests check it against chapter 4's sigmoid and PyTorch.
"""

import numpy as np

from .._checks import check_bool
from .recurrent import Recurrent, _sigmoid_

__all__ = ["LSTM", "GRU"]


def _columns(*parts):
    """A row vector of per-column constants: _columns((0.5, 2H), (1.0, H)) = [0.5]*2H + [1.0]*H."""
    return np.concatenate([np.full(n, v) for v, n in parts])


class LSTM(Recurrent):
    """Long short-term memory (§10.10.1, eqs. 10.40–10.44), batch-first, as ``torch.nn.LSTM``.

    Forward, for t = 1 … T, in the row-vector batch form; the four gates are the column blocks of
    A_t = X_t U + H_{t−1} W + b (N, 4H), in PyTorch's order input, forget, cell, output:

        I_t = σ(A_t[:, 0:H])       input gate gᵢ        (eq. 10.42)
        F_t = σ(A_t[:, H:2H])      forget gate f        (eq. 10.40)
        G_t = tanh(A_t[:, 2H:3H])  candidate cell       (eq. 10.41; the book writes σ, PyTorch tanh)
        O_t = σ(A_t[:, 3H:4H])     output gate q        (eq. 10.44)
        C_t = F_t ⊙ C_{t−1} + I_t ⊙ G_t                 (eq. 10.41, the cell state s)
        H_t = O_t ⊙ tanh(C_t)                           (eq. 10.43)

    Back-propagation through time (§10.2.2 applied to these steps), carrying dh_next and dc_next from
    step t + 1 (zero at t = T), for t = T … 1:

        dh      = dH_t + dh_next
        dC      = dc_next + dh ⊙ O_t ⊙ (1 − tanh²(C_t))
        dA_o    = dh ⊙ tanh(C_t) ⊙ O_t ⊙ (1 − O_t)
        dA_i    = dC ⊙ G_t ⊙ I_t ⊙ (1 − I_t),        dA_f = dC ⊙ C_{t−1} ⊙ F_t ⊙ (1 − F_t)
        dA_g    = dC ⊙ I_t ⊙ (1 − G_t²)
        dc_next = dC ⊙ F_t,                          dh_next = dA_t Wᵀ,      dX_t = dA_t Uᵀ

    then db = Σ_t 1ᵀ dA_t, dW = Σ_t H_{t−1}ᵀ dA_t, dU = Σ_t X_tᵀ dA_t (eqs. 10.25–10.28), one product each.
    ``state`` and ``final_state`` are pairs (h, c); ``state_grad`` is (dh_0, dc_0).

    Shapes: X (N, T, D) -> H (N, T, H); h, c (N, H); U (D, 4H), W (H, 4H), b (4H,)

    >>> LSTM(3, 5, rng=0).forward(np.ones((2, 4, 3), np.float32)).shape
    (2, 4, 5)
    """

    gates = 4

    def __init__(self, input_size, hidden_size, rng=None, dtype=np.float32, stateful=False):
        super().__init__(input_size, hidden_size, rng=rng, dtype=dtype, stateful=stateful)
        H = self.hidden_size
        self._scale = _columns((0.5, 2 * H), (1.0, H), (0.5, H))  # σ(a) = ½ tanh(½ a) + ½, tanh(a)
        self._offset = _columns((0.5, 2 * H), (0.0, H), (0.5, H))
        self._slope = _columns((1.0, 2 * H), (0.0, H), (1.0, H))  # σ′ = s (1 − s),  tanh′ = 1 − g²
        self._one = _columns((0.0, 2 * H), (1.0, H), (0.0, H))

    def _zero_state(self, N, dtype):
        return np.zeros((N, self.hidden_size), dtype), np.zeros((N, self.hidden_size), dtype)

    def _as_state(self, state, N, dtype, name="state"):
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError(f"{self!r}: {name} must be a pair (h, c), got {type(state).__name__}")
        return self._check_state(state[0], N, dtype, f"{name}[0] (h)"), self._check_state(
            state[1], N, dtype, f"{name}[1] (c)"
        )

    def _forward(self, X_tm, state):
        T, N, _ = X_tm.shape
        H, W, dtype = self.hidden_size, self.params["W"], X_tm.dtype
        H_tm = self._buffer("H_tm", (T + 1, N, H), dtype)
        C_tm = self._buffer("C_tm", (T + 1, N, H), dtype)
        tanh_C = self._buffer("tanh_C", (T, N, H), dtype)
        H_tm[0], C_tm[0] = state
        # the gates' activations are one tanh: σ(a) = ½ tanh(½ a) + ½ on i, f, o and tanh(a) on g. The
        # ½ is folded into the columns of U, W and b (A_t diag(s) = X_t U diag(s) + H_{t−1} W diag(s) + …)
        scale, offset = self._scale.astype(dtype), self._offset.astype(dtype)
        U_s, W_s, b_s = self.params["U"] * scale, W * scale, self.params["b"] * scale
        gates = self._input_part(X_tm, self._buffer("gates", (T, N, 4 * H), dtype), U_s, b_s)
        recurrent, ig = self._buffer("HW", (N, 4 * H), dtype), self._buffer("ig", (N, H), dtype)
        for t in range(T):
            a = gates[t]
            np.add(a, np.matmul(H_tm[t], W_s, out=recurrent), out=a)  # A_t diag(s), s = ½ or 1 per column
            np.tanh(a, out=a)
            np.multiply(a, scale, out=a)
            np.add(a, offset, out=a)
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            np.multiply(f, C_tm[t], out=C_tm[t + 1])
            np.add(C_tm[t + 1], np.multiply(i, g, out=ig), out=C_tm[t + 1])  # C_t = F ⊙ C_{t−1} + I ⊙ G
            np.tanh(C_tm[t + 1], out=tanh_C[t])
            np.multiply(o, tanh_C[t], out=H_tm[t + 1])  # H_t = O ⊙ tanh(C_t)
        self._cache = (X_tm, H_tm, C_tm, gates, tanh_C)
        return H_tm

    def _final(self):
        return self._cache[1][-1].copy(), self._cache[2][-1].copy()

    def _backward(self, dH, dstate):
        X_tm, H_tm, C_tm, gates, tanh_C = self._cache
        T, N, _ = X_tm.shape
        H, W, dtype = self.hidden_size, self.params["W"], np.result_type(dH, X_tm)
        slope, one = self._slope.astype(dtype), self._one.astype(dtype)
        dA = self._buffer("dA", (T, N, 4 * H), dtype)
        dh_next, dc_next = dstate  # zero, or the gradient of (h_T, c_T)
        dh, dC, tmp = (self._buffer(name, (N, H), dtype) for name in ("dh", "dC", "tmp"))
        for t in range(T - 1, -1, -1):
            a, d = gates[t], dA[t]
            i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            np.subtract(slope, a, out=d)  # the activations' derivatives, all four blocks at once:
            np.multiply(d, a, out=d)  # s (1 − s) for the sigmoid gates,
            np.add(d, one, out=d)  # 1 − g² for the candidate
            np.add(dH[t], dh_next, out=dh)  # dh = dH_t + dh_next
            np.multiply(tanh_C[t], tanh_C[t], out=tmp)
            np.subtract(1, tmp, out=tmp)
            np.multiply(tmp, o, out=tmp)
            np.multiply(tmp, dh, out=tmp)
            np.add(dc_next, tmp, out=dC)  # dC = dc_next + dh ⊙ O ⊙ (1 − tanh²(C_t))
            d[:, 3 * H :] *= np.multiply(dh, tanh_C[t], out=tmp)  # dA_o = dh ⊙ tanh(C_t) ⊙ σ′
            d[:, :H] *= np.multiply(dC, g, out=tmp)  # dA_i = dC ⊙ G ⊙ σ′
            d[:, H : 2 * H] *= np.multiply(dC, C_tm[t], out=tmp)  # dA_f = dC ⊙ C_{t−1} ⊙ σ′
            d[:, 2 * H : 3 * H] *= np.multiply(dC, i, out=tmp)  # dA_g = dC ⊙ I ⊙ (1 − G²)
            self._flush(np.multiply(dC, f, out=dc_next), tmp, t)  # dc_next = dC ⊙ F
            self._flush(np.matmul(d, W.T, out=dh_next), tmp, t)  # dh_next = dA_t Wᵀ: (N, 4H) @ (4H, H)
        H_prev = H_tm[:-1].reshape(T * N, H)
        np.matmul(H_prev.T, dA.reshape(T * N, -1), out=self.grads["W"])  # dW = Σ_t H_{t−1}ᵀ dA_t
        self.state_grad = (dh_next, dc_next)
        return dA


class GRU(Recurrent):
    """Gated recurrent unit (§10.10.2, eqs. 10.45–10.46), batch-first; reset_after=True is ``torch.nn.GRU``.

    The gates are the column blocks of U, W, b in PyTorch's order reset, update, new (3H columns). With
    A_t = X_t U + b and the recurrent part R_t (N, 3H), for t = 1 … T:

        Z_t = σ(A_t[:, H:2H] + H_{t−1} W_z)                     update gate u   (eq. 10.45)
        R_t = σ(A_t[:, 0:H] + H_{t−1} W_r)                      reset gate r    (eq. 10.46)
        book form (reset_after=False; eq. 10.46, the reset gate scales h before the product):
        N_t = tanh(A_t[:, 2H:] + (R_t ⊙ H_{t−1}) W_n)
        PyTorch / cuDNN form (reset_after=True, the default; an extra bias b_hn (H,)):
        N_t = tanh(A_t[:, 2H:] + R_t ⊙ (H_{t−1} W_n + b_hn))
        H_t = Z_t ⊙ H_{t−1} + (1 − Z_t) ⊙ N_t                                   (eq. 10.45)

    (The book writes σ for the candidate; PyTorch, cuDNN and the GRU paper use tanh, as here.) The default
    is ``reset_after=True`` so that the weights interchange with ``torch.nn.GRU`` and cuDNN: the two forms
    are different functions, not reparametrisations of each other. It also lets all of H_{t−1} W be one
    product per step; the book's form needs two, since R_t must be known before (R_t ⊙ H_{t−1}) W_n.
    With PyTorch's parameters: b = bias_ih + bias_hh on the r and z blocks, bias_ih on the n block, and
    b_hn = bias_hh's n block.

    Back-propagation through time, carrying dh_next (zero at t = T), for t = T … 1:

        dh = dH_t + dh_next,     dA_z = dh ⊙ (H_{t−1} − N_t) ⊙ σ′(Z),     dA_n = dh ⊙ (1 − Z_t) ⊙ (1 − N_t²)
        reset_after=True:   S = H_{t−1} W_n + b_hn;   dA_r = dA_n ⊙ S ⊙ σ′(R);   dS = dA_n ⊙ R_t
                            dh_next = dh ⊙ Z_t + [dA_r, dA_z, dS] Wᵀ,       db_hn = Σ_t 1ᵀ dS
        reset_after=False:  d(R⊙H) = dA_n W_nᵀ;   dA_r = d(R⊙H) ⊙ H_{t−1} ⊙ σ′(R)
                            dh_next = dh ⊙ Z_t + d(R⊙H) ⊙ R_t + [dA_r, dA_z] W_{rz}ᵀ

    with σ′(s) = s (1 − s), then dW from the recurrent inputs of each block (H_{t−1}, or R_t ⊙ H_{t−1} for
    the book's n block) and db, dU as for every layer (eqs. 10.25–10.28).

    Shapes: X (N, T, D) -> H (N, T, H); h (N, H); U (D, 3H), W (H, 3H), b (3H,), b_hn (H,)

    >>> GRU(3, 5, rng=0).forward(np.ones((2, 4, 3), np.float32)).shape
    (2, 4, 5)
    """

    gates = 3

    def __init__(self, input_size, hidden_size, reset_after=True, rng=None, dtype=np.float32, stateful=False):
        self.reset_after = check_bool(reset_after, "reset_after")
        rng = np.random.default_rng(rng)
        super().__init__(input_size, hidden_size, rng=rng, dtype=dtype, stateful=stateful)
        if self.reset_after:  # PyTorch's biases: b_in + b_hn split, each U(−k, k)
            H, k, b = self.hidden_size, 1.0 / np.sqrt(self.hidden_size), self.params["b"]
            b[2 * H :] = rng.uniform(-k, k, H)
            self.params["b_hn"] = rng.uniform(-k, k, H).astype(b.dtype)
            self._zero_grads()

    def __repr__(self):
        extra = "" if self.reset_after else ", reset_after=False"
        return f"GRU({self.input_size}, {self.hidden_size}{extra})"

    def _forward(self, X_tm, h0):
        T, N, _ = X_tm.shape
        H, W, dtype = self.hidden_size, self.params["W"], X_tm.dtype
        H_tm = self._buffer("H_tm", (T + 1, N, H), dtype)
        H_tm[0] = h0
        gates = self._input_part(X_tm, self._buffer("gates", (T, N, 3 * H), dtype))  # X_t U + b
        S = self._buffer("S", (T, N, H), dtype)  # H_{t−1} W_n + b_hn, or R_t ⊙ H_{t−1} (book)
        recurrent = self._buffer("HW", (N, 3 * H), dtype)
        W_rz, W_n = np.ascontiguousarray(W[:, : 2 * H]), np.ascontiguousarray(W[:, 2 * H :])
        for t in range(T):
            a, h_prev = gates[t], H_tm[t]
            rz, n = a[:, : 2 * H], a[:, 2 * H :]
            if self.reset_after:
                np.matmul(h_prev, W, out=recurrent)  # H_{t−1} W, all three blocks: (N, H) @ (H, 3H)
                _sigmoid_(np.add(rz, recurrent[:, : 2 * H], out=rz))  # R_t, Z_t
                np.add(recurrent[:, 2 * H :], self.params["b_hn"], out=S[t])  # S = H_{t−1} W_n + b_hn
                np.add(n, np.multiply(a[:, :H], S[t], out=recurrent[:, 2 * H :]), out=n)
            else:
                _sigmoid_(np.add(rz, np.matmul(h_prev, W_rz, out=recurrent[:, : 2 * H]), out=rz))
                np.multiply(a[:, :H], h_prev, out=S[t])  # R_t ⊙ H_{t−1}
                np.add(n, np.matmul(S[t], W_n, out=recurrent[:, 2 * H :]), out=n)
            np.tanh(n, out=n)  # N_t
            h = np.subtract(h_prev, n, out=H_tm[t + 1])
            np.multiply(h, a[:, H : 2 * H], out=h)
            np.add(h, n, out=h)  # H_t = N_t + Z_t ⊙ (H_{t−1} − N_t)
        self._cache = (X_tm, H_tm, gates, S)
        return H_tm

    def _backward(self, dH, dh_next):
        X_tm, H_tm, gates, S = self._cache
        T, N, _ = X_tm.shape
        H, W, dtype = self.hidden_size, self.params["W"], np.result_type(dH, X_tm)
        W_rz_T = np.ascontiguousarray(W[:, : 2 * H].T)
        W_n_T = np.ascontiguousarray(W[:, 2 * H :].T)
        dA = self._buffer("dA", (T, N, 3 * H), dtype)  # the pre-activation gradients [dA_r, dA_z, dA_n]
        dS = self._buffer("dS", (T, N, H), dtype)  # dS (reset_after) or d(R ⊙ H) (book)
        dh, tmp = self._buffer("dh", (N, H), dtype), self._buffer("tmp", (N, H), dtype)
        deriv = self._buffer("deriv", (N, 2 * H), dtype)
        for t in range(T - 1, -1, -1):
            a, d, h_prev = gates[t], dA[t], H_tm[t]
            r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            np.add(dH[t], dh_next, out=dh)  # dh = dH_t + dh_next
            np.subtract(1, a[:, : 2 * H], out=deriv)
            np.multiply(deriv, a[:, : 2 * H], out=deriv)  # σ′ = s (1 − s) for R and Z
            np.multiply(dh, np.subtract(h_prev, n, out=tmp), out=d[:, H : 2 * H])  # dZ = dh ⊙ (H_{t−1} − N)
            np.multiply(n, n, out=tmp)
            np.subtract(1, tmp, out=tmp)
            np.multiply(tmp, dh, out=d[:, 2 * H :])
            np.multiply(d[:, 2 * H :], np.subtract(1, z, out=tmp), out=d[:, 2 * H :])  # dA_n
            if self.reset_after:
                np.multiply(d[:, 2 * H :], S[t], out=d[:, :H])  # dR = dA_n ⊙ S
                np.multiply(d[:, 2 * H :], r, out=dS[t])  # dS = dA_n ⊙ R
                d[:, : 2 * H] *= deriv  # dA_r, dA_z
                np.matmul(d[:, : 2 * H], W_rz_T, out=dh_next)  # [dA_r, dA_z, dS] Wᵀ, in two blocks
                dh_next += np.matmul(dS[t], W_n_T, out=tmp)
            else:
                np.matmul(d[:, 2 * H :], W_n_T, out=dS[t])  # d(R ⊙ H) = dA_n W_nᵀ
                np.multiply(dS[t], h_prev, out=d[:, :H])  # dR = d(R ⊙ H) ⊙ H_{t−1}
                d[:, : 2 * H] *= deriv
                np.matmul(d[:, : 2 * H], W_rz_T, out=dh_next)
                dh_next += np.multiply(dS[t], r, out=tmp)  # + d(R ⊙ H) ⊙ R
            dh_next += np.multiply(dh, z, out=tmp)  # + dh ⊙ Z (the direct path of eq. 10.45)
            self._flush(dh_next, tmp, t)
        H_prev = H_tm[:-1].reshape(T * N, H)
        dA2 = dA.reshape(T * N, 3 * H)
        self.grads["W"][:, : 2 * H] = H_prev.T @ dA2[:, : 2 * H]  # Σ_t H_{t−1}ᵀ [dA_r, dA_z]
        if self.reset_after:
            self.grads["W"][:, 2 * H :] = H_prev.T @ dS.reshape(T * N, H)  # Σ_t H_{t−1}ᵀ dS
            np.matmul(self._ones(T * N, dtype), dS.reshape(T * N, H), out=self.grads["b_hn"])
        else:
            self.grads["W"][:, 2 * H :] = S.reshape(T * N, H).T @ dA2[:, 2 * H :]  # Σ (R ⊙ H_{t−1})ᵀ dA_n
        self.state_grad = dh_next
        return dA
