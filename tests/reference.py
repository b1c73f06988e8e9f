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
    axes = sorted(a % x.ndim for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
    feature_shape = tuple(x.shape[a] for a in axes)
    channels = int(np.prod(feature_shape))
    groups = channels if groups == -1 else groups
    others = [a for a in range(1, x.ndim) if a not in axes]

    # (N, *others, C) -> (N, *others, G, C/G): the group axis is -2.
    moved = np.transpose(x, [0, *others, *axes])
    moved_shape = moved.shape
    grouped = moved.reshape(x.shape[0], *moved_shape[1:1 + len(others)], groups,
                            channels // groups)
    reduce = tuple(range(1, 1 + len(others))) + (grouped.ndim - 1,)
    mean = grouped.mean(axis=reduce, keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=reduce, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = (grouped - mean) / np.sqrt(var + epsilon)
    # A constant group with epsilon 0 has no spread to normalise: its output is beta.
    normalized = np.where(var + epsilon == 0, 0.0, normalized)

    flat = normalized.reshape(moved_shape[:-len(axes)] + (channels,))
    if gamma is not None:
        flat = flat * np.asarray(gamma, dtype=np.float64).reshape(channels)
    if beta is not None:
        flat = flat + np.asarray(beta, dtype=np.float64).reshape(channels)
    out = flat.reshape(moved_shape)
    return np.transpose(out, np.argsort([0, *others, *axes]))
