"""Training: the run's configuration, the loop, its callbacks, checkpoints and run directories,
evaluation, the checks made before the first step, resuming, and the plots of a run.

- :mod:`~stablecnn.training.config`: :class:`TrainConfig`, what defines a run.
- :mod:`~stablecnn.training.trainer`: :class:`Trainer`, data -> batches -> forward -> loss ->
  backward -> step -> callbacks, with exact resume.
- :mod:`~stablecnn.training.preflight`: what the sizes predict, checked before step 1.
- :mod:`~stablecnn.training.callbacks`: the log, the metrics file, the progress bar, warnings.
- :mod:`~stablecnn.training.checkpoint`: ``.npz`` checkpoints, written atomically, read without
  pickle; :mod:`~stablecnn.training.runlock`: one run per run directory.
- :mod:`~stablecnn.training.resume`: what a resumed run may change; where a run's data came from.
- :mod:`~stablecnn.training.metrics`: accuracy, loss, per-class accuracy, confusion matrix.
- :mod:`~stablecnn.training.plots`: curves, confusion matrix, filters, mistakes.
- :mod:`~stablecnn.training.microbatch`: a batch's gradient as micro-batches added in a fixed
  order, in one process or over MPI ranks; :mod:`~stablecnn.training.comm`: the communication
  (one process, or MPI with a watchdog); :mod:`~stablecnn.training.distributed`: a rank of a
  data-parallel run (``mpiexec -n K stablecnn train --distributed``).
"""

from stablecnn.training.config import TrainConfig
from stablecnn.training.trainer import Trainer, load_data, resume_checkpoint

__all__ = ["TrainConfig", "Trainer", "load_data", "resume_checkpoint"]
