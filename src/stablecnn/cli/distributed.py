"""``mpiexec -n K stablecnn train --distributed ...``: one rank of a data-parallel run.

The same options as ``stablecnn train`` (the run's settings, ``--resume``, ``--out``), plus
``--micro-batches`` (default :func:`~stablecnn.training.distributed.default_micro_batches`) and
``--mpi-timeout``. Rank 0 prints, writes and plots; see :mod:`stablecnn.training.distributed` for
who does what and what happens when a rank fails.
"""

from __future__ import annotations

from pathlib import Path

from stablecnn.training import distributed as dist
from stablecnn.training.comm import mpi_world
from stablecnn.training.resume import data_record
from stablecnn.training.trainer import load_data


def cmd_train_distributed(args, prepare_run, run_fit) -> int:
    """``stablecnn train --distributed``: ``prepare_run`` and ``run_fit`` are those of
    :mod:`stablecnn.cli.train` (passed, so the two modules do not import each other)."""
    comm = mpi_world(args.mpi_timeout)
    lead = comm.rank == 0
    try:
        config, ckpt, run_dir, data_dir, verify = prepare_run(
            args, micro_batches=dist.default_micro_batches(comm.size)
        )
        dist.check_ranks(comm, config)
        run_dir = Path(dist.share_text(comm, str(run_dir)))  # rank 0's clock names it
        train, test = dist.load_data_in_turn(
            comm,
            lambda: load_data(config.dataset, data_dir=data_dir, verify=verify, quiet=not lead),
        )
        trainer = dist.DistributedTrainer(
            config,
            run_dir,
            train,
            test,
            comm,
            checkpoint=ckpt,
            data_source=data_record(config.dataset, data_dir, verify),
        )
        table = dist.rank_table(comm)
        if not lead:
            trainer.fit()
            return 0
        return run_fit(args, trainer, run_dir, [dist.describe_run(comm, config), *table])
    except BaseException as exc:
        dist.guard(comm, exc)  # an error of this rank only stops every rank here
        if not lead:  # every rank met it: rank 0 reports it
            raise SystemExit(dist.exit_status(exc)) from None
        raise
