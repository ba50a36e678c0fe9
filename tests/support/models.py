"""Model helpers for tests."""

import numpy as np


def random_statistics(model, seed=0):
    """``model`` with its running statistics and affine parameters set away from their initial
    0/1 (running variances in [0.3, 2], means and biases around 0, batch norm gammas in [0.5,
    1.5]), so folding or joining a batch norm is tested on numbers that move; returns it."""
    rng = np.random.default_rng(seed)
    for name, array in model.state_dict().items():
        if name.endswith("running_var"):
            array[...] = rng.uniform(0.3, 2.0, array.shape)
        elif name.endswith("running_mean") or name.endswith("bias"):
            array[...] = rng.normal(0, 0.3, array.shape)
        elif array.ndim == 1 and not name.endswith("num_batches_tracked"):
            array[...] = rng.uniform(0.5, 1.5, array.shape)  # batch norm's gamma
    return model
