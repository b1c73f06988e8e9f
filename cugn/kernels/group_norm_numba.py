"""GroupNorm forward and backward compiled by Numba: the CPU path when Numba is
installed (the ``numba`` extra), for float16, float32 and float64.

The same ``forward`` and ``backward`` as ``group_norm_numpy``, on the same
``(N, M, G, D, S)`` view, seen with K = G*D channels as ``(N, M, K)`` when
S = 1 (channels-last) or ``(N, K, S)`` when M = 1 (channels-first); other views
stay on NumPy. Each pass over a sample is one fused loop, and the samples run in
parallel (``prange``). As on NumPy, the statistics take two passes (the mean,
then the squares of the values centred on it), so the variance stays exact when
|mean| >> std, and every sum adds blocks of values in the compute dtype and the
blocks' sums in float64, so float32 keeps its digits on groups of any size.
float16 is converted to float32 on the way in and back on the way out, by the
compiled conversions of ``float16_numba`` (NumPy's are several times slower than
the kernels). This module imports Numba: ``cugn.kernels.numba_kernels()``
imports it on the first call, when Numba is installed.
"""

import numpy as np
from numba import njit, prange

from ..backend import compute_dtype
from ..profiling.nvtx import kernel_range
from . import float16_numba

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
    x3 = layout.to_view(x).reshape(shape)
    if x3.dtype == np.float16:
        return float16_numba.to_float32(x3), s == 1
    return np.ascontiguousarray(x3, dtype=dtype), s == 1


def _from_channels(y3, dtype, layout):
    if dtype == np.float16:
        y3 = float16_numba.to_float16(y3)
    return layout.from_view(y3.reshape(layout.view)).astype(dtype, copy=False)


def _per_channel(param, layout, fill):
    """gamma or beta as float64 per channel (K,), ``fill`` everywhere when absent."""
    if param is None:
        return np.full(layout.channels, fill)
    return np.asarray(param, np.float64).reshape(layout.channels)


# Each kernel handles one sample per prange iteration. No fastmath but in the block
# sums along contiguous rows (channels-first), each of which subtracts one centre:
# the order of every sum is fixed by the code or by the compiled loop, so results do
# not change from run to run, and x - pivot - shift (the mean in two parts, in the
# channels-last kernels) is not reassociated.


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
    depth = channels // groups
    count = cols * depth
    for n in prange(batch):
        xn, yn = x[n], y[n]
        # A group at a time, so that its rows stay in cache through the three passes.
        for g in range(groups):
            first, last = g * depth, (g + 1) * depth
            # First pass: the mean, summed from values shifted by a pivot (the group's
            # first value, so that it cancels little when |mean| >> std), rounded to x's
            # dtype as the centre of the second.
            pivot = xn[first, 0]
            total = 0.0
            for k in range(first, last):
                total += _contiguous_sums(xn[k], pivot)[0]  # (its squares are not used)
            centre = x.dtype.type(np.float64(pivot) + total / count)
            # Second pass: sums of d = x - centre and of its square. The centre is off the
            # mean by its rounding (or more, when one value is far from the rest); the sum
            # of d corrects the mean and the variance for it: var = mean(d^2) - mean(d)^2.
            sum_d, sum_squares = 0.0, 0.0
            for k in range(first, last):
                d, squares = _contiguous_sums(xn[k], centre)
                sum_d += d
                sum_squares += squares
            correction = sum_d / count
            variance = max(sum_squares / count - correction * correction, 0.0) + epsilon
            # 0 for a constant group with epsilon 0 (the output is beta); NaN stays NaN.
            inverse = 0.0 if variance == 0 else 1.0 / np.sqrt(variance)
            mean[n, g] = np.float64(centre) + correction
            rstd[n, g] = inverse
            # Third pass: y = (x - centre - correction) * rstd * gamma + beta.
            for k in range(first, last):
                scale = inverse * gamma[k]
                _apply_row(xn[k], centre, x.dtype.type(scale),
                           x.dtype.type(beta[k] - correction * scale), yn[k])


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


# Values of a contiguous row summed in x's dtype; the blocks' sums are added in float64.
CONTIGUOUS_BLOCK = 4096


@njit(cache=True)
def _contiguous_sums(row, centre):
    """(sum of row - centre, sum of its squares) over a contiguous row, in blocks of
    CONTIGUOUS_BLOCK values summed in row's dtype, the blocks' sums added in float64."""
    total, squares = 0.0, 0.0
    for start in range(0, row.shape[0], CONTIGUOUS_BLOCK):
        block, block_squares = _block_sums(row[start:start + CONTIGUOUS_BLOCK], centre)
        total += block
        squares += block_squares
    return total, squares


@njit(fastmath={"reassoc"}, cache=True)
def _block_sums(row, centre):
    """Sum of row - centre and of its square, in row's dtype. ``reassoc`` lets LLVM keep
    many partial sums in SIMD registers (deterministic for a given machine, and no less
    accurate than one running sum); there is only one subtraction to keep apart."""
    total = row.dtype.type(0)
    squares = row.dtype.type(0)
    for i in range(row.shape[0]):
        d = row[i] - centre
        total += d
        squares += d * d
    return total, squares


@njit(cache=True)
def _apply_row(row, centre, scale, bias, out):
    """out = (row - centre) * scale + bias, in row's dtype."""
    for i in range(row.shape[0]):
        out[i] = (row[i] - centre) * scale + bias


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
    depth = channels // groups
    for n in prange(batch):
        xn, dyn, dxn = x[n], dy[n], dx[n]
        centre = _saved_centre(mean, n, channels, groups)
        sum_dy, sum_dy_centred, sum_centred = np.empty(channels), np.empty(channels), \
            np.empty(channels)
        c1, c2, c3 = np.empty(channels), np.empty(channels), np.empty(channels)
        # A group at a time, so that its rows are still in cache for dx.
        for g in range(groups):
            for k in range(g * depth, (g + 1) * depth):
                sum_dy[k], sum_dy_centred[k], sum_centred[k] = _contiguous_gradient_sums(
                    xn[k], dyn[k], centre[k])
            _group_coefficients(g, sum_dy, sum_dy_centred, sum_centred, cols * depth, depth,
                                rstd[n, g], weight, n, dgamma, dbeta, c1, c2, c3)
            for k in range(g * depth, (g + 1) * depth):
                _gradient_row(xn[k], dyn[k], centre[k], x.dtype.type(c1[k]),
                              x.dtype.type(c2[k]), x.dtype.type(c3[k]), dxn[k])


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
    c1, c2, c3 = np.empty(channels), np.empty(channels), np.empty(channels)
    for g in range(groups):
        _group_coefficients(g, sum_dy, sum_dy_centred, sum_centred, per_channel * depth, depth,
                            rstd[n, g], weight, n, dgamma, dbeta, c1, c2, c3)
    return c1, c2, c3


@njit(cache=True)
def _group_coefficients(g, sum_dy, sum_dy_centred, sum_centred, count, depth, r, weight, n,
                        dgamma, dbeta, c1, c2, c3):
    """_coefficients for the channels of group g, whose rstd is r."""
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


@njit(cache=True)
def _contiguous_gradient_sums(x_row, dy_row, centre):
    """Sums of dy, dy * (x - centre) and x - centre over a contiguous row, in blocks as
    _contiguous_sums."""
    total_dy, total_dy_centred, total_centred = 0.0, 0.0, 0.0
    for start in range(0, x_row.shape[0], CONTIGUOUS_BLOCK):
        block_dy, block_dy_centred, block_centred = _block_gradient_sums(
            x_row[start:start + CONTIGUOUS_BLOCK], dy_row[start:start + CONTIGUOUS_BLOCK], centre)
        total_dy += block_dy
        total_dy_centred += block_dy_centred
        total_centred += block_centred
    return total_dy, total_dy_centred, total_centred


@njit(fastmath={"reassoc"}, cache=True)
def _block_gradient_sums(x_row, dy_row, centre):
    """Sums of dy, dy * (x - centre) and x - centre, in x's dtype, as _block_sums."""
    total_dy = x_row.dtype.type(0)
    total_dy_centred = x_row.dtype.type(0)
    total_centred = x_row.dtype.type(0)
    for i in range(x_row.shape[0]):
        centred = x_row[i] - centre
        total_dy += dy_row[i]
        total_dy_centred += dy_row[i] * centred
        total_centred += centred
    return total_dy, total_dy_centred, total_centred


@njit(cache=True)
def _gradient_row(x_row, dy_row, centre, c1, c2, c3, out):
    """out = c1 * dy + c2 * (x - centre) + c3, in x's dtype."""
    for i in range(x_row.shape[0]):
        out[i] = c1 * dy_row[i] + c2 * (x_row[i] - centre) + c3
