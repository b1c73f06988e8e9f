"""sigmoid and silu, and the first-order backward of sigmoid and tanh, with loops
compiled by Numba: the CPU path of these activations when Numba is installed.

NumPy spends one pass over memory per operation (sigmoid and its gradient take
seven); here each backward is one loop, and the forwards run a chunk of the
values at a time, small enough to stay in cache: NumPy's exp (vectorised, where
Numba's is a scalar call per value) and one compiled loop for the rest. silu's
forward also leaves its derivative, so that its backward is one product. The
operations and their order are those of the NumPy functions in
``cugn.functions.elementwise`` (no fastmath, so nothing is reassociated or
contracted): the same bits. For C-contiguous float32 and float64 arrays of one
shape and dtype; anything else stays on NumPy. This module imports Numba:
``cugn.kernels.numba_elementwise()`` imports it on the first call, when Numba
is installed.
"""

import numpy as np
from numba import njit

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
CHUNK_BYTES = 1 << 18  # per array and chunk: the chunks of the forwards stay in L2 cache


def supports(*arrays):
    """True when every array is a C-contiguous NumPy array of the first one's shape
    and dtype, float32 or float64."""
    first = arrays[0]
    return all(type(a) is np.ndarray and a.flags.c_contiguous and a.shape == first.shape
               and a.dtype == first.dtype for a in arrays) and first.dtype in DTYPES


def sigmoid(a):
    """1 / (1 + exp(-a)); exp overflows to inf far below 0, where the result is 0."""
    s = np.empty_like(a)
    flat_a, flat_s = a.reshape(-1), s.reshape(-1)
    with np.errstate(over="ignore", under="ignore"):
        for chunk in _chunks(a):
            e = flat_s[chunk]
            np.negative(flat_a[chunk], out=e)
            np.exp(e, out=e)
            _reciprocal_of_one_plus(e)
    return s


def silu(a):
    """a * sigmoid(a), as ``sigmoid``."""
    return _silu(a, False)[0]


def silu_and_slope(a):
    """(silu(a), its derivative s * (1 + a * (1 - s)) = (1 - s) * silu(a) + s), as
    ``sigmoid``: the backward is then one product."""
    return _silu(a, True)


def _silu(a, slope):
    """(silu(a), its derivative when ``slope`` else None); exp(-a) goes into the
    derivative's array, or into one chunk of scratch."""
    y = np.empty_like(a)
    slopes = np.empty_like(a) if slope else None
    flat_a, flat_y = a.reshape(-1), y.reshape(-1)
    chunks = _chunks(a)
    scratch = None if slope else np.empty(chunks[0].stop if chunks else 0, a.dtype)
    with np.errstate(over="ignore", under="ignore"):
        for chunk in chunks:
            xc = flat_a[chunk]
            e = slopes.reshape(-1)[chunk] if slope else scratch[:xc.shape[0]]
            np.negative(xc, out=e)
            np.exp(e, out=e)
            if slope:
                _silu_and_slope_from_exp(xc, e, flat_y[chunk])
            else:
                _silu_from_exp(xc, e, flat_y[chunk])
    return y, slopes


def sigmoid_backward(s, grad):
    """grad * s * (1 - s), from the forward's output s."""
    return _backward(_sigmoid_backward, s, grad)


def tanh_backward(t, grad):
    """grad * (1 - t * t), from the forward's output t."""
    return _backward(_tanh_backward, t, grad)


def _chunks(a):
    per_chunk = max(1, CHUNK_BYTES // a.itemsize)
    return [slice(start, start + per_chunk) for start in range(0, a.size, per_chunk)]


def _backward(loop, *arrays):
    out = np.empty_like(arrays[0])
    loop(*(a.reshape(-1) for a in arrays), out.reshape(-1))
    return out


# error_model="numpy": a division by zero gives inf as in NumPy, without the check
# for Python's ZeroDivisionError that would keep the loops from being vectorised.


@njit(error_model="numpy", cache=True)
def _reciprocal_of_one_plus(e):
    """e = 1 / (1 + e), in place."""
    one = e.dtype.type(1)
    for i in range(e.shape[0]):
        e[i] = one / (one + e[i])


@njit(error_model="numpy", cache=True)
def _silu_from_exp(a, e, y):
    """From e = exp(-a): y = a * sigmoid(a)."""
    one = e.dtype.type(1)
    for i in range(e.shape[0]):
        y[i] = a[i] * (one / (one + e[i]))


@njit(error_model="numpy", cache=True)
def _silu_and_slope_from_exp(a, e, y):
    """From e = exp(-a): y = a * sigmoid(a), and e = (1 - s) * y + s, in place."""
    one = e.dtype.type(1)
    for i in range(e.shape[0]):
        s = one / (one + e[i])
        value = a[i] * s
        y[i] = value
        e[i] = (one - s) * value + s


@njit(error_model="numpy", cache=True)
def _sigmoid_backward(s, grad, out):
    one = s.dtype.type(1)
    for i in range(s.shape[0]):
        out[i] = (one - s[i]) * s[i] * grad[i]


@njit(error_model="numpy", cache=True)
def _tanh_backward(t, grad, out):
    one = t.dtype.type(1)
    for i in range(t.shape[0]):
        out[i] = (one - t[i] * t[i]) * grad[i]
