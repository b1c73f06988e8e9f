"""The compiled float16 <-> float32 conversions against NumPy's, bit for bit."""

import numpy as np

from cugn.kernels import float16_numba


def numpy_bits(values, dtype):
    with np.errstate(all="ignore"):  # NumPy warns where float32 overflows float16
        return values.astype(dtype).view(np.uint16 if dtype == np.float16 else np.uint32)


def test_every_float16_widens_as_numpy_does():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    widened = float16_numba.to_float32(every)
    assert widened.dtype == np.float32
    np.testing.assert_array_equal(widened.view(np.uint32), numpy_bits(every, np.float32))


def test_float32_narrows_as_numpy_does(rng):
    # Every finite float16 value as float32 and the float32 values around it, the halfway
    # points between float16 neighbours (ties to even) and just off them, the edges of
    # the subnormal and overflow ranges, infinities, NaN payloads, and random bit patterns.
    with np.errstate(all="ignore"):
        every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
        exact = every[np.isfinite(every)].astype(np.float32).view(np.uint32).astype(np.int64)
    offsets = [-3, -2, -1, 0, 1, 2, 3, 0x800, 0xFFF, 0x1000, 0x1001, -0xFFF, -0x1000, -0x1001]
    edges = [0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0x7FFFE000, 0xFFC01234,
             0x477FF000, 0x477FEFFF, 0x38800000, 0x387FFFFF, 0x33000000, 0x33000001,
             0x337FFFFF, 0x33800000, 0, 0x80000000]
    bits = np.concatenate([exact + offset for offset in offsets]
                          + [np.array(edges), rng.integers(0, 1 << 32, 1_000_000)])
    values = (bits % (1 << 32)).astype(np.uint32).view(np.float32)
    narrowed = float16_numba.to_float16(values)
    assert narrowed.dtype == np.float16
    np.testing.assert_array_equal(narrowed.view(np.uint16), numpy_bits(values, np.float16))


def test_shapes_and_strided_inputs_are_kept(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float16)
    strided = x.transpose(2, 0, 1)[::2]
    widened = float16_numba.to_float32(strided)
    assert widened.shape == strided.shape and widened.flags.c_contiguous
    np.testing.assert_array_equal(widened, strided.astype(np.float32))
    narrowed = float16_numba.to_float16(widened.transpose(1, 0, 2))
    np.testing.assert_array_equal(narrowed, widened.transpose(1, 0, 2).astype(np.float16))
    assert float16_numba.to_float32(np.zeros((0, 3), np.float16)).shape == (0, 3)
