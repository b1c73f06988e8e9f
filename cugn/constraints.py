"""Weight constraints with Keras's names, arguments and configs.

A constraint maps a weight's array (NumPy or CuPy) to the projected array.
cugn's optimizers apply it to each new value in every step (and
``Parameter.apply_constraint`` after a hand-written update); it is not part of
the autodiff graph.
"""

from . import backend
from .serialization import Serializable, deserialize, serialize

_EPSILON = 1e-7  # Keras's backend epsilon, which its constraints divide with


class Constraint(Serializable):
    def __call__(self, weight):
        return weight


def _norms(weight, axis):
    xp = backend.array_module(weight)
    return xp.sqrt((weight * weight).sum(axis=axis, keepdims=True))


class MaxNorm(Constraint):
    """Rescale each slice along ``axis`` whose L2 norm exceeds ``max_value``."""

    def __init__(self, max_value=2, axis=0):
        self.max_value, self.axis = max_value, axis

    def __call__(self, weight):
        xp = backend.array_module(weight)
        norms = _norms(weight, self.axis)
        desired = xp.clip(norms, 0, self.max_value)
        return (weight * (desired / (_EPSILON + norms))).astype(weight.dtype, copy=False)

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class MinMaxNorm(Constraint):
    """Move each slice's L2 norm into [min_value, max_value], by ``rate`` of the way."""

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, weight):
        xp = backend.array_module(weight)
        norms = _norms(weight, self.axis)
        desired = (self.rate * xp.clip(norms, self.min_value, self.max_value)
                   + (1 - self.rate) * norms)
        return (weight * (desired / (_EPSILON + norms))).astype(weight.dtype, copy=False)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


class NonNeg(Constraint):
    """Zero out negative entries."""

    def __call__(self, weight):
        return weight * (weight >= 0).astype(weight.dtype)


class UnitNorm(Constraint):
    """Scale each slice along ``axis`` to unit L2 norm."""

    def __init__(self, axis=0):
        self.axis = axis

    def __call__(self, weight):
        return (weight / (_EPSILON + _norms(weight, self.axis))).astype(weight.dtype, copy=False)

    def get_config(self):
        return {"axis": self.axis}


_CLASSES = {cls.__name__: cls for cls in (MaxNorm, MinMaxNorm, NonNeg, UnitNorm)}
_ALIASES = {"max_norm": "MaxNorm", "min_max_norm": "MinMaxNorm", "non_neg": "NonNeg",
            "unit_norm": "UnitNorm"}


def get(identifier):
    """A constraint from a name, a Keras config dict, an instance or a callable."""
    return deserialize(identifier, _CLASSES, _ALIASES, "constraint")


def serialize_constraint(constraint):
    return serialize(constraint, "keras.constraints")
