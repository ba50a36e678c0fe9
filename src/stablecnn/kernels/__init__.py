"""The fast kernels and stablecnn's threads: what makes the engine fast, kept apart from what it
computes.

- :mod:`~stablecnn.kernels.conv`: the im2col and rows convolution kernels (forward, backward,
  inference), cache-blocked and split across threads.
- :mod:`~stablecnn.kernels.pool`: the max-pooling passes (separable 2x2, flat, any window).
- :mod:`~stablecnn.kernels.parallel`: stablecnn's own threads; products cut by grids fixed by
  their shapes, so results do not depend on the thread count.
- :mod:`~stablecnn.kernels.runtime`: threads and allocator settings (:func:`configure`).
- :mod:`~stablecnn.kernels.scratch`: work arrays reused from batch to batch.

Every kernel computes a definition in :mod:`stablecnn.reference`, and the tests hold it there.
"""
