"""Group normalization: argument checks, the differentiable op, and its functional form.

The forward and the first-order backward run on the array-level
implementations in ``cugn.kernels`` (NumPy or CUDA). Under
``create_graph=True`` the backward is the same analytic formula written with
Tensor operations, with the statistics recomputed from x, so that it can be
differentiated again to any order.

A fused activation (silu/swish, relu, gelu) is applied by the CUDA kernels in
the same pass as the normalisation, and its input recomputed in the backward;
on the CPU the op is followed by the activation's own op, which is the same
composition a user would write.
"""

import numbers
import operator

import numpy as np

from .. import backend, kernels
from ..engine.function import Function
from ..engine.grad_mode import is_grad_enabled
from ..engine.tensor import Tensor, as_tensor
from ..kernels.fused_activation import check_activation
from ..kernels.layout import GroupLayout
from .elementwise import (gelu, gelu_derivative, relu, relu_derivative, silu,
                          silu_derivative)

# The activations by fused name: their ops (the CPU composition) and their
# derivatives as recorded ops (the fused op's create_graph backward).
_ACTIVATIONS = {"silu": silu, "relu": relu, "gelu": gelu}
_DERIVATIVES = {"silu": silu_derivative, "relu": relu_derivative, "gelu": gelu_derivative}

# ------------------------------------------------------------------ argument checks


def check_groups(groups):
    """A positive int or -1 (one group per channel); bools, floats and strings are errors."""
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or not (
            groups > 0 or groups == -1):
        raise ValueError(
            f"groups must be a positive integer or -1 (one group per channel), got {groups!r}"
        )
    return int(groups)


def check_axis(axis):
    """An int or a non-empty list/tuple of distinct ints; returned as int or tuple."""
    if isinstance(axis, (list, tuple)):
        if not axis:
            raise ValueError("axis must name at least one axis, got an empty sequence")
        items = tuple(_axis_int(a) for a in axis)
        if len(set(items)) != len(items):
            raise ValueError(f"axis must not repeat an axis, got {axis!r}")
        return items
    return _axis_int(axis)


def _axis_int(axis):
    if isinstance(axis, bool):
        raise TypeError(f"axis must be an int or a list/tuple of ints, got {axis!r}")
    try:
        return operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an int or a list/tuple of ints, got {axis!r}") from None


def check_epsilon(epsilon):
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not (
            0 <= epsilon < float("inf")):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    return float(epsilon)


def feature_axes(axis, shape):
    """The sorted non-negative feature axes of ``axis`` for an input of ``shape``."""
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(
            f"group normalization needs an input with a batch axis and a feature axis "
            f"(rank >= 2), got shape {tuple(shape)}"
        )
    axes = axis if isinstance(axis, tuple) else (axis,)
    result = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an input of rank {ndim} "
                             f"(shape {tuple(shape)})")
        if a % ndim == 0:
            raise ValueError(f"axis {a} is the batch axis of an input of shape "
                             f"{tuple(shape)}; statistics are per sample, so it cannot be a "
                             f"feature axis")
        result.append(a % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"axis {axis!r} names the same axis twice for rank {ndim}")
    return tuple(sorted(result))


def resolve_groups(groups, channels, shape=None, axes=None):
    """The group count for ``channels`` channels (``-1`` becomes ``channels``). Given the
    input's ``shape`` and feature ``axes``, an error also says when the input's other
    end would fit (a channels-first input normalised over ``axis=-1``)."""
    if channels == 0:
        raise ValueError("group normalization needs at least one channel on the feature "
                         "axes, got 0")
    if groups == -1:
        return channels
    if groups > channels:
        raise ValueError(
            f"Number of groups ({groups}) cannot be more than the number of channels "
            f"({channels}).{_other_end_hint(groups, shape, axes)}"
        )
    if channels % groups:
        raise ValueError(
            f"Number of channels ({channels}) must be a multiple of the number of groups "
            f"({groups}).{_other_end_hint(groups, shape, axes)}"
        )
    return groups


def _other_end_hint(groups, shape, axes):
    """" The input ... has 32 channels on axis 1: channels-first inputs need axis=1." when
    the feature axis is one end of a rank >= 3 input and the other end fits the groups."""
    if shape is None or len(shape) < 3 or axes not in ((1,), (len(shape) - 1,)):
        return ""
    other, layout = (1, "channels-first") if axes == (len(shape) - 1,) else (-1, "channels-last")
    size = shape[other]
    if size is None or size < groups or size % groups:
        return ""
    return (f" The input of shape {tuple(shape)} has {size} channels on axis {other}: "
            f"{layout} inputs need axis={other}.")


# ------------------------------------------------------------------ the op


class GroupNorm(Function):
    """GroupNorm, with ``activation`` (a fused name or None) applied to its output:
    fused on CUDA arrays only (``group_norm`` composes on the CPU)."""

    @staticmethod
    def forward(ctx, x, gamma, beta, layout, epsilon, activation):
        y, mean, rstd = kernels.forward(x, gamma, beta, layout, epsilon, activation)
        ctx.layout, ctx.epsilon, ctx.activation = layout, epsilon, activation
        # beta is needed again only to recompute the activation's input.
        ctx.save_for_backward(x, gamma, None if activation is None else beta, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, gamma, beta, mean, rstd = ctx.saved_tensors
        if is_grad_enabled():
            dx, dgamma, dbeta = _differentiable_backward(x, dy, gamma, beta, ctx.layout,
                                                         ctx.epsilon, ctx.activation)
        else:
            data = lambda t: None if t is None else t.data  # noqa: E731
            arrays = kernels.backward(x.data, dy.data, data(gamma), mean.data, rstd.data,
                                      ctx.layout, data(beta), ctx.activation)
            dx, dgamma, dbeta = (Tensor(a) for a in arrays)
        needs = ctx.needs_input_grad
        return (dx if needs[0] else None, dgamma if needs[1] else None,
                dbeta if needs[2] else None, None, None, None)


def _differentiable_backward(x, dy, gamma, beta, layout, epsilon, activation):
    """The analytic backward as recorded Tensor ops (for create_graph=True)."""
    dtype = backend.compute_dtype(x.dtype)
    reduced = (1, 3, 4)
    x5 = layout.to_view(x).to(dtype=dtype)
    dy5 = layout.to_view(dy).to(dtype=dtype)
    # Shifting by a constant of each group first (its first value) keeps the mean
    # accurate when |mean| >> std; the shift cancels, so the gradients are unchanged.
    shifted = x5 - x5[:, :1, :, :1, :1].detach()
    centered = shifted - shifted.mean(axis=reduced, keepdims=True)
    rstd = ((centered * centered).mean(axis=reduced, keepdims=True) + epsilon) ** -0.5
    xhat = centered * rstd
    if activation is not None:
        dy5 = dy5 * _DERIVATIVES[activation](_affine(xhat, gamma, beta, layout, dtype))
    g = dy5 if gamma is None else dy5 * layout.params_view(gamma).to(dtype=dtype)
    dx5 = rstd * (g - g.mean(axis=reduced, keepdims=True)
                  - xhat * (g * xhat).mean(axis=reduced, keepdims=True))
    dx = layout.from_view(dx5).to(dtype=x.dtype)
    dgamma = (dy5 * xhat).sum(axis=(0, 1, 4)).reshape(layout.feature_shape)
    dbeta = dy5.sum(axis=(0, 1, 4)).reshape(layout.feature_shape)
    return dx, dgamma, dbeta


def _affine(xhat, gamma, beta, layout, dtype):
    """z = xhat*gamma + beta in the (N, M, G, D, S) view: the activation's input."""
    z = xhat if gamma is None else xhat * layout.params_view(gamma).to(dtype=dtype)
    return z if beta is None else z + layout.params_view(beta).to(dtype=dtype)


def group_norm(x, groups, gamma=None, beta=None, axis=-1, epsilon=1e-3, activation=None):
    """Group normalization of ``x`` over ``groups`` groups of the feature ``axis``.

    Per sample and group, the values are normalised by their mean and biased
    variance (over the group's channels and every non-batch axis), then scaled
    by ``gamma`` and shifted by ``beta`` (shaped like the feature axes).
    float16/bfloat16 compute in float32, float64 in float64; the output has x's
    dtype. ``axis`` may be a list/tuple of feature axes. Keras's numbers.

    ``activation`` ("silu" or its alias "swish", "relu", "gelu": Keras's, gelu
    exact) is applied to the result: on CUDA in the same kernels, with no
    extra tensor kept for the backward (it recomputes the activation's input);
    on the CPU as the activation op after the normalisation.
    """
    x = as_tensor(x)
    if not backend.is_floating(x.dtype):
        raise TypeError(f"x must be a floating point tensor, got dtype {x.dtype}")
    groups = check_groups(groups)
    axes = feature_axes(check_axis(axis), x.shape)
    epsilon = check_epsilon(epsilon)
    activation = check_activation(activation)
    shape = tuple(x.shape[a] for a in axes)
    channels = int(np.prod(shape))
    layout = GroupLayout(x.shape, axes, resolve_groups(groups, channels, x.shape, axes))
    gamma = _check_param(gamma, "gamma", shape, x)
    beta = _check_param(beta, "beta", shape, x)
    if activation is not None and not backend.is_cupy_array(x.data):
        return _ACTIVATIONS[activation](GroupNorm.apply(x, gamma, beta, layout, epsilon, None))
    return GroupNorm.apply(x, gamma, beta, layout, epsilon, activation)


def _check_param(param, name, shape, x):
    if param is None:
        return None
    param = as_tensor(param)
    if param.shape != shape:
        raise ValueError(f"{name} must have the shape of the feature axes {shape}, "
                         f"got shape {param.shape}")
    if not backend.is_floating(param.dtype):
        raise TypeError(f"{name} must be a floating point tensor, got dtype {param.dtype}")
    if param.device != x.device:
        raise ValueError(f"{name} is on {param.device} but x is on {x.device}")
    return param
