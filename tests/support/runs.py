"""The tiny training recipe of the robustness matrix (issue 7), and the state of a run directory.

Every training in the matrix uses the same recipe (:func:`make_config` on :data:`TRAIN` and
:data:`TEST`: md1, 2 epochs of 3 steps of 10 images), so one uninterrupted reference run proves
that a run resumed after any fault ends with bit-identical weights and optimizer state
(:func:`assert_bit_exact` on :func:`state_of` each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from support.fakes import make_data

TOY_TRAIN, TOY_TEST = (30, 0), (10, 1)  # make_data(n, seed) of each split
TRAIN, TEST = make_data(*TOY_TRAIN), make_data(*TOY_TEST)
EPOCHS, BATCH = 2, 10  # 3 steps per epoch


def make_config(**overrides):
    """The recipe's :class:`~stablecnn.training.trainer.TrainConfig`, with ``overrides``."""
    from stablecnn.training.trainer import TrainConfig

    return TrainConfig(**{"epochs": EPOCHS, "batch_size": BATCH, **overrides})


def make_trainer(run_dir, cfg=None, data=None, **kwargs):
    """A quiet Trainer of ``cfg`` (default :func:`make_config`) on ``data`` (default: TRAIN and
    TEST)."""
    from stablecnn.training.trainer import Trainer

    train, test = data or (TRAIN, TEST)
    return Trainer(cfg or make_config(), run_dir, train, test, echo=False, progress=False, **kwargs)


def state_of(run_dir) -> dict[str, np.ndarray]:
    """Every weight and optimizer array of the run's checkpoint, by name."""
    from stablecnn.training import checkpoint

    ckpt = checkpoint.load(Path(run_dir) / "checkpoint.npz")
    return {
        **{f"param/{k}": v for k, v in ckpt.params.items()},
        **{f"optim/{k}": v for k, v in ckpt.optim.items()},
    }


def resume_to_end(run_dir) -> dict[str, np.ndarray]:
    """Resume the run in ``run_dir`` (as ``stablecnn train --resume`` does) to its last epoch."""
    from stablecnn.training.trainer import resume_checkpoint

    cfg, ckpt = resume_checkpoint(run_dir)
    cfg.epochs = EPOCHS
    make_trainer(run_dir, cfg, checkpoint=ckpt).fit()
    return state_of(run_dir)


def params_of(run_dir) -> dict[str, np.ndarray]:
    """The weights (and buffers) of the run's checkpoint, by name."""
    from stablecnn.training import checkpoint

    return checkpoint.load(Path(run_dir) / "checkpoint.npz").params


def interrupt_at(n: int):
    """A callback that does what Ctrl-C does when it arrives during global step ``n``."""
    import signal

    from stablecnn.training.callbacks import Callback

    class InterruptAt(Callback):
        def on_step(self, trainer, step):
            if step["global_step"] == n:
                trainer._on_sigint(signal.SIGINT, None)

    return InterruptAt()


def assert_bit_exact(got: dict, reference: dict) -> None:
    """The same names, dtypes and values, bit for bit."""
    assert sorted(got) == sorted(reference)
    for name, value in reference.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def snapshot(folder) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``folder`` (to prove nothing changed)."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def temp_files(folder) -> list[str]:
    """The names of the temporary files (``.*.tmp``) an atomic write leaves in ``folder``."""
    return sorted(p.name for p in Path(folder).glob(".*.tmp"))
