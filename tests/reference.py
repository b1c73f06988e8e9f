"""An independent float64 group normalization, written straight from the
definition (features moved last, split into groups), to test cugn against."""

import numpy as np


def group_norm_reference(x, groups, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """Group normalization of ``x`` in float64, returned in float64.

    ``axis`` is an int or a list of feature axes (taken together, sorted, in
    row-major order). Statistics are per sample and group, over the group's
    features and every other non-batch axis; the variance is biased.
    """
    x = np.asarray(x, dtype=np.float64)
    grouped, moved_shape, feature_shape, reduce, restore = _grouped(x, groups, axis)
    mean = grouped.mean(axis=reduce, keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=reduce, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = (grouped - mean) / np.sqrt(var + epsilon)
    # A constant group with epsilon 0 has no spread to normalise: its output is beta.
    normalized = np.where(var + epsilon == 0, 0.0, normalized)

    channels = int(np.prod(feature_shape))
    flat = normalized.reshape(grouped.shape[:-2] + (channels,))
    if gamma is not None:
        flat = flat * np.asarray(gamma, dtype=np.float64).reshape(channels)
    if beta is not None:
        flat = flat + np.asarray(beta, dtype=np.float64).reshape(channels)
    return restore(flat.reshape(moved_shape))


def group_norm_backward_reference(x, dy, groups, gamma=None, axis=-1, epsilon=1e-3):
    """(dx, dgamma, dbeta) of ``group_norm_reference`` for the upstream gradient ``dy``,
    in float64, from the textbook formula: with xhat = (x - mean) / sqrt(var + epsilon)
    and g = gamma * dy, per group dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var +
    epsilon), dgamma = sum(dy * xhat) and dbeta = sum(dy) over all but the channel."""
    grouped, moved_shape, feature_shape, reduce, restore = _grouped(
        np.asarray(x, np.float64), groups, axis)
    dy_grouped = _grouped(np.asarray(dy, np.float64), groups, axis)[0]
    mean = grouped.mean(axis=reduce, keepdims=True)
    rstd = 1 / np.sqrt(((grouped - mean) ** 2).mean(axis=reduce, keepdims=True) + epsilon)
    xhat = (grouped - mean) * rstd
    weight = 1.0 if gamma is None else np.asarray(gamma, np.float64).reshape(
        grouped.shape[-2:])
    g = dy_grouped * weight
    dx = rstd * (g - g.mean(axis=reduce, keepdims=True)
                 - xhat * (g * xhat).mean(axis=reduce, keepdims=True))
    per_channel = tuple(range(grouped.ndim - 2))
    dgamma = (dy_grouped * xhat).sum(axis=per_channel).reshape(feature_shape)
    dbeta = dy_grouped.sum(axis=per_channel).reshape(feature_shape)
    return restore(dx.reshape(moved_shape)), dgamma, dbeta


def _grouped(x, groups, axis):
    """x with the feature axes moved last and split into (G, C/G), the moved shape, the
    feature shape, the axes statistics reduce over, and the function that undoes the move."""
    axes = sorted(a % x.ndim for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
    feature_shape = tuple(x.shape[a] for a in axes)
    channels = int(np.prod(feature_shape))
    groups = channels if groups == -1 else groups
    others = [a for a in range(1, x.ndim) if a not in axes]
    # (N, *others, C) -> (N, *others, G, C/G): the group axis is -2.
    moved = np.transpose(x, [0, *others, *axes])
    grouped = moved.reshape(x.shape[0], *moved.shape[1:1 + len(others)], groups,
                            channels // groups)
    reduce = tuple(range(1, 1 + len(others))) + (grouped.ndim - 1,)
    order = np.argsort([0, *others, *axes])
    return grouped, moved.shape, feature_shape, reduce, lambda out: np.transpose(out, order)
