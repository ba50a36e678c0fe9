"""Micro-batches in one process (no MPI needed): the fixed tree, the shares of the ranks, the
whole batch's gradient and statistics, and the refusals."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from support.fakes import make_data

from stablecnn.errors import ConfigError
from stablecnn.nn.layers.dropout import Dropout, dropout_mask
from stablecnn.nn.zoo import resolve_model
from stablecnn.training.comm import INSTALL, LocalComm, mpi_world
from stablecnn.training.config import TrainConfig
from stablecnn.training.microbatch import (
    MicroBatchStep,
    micro_bounds,
    rank_range,
    tree_nodes,
    tree_sum,
)
from stablecnn.training.trainer import Trainer


@pytest.mark.parametrize("parts", [1, 2, 5, 6, 7, 12])
def test_every_rank_count_adds_the_micro_batches_in_one_order(parts):
    """The sum a rank count K <= P computes, written out as an expression, is the same for
    every K: the ranks' largest nodes, then the rest of the tree."""

    def expression(k: int) -> str:
        known = {}
        for r in range(k):
            share = rank_range(parts, k, r)
            assert share, f"rank {r} of {k} has no micro-batch"
            leaves = {(i, i + 1): f"g{i}" for i in share}
            for lo, hi in tree_nodes(0, parts, share.start, share.stop):
                known[(lo, hi)] = tree_sum(lo, hi, leaves, lambda a, b: f"({a}+{b})")
        return tree_sum(0, parts, known, lambda a, b: f"({a}+{b})")

    one = expression(1)
    assert all(f"g{i}" in one for i in range(parts))
    assert {expression(k) for k in range(1, parts + 1)} == {one}


def test_micro_batches_and_rank_shares_cover_the_batch_once():
    assert micro_bounds(100, 6) == [(0, 16), (16, 33), (33, 50), (50, 66), (66, 83), (83, 100)]
    for parts, size in ((6, 1), (6, 2), (6, 3), (6, 4), (7, 3)):
        shares = [list(rank_range(parts, size, r)) for r in range(size)]
        assert sum(shares, []) == list(range(parts))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def _grads(model) -> list[np.ndarray]:
    return [g.copy() for _, _, g in model.parameters()]


def test_one_micro_batch_is_the_plain_step_bit_for_bit():
    x, y = make_data(20, 0)
    x = (x[:, None] / 255.0).astype(np.float32)
    plain, micro = resolve_model("md2", seed=3), resolve_model("md2", seed=3)
    trainer_loss = __import__("stablecnn.nn.losses", fromlist=["x"]).SoftmaxCrossEntropy()
    loss = float(trainer_loss.forward(plain.forward(x, training=True), y))
    plain.backward(trainer_loss.backward(), need_input_grad=False)
    got, acc, flag = MicroBatchStep(micro, 1)(x, y)
    assert got == loss and flag is False and 0 <= acc <= 1
    for a, b in zip(_grads(plain), _grads(micro), strict=True):
        np.testing.assert_array_equal(a, b)
    for name, value in plain.state_dict().items():
        np.testing.assert_array_equal(value, micro.state_dict()[name], err_msg=name)


def test_micro_batches_give_the_whole_batchs_gradient_with_batch_norm_and_dropout():
    """float64: 6 micro-batches (synchronised batch norm, the whole batch's dropout mask) give
    the gradient, the loss and the running statistics of the whole batch at once, to the
    rounding of the order of the sums."""
    x, y = make_data(30, 1)
    x = (x[:, None] / 255.0).astype(np.float64)
    whole = resolve_model("md2", seed=5, dtype=np.float64)
    parts = resolve_model("md2", seed=5, dtype=np.float64)
    from stablecnn.nn.losses import SoftmaxCrossEntropy

    loss_fn = SoftmaxCrossEntropy()
    loss = float(loss_fn.forward(whole.forward(x, training=True), y))
    whole.backward(loss_fn.backward(), need_input_grad=False)
    got, _, _ = MicroBatchStep(parts, 6)(x, y)
    assert got == pytest.approx(loss, rel=1e-12)
    for (name, _, a), b in zip(whole.parameters(), _grads(parts), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-13, err_msg=name)
    for name, value in whole.state_dict().items():
        np.testing.assert_allclose(parts.state_dict()[name], value, rtol=1e-12, err_msg=name)


def test_a_dropout_part_of_a_batch_takes_its_rows_of_the_batchs_mask():
    drop = Dropout(0.5, rng=np.random.default_rng(0))
    drop.batch_rows = (3, 7, 10)
    out = drop.forward(np.ones((4, 6), np.float32))
    full = dropout_mask((10, 6), 0.5, int(drop.buffers["seed"]), 0, np.float32)
    np.testing.assert_array_equal(out, full[3:7])
    drop.batch_rows = (0, 5, 10)
    with pytest.raises(ValueError, match="batch_rows"):
        drop.forward(np.ones((4, 6), np.float32))


class _Ranks(LocalComm):
    def __init__(self, size: int):
        super().__init__()
        self.size = size


def test_more_ranks_than_micro_batches_are_refused():
    with pytest.raises(ConfigError, match="3 ranks but 2 micro-batches.*--micro-batches 3"):
        MicroBatchStep(resolve_model("md2"), 2, _Ranks(3))


def test_micro_batches_beyond_the_batch_or_the_last_batch_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="micro_batches must be at most batch_size"):
        TrainConfig(batch_size=4, micro_batches=5)
    data = make_data(21, 0)  # batches of 10, 10 and 1
    config = TrainConfig(model="md2", batch_size=10, micro_batches=2, epochs=1)
    with pytest.raises(ConfigError, match="last batch of each epoch holds 1 .* 2 micro-batches"):
        Trainer(config, tmp_path / "run", data, data, echo=False, progress=False)
    assert not (tmp_path / "run").exists()


def test_distributed_without_mpi4py_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    with pytest.raises(ConfigError, match="--distributed needs mpi4py") as info:
        mpi_world()
    assert INSTALL in str(info.value) and "mpiexec -n K" in str(info.value)


@pytest.mark.parametrize("name", ["md1", "md2"])
def test_a_micro_batch_gives_the_same_bits_on_one_thread_and_on_three(name, threads):
    """Micro-batches of 20 are large enough for the kernels to split their products and passes
    across threads (parallel.MIN_MACS); the gradients, loss and buffers do not change."""
    x, y = make_data(60, 2)
    x = (x[:, None] / 255.0).astype(np.float32)
    results = []
    for n in (1, 3):
        threads(n)
        model = resolve_model(name, seed=1)
        loss, acc, _ = MicroBatchStep(model, 3)(x, y)
        results.append((loss, acc, _grads(model), model.state_dict()))
    (loss1, acc1, grads1, state1), (loss3, acc3, grads3, state3) = results
    assert (loss1, acc1) == (loss3, acc3)
    for a, b in zip(grads1, grads3, strict=True):
        np.testing.assert_array_equal(a, b)
    for key in state1:
        np.testing.assert_array_equal(state1[key], state3[key], err_msg=key)
