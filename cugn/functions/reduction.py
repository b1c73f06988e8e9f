"""Reductions (sum, mean, var, max) and the softmax family."""

import numbers
import operator

from .. import backend
from ..engine.function import Function
from ..engine.tensor import Tensor, as_tensor
from .shape import alias, broadcast_to


def _axes(axis, ndim):
    """``axis`` (an int or a tuple/list of ints) as a sorted tuple of non-negative axes;
    all axes for None."""
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    normalized = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a tensor of {ndim} dimensions")
        normalized.append(int(a) % ndim)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"axis {axis!r} names an axis twice")
    return tuple(sorted(normalized))


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else size for i, size in enumerate(shape))


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axes, keepdims):
        ctx.input_shape = a.shape
        ctx.axes = axes
        return a.sum(axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.reshape(_kept_shape(ctx.input_shape, ctx.axes))
        return broadcast_to(grad, ctx.input_shape), None, None


class Max(Function):
    """The maximum; ties share the gradient equally, like PyTorch's ``amax``."""

    @staticmethod
    def forward(ctx, a, axes, keepdims):
        kept = a.max(axis=axes, keepdims=True)
        is_max = (a == kept).astype(a.dtype)
        ctx.share = is_max / is_max.sum(axis=axes, keepdims=True)
        ctx.kept_shape = kept.shape
        return kept if keepdims else kept.reshape(
            tuple(size for i, size in enumerate(a.shape) if i not in axes)
        )

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.kept_shape) * Tensor(ctx.share), None, None


class Softmax(Function):
    @staticmethod
    def forward(ctx, a, axis):
        xp = backend.array_module(a)
        e = xp.exp(a - a.max(axis=axis, keepdims=True))
        result = e / e.sum(axis=axis, keepdims=True)
        ctx.axis = axis
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        weighted = grad * result
        return weighted - result * weighted.sum(axis=ctx.axis, keepdims=True), None


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, a, axis):
        xp = backend.array_module(a)
        shifted = a - a.max(axis=axis, keepdims=True)
        result = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.axis = axis
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        return grad - result.exp() * grad.sum(axis=ctx.axis, keepdims=True), None


# Every reduction takes NumPy's axis= and keepdims= or PyTorch's dim= and keepdim=.


def sum(a, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001 - its name
    a = as_tensor(a)
    axis, keepdims = _axis_keepdims(axis, keepdims, dim, keepdim)
    return Sum.apply(a, _axes(axis, a.ndim), keepdims)


def mean(a, axis=None, keepdims=None, *, dim=None, keepdim=None):
    a = as_tensor(a)
    axis, keepdims = _axis_keepdims(axis, keepdims, dim, keepdim)
    axes = _axes(axis, a.ndim)
    count = 1
    for i in axes:
        count *= a.shape[i]
    return sum(a, axes, keepdims) * (1.0 / count if count else float("nan"))


def var(a, axis=None, keepdims=None, ddof=None, *, dim=None, keepdim=None, correction=None):
    """Variance by the two-pass formula, biased by default like NumPy and Keras (PyTorch's
    default is ``correction=1``); ``ddof`` and ``correction`` are the same argument."""
    a = as_tensor(a)
    axis, keepdims = _axis_keepdims(axis, keepdims, dim, keepdim)
    ddof = alias("ddof", ddof, "correction", correction, 0)
    axes = _axes(axis, a.ndim)
    count = 1
    for i in axes:
        count *= a.shape[i]
    centered = a - mean(a, axes, keepdims=True)
    divisor = count - ddof
    return sum(centered * centered, axes, keepdims) * (1.0 / divisor if divisor > 0 else float("nan"))


def max(a, axis=None, keepdims=None, *, dim=None, keepdim=None):  # noqa: A001 - its name
    """The largest values over ``axis``: PyTorch's ``amax`` (no indices are returned)."""
    a = as_tensor(a)
    axis, keepdims = _axis_keepdims(axis, keepdims, dim, keepdim)
    axes = _axes(axis, a.ndim)
    if any(a.shape[i] == 0 for i in axes):
        raise ValueError(f"max over an empty axis: shape {a.shape}, axis {axis!r}")
    return Max.apply(a, axes, keepdims)


def softmax(a, axis=None, *, dim=None):
    a = as_tensor(a)
    axis = alias("axis", axis, "dim", dim, -1)
    return Softmax.apply(a, _axes(operator.index(axis), a.ndim)[0])


def log_softmax(a, axis=None, *, dim=None):
    a = as_tensor(a)
    axis = alias("axis", axis, "dim", dim, -1)
    return LogSoftmax.apply(a, _axes(operator.index(axis), a.ndim)[0])


def _axis_keepdims(axis, keepdims, dim, keepdim):
    return alias("axis", axis, "dim", dim, None), bool(alias("keepdims", keepdims, "keepdim",
                                                             keepdim, False))
