"""Softmax cross-entropy: correctness, gradient, and the stability promise."""

import numpy as np
import pytest
from support.gradcheck import numerical_grad, rel_error

from stablecnn import ShapeError, SoftmaxCrossEntropy, log_softmax, reference, softmax


def naive_loss(logits, labels):
    """The textbook formula: exp, normalise, log. Overflows for large logits."""
    with np.errstate(all="ignore"):
        e = np.exp(logits)
        p = e / e.sum(axis=1, keepdims=True)
        return -np.mean(np.log(p[np.arange(len(logits)), labels]))


def test_loss_value_and_gradient_match_definitions():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 7))
    labels = rng.integers(0, 7, 5)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, labels)
    assert value == pytest.approx(
        reference.softmax_cross_entropy_forward(logits, labels), rel=1e-14
    )
    grad = loss.backward()
    numeric = numerical_grad(lambda: float(SoftmaxCrossEntropy().forward(logits, labels)), logits)
    assert rel_error(grad, numeric) < 1e-7
    np.testing.assert_allclose(
        grad, reference.softmax_cross_entropy_backward(logits, labels), rtol=1e-14
    )
    onehot = np.eye(7)[labels]
    np.testing.assert_allclose(grad, (softmax(logits) - onehot) / 5, rtol=1e-14)


@pytest.mark.parametrize("dtype,scale", [(np.float32, 1e4), (np.float64, 1e300)])
def test_stable_at_extreme_logits_where_the_naive_formula_fails(dtype, scale):
    logits = np.array(
        [[scale, -scale, 0.0], [-scale, scale, scale / 2], [0.0, 1.0, -scale]], dtype=dtype
    )
    labels = np.array([0, 0, 2])
    # the naive formula breaks here, so this test can tell a stable loss from a naive one
    assert not np.isfinite(naive_loss(logits, labels))

    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, labels)
    grad = loss.backward()
    assert value.dtype == dtype and grad.dtype == dtype
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # exact values: row 0 is right with prob 1 (loss 0); row 1 pays 2*scale; row 2 pays
    # scale + log(1 + e) since its label's logit trails the max (1.0) by scale + 1
    expected = (0.0 + 2 * scale + (scale + 1.0 + np.log1p(np.exp(-1.0)))) / 3
    assert float(value) == pytest.approx(expected, rel=1e-6)
    expected_grad = np.array([[0, 0, 0], [-1, 1, 0], [0.2689414, 0.7310586, -1]]) / 3
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_log_softmax_stay_finite_and_normalised(dtype):
    big = np.finfo(dtype).max / 4
    logits = np.array([[big, -big, 0], [1, 2, 3]], dtype=dtype)
    p = softmax(logits)
    assert np.all(np.isfinite(p)) and p.dtype == dtype
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    lp = log_softmax(np.array([[1, 2, 3]], dtype=dtype))
    np.testing.assert_allclose(np.exp(lp), softmax(np.array([[1, 2, 3]], dtype=dtype)), rtol=1e-6)


def test_labels_are_checked():
    loss = SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match="label 3 is outside"):
        loss.forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ShapeError, match=r"\(2,\)"):
        loss.forward(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integers"):
        loss.forward(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ShapeError, match="empty"):
        loss.forward(np.zeros((0, 3)), np.array([], int))
