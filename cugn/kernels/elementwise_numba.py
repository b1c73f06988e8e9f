"""sigmoid and silu, and the first-order backward of sigmoid and tanh, as loops
compiled by Numba: the CPU path of these activations when Numba is installed.

NumPy spends one pass over memory per operation (sigmoid and its gradient take
seven); here each function is one loop. silu's forward also leaves its
derivative, so that its backward is one product. The exponential in the
forwards is cugn's own (``exp32``, ``exp64``), because a call of the C library's
exp per value keeps a loop from being vectorised: the exponent is reduced to
r = x - n*ln2 with |r| <= ln2/2, exp(r) comes from Cephes' polynomial (float32)
or rational function (float64) of r, and 2**n is put together from the exponent
bits. It is within two units in the last place of the exact exponential for
every input, overflows to inf where the exact value exceeds the dtype's range,
and gives NaN for NaN; below the normal range it stops at about 1e-38 (float32)
or 1e-307 (float64), which only ever meets 1 + e, where it makes no difference.
So sigmoid and silu are within a few units in the last place of the NumPy
path's results, not its bits. No fastmath: nothing else is reassociated or
contracted. For C-contiguous float32 and float64 arrays of one shape and dtype;
anything else stays on NumPy. This module imports Numba:
``cugn.kernels.numba_elementwise()`` imports it on the first call, when Numba
is installed.
"""

import numpy as np
from numba import njit

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def supports(*arrays):
    """True when every array is a C-contiguous NumPy array of the first one's shape
    and dtype, float32 or float64."""
    first = arrays[0]
    return all(type(a) is np.ndarray and a.flags.c_contiguous and a.shape == first.shape
               and a.dtype == first.dtype for a in arrays) and first.dtype in DTYPES


def sigmoid(a):
    """1 / (1 + exp(-a)); exp overflows to inf far below 0, where the result is 0."""
    s = np.empty_like(a)
    _sigmoid(a.reshape(-1), s.reshape(-1), EXP[a.dtype])
    return s


def silu(a):
    """a * sigmoid(a), as ``sigmoid``."""
    y = np.empty_like(a)
    _silu(a.reshape(-1), y.reshape(-1), EXP[a.dtype])
    return y


def silu_and_slope(a):
    """(silu(a), its derivative s * (1 + a * (1 - s)) = (1 - s) * silu(a) + s), as
    ``sigmoid``: the backward is then one product."""
    y, slope = np.empty_like(a), np.empty_like(a)
    _silu_and_slope(a.reshape(-1), y.reshape(-1), slope.reshape(-1), EXP[a.dtype])
    return y, slope


def sigmoid_backward(s, grad):
    """grad * s * (1 - s), from the forward's output s."""
    return _backward(_sigmoid_backward, s, grad)


def tanh_backward(t, grad):
    """grad * (1 - t * t), from the forward's output t."""
    return _backward(_tanh_backward, t, grad)


def _backward(loop, *arrays):
    out = np.empty_like(arrays[0])
    loop(*(a.reshape(-1) for a in arrays), out.reshape(-1))
    return out


# error_model="numpy": a division by zero gives inf as in NumPy, without the check
# for Python's ZeroDivisionError that would keep the loops from being vectorised.
# The loops take their dtype's exponential as an argument: Numba compiles one loop
# per function passed, with the call inlined.


@njit(error_model="numpy", cache=True)
def _sigmoid(a, s, exp):
    one = a.dtype.type(1)
    for i in range(a.shape[0]):
        s[i] = one / (one + exp(-a[i]))


@njit(error_model="numpy", cache=True)
def _silu(a, y, exp):
    one = a.dtype.type(1)
    for i in range(a.shape[0]):
        y[i] = a[i] * (one / (one + exp(-a[i])))


@njit(error_model="numpy", cache=True)
def _silu_and_slope(a, y, slope, exp):
    one = a.dtype.type(1)
    for i in range(a.shape[0]):
        s = one / (one + exp(-a[i]))
        value = a[i] * s
        y[i] = value
        slope[i] = (one - s) * value + s


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


# The exponentials. Both clamp x to where the result is still in range: above the
# top, e is already inf, and the bottom keeps 2**(n - 1) a normal number. n = round(x
# / ln2) comes from adding 1.5 * 2**mantissa_bits, which leaves n in the low bits of
# the sum: subtracting the constant again gives n as a float, and subtracting its
# bits gives n as an integer, the exponent of 2**(n - 1) (NaN goes through the same
# integer steps harmlessly and stays NaN in r). ln2 is split in two (C1 exact in a
# few bits, C2 the rest) so that x - n*ln2 keeps every bit. The result is
# (2*exp(r)) * 2**(n - 1), so that n = 128 (1024) still has an exponent field.

_F32 = np.float32


@njit(error_model="numpy", cache=True)
def exp32(x):
    c = _F32(88.8) if x > _F32(88.8) else x
    c = _F32(-86.6) if c < _F32(-86.6) else c
    shifted = c * _F32(1.44269504088896341) + _F32(12582912.0)  # 1.5 * 2**23
    n = shifted - _F32(12582912.0)
    r = c - n * _F32(0.693359375)
    r = r - n * _F32(-2.12194440e-4)
    p = _F32(1.9875691500e-4)
    p = p * r + _F32(1.3981999507e-3)
    p = p * r + _F32(8.3334519073e-3)
    p = p * r + _F32(4.1665795894e-2)
    p = p * r + _F32(1.6666665459e-1)
    p = p * r + _F32(5.0000001201e-1)
    p = p * r * r + r + _F32(1.0)
    exponent = np.int32(_F32(shifted).view(np.int32) - np.int32(0x4B400000) + np.int32(126))
    return (p + p) * np.int32(exponent << np.int32(23)).view(np.float32)


@njit(error_model="numpy", cache=True)
def exp64(x):
    c = 709.9 if x > 709.9 else x
    c = -707.0 if c < -707.0 else c
    shifted = c * 1.4426950408889634073599 + 6755399441055744.0  # 1.5 * 2**52
    n = shifted - 6755399441055744.0
    r = c - n * 6.93145751953125e-1
    r = r - n * 1.42860682030941723212e-6
    rr = r * r
    p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
             + 9.99999999999999999910e-1)
    q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
         + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0
    e = 1.0 + 2.0 * (p / (q - p))
    exponent = np.int64(np.float64(shifted).view(np.int64) - np.int64(0x4338000000000000)
                        + np.int64(1022))
    return (e + e) * np.int64(exponent << np.int64(52)).view(np.float64)


EXP = {np.dtype(np.float32): exp32, np.dtype(np.float64): exp64}
