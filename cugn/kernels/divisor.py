"""The host half of the kernels' division by a launch constant (``Divisor<I>`` in
``cuda/traversal.cuh``): each divisor travels to the kernel with a shift and a
multiplier, computed here once per launch, that turn every division by it in the
element loops into a multiply-high, an add and a shift (Granlund and
Montgomery's round-up method)."""

import numpy as np


def dtype(index):
    """The structured dtype of ``Divisor<I>`` for the index scalar type ``index``
    (numpy.uint32 or numpy.uint64): value and multiplier of I, an unsigned 32-bit
    shift, padded as the C++ struct is."""
    return np.dtype([("value", index), ("multiplier", index), ("shift", np.uint32)],
                    align=True)


def magic(value, bits):
    """The (multiplier, shift) with n // value == (((multiplier*n) >> bits) + n) >> shift
    for every 0 <= n < 2**(bits - 1): shift = ceil(log2(value)) and multiplier =
    floor(2**bits * (2**shift - value) / value) + 1, which is below 2**bits."""
    if not 1 <= value <= 2 ** (bits - 1):
        raise ValueError(f"a divisor must be in [1, 2**{bits - 1}] for {bits}-bit "
                         f"indices, got {value}")
    shift = (value - 1).bit_length()
    return ((1 << bits) * ((1 << shift) - value)) // value + 1, shift


def divisor(value, index):
    """``value`` as the kernels' ``Divisor<I>``, I the index scalar type ``index``: a
    NumPy array of one element of the struct's dtype, which CuPy passes to a kernel
    by value (its bytes)."""
    layout = dtype(index)
    value = int(value)
    return np.array((value, *magic(value, 8 * layout["value"].itemsize)), layout)
