"""GroupNorm forward and backward on NumPy arrays: the CPU path.

Both work on the ``(N, M, G, D, S)`` view of ``layout.py`` with vectorised
NumPy and no Python loop over groups or channels. The batch is cut into
chunks of a few hundred kilobytes: every pass over a chunk after the first
hits the cache, so the several NumPy passes cost little more than one pass
over memory, and the chunks run on a thread pool (NumPy releases the GIL).

Statistics take two passes over each chunk: the mean (summed from values
shifted by a pivot), then the squares of the values centred on it, so the
variance stays accurate when |mean| >> std or when one value lies far from
the rest, even with float32 accumulators. Every sum runs over blocks of at most
BLOCK values, whose sums are added in float64, so that float32 keeps its digits
on groups of millions of values.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import compute_dtype
from ..profiling.nvtx import kernel_range

CHUNK_BYTES = 1 << 19  # per chunk of samples: small enough to stay in a core's L2 cache
BLOCK = 256  # values summed one after another; the sums of blocks are added in float64
_pool = None


def forward(x, gamma, beta, layout, epsilon):
    """Return ``y`` (x's dtype), and ``mean`` and ``rstd`` of shape (N, G) in the compute dtype."""
    with kernel_range("group_norm_fwd_numpy", x.dtype):  # kernel:group_norm_fwd_numpy<float32>
        return _forward(x, gamma, beta, layout, epsilon)


def _forward(x, gamma, beta, layout, epsilon):
    dtype = compute_dtype(x.dtype)
    if x.size == 0:
        return _empty_forward(x, layout, dtype, epsilon)
    x5 = layout.to_view(x)
    y5 = np.empty(x5.shape, x.dtype)
    mean = np.empty((layout.batch, layout.groups), dtype)
    rstd = np.empty_like(mean)
    gamma5 = None if gamma is None else layout.params_view(gamma).astype(dtype, copy=False)
    beta5 = None if beta is None else layout.params_view(beta).astype(dtype, copy=False)
    count = dtype.type(max(layout.group_size, 1))
    epsilon = dtype.type(epsilon)
    depth = layout.view[3]

    def run(chunk):
        xc = x5[chunk]
        # Two passes: the mean, then the squares of the values centred on it. The mean is
        # summed from values shifted by a pivot (the mean of the group's values at the first
        # position of M and S), so that it cancels little when |mean| >> std.
        pivot = xc[:, 0, :, :, 0].astype(dtype).mean(axis=-1)
        centered = np.subtract(xc, _per_group(pivot, depth), dtype=dtype)
        shift = _group_sums(centered, dtype) / count  # mean - pivot
        centered -= _per_group(shift, depth)
        var = _channel_dot(centered, centered).reshape(shift.shape + (depth,)).sum(-1) / count
        mean[chunk] = pivot + shift
        rstd[chunk] = _reciprocal_sqrt(var + epsilon)
        # y = (x - mean) * rstd * gamma + beta = centered * scale + beta.
        scale = _per_group(rstd[chunk], depth)
        if gamma5 is not None:
            scale = scale * gamma5
        out = y5[chunk] if y5.dtype == dtype else centered
        np.multiply(centered, scale, out=out)
        if beta5 is not None:
            out += beta5
        if out is centered:
            y5[chunk] = centered

    _run_chunks(layout, dtype, run)
    return layout.from_view(y5), mean, rstd


def backward(x, dy, gamma, mean, rstd, layout):
    """Return ``dx`` (x's dtype), ``dgamma`` and ``dbeta`` (feature shape, compute dtype).

    With xhat = (x - mean) * rstd and g = gamma * dy, per group of n values:
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). Only the per-channel
    sums of dy and dy * (x - mean) are needed, so dx is c1 * dy + c2 * (x - mean) + c3.
    """
    with kernel_range("group_norm_bwd_numpy", x.dtype):  # kernel:group_norm_bwd_numpy<float32>
        return _backward(x, dy, gamma, mean, rstd, layout)


def _backward(x, dy, gamma, mean, rstd, layout):
    dtype = compute_dtype(x.dtype)
    if x.size == 0:
        zeros = np.zeros(layout.feature_shape, dtype)
        return np.empty(x.shape, x.dtype), zeros, zeros.copy()
    groups = layout.groups
    count = dtype.type(max(layout.group_size, 1))
    x5, dy5 = layout.to_view(x), layout.to_view(dy)
    dx5 = np.empty(x5.shape, x.dtype)
    mean = mean.astype(dtype, copy=False)
    rstd = rstd.astype(dtype, copy=False)
    weight = (np.ones((groups, 1), dtype) if gamma is None
              else gamma.reshape(groups, -1).astype(dtype, copy=False))
    depth = layout.view[3]
    partials = {}  # chunk start -> (dgamma, dbeta) of that chunk, summed in order below

    def run(chunk):
        r = rstd[chunk]
        dyc = dy5[chunk].astype(dtype, copy=False)
        centered = np.subtract(x5[chunk], _per_group(mean[chunk], depth), dtype=dtype)
        # The saved mean is rounded to the compute dtype; when |mean| >> std that rounding
        # is a visible part of x - mean. Its mean over the group, `residual`, is computed
        # exactly enough from the small centred values and corrected for below.
        residual = _group_sums(centered, dtype) / count  # (n, G)
        sum_dy = _channel_sums(dyc, dtype)  # (n, G, D)
        sum_dy_centered = (_channel_dot(dyc, centered).reshape(-1, groups, depth)
                           - residual[:, :, None] * sum_dy)
        partials[chunk.start] = ((sum_dy_centered * r[:, :, None]).sum(axis=0),
                                 sum_dy.sum(axis=0))
        mean_g = (weight * sum_dy).sum(axis=-1) / count  # (n, G)
        mean_g_xhat = (weight * sum_dy_centered).sum(axis=-1) * r / count
        c1 = (r[:, :, None] * weight)[:, None, :, :, None]
        # c2 * (x - mean - residual) + c3, with c2 = -r^2 mean(g xhat) and c3 = -r mean(g).
        c2 = -r * r * mean_g_xhat
        centered *= _per_group(c2, depth)
        centered += _per_group(-r * mean_g - c2 * residual, depth)
        out = dx5[chunk] if dx5.dtype == dtype else np.empty_like(centered)
        np.multiply(dyc, c1, out=out)
        out += centered
        if out.dtype != dx5.dtype:
            dx5[chunk] = out

    _run_chunks(layout, dtype, run)
    shape = (groups, layout.channels // groups)
    dgamma, dbeta = np.zeros(shape, dtype), np.zeros(shape, dtype)
    for start in sorted(partials):
        dgamma += partials[start][0]
        dbeta += partials[start][1]
    return (layout.from_view(dx5), dgamma.reshape(layout.feature_shape),
            dbeta.reshape(layout.feature_shape))


def _empty_forward(x, layout, dtype, epsilon):
    """An empty batch, or groups with no values: mean 0 and variance 0."""
    shape = (layout.batch, layout.groups)
    return (np.empty(x.shape, x.dtype), np.zeros(shape, dtype),
            np.full(shape, _reciprocal_sqrt(np.asarray(epsilon, dtype))))


def _channel_dot(a, b):
    """Per-channel sums of a * b over M and S for (n, M, G, D, S) chunks: shape (n, G*D)."""
    return _blocked_sums(lambda p, q: np.einsum("nabkcd,nabkcd->nakc", p, q), a, b)


def _channel_sums(a, dtype):
    """Sums of a (n, M, G, D, S) chunk over M and S: shape (n, G, D)."""
    n, _, g, d, _ = a.shape
    return _blocked_sums(lambda p: p.sum(axis=(2, 5), dtype=dtype), a).reshape(n, g, d)


def _group_sums(a, dtype):
    """Sums of a (n, M, G, D, S) chunk over M, D and S: shape (n, G)."""
    return _channel_sums(a, dtype).sum(axis=-1)


def _blocked_sums(reduce, *arrays):
    """Per-channel sums over M and S of (n, M, G, D, S) chunks, as (n, G*D) in their dtype.

    NumPy adds along a strided axis, and einsum along any axis, one value after
    the other, so a float32 sum of a million values would lose about three digits.
    Instead M and S are cut into blocks of at most BLOCK values each, ``reduce``
    sums each block (it gets 6-D views (n, blocks of M, M per block, G*D, blocks of
    S, S per block) and returns (n, blocks of M, G*D, blocks of S)), and the block
    sums are added in float64: the error stays that of one block's sum.
    """
    n, m, g, d, s = arrays[0].shape
    arrays = [a.reshape(n, m, g * d, s) for a in arrays]
    in_s = min(s, BLOCK)
    in_m = max(1, BLOCK // in_s)
    total = None
    for m_pieces in _split(arrays, 1, in_m):
        for pieces in _split(m_pieces, 4, in_s):
            partial = reduce(*pieces).sum(axis=(1, 3), dtype=np.float64)
            total = partial if total is None else total + partial
    return total.astype(arrays[0].dtype, copy=False)


def _split(arrays, axis, block):
    """Each array's ``axis`` cut into (count, block), plus (1, rest) when block does
    not divide it: a list of same-shaped tuples of views, one axis longer than given."""
    length = arrays[0].shape[axis]
    block = min(block, length)
    count, rest = divmod(length, block)
    index = (slice(None),) * axis
    head = count * block
    pieces = [tuple(a[index + (slice(0, head),)].reshape(
        a.shape[:axis] + (count, block) + a.shape[axis + 1:]) for a in arrays)]
    if rest:
        pieces.append(tuple(a[index + (slice(head, None),)].reshape(
            a.shape[:axis] + (1, rest) + a.shape[axis + 1:]) for a in arrays))
    return pieces


def _per_group(values, channels_per_group):
    """(n, G) values repeated per channel, as (n, 1, G, D, 1) to broadcast against a chunk.

    Broadcasting (n, 1, G, 1, 1) directly would make NumPy's inner loop only D
    long (several times slower); per-channel values let it run over whole rows.
    """
    return np.repeat(values[:, :, None], channels_per_group, axis=2)[:, None, :, :, None]


def _reciprocal_sqrt(value):
    """1 / sqrt(value), and 0 where value is 0 (a constant group with epsilon 0); NaN
    (a group holding NaN or infinity) stays NaN."""
    zero = value == 0
    return np.where(zero, 0, 1 / np.sqrt(np.where(zero, 1, value))).astype(value.dtype)


def _run_chunks(layout, dtype, run):
    """Call ``run(slice)`` for chunks of the batch, on the thread pool when there are several."""
    sample_bytes = max(layout.group_size * layout.groups * dtype.itemsize, 1)
    per_chunk = max(1, CHUNK_BYTES // sample_bytes)
    chunks = [slice(start, min(start + per_chunk, layout.batch))
              for start in range(0, layout.batch, per_chunk)]
    if len(chunks) <= 1:
        for chunk in chunks:
            run(chunk)
        return
    for future in [_thread_pool().submit(run, chunk) for chunk in chunks]:
        future.result()


def _thread_pool():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                   thread_name_prefix="cugn-group-norm")
    return _pool
