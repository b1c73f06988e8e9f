"""GroupNorm forward and backward compiled by Numba: the CPU path when Numba is
installed (the ``numba`` extra), for float16, float32 and float64.

The same ``forward`` and ``backward`` as ``group_norm_numpy``, on the same
``(N, M, G, D, S)`` view, seen with K = G*D channels as ``(N, M, K)`` when
S = 1 (channels-last) or ``(N, K, S)`` when M = 1 (channels-first); other views
stay on NumPy. Each pass over a sample is one fused loop, and the samples run in
parallel (``prange``). As on NumPy, the statistics take two passes (the mean,
then the squares of the values centred on it), so the variance stays exact when
|mean| >> std, and every sum adds blocks of BLOCK values in the compute dtype
and the blocks' sums in float64, so float32 keeps its digits on groups of any
size. float16 is converted to float32 on the way in and back on the way out.
This module imports Numba: ``cugn.kernels.numba_kernels()`` imports it on the
first call, when Numba is installed.
"""

import numpy as np
from numba import njit, prange

from ..backend import compute_dtype
from ..profiling.nvtx import kernel_range

DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
BLOCK = 256  # values summed in the compute dtype; the sums of blocks are added in float64


def supports(x, layout):
    """True for the dtypes and the two layouts compiled here: channels-last (S = 1) and
    channels-first (M = 1) views, with at least one value."""
    _, m, _, _, s = layout.view
    return x.dtype in DTYPES and x.size > 0 and (m == 1 or s == 1)


def forward(x, gamma, beta, layout, epsilon):
    """Return ``y`` (x's dtype), and ``mean`` and ``rstd`` of shape (N, G) in the compute dtype."""
    with kernel_range("group_norm_fwd_numba", x.dtype):  # kernel:group_norm_fwd_numba<float32>
        dtype = compute_dtype(x.dtype)
        x3, rows = _channels_view(x, layout, dtype)
        y3 = np.empty(x3.shape, dtype)
        mean = np.empty((layout.batch, layout.groups), dtype)
        rstd = np.empty_like(mean)
        kernel = _forward_rows if rows else _forward_cols
        kernel(x3, layout.groups, _per_channel(gamma, layout, 1.0),
               _per_channel(beta, layout, 0.0), float(epsilon), y3, mean, rstd)
        return _from_channels(y3, x.dtype, layout), mean, rstd


def backward(x, dy, gamma, mean, rstd, layout):
    """Return ``dx`` (x's dtype), ``dgamma`` and ``dbeta`` (feature shape, compute dtype);
    the formula of ``group_norm_numpy.backward``."""
    with kernel_range("group_norm_bwd_numba", x.dtype):  # kernel:group_norm_bwd_numba<float32>
        dtype = compute_dtype(x.dtype)
        x3, rows = _channels_view(x, layout, dtype)
        dy3, _ = _channels_view(dy, layout, dtype)
        dx3 = np.empty(x3.shape, dtype)
        dgamma = np.empty((layout.batch, layout.channels))  # per sample, float64
        dbeta = np.empty_like(dgamma)
        kernel = _backward_rows if rows else _backward_cols
        kernel(x3, dy3, layout.groups, mean.astype(dtype, copy=False),
               rstd.astype(np.float64), _per_channel(gamma, layout, 1.0), dx3, dgamma, dbeta)
        # Summed over the batch here, in a fixed order: the same bits on every run.
        return (_from_channels(dx3, x.dtype, layout),
                dgamma.sum(axis=0).astype(dtype).reshape(layout.feature_shape),
                dbeta.sum(axis=0).astype(dtype).reshape(layout.feature_shape))


def _channels_view(x, layout, dtype):
    """(x as a C-contiguous array of the compute dtype, rows): (N, M, K) when S = 1
    (rows is True), else (N, K, S); a copy only if needed."""
    n, m, g, d, s = layout.view
    shape = (n, m, g * d) if s == 1 else (n, g * d, s)
    return np.ascontiguousarray(layout.to_view(x).reshape(shape), dtype=dtype), s == 1


def _from_channels(y3, dtype, layout):
    return layout.from_view(y3.reshape(layout.view)).astype(dtype, copy=False)


def _per_channel(param, layout, fill):
    """gamma or beta as float64 per channel (K,), ``fill`` everywhere when absent."""
    if param is None:
        return np.full(layout.channels, fill)
    return np.asarray(param, np.float64).reshape(layout.channels)


# Each kernel handles one sample per prange iteration. No fastmath: the order of
# every sum is fixed, so results do not change from run to run, and x - pivot - shift
# (the mean in two parts) is not reassociated.


@njit(parallel=True, cache=True)
def _forward_rows(x, groups, gamma, beta, epsilon, y, mean, rstd):
    """x (N, M, K): channel k of sample n is x[n, :, k]."""
    batch, rows, channels = x.shape
    for n in prange(batch):
        xn = x[n]
        # The mean, summed from values shifted by a pivot (so that it cancels little
        # when |mean| >> std), then the squares of the values centred on it.
        pivot = _group_pivot(xn[0], groups)
        sums = _row_sums(xn, pivot, np.zeros(channels, x.dtype), False)
        shift, low = _shift(sums, pivot, rows, groups, n, mean, x.dtype)
        scale = _scale(_row_sums(xn, pivot, low, True), rows, groups, gamma, epsilon, n, rstd)
        yn = y[n]
        for r in range(rows):
            for k in range(channels):
                yn[r, k] = ((xn[r, k] - np.float64(pivot[k])) - shift[k]) * scale[k] + beta[k]


@njit(parallel=True, cache=True)
def _forward_cols(x, groups, gamma, beta, epsilon, y, mean, rstd):
    """x (N, K, S): channel k of sample n is x[n, k, :]."""
    batch, channels, cols = x.shape
    for n in prange(batch):
        xn = x[n]
        pivot = _group_pivot(xn[:, 0], groups)
        sums = np.empty(channels)
        for k in range(channels):
            sums[k] = _lane_sum(xn[k], pivot[k])
        shift, low = _shift(sums, pivot, cols, groups, n, mean, x.dtype)
        squares = np.empty(channels)
        for k in range(channels):
            squares[k] = _lane_square_sum(xn[k], pivot[k], low[k])
        scale = _scale(squares, cols, groups, gamma, epsilon, n, rstd)
        yn = y[n]
        for k in range(channels):
            p, c, a, b = np.float64(pivot[k]), shift[k], scale[k], beta[k]
            for s in range(cols):
                yn[k, s] = ((xn[k, s] - p) - c) * a + b


@njit(cache=True)
def _group_pivot(first, groups):
    """Per channel, the first value of its group's first channel (``first`` holds each
    channel's first value): a constant of each group that the sums are shifted by."""
    channels = first.shape[0]
    depth = channels // groups
    pivot = np.empty(channels, first.dtype)
    for k in range(channels):
        pivot[k] = first[(k // depth) * depth]
    return pivot


@njit(cache=True)
def _shift(sums, pivot, per_channel, groups, n, mean, dtype):
    """Each channel's group mean minus the pivot, from sums of x - pivot: in float64
    (``shift``) and in the compute dtype (``low``); the mean is pivot + shift. Kept in
    two parts, x - mean resolves as finely as x does, even when |mean| >> std."""
    channels = sums.shape[0]
    depth = channels // groups
    shift = np.empty(channels)
    low = np.empty(channels, dtype)
    for g in range(groups):
        total = 0.0
        for k in range(g * depth, (g + 1) * depth):
            total += sums[k]
        value = total / (per_channel * depth)
        mean[n, g] = np.float64(pivot[g * depth]) + value
        for k in range(g * depth, (g + 1) * depth):
            shift[k] = value
            low[k] = value
    return shift, low


@njit(cache=True)
def _scale(squares, per_channel, groups, gamma, epsilon, n, rstd):
    """rstd per group from the channels' centred square sums, and rstd * gamma per channel."""
    channels = squares.shape[0]
    depth = channels // groups
    scale = np.empty(channels)
    for g in range(groups):
        variance = squares[g * depth:(g + 1) * depth].sum() / (per_channel * depth) + epsilon
        # 0 for a constant group with epsilon 0 (the output is beta); NaN stays NaN.
        inverse = 0.0 if variance == 0 else 1.0 / np.sqrt(variance)
        rstd[n, g] = inverse
        for k in range(g * depth, (g + 1) * depth):
            scale[k] = inverse * gamma[k]
    return scale


@njit(cache=True)
def _row_sums(xn, pivot, shift, square):
    """Per channel, the sums over rows of x - pivot - shift (or of its square), in blocks
    of BLOCK rows summed in x's dtype, the blocks' sums added in float64."""
    rows, channels = xn.shape
    total = np.zeros(channels)
    block = np.empty(channels, xn.dtype)
    for r0 in range(0, rows, BLOCK):
        block[:] = 0
        for r in range(r0, min(r0 + BLOCK, rows)):
            for k in range(channels):
                value = (xn[r, k] - pivot[k]) - shift[k]
                block[k] += value * value if square else value
        for k in range(channels):
            total[k] += block[k]
    return total


LANES = 16  # independent partial sums along a row: SIMD lanes without reassociation


@njit(cache=True)
def _lane_sum(row, pivot):
    """The sum of row - pivot over a contiguous row: LANES partial sums in row's dtype
    over each block of BLOCK values, the blocks' sums added in float64."""
    length = row.shape[0]
    full = length - length % BLOCK
    total = 0.0
    lanes = np.empty(LANES, row.dtype)
    for block in range(0, full, BLOCK):
        lanes[:] = 0
        for start in range(block, block + BLOCK, LANES):
            for j in range(LANES):
                lanes[j] += row[start + j] - pivot
        total += np.float64(lanes.sum())
    for s in range(full, length):
        total += row[s] - pivot
    return total


@njit(cache=True)
def _lane_square_sum(row, pivot, shift):
    """The sum of (row - pivot - shift) ** 2 over a contiguous row, as _lane_sum."""
    length = row.shape[0]
    full = length - length % BLOCK
    total = 0.0
    lanes = np.empty(LANES, row.dtype)
    for block in range(0, full, BLOCK):
        lanes[:] = 0
        for start in range(block, block + BLOCK, LANES):
            for j in range(LANES):
                value = (row[start + j] - pivot) - shift
                lanes[j] += value * value
        total += np.float64(lanes.sum())
    for s in range(full, length):
        value = (row[s] - pivot) - shift
        total += value * value
    return total


@njit(parallel=True, cache=True)
def _backward_rows(x, dy, groups, mean, rstd, weight, dx, dgamma, dbeta):
    batch, rows, channels = x.shape
    for n in prange(batch):
        xn, dyn = x[n], dy[n]
        centre = _saved_centre(mean, n, channels, groups)
        sum_dy, sum_dy_centred, sum_centred = np.zeros(channels), np.zeros(channels), \
            np.zeros(channels)
        block_dy, block_dy_centred, block_centred = np.empty(channels, x.dtype), \
            np.empty(channels, x.dtype), np.empty(channels, x.dtype)
        for r0 in range(0, rows, BLOCK):
            block_dy[:] = 0
            block_dy_centred[:] = 0
            block_centred[:] = 0
            for r in range(r0, min(r0 + BLOCK, rows)):
                for k in range(channels):
                    centred = xn[r, k] - centre[k]
                    block_dy[k] += dyn[r, k]
                    block_dy_centred[k] += dyn[r, k] * centred
                    block_centred[k] += centred
            for k in range(channels):
                sum_dy[k] += block_dy[k]
                sum_dy_centred[k] += block_dy_centred[k]
                sum_centred[k] += block_centred[k]
        c1, c2, c3 = _coefficients(sum_dy, sum_dy_centred, sum_centred, rows, groups, rstd,
                                   weight, n, dgamma, dbeta)
        dxn = dx[n]
        for r in range(rows):
            for k in range(channels):
                dxn[r, k] = c1[k] * dyn[r, k] + c2[k] * (xn[r, k] - centre[k]) + c3[k]


@njit(parallel=True, cache=True)
def _backward_cols(x, dy, groups, mean, rstd, weight, dx, dgamma, dbeta):
    batch, channels, cols = x.shape
    for n in prange(batch):
        xn, dyn = x[n], dy[n]
        centre = _saved_centre(mean, n, channels, groups)
        sum_dy, sum_dy_centred, sum_centred = np.empty(channels), np.empty(channels), \
            np.empty(channels)
        for k in range(channels):
            sum_dy[k], sum_dy_centred[k], sum_centred[k] = _lane_gradient_sums(
                xn[k], dyn[k], centre[k])
        c1, c2, c3 = _coefficients(sum_dy, sum_dy_centred, sum_centred, cols, groups, rstd,
                                   weight, n, dgamma, dbeta)
        dxn = dx[n]
        for k in range(channels):
            a, b, c, m = c1[k], c2[k], c3[k], centre[k]
            for s in range(cols):
                dxn[k, s] = a * dyn[k, s] + b * (xn[k, s] - m) + c


@njit(cache=True)
def _saved_centre(mean, n, channels, groups):
    """The saved mean of each channel's group, in the compute dtype as it was saved."""
    depth = channels // groups
    centre = np.empty(channels, mean.dtype)
    for k in range(channels):
        centre[k] = mean[n, k // depth]
    return centre


@njit(cache=True)
def _coefficients(sum_dy, sum_dy_centred, sum_centred, per_channel, groups, rstd, weight, n,
                  dgamma, dbeta):
    """dx = c1 * dy + c2 * (x - mean) + c3 per channel (group_norm_numpy's formula), and
    the sample's dgamma and dbeta."""
    channels = sum_dy.shape[0]
    depth = channels // groups
    count = per_channel * depth
    c1, c2, c3 = np.empty(channels), np.empty(channels), np.empty(channels)
    for g in range(groups):
        r = rstd[n, g]
        # The saved mean is rounded to the compute dtype; `residual`, the mean of
        # x - mean over the group, corrects for it.
        residual = sum_centred[g * depth:(g + 1) * depth].sum() / count
        mean_g, mean_g_xhat = 0.0, 0.0
        for k in range(g * depth, (g + 1) * depth):
            dy_centred = sum_dy_centred[k] - residual * sum_dy[k]
            dgamma[n, k] = dy_centred * r
            dbeta[n, k] = sum_dy[k]
            mean_g += weight[k] * sum_dy[k]
            mean_g_xhat += weight[k] * dy_centred
        mean_g /= count
        mean_g_xhat *= r / count
        slope = -r * r * mean_g_xhat
        for k in range(g * depth, (g + 1) * depth):
            c1[k] = r * weight[k]
            c2[k] = slope
            c3[k] = -r * mean_g - slope * residual
    return c1, c2, c3


@njit(cache=True)
def _lane_gradient_sums(x_row, dy_row, centre):
    """Sums of dy, dy * (x - centre) and x - centre over a contiguous row, as _lane_sum."""
    length = x_row.shape[0]
    full = length - length % BLOCK
    lanes_dy = np.empty(LANES, x_row.dtype)
    lanes_dy_centred = np.empty(LANES, x_row.dtype)
    lanes_centred = np.empty(LANES, x_row.dtype)
    total_dy, total_dy_centred, total_centred = 0.0, 0.0, 0.0
    for block in range(0, full, BLOCK):
        lanes_dy[:] = 0
        lanes_dy_centred[:] = 0
        lanes_centred[:] = 0
        for start in range(block, block + BLOCK, LANES):
            for j in range(LANES):
                centred = x_row[start + j] - centre
                lanes_dy[j] += dy_row[start + j]
                lanes_dy_centred[j] += dy_row[start + j] * centred
                lanes_centred[j] += centred
        total_dy += np.float64(lanes_dy.sum())
        total_dy_centred += np.float64(lanes_dy_centred.sum())
        total_centred += np.float64(lanes_centred.sum())
    for s in range(full, length):
        centred = x_row[s] - centre
        total_dy += dy_row[s]
        total_dy_centred += dy_row[s] * centred
        total_centred += centred
    return total_dy, total_dy_centred, total_centred
