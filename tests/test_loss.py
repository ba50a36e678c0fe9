"""Softmax cross-entropy: correctness, gradient, and the stability promise."""

import numpy as np
import pytest
from support.gradcheck import numerical_grad, rel_error

from stablecnn import ShapeError, SoftmaxCrossEntropy, log_softmax, reference, softmax
from stablecnn.errors import ConfigError


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


# -- label smoothing ------------------------------------------------------------------------------
EPSILONS = [0.0, 0.1, 0.5, 1.0]


@pytest.mark.parametrize("eps", EPSILONS)
def test_smoothed_loss_and_gradient_match_definitions_and_finite_differences(eps):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 5)) * 2
    labels = rng.integers(0, 5, 6)
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    value = loss.forward(logits, labels)
    grad = loss.backward()
    assert value == pytest.approx(
        reference.softmax_cross_entropy_forward(logits, labels, eps), rel=1e-14
    )
    np.testing.assert_allclose(
        grad, reference.softmax_cross_entropy_backward(logits, labels, eps), rtol=1e-13, atol=1e-16
    )
    numeric = numerical_grad(
        lambda: float(SoftmaxCrossEntropy(label_smoothing=eps).forward(logits, labels)), logits
    )
    assert rel_error(grad, numeric) < 1e-7
    # the target written out: (1 - eps) one-hot + eps / K, rows summing to 1
    q = (1 - eps) * np.eye(5)[labels] + eps / 5
    np.testing.assert_allclose(reference.smoothed_targets(labels, 5, eps), q, rtol=1e-15)
    expected = -(q * (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))).sum(1).mean()
    assert float(value) == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-15)  # softmax and q both sum to 1


def test_no_smoothing_is_the_plain_loss_bit_for_bit():
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        logits = (rng.standard_normal((7, 10)) * 5).astype(dtype)
        labels = rng.integers(0, 10, 7)
        plain, zero = SoftmaxCrossEntropy(), SoftmaxCrossEntropy(label_smoothing=0.0)
        assert plain.forward(logits, labels).tobytes() == zero.forward(logits, labels).tobytes()
        assert plain.backward().tobytes() == zero.backward().tobytes()


@pytest.mark.parametrize("eps", [0.1, 0.7])
def test_the_smoothed_target_is_where_the_gradient_vanishes(eps):
    """The loss is smallest where softmax(z) = q: there the gradient is 0, and any move raises
    the loss (a property the formula can get wrong, e.g. with eps / (K - 1) instead of eps / K)."""
    labels = np.array([0, 3, 2])
    q = reference.smoothed_targets(labels, 4, eps)
    logits = np.log(q) + 7.0  # softmax(logits) = q exactly, up to rounding
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    best = loss.forward(logits, labels)
    np.testing.assert_allclose(loss.backward(), 0, atol=1e-15)
    step = np.random.default_rng(3).standard_normal(logits.shape) * 1e-3
    assert loss.forward(logits + step, labels) > best
    # the label's probability at the optimum is 1 - eps + eps / K, not 1
    assert q[0, 0] == pytest.approx(1 - eps + eps / 4, rel=1e-15)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
@pytest.mark.parametrize(
    "dtype,scale", [(np.float32, 1e4), (np.float64, 1e30), (np.float64, 1e300)]
)
def test_smoothed_loss_is_exact_at_extreme_logits(eps, dtype, scale):
    logits = np.array(
        [[scale, -scale, 0.0], [-scale, scale, scale / 2], [0.0, 1.0, -scale]], dtype=dtype
    )
    labels = np.array([0, 0, 2])
    # every log-probability, exactly: row 0 and row 1 have the max far ahead of the rest; row 2's
    # max is 1.0 with 0.0 one behind, so its log-sum-exp term is log(1 + e^-1)
    t = np.log1p(np.exp(-1.0))
    logp = np.array(
        [[0.0, -2 * scale, -scale], [-2 * scale, 0.0, -scale / 2], [-1 - t, -t, -scale - 1 - t]]
    )
    expected = -np.mean((1 - eps) * logp[np.arange(3), labels] + eps * logp.mean(axis=1))
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    value = loss.forward(logits, labels)
    grad = loss.backward()
    assert value.dtype == dtype and grad.dtype == dtype
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert float(value) == pytest.approx(expected, rel=1e-6)
    p = np.array([[1, 0, 0], [0, 1, 0], [0.2689414, 0.7310586, 0]])
    q = (1 - eps) * np.eye(3)[labels] + eps / 3
    np.testing.assert_allclose(grad, (p - q) / 3, atol=1e-6)


def test_label_smoothing_is_checked():
    for bad in (-0.1, 1.5, float("nan"), True, "0.1", None):
        with pytest.raises(ConfigError, match=r"label_smoothing must be a number in \[0, 1\] \(1:"):
            SoftmaxCrossEntropy(label_smoothing=bad)
    assert SoftmaxCrossEntropy(label_smoothing=1).label_smoothing == 1.0  # as PyTorch allows
    assert repr(SoftmaxCrossEntropy(label_smoothing=0.1)) == (
        "SoftmaxCrossEntropy(label_smoothing=0.1)"
    )
    assert repr(SoftmaxCrossEntropy(0.0)) == "SoftmaxCrossEntropy()"
