"""One rank of a small data-parallel run, for the tests of tests/distributed (started under
``mpiexec -n K``, or with ``--local`` in one process): random uint8 images, a few steps, the
faults the tests ask for, and a digest of the weights each rank ends with.

Not a test module (pytest collects ``test_*.py`` only); ``python rank_script.py --help``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))  # the tests' support package
from support.fakes import make_data  # noqa: E402

from stablecnn.errors import Interrupted  # noqa: E402
from stablecnn.training.callbacks import Callback
from stablecnn.training.comm import LocalComm, mpi_world  # noqa: E402
from stablecnn.training.config import TrainConfig  # noqa: E402
from stablecnn.training.distributed import DistributedTrainer  # noqa: E402
from stablecnn.training.trainer import resume_checkpoint  # noqa: E402


def digest(trainer) -> str:
    """SHA-256 of every parameter, buffer and optimizer state array, in name order."""
    h = hashlib.sha256()
    for name, array in sorted(trainer.model.state_dict().items()):
        h.update(name.encode() + np.ascontiguousarray(array).tobytes())
    state = trainer.optimizer.state_dict()
    for key in sorted(state):
        value = state[key]
        h.update(key.encode() + np.ascontiguousarray(np.asarray(value)).tobytes())
    return h.hexdigest()


class Pace(Callback):
    """Rank 0: a marker file after the first step, then a pause after every step (so a test can
    send Ctrl-C while training runs)."""

    def __init__(self, marker: Path, pause: float):
        self.marker, self.pause = marker, pause

    def on_step(self, trainer, step):
        self.marker.touch()
        time.sleep(self.pause)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", default="md2")
    p.add_argument("--train", type=int, default=48)
    p.add_argument("--test", type=int, default=30)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--micro", type=int, default=6)
    p.add_argument("--augment", action="store_true")
    p.add_argument("--local", action="store_true", help="one process, no MPI")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--fail", choices=["raise", "kill", "hang"])
    p.add_argument("--fail-rank", type=int, default=1)
    p.add_argument("--fail-step", type=int, default=2, help="global step (from 1)")
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    comm = LocalComm() if args.local else mpi_world(args.timeout)
    train, test = make_data(args.train, 1), make_data(args.test, 2)
    for model in args.models.split(","):
        run_dir = args.out / model
        if args.resume:
            config, ckpt = resume_checkpoint(run_dir)
            config.epochs = args.epochs
        else:
            config, ckpt = (
                TrainConfig(
                    model=model,
                    batch_size=args.batch,
                    epochs=args.epochs,
                    micro_batches=args.micro,
                    optimizer="adam",
                    lr=0.001,
                    eval_batch_size=8,
                    augment={"max_shift": 2, "max_degrees": 10.0} if args.augment else None,
                ),
                None,
            )
        callbacks = [Pace(run_dir / "started", args.pause)] if args.pause else []
        trainer = DistributedTrainer(
            config, run_dir, train, test, comm, callbacks, ckpt, echo=False, progress=False
        )
        if args.fail and comm.rank == args.fail_rank:
            step = trainer.forward_backward

            def failing(x, y, step=step, trainer=trainer):
                if trainer.global_step + 1 == args.fail_step:
                    if args.fail == "raise":
                        raise RuntimeError(f"injected failure at step {args.fail_step}")
                    if args.fail == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    time.sleep(600)  # hang
                return step(x, y)

            trainer.forward_backward = failing
        try:
            trainer.fit()
        except Interrupted as exc:
            if comm.rank == 0:
                print(exc, file=sys.stderr)
            return 130
        (run_dir / f"digest-{comm.rank}.txt").write_text(digest(trainer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
