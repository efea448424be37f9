"""clip_grad_norm (ch10 clipping): the closed form, in place, dict and list, and bad arguments."""

import numpy as np
import pytest

from handgrad.ch10_sequence import clip_grad_norm


def test_clips_to_max_norm_in_place_and_returns_the_norm_before():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0], [4.0]])}
    arrays = dict(g)
    assert clip_grad_norm(g, 1.0) == 5.0
    assert g["a"] is arrays["a"]  # the same arrays, rescaled
    np.testing.assert_allclose(g["a"], [3 / (5 + 1e-6), 0.0], rtol=1e-15)
    np.testing.assert_allclose(np.sqrt(sum(np.sum(v**2) for v in g.values())), 5 / (5 + 1e-6), rtol=1e-15)


def test_leaves_small_gradients_alone():
    g = [np.array([0.3, 0.4], np.float32), None]
    assert clip_grad_norm(g, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g[0], np.array([0.3, 0.4], np.float32))
    assert g[0].dtype == np.float32


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1"])
def test_bad_max_norm(bad):
    with pytest.raises(ValueError, match=r"max_norm must be (a )?positive"):
        clip_grad_norm([np.ones(2)], bad)


def test_bad_gradients():
    with pytest.raises(TypeError, match="float arrays"):
        clip_grad_norm([[1.0, 2.0]], 1.0)
