"""Learning-rate schedules: the learning rate as a pure function of the optimizer step.

A schedule holds no state: ``lr_at(step, base_lr)`` is the rate for the step numbered ``step``
(0 for the first update, i.e. ``optimizer.steps`` just before ``optimizer.step()``). A resumed
run therefore needs nothing but the restored ``optimizer.steps`` and the schedule's
:meth:`~Schedule.config`, which is plain data for a checkpoint.

The unit is the optimizer step, not the epoch (``torch.optim.lr_scheduler`` counts whatever its
``step()`` is called for, usually epochs): for a per-epoch StepLR pass
``step_size = epochs_per_decay * steps_per_epoch``.

Example:
    >>> schedule = WarmupLR(CosineLR(total_steps=900), warmup_steps=100)
    >>> for _ in range(1000):                                          # doctest: +SKIP
    ...     schedule.apply(opt, base_lr=0.1)      # opt.lr = schedule.lr_at(opt.steps, 0.1)
    ...     ...forward, backward...; opt.step()
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np

from stablecnn.errors import ConfigError


def _int(owner: str, name: str, value, low: int) -> int:
    """``value`` as an int >= ``low``; a bool, a float or a string is refused, naming the value."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < low:
        raise ConfigError(f"{owner}: invalid {name} value: {value!r} (must be an integer >= {low})")
    return number


def _float(
    owner: str,
    name: str,
    value,
    low: float,
    high: float = math.inf,
    *,
    low_ok: bool = True,
    high_ok: bool = False,
) -> float:
    """``float(value)`` in the interval; a bool or a string (which float() takes) is refused."""
    interval = f"{'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ConfigError(
            f"{owner}: invalid {name} value: {value!r} (must be a real number in "
            f"{interval}, not {type(value).__name__})"
        )
    x = float(value)
    if (
        not math.isfinite(x)
        or x < low
        or x > high
        or (x == low and not low_ok)
        or (x == high and not high_ok)
    ):
        raise ConfigError(
            f"{owner}: invalid {name} value: {value!r} (must be a finite number in {interval})"
        )
    return x


class Schedule:
    """Base class: ``lr_at``, ``apply``, ``config`` and ``__repr__`` from ``fields``.

    A subclass writes :meth:`lr_at` and lists its constructor's arguments in ``fields``.

    Raises:
        NotImplementedError: :meth:`lr_at` of a subclass that does not define it.
        ConfigError: :meth:`apply` of a rate the optimizer refuses (see
            :attr:`stablecnn.optim.Optimizer.lr`).
    """

    fields: tuple[str, ...] = ()

    def lr_at(self, step: int, base_lr: float) -> float:
        """The learning rate for step ``step`` (0-based) of a run whose base rate is ``base_lr``."""
        raise NotImplementedError

    def apply(self, optimizer, base_lr: float) -> float:
        """Set ``optimizer.lr`` for its next step (``optimizer.steps``) and return it."""
        optimizer.lr = self.lr_at(optimizer.steps, base_lr)
        return optimizer.lr

    def config(self) -> dict:
        """``{"type": "StepLR", "step_size": 10, "gamma": 0.5}``: plain (JSON-ready) data."""
        return {"type": type(self).__name__, **{f: getattr(self, f) for f in self.fields}}

    @classmethod
    def from_config(cls, config: dict) -> Schedule:
        return from_config(config)

    def __eq__(self, other):
        return type(self) is type(other) and self.config() == other.config()

    def __repr__(self):
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.fields)
        return f"{type(self).__name__}({args})"


class ConstantLR(Schedule):
    """The base rate at every step. (Not ``torch``'s ConstantLR, which scales the first steps.)

    Raises: nothing of its own (see :class:`Schedule`).
    """

    def lr_at(self, step, base_lr):
        return float(base_lr)


class StepLR(Schedule):
    r"""Multiply the rate by ``gamma`` every ``step_size`` steps, as torch's StepLR.

    .. math:: \text{lr}(s) = \text{base} \cdot \gamma^{\lfloor s / \text{step\_size} \rfloor}

    Args:
        step_size: steps between decays, >= 1.
        gamma: factor per decay, in (0, 1], default 0.1.

    Raises:
        ConfigError: ``step_size`` not an integer >= 1 (a bool or a float is not one), or
            ``gamma`` not a real number in (0, 1].

    Example:
        >>> StepLR(step_size=100, gamma=0.5).lr_at(250, base_lr=0.1)
        0.025
    """

    fields = ("step_size", "gamma")

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _int("StepLR", "step_size", step_size, 1)
        self.gamma = _float("StepLR", "gamma", gamma, 0.0, 1.0, low_ok=False, high_ok=True)

    def lr_at(self, step, base_lr):
        return float(base_lr) * self.gamma ** (int(step) // self.step_size)


class CosineLR(Schedule):
    r"""Cosine decay from the base rate to ``min_lr`` over ``total_steps``, then ``min_lr``.

    .. math::
        \text{lr}(s) = m + (\text{base} - m) \cdot \tfrac12 \left(1 + \cos(\pi s / T)\right),
        \quad s \le T; \qquad \text{lr}(s) = m, \quad s > T

    This is torch's CosineAnnealingLR (closed form, ``T_max = total_steps``, ``eta_min =
    min_lr``) for ``s <= T``; after ``T`` torch's rate rises again along the cosine, ours stays
    at ``min_lr`` (a run longer than its schedule should not warm up again by accident).

    Args:
        total_steps: ``T``, >= 1.
        min_lr: the final rate, >= 0, default 0.

    Raises:
        ConfigError: ``total_steps`` not an integer >= 1, or ``min_lr`` not a finite real
            number >= 0.

    Example:
        >>> CosineLR(total_steps=100).lr_at(50, base_lr=0.1)
        0.05
    """

    fields = ("total_steps", "min_lr")

    def __init__(self, total_steps: int, min_lr: float = 0.0):
        self.total_steps = _int("CosineLR", "total_steps", total_steps, 1)
        self.min_lr = _float("CosineLR", "min_lr", min_lr, 0.0)

    def lr_at(self, step, base_lr):
        s = min(int(step), self.total_steps)
        cosine = (1 + math.cos(math.pi * s / self.total_steps)) / 2  # 1 -> 0
        return self.min_lr + (float(base_lr) - self.min_lr) * cosine


class WarmupLR(Schedule):
    r"""Linear warm-up over ``warmup_steps``, then ``inner`` started afresh.

    .. math::
        \text{lr}(s) = \text{base} \cdot \frac{s + 1}{W + 1}, \quad s < W; \qquad
        \text{lr}(s) = \text{inner}(s - W), \quad s \ge W

    The ramp starts at ``base / (W + 1)`` and would reach ``base`` at ``s = W``, where the inner
    schedule takes over at its own step 0, so the rate is continuous. (It is torch's LinearLR
    with ``start_factor = 1 / (W + 1)``, ``total_iters = W``.) The inner schedule sees steps
    counted from the end of the warm-up: a cosine over a whole run of ``N`` steps is
    ``WarmupLR(CosineLR(N - W), W)``.

    Args:
        inner: the schedule after the warm-up (e.g. :class:`CosineLR`, :class:`ConstantLR`).
        warmup_steps: ``W``, >= 0 (0: no warm-up).

    Raises:
        ConfigError: ``inner`` not a :class:`Schedule`, or ``warmup_steps`` not an integer >= 0.

    Example:
        >>> WarmupLR(ConstantLR(), warmup_steps=3).lr_at(0, base_lr=0.1)
        0.025
    """

    fields = ("inner", "warmup_steps")

    def __init__(self, inner: Schedule, warmup_steps: int):
        if not isinstance(inner, Schedule):
            raise ConfigError(f"WarmupLR: invalid inner value: {inner!r} (must be a Schedule)")
        self.inner = inner
        self.warmup_steps = _int("WarmupLR", "warmup_steps", warmup_steps, 0)

    def lr_at(self, step, base_lr):
        step = int(step)
        if step < self.warmup_steps:
            return float(base_lr) * (step + 1) / (self.warmup_steps + 1)
        return self.inner.lr_at(step - self.warmup_steps, base_lr)

    def config(self):
        return {"type": "WarmupLR", "inner": self.inner.config(), "warmup_steps": self.warmup_steps}


SCHEDULES: dict[str, type[Schedule]] = {
    "ConstantLR": ConstantLR,
    "StepLR": StepLR,
    "CosineLR": CosineLR,
    "WarmupLR": WarmupLR,
}


def from_config(config: dict) -> Schedule:
    """Build a schedule from :meth:`Schedule.config`'s output.

    Raises:
        ConfigError: an unknown ``type``, an argument the schedule does not take or lacks, or
            a value its constructor refuses.
    """
    config = dict(config)
    name = config.pop("type", None)
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    if name == "WarmupLR" and isinstance(config.get("inner"), dict):
        config["inner"] = from_config(config["inner"])
    try:
        return SCHEDULES[name](**config)
    except TypeError as exc:
        raise ConfigError(f"schedule {name}: {exc}") from None


def build_schedule(
    name: str = "constant",
    *,
    total_steps: int | None = None,
    step_size: int | None = None,
    gamma: float = 0.1,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
) -> Schedule:
    """A schedule from command-line words: ``name`` is ``constant``, ``step`` or ``cosine``.

    ``step`` needs ``step_size``; ``cosine`` needs ``total_steps``, the length of the whole run
    including any warm-up (the cosine then spans ``total_steps - warmup_steps``). With
    ``warmup_steps > 0`` the result is wrapped in :class:`WarmupLR`.

    Raises:
        ConfigError: an unknown ``name``; ``step`` without ``step_size``; ``cosine`` without
            ``total_steps`` or with ``total_steps <= warmup_steps``; ``warmup_steps`` or
            ``total_steps`` not a non-negative (positive) integer; and what the schedules'
            constructors refuse.

    Example:
        >>> build_schedule("cosine", total_steps=1000, warmup_steps=100)
        WarmupLR(inner=CosineLR(total_steps=900, min_lr=0.0), warmup_steps=100)
    """
    warmup_steps = _int("build_schedule", "warmup_steps", warmup_steps, 0)
    if name == "constant":
        inner = ConstantLR()
    elif name == "step":
        if step_size is None:
            raise ConfigError("the step schedule needs step_size")
        inner = StepLR(step_size, gamma)
    elif name == "cosine":
        if total_steps is None:
            raise ConfigError("the cosine schedule needs total_steps")
        total_steps = _int("build_schedule", "total_steps", total_steps, 1)
        if total_steps <= warmup_steps:
            raise ConfigError(
                f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}): "
                f"lower the warm-up (--warmup-steps) or train for more steps (a run's steps are "
                f"its epochs times its batches per epoch)"
            )
        inner = CosineLR(total_steps - warmup_steps, min_lr)
    else:
        raise ConfigError(f"unknown schedule {name!r}; known: constant, step, cosine")
    return WarmupLR(inner, warmup_steps) if warmup_steps else inner
