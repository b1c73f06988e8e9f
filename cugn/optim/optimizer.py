"""``Optimizer``: the checks and the all-or-nothing update every optimizer shares.

A step runs in three phases. First every gradient is checked (shape, dtype,
device and, with ``nan_check=True``, finiteness). Then each parameter's new
value and new state are computed into fresh arrays and each weight's
constraint is applied to its new value. Only then are the new values and
state stored. An error in the first two phases therefore leaves every weight
and every piece of optimizer state exactly as it was.
"""

import numbers

from .. import backend
from ..engine.grad_mode import no_grad
from ..engine.tensor import Tensor
from ..profiling import nvtx


def check_number(value, name, low=0.0, high=None, high_inclusive=False):
    """A real number in [low, high] (or [low, high)); bools are not numbers here."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        bound = "" if high is None else f" and {'<=' if high_inclusive else '<'} {high}"
        raise ValueError(f"{name} must be a number >= {low}{bound}, got {value!r}")
    return float(value)


class Optimizer:
    """Holds the parameters, their per-parameter ``state`` and the step logic.
    Subclasses implement ``_update(param, grad, state) -> (new_data, new_state)``
    on raw arrays, without changing ``param`` or ``state``."""

    def __init__(self, params, nan_check=False):
        params = list(params.trainable_weights if hasattr(params, "trainable_weights") else params)
        if not params:
            raise ValueError("params is empty: give the optimizer the weights to train (a "
                             "model has weights once it has been called on an input)")
        seen = set()
        for index, param in enumerate(params):
            if not isinstance(param, Tensor):
                raise TypeError(f"params[{index}] must be a Tensor (a Parameter), "
                                f"got {type(param).__name__}")
            if not param.is_leaf:
                raise ValueError(f"params[{index}] is not a leaf Tensor; optimize leaves only")
            if id(param) in seen:
                raise ValueError(f"params[{index}] appears more than once in params")
            seen.add(id(param))
        self.params = params
        self.nan_check = bool(nan_check)
        self.state = [{} for _ in params]
        self.steps = 0

    def zero_grad(self):
        """Forget the gradients (``.grad = None``), before the next backward."""
        for param in self.params:
            param.grad = None

    def step(self):
        """Update every parameter that has a gradient; all or nothing (see the module).
        Under a profiler the step is the NVTX range ``SGD.step`` (``Adam.step``, ...)."""
        with nvtx.range(f"{type(self).__name__}.step", category="optimizer"), no_grad():
            work = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
            for index, param in work:
                self._check_grad(index, param)
            results = []
            for index, param in work:
                data, state = self._update(param.data, param.grad.data, self.state[index])
                constraint = getattr(param, "constraint", None)
                if constraint is not None:
                    data = constraint(data)
                results.append((index, param, data, state))
            for index, param, data, state in results:
                param.data = data
                self.state[index] = state
            self.steps += 1

    def _check_grad(self, index, param):
        grad = param.grad.data
        name = getattr(param, "name", None)
        label = f"params[{index}]" + (f" ({name!r})" if name else "")
        if tuple(grad.shape) != param.shape:
            raise ValueError(f"{label}: gradient of shape {tuple(grad.shape)} does not match the "
                             f"parameter's shape {param.shape}; nothing was updated")
        if not backend.is_floating(grad.dtype):
            raise TypeError(f"{label}: gradient has dtype {grad.dtype}, expected a floating "
                            f"dtype; nothing was updated")
        if backend.device_of(grad) != param.device:
            raise ValueError(f"{label}: gradient is on {backend.device_of(grad)} but the "
                             f"parameter is on {param.device}; nothing was updated")
        if self.nan_check and not bool(backend.array_module(grad).isfinite(grad).all()):
            raise ValueError(f"{label}: gradient holds NaN or infinity; nothing was updated")

    def _update(self, data, grad, state):
        raise NotImplementedError
