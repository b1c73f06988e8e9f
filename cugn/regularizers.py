"""Weight regularizers with Keras's names, arguments and configs.

A regularizer maps a weight Tensor to a scalar Tensor penalty, built from
Tensor operations so that it is differentiable; layers list the penalties of
their weights in ``layer.losses`` and the training loop adds them to its loss.
"""

from . import backend
from .engine.tensor import Tensor, as_tensor
from .serialization import Serializable, deserialize, serialize


class Regularizer(Serializable):
    def __call__(self, weight):
        raise NotImplementedError


def _factor(value, name):
    value = float(value)
    if not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return value


class L1(Regularizer):
    def __init__(self, l1=0.01):
        self.l1 = _factor(l1, "l1")

    def __call__(self, weight):
        return self.l1 * as_tensor(weight).abs().sum()

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    def __init__(self, l2=0.01):
        self.l2 = _factor(l2, "l2")

    def __call__(self, weight):
        weight = as_tensor(weight)
        return self.l2 * (weight * weight).sum()

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _factor(l1, "l1")
        self.l2 = _factor(l2, "l2")

    def __call__(self, weight):
        weight = as_tensor(weight)
        return self.l1 * weight.abs().sum() + self.l2 * (weight * weight).sum()

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Penalises non-orthogonal rows (or columns) of a 2-D weight: the mean
    absolute cosine between distinct pairs, times ``factor``."""

    def __init__(self, factor=0.01, mode="rows"):
        if mode not in ("rows", "columns"):
            raise ValueError(f"mode must be 'rows' or 'columns', got {mode!r}")
        self.factor = _factor(factor, "factor")
        self.mode = mode

    def __call__(self, weight):
        weight = as_tensor(weight)
        if weight.ndim != 2:
            raise ValueError(f"OrthogonalRegularizer needs a 2-D weight, got shape {weight.shape}")
        axis = 1 if self.mode == "rows" else 0
        unit = weight / ((weight * weight).sum(axis=axis, keepdims=True) + 1e-12).sqrt()
        product = unit @ unit.T if self.mode == "rows" else unit.T @ unit
        size = product.shape[0]
        xp = backend.array_module(weight.data)
        off_diagonal = product * Tensor(1 - xp.eye(size, dtype=weight.dtype))
        pairs = max(size * (size - 1) / 2, 1)
        return self.factor * 0.5 * off_diagonal.abs().sum() / pairs

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode}


_CLASSES = {cls.__name__: cls for cls in (L1, L2, L1L2, OrthogonalRegularizer)}
_ALIASES = {"l1": "L1", "l2": "L2", "l1_l2": "L1L2",
            "orthogonal_regularizer": "OrthogonalRegularizer"}


def get(identifier):
    """A regularizer from a name, a Keras config dict, an instance or a callable."""
    return deserialize(identifier, _CLASSES, _ALIASES, "regularizer")


def serialize_regularizer(regularizer):
    return serialize(regularizer, "keras.regularizers")
