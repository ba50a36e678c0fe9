"""Dropout, with masks that a checkpoint reproduces exactly.

Reproducibility: the layer draws no state from a shared generator while it runs. At construction
it takes a ``seed`` from the model's generator; the mask of its ``k``-th training call comes from
``numpy.random.default_rng([seed, k])``. Both ``seed`` and the call counter are int64 buffers, so
they are saved in checkpoints and restored by ``load_state_dict``: a resumed run draws exactly the
masks the uninterrupted run would have drawn.

A batch split into micro-batches (:mod:`stablecnn.training.microbatch`, also across MPI ranks)
sets :attr:`Dropout.batch_rows` to ``(start, stop, total)``: the mask is then rows ``start:stop``
of the whole batch's mask, the one an unsplit batch of ``total`` draws, so each example's mask
depends on its place in the batch, not on which process or micro-batch computes it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from stablecnn.errors import ConfigError
from stablecnn.nn.layers.base import Layer


def dropout_mask(
    shape: tuple[int, ...], p: float, seed: int, counter: int, dtype: DTypeLike
) -> np.ndarray:
    """The scaled keep-mask of call ``counter``: ``1 / (1 - p)`` with probability ``1 - p``, else 0.

    The uniforms are drawn in float32 whatever ``dtype`` is, so a float32 and a float64 model with
    the same seed drop the same units.
    """
    gen = np.random.default_rng([seed, counter])
    keep = gen.random(shape, dtype=np.float32) >= np.float32(p)
    mask = keep.astype(dtype)
    mask *= np.dtype(dtype).type(1.0 / (1.0 - p))
    return mask


class Dropout(Layer):
    r"""Inverted dropout: zero each input with probability ``p`` while training, scale the rest.

    .. math::
        out = x \odot m, \quad m_i = \frac{b_i}{1 - p}, \quad b_i \sim \text{Bernoulli}(1 - p)

    so ``E[out] = x`` and evaluation (``training=False``) is the identity, as in PyTorch.
    Backward: ``dx = dout * m`` with the forward's mask. Reference (given the mask):
    :func:`stablecnn.reference.dropout_forward` and :func:`~stablecnn.reference.dropout_backward`,
    which this code is.

    Args:
        p: probability of zeroing an element, in [0, 1); default 0.5.
        rng: ``numpy.random.Generator`` the layer's ``seed`` is drawn from (a fresh one when
            ``None``). The masks themselves come from ``(seed, call counter)``, see the module.

    Buffers:
        ``seed`` and ``counter`` (int64 scalars): the mask stream's position, kept in checkpoints.

    Shape: any; output has the input's shape and dtype.

    Raises:
        ConfigError: when built, ``p`` not a real number in [0, 1).
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since).
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> drop = Dropout(0.25, rng=np.random.default_rng(0))
        >>> out = drop.forward(np.ones((4, 8), np.float32))
        >>> np.unique(out)  # dropped, or kept and scaled by 1 / (1 - p)
        array([0.       , 1.3333334], dtype=float32)
        >>> np.array_equal(drop.forward(np.ones((4, 8)), training=False), np.ones((4, 8)))
        True
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if (
            not isinstance(p, (int, float, np.integer, np.floating))
            or isinstance(p, bool)
            or not 0 <= p < 1
        ):
            raise ConfigError(f"p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        rng = rng if rng is not None else np.random.default_rng()
        self.buffers["seed"] = np.array(rng.integers(0, 2**63 - 1), dtype=np.int64)
        self.buffers["counter"] = np.array(0, dtype=np.int64)
        self._cache = None
        # (start, stop, total): the input is rows start:stop of a batch of total (module doc)
        self.batch_rows: tuple[int, int, int] | None = None

    def config(self) -> dict:
        return {"type": "Dropout", "p": self.p}

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if not training:
            self._cache = None
            return x
        if self.p == 0:
            self._cache = (None,)
            return x
        counter = self.buffers["counter"]
        shape, rows = x.shape, slice(None)
        if self.batch_rows is not None:  # part of a larger batch: its rows of that batch's mask
            start, stop, total = self.batch_rows
            if stop - start != len(x):
                raise ValueError(f"{self!r}: batch_rows {self.batch_rows} for {len(x)} rows")
            shape, rows = (total, *x.shape[1:]), slice(start, stop)
        mask = dropout_mask(shape, self.p, int(self.buffers["seed"]), int(counter), x.dtype)[rows]
        counter += 1  # in place: the array in state_dict() stays the same object
        self._cache = (mask,)
        return x * mask

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        (mask,), self._cache = self._cache, None
        if not need_input_grad:
            return None
        return dout if mask is None else dout * mask

    def __repr__(self):
        return f"Dropout(p={self.p})"
