"""PyTorch twins of residual blocks and of a whole residual network, float32 and float64.

Method and tolerances: :mod:`support.twins`. The twin of a :class:`Residual` is a PyTorch module
written as PyTorch users write one (``act(body(x) + shortcut(x))``, torchvision's BasicBlock),
so autograd, not our code, says what the gradient of the sum is. Training mode compares the
output, the input gradient, every parameter gradient and the running statistics the block's
batch norms keep; evaluation mode compares the output with those statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.twins import (
    DTYPE_IDS,
    DTYPES,
    assert_close,
    check_twin,
    ids,
    normal,
    tensor,
    torch_layer,
    torch_twin,
)

from stablecnn.nn import zoo
from stablecnn.nn.layers import BatchNorm2d, Conv2d, Linear, ReLU, Residual

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def basic(c, dtype, rng):
    """The basic block: identity shortcut, ReLU after the sum."""
    return Residual(
        [
            Conv2d(c, c, 3, padding=1, bias=False, rng=rng, dtype=dtype),
            BatchNorm2d(c, dtype=dtype),
            ReLU(),
            Conv2d(c, c, 3, padding=1, bias=False, rng=rng, dtype=dtype),
            BatchNorm2d(c, dtype=dtype),
        ],
        activation="ReLU",
    )


def projection(c, f, dtype, rng):
    """The first block of a stage: stride 2 and more channels, a 1x1 projection shortcut."""
    return Residual(
        [
            Conv2d(c, f, 3, stride=2, padding=1, bias=False, rng=rng, dtype=dtype),
            BatchNorm2d(f, dtype=dtype),
            ReLU(),
            Conv2d(f, f, 3, padding=1, bias=False, rng=rng, dtype=dtype),
            BatchNorm2d(f, dtype=dtype),
        ],
        [
            Conv2d(c, f, 1, stride=2, bias=False, rng=rng, dtype=dtype),
            BatchNorm2d(f, dtype=dtype),
        ],
        activation="ReLU",
    )


def plain_sum(c, dtype, rng):
    """No activation after the sum, a conv with a bias in the body (pre-activation style)."""
    return Residual(
        [ReLU(), Conv2d(c, c, 3, padding=1, rng=rng, dtype=dtype)],
        [Conv2d(c, c, 1, bias=False, rng=rng, dtype=dtype)],
    )


# (id, make(dtype, rng), input shape): odd and non-square maps, so a stride-2 edge shows
CASES = [
    ("basic", lambda dtype, rng: basic(4, dtype, rng), (3, 4, 9, 7)),
    ("projection", lambda dtype, rng: projection(3, 6, dtype, rng), (4, 3, 9, 8)),
    ("projection-even", lambda dtype, rng: projection(2, 4, dtype, rng), (2, 2, 8, 8)),
    ("no-activation", lambda dtype, rng: plain_sum(3, dtype, rng), (2, 3, 6, 5)),
]


def _block(case, dtype):
    _, make, shape = case
    block = make(dtype, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for name, value in block.params.items():  # batch norm's gamma and beta away from 1 and 0
        if name.endswith(("1.weight", "4.weight")) and value.ndim == 1:
            value[...] = rng.uniform(0.5, 1.5, value.shape)
        elif value.ndim == 1:
            value[...] = rng.standard_normal(value.shape) * 0.3
    return block, shape


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_a_block_in_training_mode_matches_torch(case, dtype):
    block, shape = _block(case, dtype)
    x = normal(shape, dtype, seed=2)
    dout = normal((shape[0], *block.output_shape(shape[1:])), dtype, seed=3)
    twin = check_twin(block, x, dout, f"{case[0]} {np.dtype(dtype)}")
    buffers = dict(twin.named_buffers())
    assert set(block.buffers) <= set(buffers)
    for name, value in block.buffers.items():  # the running statistics after one step
        if np.issubdtype(value.dtype, np.integer):  # the batch counter
            assert int(value) == int(buffers[name]) == 1, name
        else:
            assert_close(value, buffers[name], f"{case[0]} {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_a_block_in_evaluation_mode_matches_torch(case, dtype):
    block, shape = _block(case, dtype)
    for step in range(3):  # running statistics away from their initial 0 and 1
        block.forward(normal(shape, dtype, seed=10 + step, scale=2.0))
    twin = torch_layer(block).eval()
    x = normal(shape, dtype, seed=4)
    with torch.no_grad():
        assert_close(block.forward(x, training=False), twin(tensor(x)), f"{case[0]} eval")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_residual_network_matches_torch_end_to_end(dtype):
    """md3 (ResNet-20: nine blocks, two projections) on a batch: logits, the input gradient
    and all 65 parameter gradients, through PyTorch's autograd over the whole network."""
    model = zoo.build("md3", seed=0, dtype=dtype)
    twin = torch_twin(model)
    x = normal((4, 1, 28, 28), dtype, seed=5)
    dout = normal((4, 10), dtype, seed=6)
    out = model.forward(x)
    dx = model.backward(dout)
    xt = tensor(x, True)
    ref = twin(xt)
    ref.backward(tensor(dout))
    assert_close(out, ref, "md3 logits")
    # 20 layers of rounding: float32 gets the tolerance of a product over the whole depth
    rtol = None
    assert_close(dx, xt.grad, "md3 dx", rtol=rtol)
    theirs = dict(twin.named_parameters())
    assert len(theirs) == len(model.parameters()) == 65
    for name, _, grad in model.parameters():
        assert_close(grad, theirs[name].grad, f"md3 d{name}", rtol=rtol)


def test_the_twin_really_adds_the_shortcut():
    """The comparison can fail: a block whose shortcut were dropped would not match its twin."""
    block = Residual([Linear(3, 3, rng=np.random.default_rng(0), dtype=np.float64)])
    twin = torch_layer(block)
    x = normal((2, 3), np.float64, seed=1)
    with torch.no_grad():
        ref = twin(tensor(x)).numpy()
    np.testing.assert_allclose(block.forward(x, training=False), ref, rtol=1e-12)
    body_only = block.body[0].forward(x, training=False)
    assert np.abs(body_only - ref).max() > 0.1
