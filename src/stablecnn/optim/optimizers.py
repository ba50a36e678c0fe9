"""Optimizers: the base class and the shipped update rules (SGD, Adam, AdamW, RMSprop, Adagrad).

An optimizer owns a list of ``(name, param, grad)`` triples (``model.parameters()``) and updates
each ``param`` in place from its ``grad`` in :meth:`Optimizer.step`. A subclass writes only its
update rule in :meth:`Optimizer.update`; its per-parameter state lives in ``self.state[name]``,
keyed by the same stable names as the parameters, in the parameter's dtype, so a checkpoint can
save and restore it exactly. Gradients belong to the model: an update reads them and never
writes them (weight decay's ``g + wd * p`` goes into a scratch array).

The rules follow ``torch.optim`` (single-tensor versions) line by line, except Adagrad's epsilon,
which sits inside the square root as in the original Model 1 code. ``lr`` may be changed between
steps (``opt.lr = schedule.lr_at(opt.steps, base_lr)``); everything an update reads besides
the hyperparameters is in ``state`` and ``steps``, so ``load_state_dict`` resumes a run exactly.
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

from stablecnn.errors import ConfigError
from stablecnn.kernels import parallel


def _shown(value) -> str:
    """``value`` as an error message shows it: ``1.5`` for any real number, ``'fast'`` otherwise."""
    if isinstance(value, (numbers.Real, np.ndarray)) and not isinstance(value, (bool, np.bool_)):
        return str(value)
    return repr(value)


def check_number(
    owner: str,
    name: str,
    value,
    low: float = 0.0,
    high: float = math.inf,
    *,
    low_open=False,
    high_open=True,
    dtypes=(),
) -> float:
    """``float(value)``, checked to be a real number in the interval, else a ConfigError.

    The message names ``owner`` (the optimizer), the hyperparameter and the value received, in
    PyTorch's words: ``"SGD: invalid momentum value: 1.5 (must be a finite number in [0, 1))"``.
    A bool, a string, None or an array of more than one number is not a number here, although
    ``float()`` would take some of them. A 0-d real array is. The value must also stay in the
    interval once rounded to each of ``dtypes`` (the parameters' dtypes, in which the update
    uses it): ``eps=1e-50`` is 0 in float32, and ``momentum=0.99999999`` is 1.
    """

    def inside(x):
        below = x <= low if low_open else x < low
        above = x >= high if high_open else x > high
        return math.isfinite(x) and not below and not above

    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        real = True
    else:
        real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not real:
        raise ConfigError(
            f"{owner}: invalid {name} value: {_shown(value)} (must be a real number "
            f"in {interval}, not {type(value).__name__})"
        )
    x = float(value)
    if not inside(x):
        raise ConfigError(
            f"{owner}: invalid {name} value: {_shown(value)} "
            f"(must be a finite number in {interval})"
        )
    for dtype in dtypes:
        with np.errstate(over="ignore", under="ignore"):
            rounded = float(np.dtype(dtype).type(x))
        if not inside(rounded):
            raise ConfigError(
                f"{owner}: invalid {name} value: {_shown(value)} (it rounds to "
                f"{rounded:g} in {np.dtype(dtype)}, the parameters' dtype; must be "
                f"in {interval} there)"
            )
    return x


def _flag(owner: str, name: str, value) -> bool:
    """``value`` if it is a bool (Python's or NumPy's), else a ConfigError naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(
            f"{owner}: invalid {name} value: {_shown(value)} "
            f"(must be True or False, not {type(value).__name__})"
        )
    return bool(value)


UPDATE_BLOCK = (
    1 << 20
)  # bytes of a parameter updated at a time (Adagrad on Model 1: -0.4 ms a step)


class Optimizer:
    """Base class: parameter bookkeeping, ``step``, and state save/restore.

    A subclass writes its rule in :meth:`update`, which :meth:`step` calls for each parameter,
    in the order of ``params``, once per step. By default ``update(param, grad, state)`` gets:

    - ``param``: the parameter array itself, in its own shape (``(out_features, in_features)``
      for a dense weight, ``(C_out, C_in, kH, kW)`` for a conv weight), to update in place;
    - ``grad``: its gradient, the same shape, to read only;
    - ``state``: ``self.state[name]``, that parameter's ``{slot: array}``, each array of the
      parameter's shape and dtype (made by :meth:`_init_state` from :meth:`_state_keys`);
    - ``self.steps``: the number of steps done before this one (0 at the first).

    So a rule may use the norms, means or shape of the parameter (LARS, LAMB). It runs in the
    calling thread, one parameter after the other.

    **Element-wise rules** (each ``p[i]`` computed from ``p[i]``, ``g[i]`` and the state's
    ``[i]`` entries alone: SGD, Adam, AdamW, RMSprop, Adagrad) may set the class attribute
    :attr:`elementwise` to True, for speed. Then a parameter of at least
    ``2 * parallel.MIN_SPAN`` elements whose arrays are all C-contiguous is updated in pieces:
    ``update`` is called several times a step for it, each time on a flat 1-D slice
    ``param.reshape(-1)[a:z]`` of at most :data:`UPDATE_BLOCK` bytes, with the same slices of
    ``grad`` and of every state array (in a new dict), the spans of slices running concurrently,
    one per thread (see :mod:`stablecnn.kernels.parallel`); smaller parameters still come whole.
    Such a rule must not look across elements (no sum, norm, mean, shape or reshape of its
    arguments), add state slots, or set attributes in ``update`` (:meth:`workspace` is safe); its
    results are then bit-identical for any thread count. The opt-in holds for the ``update`` it is
    declared with: a subclass that overrides ``update`` gets whole arrays unless it sets
    ``elementwise = True`` itself (AdamW inherits Adam's rule, and its opt-in).

    Args:
        params: iterable of ``(name, param, grad)`` triples; ``param`` and ``grad`` are arrays
            that stay the same objects for the whole run (backward overwrites ``grad``).
        lr: learning rate, > 0. It may be set to any finite value >= 0 between steps (a
            schedule may reach 0).

    Raises:
        ConfigError: (a ``ValueError``) when built, no parameters or a name given twice; a
            hyperparameter whose update would be undefined or meaningless (NaN, inf, out of its
            range, or so once rounded to the parameters' dtype; a bool or a string for a
            number): the message names the optimizer, the hyperparameter and the value, e.g.
            ``"SGD: invalid momentum value: 1.5 (must be a finite number in [0, 1))"``. Setting
            :attr:`lr` to a negative or non-finite value; :meth:`load_state_dict` of a state
            whose names or shapes are not this optimizer's.
        NotImplementedError: :meth:`step` of a subclass that defines no :meth:`update`.
    """

    hyperparameters: tuple[str, ...] = ("lr",)
    elementwise: bool = False
    """True: :meth:`update` may be given flat slices of a large parameter (see the class doc)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "update" in cls.__dict__ and "elementwise" not in cls.__dict__:
            cls.elementwise = False  # a new rule is not element-wise until it says so

    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ConfigError("the optimizer got no parameters")
        names = [name for name, _, _ in self.params]
        if len(set(names)) != len(names):
            raise ConfigError(f"parameter names must be unique, got {names}")
        self._dtypes = sorted({np.dtype(param.dtype) for _, param, _ in self.params}, key=str)
        self.lr = self._number("learning rate (lr)", lr, low_open=True)
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
        self.steps = 0
        self._workspace: dict[tuple, np.ndarray] = {}

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        lr = self._number("learning rate (lr)", value)
        self._check_lr(lr)
        self._lr = lr

    def _check_lr(self, lr: float) -> None:
        """Refuse a rate that is valid alone but not with the other hyperparameters (AdamW)."""

    def _number(self, name: str, value, low: float = 0.0, high: float = math.inf, **interval):
        """:func:`check_number` with this optimizer's class name, in the parameters' dtypes."""
        return check_number(
            type(self).__name__, name, value, low, high, dtypes=self._dtypes, **interval
        )

    def _flag(self, name: str, value) -> bool:
        """:func:`_flag` with this optimizer's class name in the message."""
        return _flag(type(self).__name__, name, value)

    def step(self) -> None:
        """Apply one update to every parameter from its current gradient.

        :meth:`update` gets each whole parameter (see the class doc), except under an
        :attr:`elementwise` rule: a large parameter is then updated in one contiguous span per
        thread (see :mod:`stablecnn.kernels.parallel`), each with its own slices of the state, and
        each span :data:`UPDATE_BLOCK` bytes of parameter at a time, so the rule's several passes
        find the block's arrays in cache.
        """
        for name, param, grad in self.params:
            state = self.state[name]
            arrays = (param, grad, *state.values())
            if (
                not self.elementwise
                or param.size < 2 * parallel.MIN_SPAN
                or not all(a.flags.c_contiguous for a in arrays)
            ):
                self.update(param, grad, state)
                continue
            keys = tuple(state)

            def update_span(param_span, grad_span, *slots, keys=keys):  # flat 1-D spans
                for a, z in parallel.blocks(0, param_span.size, param_span.itemsize, UPDATE_BLOCK):
                    self.update(
                        param_span[a:z],
                        grad_span[a:z],
                        {k: slot[a:z] for k, slot in zip(keys, slots)},
                    )

            parallel.split(update_span, *(a.reshape(-1) for a in arrays), axis=0)
        self.steps += 1

    def update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """Update ``param`` in place from ``grad`` and ``state``; ``self.steps`` is the number
        of steps done. Whole arrays in the parameter's shape, or flat slices of them under an
        :attr:`elementwise` rule (see the class doc)."""
        raise NotImplementedError

    def workspace(self, param: np.ndarray, which: int = 0) -> np.ndarray:
        """Scratch array number ``which`` shaped like ``param``, kept between steps (not state).

        Reusing it saves allocating (and page-faulting) a parameter-sized temporary every step:
        for Model 1's 11 MB dense weight that is measurable.
        """
        # keyed by memory, not id(): step() passes fresh views of the same spans every time
        key = (param.__array_interface__["data"][0], param.shape, param.dtype.str, which)
        work = self._workspace.get(key)
        if work is None:
            work = self._workspace[key] = np.empty_like(param)
        return work

    def _with_l2(self, param: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """``grad + weight_decay * param`` in scratch array 1 (``grad`` itself when no decay)."""
        if not self.weight_decay:
            return grad
        out = self.workspace(param, 1)
        np.multiply(param, param.dtype.type(self.weight_decay), out=out)
        out += grad
        return out

    # -- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``{"<param name>.<state key>": array}`` plus ``"steps"``, for an ``.npz`` file."""
        flat = {
            f"{name}.{key}": value
            for name, state in self.state.items()
            for key, value in state.items()
        }
        flat["steps"] = np.asarray(self.steps, dtype=np.int64)
        return flat

    def load_state_dict(self, flat: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned, checking names, shapes and dtypes."""
        params = {name: param for name, param, _ in self.params}
        expected = {f"{name}.{key}" for name in params for key in self._state_keys()}
        got = set(flat) - {"steps"}
        if got != expected:
            missing, extra = sorted(expected - got), sorted(got - expected)
            raise ConfigError(
                f"optimizer state does not match: missing {missing}, unexpected {extra}"
            )
        for key in got:
            name, _, slot = key.rpartition(".")
            value = np.asarray(flat[key])
            if value.shape != params[name].shape:
                raise ConfigError(
                    f"optimizer state {key!r} has shape {value.shape}, "
                    f"the parameter has {params[name].shape}"
                )
            self.state[name][slot] = value.astype(params[name].dtype, copy=True)
        self.steps = int(flat.get("steps", 0))

    def _state_keys(self) -> tuple[str, ...]:
        """The state slots this optimizer keeps per parameter (for checking a loaded state)."""
        return ()

    def _init_state(self) -> None:
        """Zero every slot of :meth:`_state_keys` for every parameter, in the parameter's dtype."""
        for name, param, _ in self.params:
            for slot in self._state_keys():
                self.state[name][slot] = np.zeros_like(param)

    def config(self) -> dict:
        """``{"name": "sgd", "lr": ..., ...}``: plain data that :func:`build_optimizer` accepts."""
        name = next(
            (key for key, cls in OPTIMIZERS.items() if cls is type(self)), type(self).__name__
        )
        values = {h: getattr(self, h) for h in self.hyperparameters}
        return {
            "name": name,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
        }

    def __repr__(self):
        args = ", ".join(f"{h}={getattr(self, h)!r}" for h in self.hyperparameters)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    r"""Stochastic gradient descent, with optional momentum, Nesterov momentum and L2 decay.

    .. math::
        g \leftarrow g + \lambda p, \qquad
        b \leftarrow \mu b + (1 - \tau) g \ (b = g \text{ at the first step}), \qquad
        p \leftarrow p - \text{lr} \cdot (g + \mu b \text{ if Nesterov else } b)

    As ``torch.optim.SGD``: the momentum buffer starts as the first gradient (not as
    ``(1 - dampening) * g``); without momentum the update is ``p -= lr * g``.

    Args:
        params: ``model.parameters()``.
        lr: learning rate.
        momentum: :math:`\mu` in [0, 1), default 0 (plain SGD, no state). At 1 or above the
            buffer never forgets a gradient and grows without bound.
        dampening: :math:`\tau` in [0, 1), default 0. At 1 every gradient after the first
            would be ignored.
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0), default False.
        weight_decay: L2 coefficient :math:`\lambda` >= 0 added to the gradient, default 0.

    Raises:
        ConfigError: ``lr`` not > 0, ``momentum`` or ``dampening`` not in [0, 1),
            ``weight_decay`` not >= 0 (each a finite real number, in its interval in the
            parameters' dtype too); ``nesterov`` not a bool, or Nesterov momentum without
            momentum > 0 and dampening 0; and as :class:`Optimizer`.

    Example:
        >>> opt = SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)  # doctest: +SKIP
    """

    hyperparameters = ("lr", "momentum", "dampening", "nesterov", "weight_decay")
    elementwise = True

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        self.momentum = self._number("momentum", momentum, 0.0, 1.0)
        self.dampening = self._number("dampening", dampening, 0.0, 1.0)
        self.weight_decay = self._number("weight_decay", weight_decay)
        self.nesterov = self._flag("nesterov", nesterov)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ConfigError(
                f"{type(self).__name__}: Nesterov momentum needs momentum > 0 and "
                f"dampening 0, got momentum={_shown(momentum)}, "
                f"dampening={_shown(dampening)}"
            )
        self._init_state()

    def _state_keys(self):
        return ("momentum_buffer",) if self.momentum else ()

    def update(self, param, grad, state):
        dt, work = param.dtype.type, self.workspace(param)
        g = self._with_l2(param, grad)
        if self.momentum:
            buf = state["momentum_buffer"]
            if self.steps == 0:
                buf[...] = g
            else:
                buf *= dt(self.momentum)
                if self.dampening:
                    np.multiply(g, dt(1.0 - self.dampening), out=work)
                    buf += work
                else:
                    buf += g
            if self.nesterov:
                np.multiply(buf, dt(self.momentum), out=work)
                work += g
                g = work
            else:
                g = buf
        np.multiply(g, dt(self.lr), out=work)
        param -= work


class Adam(Optimizer):
    r"""Adam, with L2 weight decay added to the gradient (as ``torch.optim.Adam``).

    .. math::
        g \leftarrow g + \lambda p, \quad m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \\
        p \leftarrow p - \frac{\text{lr}}{1 - \beta_1^t} \cdot
            \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}

    ``t`` is the step number counted from 1 (``self.steps + 1``), saved in checkpoints as
    ``"steps"``, so a resumed run applies the same bias corrections.

    Args:
        params: ``model.parameters()``.
        lr: learning rate, default 1e-3.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1), default (0.9, 0.999) (at 1 the
            averages never move from 0).
        eps: > 0, added to the root of :math:`v`, default 1e-8 (> 0 so an entry whose gradient
            has always been 0 gets a 0 update, not 0 / 0).
        weight_decay: L2 coefficient :math:`\lambda` >= 0 added to the gradient, default 0.

    Raises:
        ConfigError: ``lr`` not > 0, ``betas`` not a pair whose entries are in [0, 1), ``eps``
            not > 0, ``weight_decay`` not >= 0 (each a finite real number, in its interval in
            the parameters' dtype too); and as :class:`Optimizer`.

    Example:
        >>> opt = Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))  # doctest: +SKIP
    """

    hyperparameters = ("lr", "betas", "eps", "weight_decay")
    elementwise = True
    decoupled = False  # AdamW: decay the parameter directly instead of adding to the gradient

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        owner = type(self).__name__  # Adam or AdamW
        pair = isinstance(betas, (tuple, list)) or isinstance(betas, np.ndarray) and betas.ndim == 1
        if not pair or len(betas) != 2:
            raise ConfigError(
                f"{owner}: invalid betas value: {_shown(betas)} (must be a pair "
                f"(beta1, beta2), each in [0, 1))"
            )
        self.betas = tuple(
            self._number(f"beta{i + 1} (betas[{i}])", b, 0.0, 1.0) for i, b in enumerate(betas)
        )
        self.eps = self._number("eps", eps, low_open=True)
        self.weight_decay = self._number("weight_decay", weight_decay)
        self._check_lr(self.lr)
        self._init_state()

    def _check_lr(self, lr):
        wd = getattr(self, "weight_decay", 0.0)  # not yet set while the base class sets lr
        if self.decoupled and lr * wd >= 1:
            raise ConfigError(
                f"{type(self).__name__}: invalid weight_decay value: {_shown(wd)} with learning "
                f"rate {_shown(lr)} (each step multiplies the parameters by 1 - lr * weight_decay "
                f"= {1 - lr * wd:g}; lr * weight_decay must be < 1)"
            )

    def _state_keys(self):
        return ("exp_avg", "exp_avg_sq")

    def update(self, param, grad, state):
        dt, work = param.dtype.type, self.workspace(param)
        (beta1, beta2), t = self.betas, self.steps + 1
        if self.decoupled:
            if self.weight_decay:
                param *= dt(1.0 - self.lr * self.weight_decay)
            g = grad
        else:
            g = self._with_l2(param, grad)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        np.subtract(g, m, out=work)  # m += (1 - beta1) (g - m): torch's lerp
        work *= dt(1.0 - beta1)
        m += work
        v *= dt(beta2)
        np.multiply(g, g, out=work)
        work *= dt(1.0 - beta2)
        v += work
        step_size = self.lr / (1.0 - beta1**t)
        np.sqrt(v, out=work)
        work /= dt(math.sqrt(1.0 - beta2**t))
        work += dt(self.eps)
        np.divide(m, work, out=work)
        work *= dt(step_size)
        param -= work


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``.

    Before the Adam update (which then sees the plain gradient):
    :math:`p \leftarrow p \cdot (1 - \text{lr} \cdot \lambda)`.

    Args:
        params, lr, betas, eps: as :class:`Adam`.
        weight_decay: :math:`\lambda` >= 0, default 1e-2, with ``lr * weight_decay < 1`` (at
            1 or above the decay would zero or flip the sign of every parameter each step; the
            learning rate set later between steps is held to the same bound).

    Raises:
        ConfigError: as :class:`Adam`; and ``lr * weight_decay >= 1``, when built or when
            :attr:`lr` is set to such a rate later.

    Example:
        >>> opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)  # doctest: +SKIP
    """

    decoupled = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        super().__init__(params, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    r"""RMSProp, as ``torch.optim.RMSprop``.

    .. math::
        g \leftarrow g + \lambda p, \quad s \leftarrow \alpha s + (1 - \alpha) g^2, \quad
        d = \sqrt{s - \bar g^2} + \epsilon \text{ (centered) or } \sqrt{s} + \epsilon, \\
        b \leftarrow \mu b + g / d, \quad p \leftarrow p - \text{lr} \cdot b
        \quad (\text{without momentum: } p \leftarrow p - \text{lr} \cdot g / d)

    where the centered form also keeps :math:`\bar g \leftarrow \alpha \bar g + (1 - \alpha) g`.
    One intended difference: the centered variance :math:`s - \bar g^2`, never negative in exact
    arithmetic, is clamped at 0 before the root, so rounding cannot make it NaN.

    Args:
        params: ``model.parameters()``.
        lr: learning rate, default 1e-2.
        alpha: smoothing constant in [0, 1), default 0.99 (at 1 the average stays 0 and every
            step divides by ``eps``).
        eps: > 0, added to the root, default 1e-8.
        momentum: :math:`\mu` in [0, 1), default 0.
        centered: normalise by the variance instead of the second moment, default False.
        weight_decay: L2 coefficient :math:`\lambda` >= 0 added to the gradient, default 0.

    Raises:
        ConfigError: ``lr`` not > 0, ``alpha`` or ``momentum`` not in [0, 1), ``eps`` not > 0,
            ``weight_decay`` not >= 0 (each a finite real number, in its interval in the
            parameters' dtype too), ``centered`` not a bool; and as :class:`Optimizer`.

    Example:
        >>> opt = RMSprop(model.parameters(), lr=1e-3, centered=True)  # doctest: +SKIP
    """

    hyperparameters = ("lr", "alpha", "eps", "momentum", "centered", "weight_decay")
    elementwise = True

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        self.alpha = self._number("alpha", alpha, 0.0, 1.0)
        self.eps = self._number("eps", eps, low_open=True)
        self.momentum = self._number("momentum", momentum, 0.0, 1.0)
        self.centered = self._flag("centered", centered)
        self.weight_decay = self._number("weight_decay", weight_decay)
        self._init_state()

    def _state_keys(self):
        return (
            ("square_avg",)
            + (("grad_avg",) if self.centered else ())
            + (("momentum_buffer",) if self.momentum else ())
        )

    def update(self, param, grad, state):
        dt, work = param.dtype.type, self.workspace(param)
        g = self._with_l2(param, grad)
        square_avg = state["square_avg"]
        square_avg *= dt(self.alpha)
        np.multiply(g, g, out=work)
        work *= dt(1.0 - self.alpha)
        square_avg += work
        if self.centered:
            grad_avg = state["grad_avg"]
            np.subtract(g, grad_avg, out=work)  # torch's lerp
            work *= dt(1.0 - self.alpha)
            grad_avg += work
            np.multiply(grad_avg, grad_avg, out=work)
            np.subtract(square_avg, work, out=work)
            np.maximum(work, 0, out=work)
            np.sqrt(work, out=work)
        else:
            np.sqrt(square_avg, out=work)
        work += dt(self.eps)
        np.divide(g, work, out=work)
        if self.momentum:
            buf = state["momentum_buffer"]
            buf *= dt(self.momentum)
            buf += work
            np.multiply(buf, dt(self.lr), out=work)
        else:
            work *= dt(self.lr)
        param -= work


class Adagrad(Optimizer):
    r"""Adagrad, as the original Model 1 code used it.

    .. math::
        g \leftarrow g + \lambda p, \qquad G \leftarrow G + g \odot g, \qquad
        p \leftarrow p - \text{lr} \cdot g / \sqrt{G + \epsilon}

    The epsilon sits inside the square root, as in the original (PyTorch adds it outside). The
    optional L2 term is added to the gradient as ``torch.optim.Adagrad`` does; with the default
    ``weight_decay=0`` the rule is exactly the original's.

    Args:
        params: ``model.parameters()``.
        lr: learning rate, default 0.01.
        eps: > 0, added to the accumulated squares before the square root, default 1e-6 (at 0
            an entry whose gradients have all been 0, a dead unit's, would get 0 / 0 = NaN).
        weight_decay: L2 coefficient :math:`\lambda` >= 0, default 0.

    Raises:
        ConfigError: ``lr`` not > 0, ``eps`` not > 0, ``weight_decay`` not >= 0 (each a finite
            real number, in its interval in the parameters' dtype too); and as
            :class:`Optimizer`.

    Example:
        >>> opt = Adagrad(model.parameters(), lr=0.01)          # doctest: +SKIP
        >>> loss.forward(model.forward(x), y)  # doctest: +SKIP
        >>> model.backward(loss.backward()); opt.step()  # doctest: +SKIP
    """

    hyperparameters = ("lr", "eps", "weight_decay")
    elementwise = True

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.eps = self._number("eps", eps, low_open=True)
        self.weight_decay = self._number("weight_decay", weight_decay)
        for name, param, _ in self.params:
            self.state[name]["sum_sq"] = np.zeros_like(param)

    def _state_keys(self):
        return ("sum_sq",)

    def update(self, param, grad, state):
        sum_sq, work = state["sum_sq"], self.workspace(param)
        grad = self._with_l2(param, grad)
        np.multiply(grad, grad, out=work)
        sum_sq += work
        np.add(sum_sq, param.dtype.type(self.eps), out=work)
        np.sqrt(work, out=work)
        np.divide(grad, work, out=work)
        work *= param.dtype.type(self.lr)
        param -= work


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adagrad": Adagrad,
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
}


def build_optimizer(name: str, params, lr: float | None = None, **kwargs) -> Optimizer:
    """The optimizer ``name`` (a key of :data:`OPTIMIZERS`) over ``params``.

    ``lr=None`` and keyword arguments set to ``None`` mean "not given": the optimizer's default
    applies, so a command line can pass every flag it has.

    Raises:
        ConfigError: an unknown ``name`` (listing the known ones), an argument the optimizer
            does not take (listing those it takes), no ``lr`` for an optimizer without a
            default rate (SGD); and whatever the optimizer's constructor raises for the values.

    Example:
        >>> opt = build_optimizer("sgd", model.parameters(), 0.05, momentum=0.9)  # doctest: +SKIP
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[key]
    signature = inspect.signature(cls.__init__).parameters
    accepted = [p for p in signature if p not in ("self", "params")]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if lr is not None:
        kwargs["lr"] = lr
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"optimizer {key!r} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}"
        )
    if "lr" not in kwargs and signature["lr"].default is inspect.Parameter.empty:
        raise ConfigError(f"optimizer {key!r} needs a learning rate (lr)")
    return cls(params, **kwargs)


def check_optimizer(name: str, lr: float | None = None, *, dtype=np.float32, **kwargs) -> dict:
    """Check the arguments :func:`build_optimizer` would get, before any model exists.

    Builds the optimizer over one scratch parameter of ``dtype`` (the model's), so every check
    is the constructor's own: a settings object (a command line, a run's configuration) can
    refuse a bad momentum before a run directory is made or a dataset read.

    Returns:
        The optimizer's :meth:`~Optimizer.config` with its defaults filled in.

    Raises:
        ConfigError: (a ``ValueError``) as :func:`build_optimizer`, naming the optimizer, the
            hyperparameter and the value.

    Example:
        >>> check_optimizer("sgd", 0.1, momentum=1.5)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        ConfigError: SGD: invalid momentum value: 1.5 (must be a finite number in [0, 1))
    """
    scratch = [("check", np.zeros(1, dtype), np.zeros(1, dtype))]
    return build_optimizer(name, scratch, lr, **kwargs).config()
