"""Weight initialisers.

An initialiser is a callable ``init(shape, rng, dtype) -> ndarray``. Every random draw comes from
the ``numpy.random.Generator`` passed in, so a model built from the same seed is the same model.
Fan-in and fan-out follow PyTorch: for a weight ``(out, in, *kernel)`` they are ``in *
prod(kernel)`` and ``out * prod(kernel)``. An initialiser checks its numbers when it is made
(finite, within float32's range, positive where a scale must be), so a model file's are checked
before any weight.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from stablecnn.errors import ConfigError

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_number(owner: str, name: str, value, positive: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a real number, finite, within float32's range (so the
    weights it gives are finite in float32 too) and, with ``positive``, above 0."""
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise ConfigError(f"{owner}: {name} must be a number, got {value!r}")
    if not abs(value) <= _FLOAT32_MAX:  # NaN, inf and huge integers alike (no float() of them)
        raise ConfigError(
            f"{owner}: {name} must be finite and within float32's range (+-3.4e38), got {value!r}"
        )
    if positive and not value > 0:
        raise ConfigError(f"{owner}: {name} must be positive, got {value!r}")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a weight of ``shape`` ``(out, in, *kernel)``."""
    if len(shape) < 2:
        raise ConfigError(f"fan-in and fan-out need a weight of at least 2 dimensions, got {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def truncated_normal(shape, rng: np.random.Generator, dtype=np.float32, std=0.1, mean=0.0, cut=2.0):
    """Normal(mean, std) values, redrawing any farther than ``cut * std`` from the mean.

    The redraw loop touches only the rejected values (about 4.6% at ``cut=2``), so it ends in a few
    rounds.
    """
    if std <= 0 or cut <= 0:
        raise ConfigError(f"truncated_normal needs std > 0 and cut > 0, got std={std}, cut={cut}")
    z = rng.standard_normal(shape)
    bad = np.abs(z) > cut
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > cut
    return (mean + std * z).astype(dtype)


@dataclass(frozen=True)
class TruncatedNormal:
    """Truncated normal initialiser: std ``std``, values beyond ``cut`` std redrawn."""

    std: float = 0.1
    mean: float = 0.0
    cut: float = 2.0

    def __post_init__(self):
        _check_number("TruncatedNormal", "std", self.std, positive=True)
        _check_number("TruncatedNormal", "mean", self.mean)
        _check_number("TruncatedNormal", "cut", self.cut, positive=True)

    def __call__(self, shape, rng, dtype=np.float32):
        return truncated_normal(shape, rng, dtype, std=self.std, mean=self.mean, cut=self.cut)


@dataclass(frozen=True)
class Constant:
    """Every value equal to ``value``."""

    value: float = 0.0

    def __post_init__(self):
        _check_number("Constant", "value", self.value)

    def __call__(self, shape, rng=None, dtype=np.float32):
        return np.full(shape, self.value, dtype=dtype)


@dataclass(frozen=True)
class HeNormal:
    """He (Kaiming) normal: std ``gain / sqrt(fan_in)`` with gain sqrt(2), for ReLU networks."""

    gain: float = math.sqrt(2.0)

    def __post_init__(self):
        _check_number("HeNormal", "gain", self.gain, positive=True)

    def __call__(self, shape, rng, dtype=np.float32):
        std = self.gain / math.sqrt(fans(shape)[0])
        return (std * rng.standard_normal(shape)).astype(dtype)


@dataclass(frozen=True)
class HeUniform:
    """He (Kaiming) uniform: U(-a, a) with ``a = gain * sqrt(3 / fan_in)``."""

    gain: float = math.sqrt(2.0)

    def __post_init__(self):
        _check_number("HeUniform", "gain", self.gain, positive=True)

    def __call__(self, shape, rng, dtype=np.float32):
        a = self.gain * math.sqrt(3.0 / fans(shape)[0])
        return rng.uniform(-a, a, shape).astype(dtype)


@dataclass(frozen=True)
class GlorotNormal:
    """Glorot (Xavier) normal: std ``sqrt(2 / (fan_in + fan_out))``."""

    def __call__(self, shape, rng, dtype=np.float32):
        fan_in, fan_out = fans(shape)
        return (math.sqrt(2.0 / (fan_in + fan_out)) * rng.standard_normal(shape)).astype(dtype)


@dataclass(frozen=True)
class GlorotUniform:
    """Glorot (Xavier) uniform: U(-a, a) with ``a = sqrt(6 / (fan_in + fan_out))``."""

    def __call__(self, shape, rng, dtype=np.float32):
        fan_in, fan_out = fans(shape)
        a = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, shape).astype(dtype)


INITIALIZERS = {
    cls.__name__: cls
    for cls in (TruncatedNormal, Constant, HeNormal, HeUniform, GlorotNormal, GlorotUniform)
}


def check_shape(initializer, shape: tuple[int, ...]) -> None:
    """Raise ConfigError if ``initializer`` cannot fill a parameter of ``shape``, drawing nothing:
    the fan-based ones (He, Glorot) need a weight of at least 2 dimensions."""
    if isinstance(initializer, (HeNormal, HeUniform, GlorotNormal, GlorotUniform)):
        fans(shape)


def to_config(initializer) -> dict:
    """``{"type": "TruncatedNormal", "std": 0.1, ...}``: a plain description of an initialiser."""
    return {"type": type(initializer).__name__, **asdict(initializer)}


def from_config(config: dict):
    """Build an initialiser from :func:`to_config`'s output; unknown names raise ConfigError."""
    config = dict(config)
    name = config.pop("type", None)
    if name not in INITIALIZERS:
        raise ConfigError(f"unknown initialiser {name!r}; known: {', '.join(sorted(INITIALIZERS))}")
    try:
        return INITIALIZERS[name](**config)
    except TypeError as exc:
        raise ConfigError(f"initialiser {name}: {exc}") from None
