"""GroupNorm forward and backward on NumPy arrays: the CPU path.

Both work on the ``(N, M, G, D, S)`` view of ``layout.py`` with vectorised
NumPy, no Python loop over groups or channels, and one full-size temporary
that ends up as the result. Statistics use the corrected two-pass algorithm:
a first mean, then the sums of the values centred on it, so the variance stays
accurate when |mean| >> std even with float32 accumulators.
"""

import numpy as np

from ..backend import compute_dtype

REDUCED = (1, 3, 4)  # M, D and S: everything but the batch and the group


def forward(x, gamma, beta, layout, epsilon):
    """Return ``y`` (x's dtype), and ``mean`` and ``rstd`` of shape (N, G) in the compute dtype."""
    dtype = compute_dtype(x.dtype)
    x5 = layout.to_view(x)
    count = max(layout.group_size, 1)

    first_mean = x5.sum(axis=REDUCED, dtype=dtype, keepdims=True) / dtype.type(count)
    centered = np.subtract(x5, first_mean, dtype=dtype)
    correction = centered.sum(axis=REDUCED, keepdims=True) / dtype.type(count)
    squares = np.einsum("nmgds,nmgds->ng", centered, centered).reshape(correction.shape)
    var = np.maximum(squares / dtype.type(count) - correction * correction, 0)
    rstd = _reciprocal_sqrt(var + dtype.type(epsilon))

    # y = (x - mean) * rstd * gamma + beta, computed in place on the centred values.
    scale = rstd if gamma is None else rstd * layout.params_view(gamma).astype(dtype, copy=False)
    offset = -correction * scale
    if beta is not None:
        offset = offset + layout.params_view(beta).astype(dtype, copy=False)
    centered *= scale
    centered += offset
    y = layout.from_view(centered).astype(x.dtype, copy=False)
    groups_shape = (layout.batch, layout.groups)
    return y, (first_mean + correction).reshape(groups_shape), rstd.reshape(groups_shape)


def backward(x, dy, gamma, mean, rstd, layout):
    """Return ``dx`` (x's dtype), ``dgamma`` and ``dbeta`` (feature shape, compute dtype).

    With xhat = (x - mean) * rstd and g = gamma * dy, per group of n values:
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). Only the per-channel
    sums of dy and dy * (x - mean) are needed, so dx is c1 * dy + c2 * (x - mean) + c3.
    """
    dtype = compute_dtype(x.dtype)
    n, groups = layout.batch, layout.groups
    count = dtype.type(max(layout.group_size, 1))
    x5 = layout.to_view(x)
    dy5 = layout.to_view(dy).astype(dtype, copy=False)
    mean = mean.astype(dtype, copy=False)
    rstd = rstd.astype(dtype, copy=False)

    centered = np.subtract(x5, mean.reshape(n, 1, groups, 1, 1), dtype=dtype)
    sum_dy = dy5.sum(axis=(1, 4))  # (N, G, D)
    sum_dy_centered = np.einsum("nmgds,nmgds->ngd", dy5, centered)
    dbeta = sum_dy.sum(axis=0)
    dgamma = (sum_dy_centered * rstd[:, :, None]).sum(axis=0)

    weight = (np.ones((groups, 1), dtype) if gamma is None
              else gamma.reshape(groups, -1).astype(dtype, copy=False))
    mean_g = (weight * sum_dy).sum(axis=-1) / count  # (N, G)
    mean_g_xhat = (weight * sum_dy_centered).sum(axis=-1) * rstd / count

    c1 = (rstd[:, :, None] * weight)[:, None, :, :, None]
    c2 = (-rstd * rstd * mean_g_xhat)[:, None, :, None, None]
    c3 = (-rstd * mean_g)[:, None, :, None, None]
    dx5 = dy5 * c1
    centered *= c2
    dx5 += centered
    dx5 += c3
    dx = layout.from_view(dx5).astype(x.dtype, copy=False)
    return dx, dgamma.reshape(layout.feature_shape), dbeta.reshape(layout.feature_shape)


def _reciprocal_sqrt(value):
    """1 / sqrt(value), and 0 where value is 0 (a constant group with epsilon 0)."""
    positive = value > 0
    return np.where(positive, 1 / np.sqrt(np.where(positive, value, 1)), 0).astype(value.dtype)
