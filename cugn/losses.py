"""Loss functions with Keras's names and argument order ``(y_true, y_pred)``.

Each returns the mean over the batch by default (``reduction="mean"``; "sum"
and "none", the per-sample losses, as in Keras). The ``from_logits`` forms
never take the log or exp of anything that can overflow.
"""

import numpy as np

from . import backend
from .engine.tensor import Tensor, as_tensor
from .functions import log, log_softmax, where

_EPSILON = 1e-7  # Keras's backend epsilon, for losses on probabilities
_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_sample, reduction):
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _prediction(y_pred):
    y_pred = as_tensor(y_pred)
    if not backend.is_floating(y_pred.dtype):
        raise TypeError(f"y_pred must be a floating point tensor, got dtype {y_pred.dtype}")
    return y_pred


def _raw(values):
    """Targets or labels (a Tensor, an array or a list) as a NumPy or CuPy array."""
    data = values.data if isinstance(values, Tensor) else values
    return data if backend.is_array(data) else np.asarray(data)


def _target(y_true, y_pred):
    """``y_true`` as an array on ``y_pred``'s device and dtype, shaped like it (no gradient)."""
    data = _raw(y_true)
    if tuple(data.shape) != y_pred.shape:
        raise ValueError(f"y_true has shape {tuple(data.shape)} but y_pred has shape "
                         f"{y_pred.shape}")
    return Tensor(backend.to_device(data, y_pred.device).astype(y_pred.dtype))


def _clipped(probabilities):
    """Probabilities clipped to [eps, 1 - eps]; the gradient is zero where clipped, as in Keras."""
    low = probabilities < _EPSILON
    high = probabilities > 1 - _EPSILON
    return where(low, _EPSILON, where(high, 1 - _EPSILON, probabilities))


def mean_squared_error(y_true, y_pred, reduction="mean"):
    """Per sample, the mean of ``(y_pred - y_true) ** 2`` over the last axis."""
    _check_reduction(reduction)
    y_pred = _prediction(y_pred)
    difference = y_pred - _target(y_true, y_pred)
    return _reduce((difference * difference).mean(axis=-1), reduction)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, reduction="mean"):
    """Cross-entropy of integer class labels ``y_true`` (shape ``y_pred.shape[:-1]``)
    under ``y_pred``: logits when ``from_logits``, else probabilities along the last axis."""
    _check_reduction(reduction)
    y_pred = _prediction(y_pred)
    one_hot = _one_hot(y_true, y_pred)
    if from_logits:
        log_probs = log_softmax(y_pred, axis=-1)
    else:
        log_probs = log(_clipped(y_pred / y_pred.sum(axis=-1, keepdims=True)))
    return _reduce(-(one_hot * log_probs).sum(axis=-1), reduction)


def softmax_cross_entropy(logits, labels, reduction="mean"):
    """Cross-entropy from ``logits`` (..., classes), as ``torch.nn.functional.cross_entropy``
    computes it but with the classes on the last axis (torch's are on axis 1): ``labels``
    are integer classes of shape ``logits.shape[:-1]``, or class probabilities shaped
    like ``logits``."""
    _check_reduction(reduction)
    logits = _prediction(logits)
    labels_data = _raw(labels)
    if np.issubdtype(labels_data.dtype, np.integer):
        return sparse_categorical_crossentropy(labels_data, logits, True, reduction)
    target = _target(labels_data, logits)
    return _reduce(-(target * log_softmax(logits, axis=-1)).sum(axis=-1), reduction)


def binary_crossentropy(y_true, y_pred, from_logits=False, reduction="mean"):
    """Per sample, the mean over the last axis of the binary cross-entropy of targets
    ``y_true`` in [0, 1] under ``y_pred`` (logits when ``from_logits``, else probabilities)."""
    _check_reduction(reduction)
    y_pred = _prediction(y_pred)
    target = _target(y_true, y_pred)
    if from_logits:
        # max(x, 0) - x z + log(1 + exp(-|x|)): exp never sees a positive argument.
        x = y_pred
        positive = where(x.data > 0, x, 0.0)
        elementwise = positive - x * target + log(1 + (-x.abs()).exp())
    else:
        p = _clipped(y_pred)
        elementwise = -(target * log(p) + (1 - target) * log(1 - p))
    return _reduce(elementwise.mean(axis=-1), reduction)


def regularization_loss(model):
    """The sum of ``model.losses`` (the weights' regularization penalties) as a scalar
    Tensor, zero when there are none: add it to the data loss before ``backward``."""
    if not hasattr(model, "losses"):
        raise TypeError(f"model must be a Layer (with .losses), got {type(model).__name__}")
    total = None
    for penalty in model.losses:
        total = penalty if total is None else total + penalty
    if total is not None:
        return total
    # No penalties: a zero where the weights live, so that adding it works on any device.
    weights = model.weights
    device = weights[0].device if weights else "cpu"
    return Tensor(backend.zeros((), np.float32, device))


def _one_hot(labels, y_pred):
    data = _raw(labels)
    classes = y_pred.shape[-1]
    if not np.issubdtype(data.dtype, np.integer):
        raise TypeError(f"y_true must hold integer class labels, got dtype {data.dtype}")
    if tuple(data.shape) != y_pred.shape[:-1]:
        raise ValueError(f"y_true must have shape {y_pred.shape[:-1]} (y_pred without its class "
                         f"axis), got {tuple(data.shape)}")
    if data.size and (int(data.min()) < 0 or int(data.max()) >= classes):
        raise ValueError(f"y_true holds labels in [{int(data.min())}, {int(data.max())}], "
                         f"outside [0, {classes}) for {classes} classes")
    data = backend.to_device(data, y_pred.device)
    xp = backend.array_module(data)
    return Tensor(xp.eye(classes, dtype=y_pred.dtype)[data])


__all__ = ["binary_crossentropy", "mean_squared_error", "regularization_loss",
           "softmax_cross_entropy", "sparse_categorical_crossentropy"]
