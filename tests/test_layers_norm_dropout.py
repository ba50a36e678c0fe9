"""BatchNorm1d/2d and Dropout: against their definitions in :mod:`stablecnn.reference` and float64
finite differences, running statistics, float32 far from zero, Dropout's scaling and its masks as
a function of a seed and a counter."""

import numpy as np
import pytest
from support.gradcheck import gradcheck_layer

from stablecnn import (
    BatchNorm1d,
    BatchNorm2d,
    Dropout,
    reference,
)


# -- Dropout ------------------------------------------------------------------------------------
def test_dropout_is_inverted_and_off_at_evaluation():
    drop = Dropout(0.25, rng=np.random.default_rng(5))
    x = np.random.default_rng(6).uniform(1, 2, (50, 40, 30)).astype(np.float32)
    out = drop.forward(x)
    assert out.dtype == np.float32
    kept = out != 0
    np.testing.assert_array_equal(out[kept], x[kept] * np.float32(1 / 0.75))
    # 60,000 Bernoulli(0.75) draws: the kept fraction is within 5 standard deviations of 0.75
    assert abs(kept.mean() - 0.75) < 5 * np.sqrt(0.75 * 0.25 / kept.size)
    dout = np.ones_like(x)
    np.testing.assert_array_equal(drop.backward(dout), kept * np.float32(1 / 0.75))
    assert drop.forward(x, training=False) is x
    p0 = Dropout(0.0, rng=np.random.default_rng(0))
    assert p0.forward(x) is x and p0.backward(dout) is dout


def test_dropout_masks_are_a_function_of_seed_and_counter():
    a, b = Dropout(0.5, rng=np.random.default_rng(7)), Dropout(0.5, rng=np.random.default_rng(7))
    x = np.ones((8, 16))
    first, second = a.forward(x), a.forward(x)
    assert not np.array_equal(first, second)  # a new mask per call
    assert int(a.buffers["counter"]) == 2
    np.testing.assert_array_equal(b.forward(x), first)  # same seed, same stream
    b.buffers["counter"][...] = 5
    a.buffers["counter"][...] = 5
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    a.forward(x, training=False)  # evaluation draws nothing
    assert int(a.buffers["counter"]) == 6
    # float32 and float64 models drop the same units
    m32 = Dropout(0.5, rng=np.random.default_rng(7)).forward(np.ones((8, 16), np.float32))
    np.testing.assert_array_equal(m32 != 0, first != 0)


# -- BatchNorm ----------------------------------------------------------------------------------
BN_CASES = [
    (BatchNorm2d, (3, 4, 5, 2)),  # non-square maps
    (BatchNorm2d, (1, 2, 3, 4)),  # batch of one: statistics over H, W
    (BatchNorm1d, (5, 3)),
    (BatchNorm1d, (2, 3, 4)),  # (N, C, L)
    (BatchNorm1d, (2, 3)),  # the smallest batch that has a variance
]


def _bn(cls, c, rng, dtype=np.float64):
    bn = cls(c, dtype=dtype)
    bn.params["weight"][...] = rng.uniform(0.5, 1.5, c)  # not ones/zeros: a missing term shows
    bn.params["bias"][...] = rng.standard_normal(c)
    return bn


@pytest.mark.parametrize("cls,shape", BN_CASES)
def test_batchnorm_gradients_match_finite_differences(cls, shape):
    rng = np.random.default_rng(8)
    bn = _bn(cls, shape[1], rng)
    x = rng.standard_normal(shape) * 2 + 1
    gradcheck_layer(bn, x, rng.standard_normal(shape), params=("weight", "bias"))


@pytest.mark.parametrize("cls,shape", BN_CASES)
def test_batchnorm_matches_the_reference_and_keeps_running_statistics(cls, shape):
    rng = np.random.default_rng(9)
    bn = _bn(cls, shape[1], rng)
    gamma, beta = bn.params["weight"], bn.params["bias"]
    run_mean, run_var = np.zeros(shape[1]), np.ones(shape[1])
    for step in range(3):
        x = rng.standard_normal(shape) * (step + 1) + step
        np.testing.assert_allclose(
            bn.forward(x), reference.batchnorm_forward(x, gamma, beta, 1e-5), rtol=1e-12, atol=1e-12
        )
        dout = rng.standard_normal(shape)
        for got, want, name in zip(
            (bn.backward(dout), bn.grads["weight"], bn.grads["bias"]),
            reference.batchnorm_backward(dout, x, gamma, 1e-5),
            ("dx", "dgamma", "dbeta"),
        ):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
        run_mean, run_var = reference.batchnorm_running_stats(x, run_mean, run_var, 0.1)
        np.testing.assert_allclose(bn.buffers["running_mean"], run_mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(bn.buffers["running_var"], run_var, rtol=1e-12)
    assert (
        bn.buffers["num_batches_tracked"] == 3
        and bn.buffers["num_batches_tracked"].dtype == np.int64
    )
    x = rng.standard_normal((1, *shape[1:]))  # evaluation works for any batch, even one value
    expected = reference.batchnorm_eval_forward(x, gamma, beta, run_mean, run_var, 1e-5)
    np.testing.assert_allclose(bn.forward(x, training=False), expected, rtol=1e-12, atol=1e-12)
    assert bn.buffers["num_batches_tracked"] == 3  # evaluation leaves the statistics alone


def test_batchnorm_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 4\)"):
        BatchNorm1d(4).forward(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm2d(2).forward(np.zeros((1, 2, 1, 1), np.float32))
    BatchNorm1d(4).forward(np.zeros((1, 4), np.float32), training=False)  # fine at evaluation


def test_batchnorm_float32_is_stable_far_from_zero():
    # values ~1e4 with unit spread: E[x^2] - E[x]^2 would lose every digit in float32
    rng = np.random.default_rng(10)
    x32 = (1e4 + rng.standard_normal((64, 3, 8, 8))).astype(np.float32)
    y32 = BatchNorm2d(3).forward(x32)
    y64 = BatchNorm2d(3, dtype=np.float64).forward(x32.astype(np.float64))
    assert y32.dtype == np.float32
    assert np.max(np.abs(y32 - y64)) < 2e-3, np.max(np.abs(y32 - y64))


def test_batchnorm_dx_sums_to_zero_per_channel():
    # a constant shift of a channel's input changes nothing: dx must be orthogonal to it
    rng = np.random.default_rng(11)
    bn = _bn(BatchNorm2d, 3, rng)
    bn.forward(rng.standard_normal((4, 3, 5, 6)))
    dx = bn.backward(rng.standard_normal((4, 3, 5, 6)))
    np.testing.assert_allclose(dx.sum(axis=(0, 2, 3)), 0, atol=1e-12)
