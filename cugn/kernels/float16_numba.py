"""float16 <-> float32 conversions compiled by Numba, for the Numba GroupNorm kernels'
float16 inputs and outputs.

NumPy converts float16 one value at a time (about 2 ns per value to float32 and
6 ns back on a current x86 core, several times a float32 GroupNorm pass). These
loops work on the bits (Numba has no float16 type) and give NumPy's results bit
for bit: to float32 by looking each of the 65536 float16 bit patterns up in a
table that NumPy converted; to float16 with integer operations that round to
nearest even and keep subnormals, infinities and NaN payloads as NumPy does.
Only overflow differs, in that it is silent (NumPy warns when a float32 beyond
float16's range becomes inf).
"""

import numpy as np
from numba import njit

# The float32 value of every float16 bit pattern, as NumPy converts it.
with np.errstate(all="ignore"):
    _WIDENED = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(
        np.float32)


def to_float32(half):
    """A float16 array as a new C-contiguous float32 array."""
    half = np.ascontiguousarray(half)
    out = np.empty(half.shape, np.float32)
    _widen(half.reshape(-1).view(np.uint16), _WIDENED, out.reshape(-1))
    return out


def to_float16(single):
    """A float32 array as a new C-contiguous float16 array."""
    single = np.ascontiguousarray(single, np.float32)
    out = np.empty(single.shape, np.float16)
    flat = single.reshape(-1)
    _narrow(flat, flat.view(np.uint32), out.reshape(-1).view(np.uint16))
    return out


@njit(cache=True)
def _widen(half, table, out):
    """out[i] = table[half[i]]: float16 bits to float32, looked up."""
    for i in range(half.shape[0]):
        out[i] = table[half[i]]


@njit(cache=True)
def _narrow(single, bits, out):
    """out[i] = the float16 bits nearest the float32 single[i] (whose bits are bits[i]),
    ties to even."""
    for i in range(single.shape[0]):
        u = np.int64(bits[i])
        sign = (u >> 16) & 0x8000
        magnitude = u & 0x7FFFFFFF
        if magnitude > 0x7F800000:  # NaN: NumPy keeps the top of the payload, never 0
            h = 0x7C00 + max((magnitude & 0x7FFFFF) >> 13, 1)
        elif magnitude >= 0x477FF000:  # 65520 and up (and infinity) round to infinity
            h = 0x7C00
        elif magnitude >= 0x38800000:  # 2^-14 and up: a normal float16
            # Rebias the exponent and round the 13 dropped bits to nearest even; a carry
            # runs into the exponent as it should.
            h = (magnitude - (112 << 23) + 0xFFF + ((magnitude >> 13) & 1)) >> 13
        else:  # a subnormal float16 (or 0): the value in units of 2^-24, rounded to even
            h = np.int64(np.rint(np.abs(single[i]) * np.float32(16777216.0)))
        out[i] = sign | h
