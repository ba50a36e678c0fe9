"""What ``Optimizer.update`` receives: whole parameters, unless the rule opts in as element-wise.

A rule that needs a norm or a shape (LARS, LAMB) must see each parameter whole; the shipped
element-wise rules may get flat slices of a large one, which is only a matter of speed for them.
"""

from __future__ import annotations

import numpy as np
import pytest

from stablecnn import SGD, Adagrad, Adam, AdamW, RMSprop
from stablecnn.kernels import parallel
from stablecnn.optim.optimizers import OPTIMIZERS, UPDATE_BLOCK, Optimizer

WEIGHT = (1024, 600)  # 614,400 elements: above 2 * parallel.MIN_SPAN, 2.4 MB in float32


class LARS(Optimizer):
    r"""Layer-wise adaptive rate scaling without momentum (You, Gitman & Ginsburg 2017, eq. 6):
    :math:`p \leftarrow p - \text{lr} \cdot \eta \frac{\|p\|}{\|g\|} g`, norms per parameter."""

    hyperparameters = ("lr", "trust_coefficient")

    def __init__(self, params, lr, trust_coefficient=0.2):
        super().__init__(params, lr)
        self.trust_coefficient = trust_coefficient

    def update(self, param, grad, state):
        trust = self.trust_coefficient * np.linalg.norm(param) / np.linalg.norm(grad)
        param -= param.dtype.type(self.lr * trust) * grad


class ElementwiseLARS(LARS):
    """The same rule wrongly declared element-wise: its norms are those of 1 MB slices."""

    elementwise = True


def lars_in_numpy(weight, grads, lr, trust_coefficient):
    """The LARS rule written out on the whole array, the norms in float64."""
    w = weight.copy()
    for g in grads:
        w64, g64 = w.astype(np.float64), g.astype(np.float64)
        trust = trust_coefficient * np.sqrt(np.sum(w64 * w64)) / np.sqrt(np.sum(g64 * g64))
        w -= np.float32(lr * trust) * g
    return w


def assert_close(actual, expected):
    """float32 agreement: the norms' rounding moves an entry by ~1e-7 of the largest one."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def weight_and_grads(steps=3):
    """A (1024, 600) weight whose rows grow from 0.1 to 10 in scale, so that the norm of any
    slice differs from the whole's, and ``steps`` standard-normal gradients."""
    rng = np.random.default_rng(0)
    scale = np.linspace(0.1, 10.0, WEIGHT[0], dtype=np.float32)[:, None]
    weight = rng.standard_normal(WEIGHT, dtype=np.float32) * scale
    return weight, [rng.standard_normal(WEIGHT, dtype=np.float32) for _ in range(steps)]


def run(cls, weight, grads, **kwargs):
    param, grad = weight.copy(), np.zeros_like(weight)
    opt = cls([("w", param, grad)], **kwargs)
    for g in grads:
        grad[...] = g
        opt.step()
    return param


@pytest.mark.parametrize("n", [1, 2])
def test_lars_sees_the_norms_of_the_whole_parameter(threads, n):
    threads(n)
    weight, grads = weight_and_grads()
    expected = lars_in_numpy(weight, grads, lr=0.5, trust_coefficient=0.2)
    assert not np.allclose(expected, weight, rtol=1e-2)  # the rule moved the weight
    assert_close(run(LARS, weight, grads, lr=0.5), expected)


def test_the_same_rule_declared_elementwise_is_caught(threads):
    """Declared element-wise, LARS gets 1 MB slices and their norms: the check above fails."""
    threads(1)  # blocks of UPDATE_BLOCK bytes even on one thread
    weight, grads = weight_and_grads()
    expected = lars_in_numpy(weight, grads, lr=0.5, trust_coefficient=0.2)
    wrong = run(ElementwiseLARS, weight, grads, lr=0.5)
    with pytest.raises(AssertionError, match="Mismatched elements"):
        assert_close(wrong, expected)
    # not a rounding difference: the first slice's rows are the small ones, its trust ratio far
    # from the whole weight's, so its update is off by a large fraction of the update itself
    step = np.abs(expected - weight).max()
    assert np.abs(wrong - expected).max() > 0.1 * step


class Recording(Optimizer):
    """No opt-in: records what each update call receives, and keeps one state slot."""

    def __init__(self, params):
        super().__init__(params, lr=0.1)
        self.calls = []
        self._init_state()

    def _state_keys(self):
        return ("buffer",)

    def update(self, param, grad, state):
        self.calls.append((param, grad, state))
        param -= self.lr * grad


SHAPES = {"dense.weight": WEIGHT, "conv.weight": (64, 32, 12, 12), "dense.bias": (1024,)}


def parameters(shapes, dtype=np.float32):
    rng = np.random.default_rng(1)
    return [
        (name, rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype))
        for name, shape in shapes.items()
    ]


@pytest.mark.parametrize("n", [1, 2])
def test_a_rule_without_the_opt_in_gets_each_parameter_whole_in_its_shape(threads, n):
    threads(n)
    params = parameters(SHAPES)
    opt = Recording(params)
    assert not Recording.elementwise
    for _ in range(2):
        opt.calls.clear()
        opt.step()
        assert len(opt.calls) == len(params)  # one call per parameter, in their order
        for (name, param, grad), (got_param, got_grad, got_state) in zip(params, opt.calls):
            assert got_param is param and got_grad is grad, name
            assert got_param.shape == SHAPES[name] and got_grad.shape == SHAPES[name]
            assert got_state is opt.state[name]
            assert got_state["buffer"].shape == SHAPES[name]


class RecordingElementwise(Recording):
    elementwise = True


@pytest.mark.parametrize("n", [1, 2, 3])
def test_an_elementwise_rule_gets_flat_slices_that_cover_a_large_parameter_once(threads, n):
    threads(n)
    params = parameters(SHAPES)
    opt = RecordingElementwise(params)
    opt.step()
    for name, param, grad in params:
        calls = [c for c in opt.calls if np.shares_memory(c[0], param)]
        if param.size < 2 * parallel.MIN_SPAN:  # small: whole, as without the opt-in
            assert len(calls) == 1 and calls[0][0] is param
            continue
        base = param.__array_interface__["data"][0]
        covered = []
        for got_param, got_grad, got_state in calls:
            assert got_param.ndim == 1 and got_param.flags.c_contiguous
            assert got_param.nbytes <= UPDATE_BLOCK
            start = (got_param.__array_interface__["data"][0] - base) // param.itemsize
            covered.append((start, start + got_param.size))
            flat = slice(start, start + got_param.size)
            assert np.shares_memory(got_grad, grad) and got_grad.shape == got_param.shape
            assert got_state["buffer"].shape == got_param.shape
            np.testing.assert_array_equal(
                got_state["buffer"], opt.state[name]["buffer"].reshape(-1)[flat]
            )
        covered.sort()
        assert covered[0][0] == 0 and covered[-1][1] == param.size, name
        assert all(covered[i][1] == covered[i + 1][0] for i in range(len(covered) - 1)), name


def test_the_shipped_rules_opt_in_and_a_new_update_drops_the_opt_in():
    assert set(OPTIMIZERS.values()) == {SGD, Adagrad, Adam, AdamW, RMSprop}
    assert all(cls.elementwise for cls in OPTIMIZERS.values())
    assert not Optimizer.elementwise

    class NewRule(Adam):  # e.g. a LAMB written over Adam: its update is not Adam's
        def update(self, param, grad, state):
            super().update(param, grad, state)

    class Faster(Adam):  # no new update: still Adam's rule
        pass

    assert not NewRule.elementwise and Faster.elementwise


@pytest.mark.parametrize("n", [1, 2])
def test_adam_in_slices_equals_adam_on_whole_arrays_bit_for_bit(threads, n):
    """For an element-wise rule the slicing is only a matter of speed."""
    threads(n)

    class WholeAdam(Adam):
        shapes = set()

        def update(self, param, grad, state):
            self.shapes.add(param.shape)
            super().update(param, grad, state)

    weight, grads = weight_and_grads()
    whole = run(WholeAdam, weight, grads, lr=1e-2, weight_decay=1e-3)
    assert WholeAdam.shapes == {WEIGHT}
    np.testing.assert_array_equal(run(Adam, weight, grads, lr=1e-2, weight_decay=1e-3), whole)
