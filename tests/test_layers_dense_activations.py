"""Linear, ReLU, LeakyReLU and Flatten against their definitions in :mod:`stablecnn.reference` and
float64 finite differences, one after the other as a model runs them."""

import numpy as np
import pytest
from support.gradcheck import gradcheck_layer, numerical_grad, rel_error

from stablecnn import (
    Flatten,
    LeakyReLU,
    Linear,
    ReLU,
    reference,
)


def test_linear_relu_flatten_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    flat, lin, relu = Flatten(), Linear(12, 5, rng=rng, dtype=np.float64), ReLU()
    lin.params["bias"][...] = rng.standard_normal(5)
    x = rng.standard_normal((3, 2, 2, 3))
    dout = rng.standard_normal((3, 5))

    def run():
        return relu.forward(lin.forward(flat.forward(x)))

    # keep the ReLU inputs away from 0 so finite differences never straddle the kink
    pre = lin.forward(flat.forward(x))
    assert np.min(np.abs(pre)) > 1e-4

    run()
    dx = flat.backward(lin.backward(relu.backward(dout)))
    analytic = {"x": dx, "weight": lin.grads["weight"].copy(), "bias": lin.grads["bias"].copy()}
    f = lambda: float(np.sum(run() * dout))  # noqa: E731
    numeric = {
        "x": numerical_grad(f, x),
        "weight": numerical_grad(f, lin.params["weight"]),
        "bias": numerical_grad(f, lin.params["bias"]),
    }
    for name in analytic:
        assert rel_error(analytic[name], numeric[name]) < 1e-7, name


@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5])
def test_leaky_relu_values_and_gradient(slope):
    rng = np.random.default_rng(3)
    layer = LeakyReLU(slope)
    x = rng.standard_normal((3, 2, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # no entry within the step h of the kink
    out = layer.forward(x)
    np.testing.assert_array_equal(out, reference.leaky_relu_forward(x, slope))
    dout = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(
        layer.backward(dout), reference.leaky_relu_backward(dout, x, slope)
    )
    gradcheck_layer(layer, x, dout)


def test_leaky_relu_takes_the_slope_at_zero_like_torch():
    layer = LeakyReLU(0.1)
    layer.forward(np.array([[-1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.1, 0.1, 1.0]])
