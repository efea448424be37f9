"""Chapter 7 — Regularisation for deep learning (book §7.1 parameter norm penalties; design report §3.6).

Split by the book's sections: ``penalties`` (§7.1.1, L2 weight decay, eqs. 20–21).
"""

from .penalties import add_l2_grad_, is_bias, l2_grad, l2_penalty

__all__ = ["is_bias", "l2_penalty", "l2_grad", "add_l2_grad_"]
