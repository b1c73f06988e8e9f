"""Division by a launch constant: the host's shift and multiplier (cugn.kernels.divisor)
and the kernels' Divisor<I> (cuda/traversal.cuh), run on the CPU, against Python's //."""

import random

import numpy as np
import pytest

from cugn.kernels.divisor import divisor, dtype, magic


def emulated(n, value, bits):
    """What Divisor<I>::divide computes, in Python integers (or NumPy's, for an array
    ``n`` at small widths)."""
    multiplier, shift = magic(value, bits)
    return (((multiplier * n) >> bits) + n) >> shift


@pytest.mark.parametrize("bits", [8, 12])
def test_every_numerator_and_divisor_of_a_small_width(bits):
    # Exhaustive at small widths: the method does not depend on B.
    half = 1 << (bits - 1)
    n = np.arange(half, dtype=np.int64)
    for value in range(1, half + 1):
        assert magic(value, bits)[0] < 1 << bits
        np.testing.assert_array_equal(emulated(n, value, bits), n // value,
                                      err_msg=f"divisor {value}")


def edge_divisors(bits):
    half = 1 << (bits - 1)
    powers = [1 << k for k in range(bits)]
    near = [p + d for p in powers for d in (-1, 1) if 1 <= p + d <= half]
    rng = random.Random(bits)
    return sorted({*powers, *near, 3, 5, 7, 641, 6700417, *(rng.randrange(1, half + 1)
                                                           for _ in range(200))})


def edge_numerators(value, bits):
    most = (1 << (bits - 1)) - 1
    rng = random.Random(value)
    candidates = {0, 1, value - 1, value, value + 1, 2 * value - 1, 2 * value, most, most - 1,
                  most // value * value, most // value * value - 1,
                  *(rng.randrange(0, most + 1) for _ in range(50))}
    return sorted(n for n in candidates if 0 <= n <= most)


@pytest.mark.parametrize("bits", [32, 64])
def test_edges_of_the_index_widths(bits):
    for value in edge_divisors(bits):
        for n in edge_numerators(value, bits):
            assert emulated(n, value, bits) == n // value, (n, value)


@pytest.mark.parametrize("value", [0, -3, 2 ** 31 + 1])
def test_a_divisor_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match=f"a divisor must be in .*got {value}"):
        divisor(value, np.uint32)


def test_the_struct_has_the_layout_of_the_kernels_one():
    # struct Divisor<I> { I value, multiplier; unsigned shift; }, padded to I's alignment.
    for index, bits, size in ((np.uint32, 32, 12), (np.uint64, 64, 24)):
        layout = dtype(index)
        assert layout.itemsize == size
        assert [layout.fields[f][1] for f in ("value", "multiplier", "shift")] == \
            [0, bits // 8, bits // 4]
        d = divisor(641, index)
        assert (int(d["value"]), int(d["multiplier"]), int(d["shift"])) == (641, *magic(641, bits))


# ------------------------------------------------------------------ the kernels' Divisor<I>

DIVIDE_EACH = """
namespace cugn {
template <typename I>
__global__ void divide_each(const I* __restrict__ n, I* __restrict__ quotient,
                            I* __restrict__ remainder, Divisor<I> d, unsigned count) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) {
    quotient[i] = d.divide(n[i]);
    remainder[i] = d.remainder(n[i]);
  }
}
}  // namespace cugn
"""

@pytest.fixture(scope="module")
def divide_each():
    pytest.importorskip("cupy", reason="the CPU harness imports group_norm_cuda (CuPy)")
    from cugn.kernels import cuda_loader
    from cugn.kernels.cuda_on_cpu import Device, compiler

    if compiler() is None:
        pytest.skip("needs g++ (>= 12) or clang++ to build the kernels for the host")
    device = Device(source=cuda_loader.source() + DIVIDE_EACH)
    names = {index: f"cugn::divide_each<{cuda_loader.INDEX_TYPES[index64]}>"
             for index64, index in ((False, np.uint32), (True, np.uint64))}
    kernels = device.compile(list(names.values()))

    def run(index, d, numerators):
        """The quotients and remainders of ``numerators`` by the argument ``d``."""
        n = device.asarray(np.array(numerators, dtype=index))
        quotient, remainder = device.zeros(n.size, index), device.zeros(n.size, index)
        kernels[names[index]]((-(-n.size // 64),), (64,),
                              (n, quotient, remainder, d, np.uint32(n.size)))
        return [int(v) for v in np.array(quotient)], [int(v) for v in np.array(remainder)]

    return run


@pytest.mark.cuda_on_cpu
@pytest.mark.parametrize("index", [np.uint32, np.uint64], ids=["32-bit", "64-bit"])
def test_the_kernels_divide_as_python_does(divide_each, index):
    bits = 8 * np.dtype(index).itemsize
    for value in edge_divisors(bits)[::4]:
        numerators = edge_numerators(value, bits)
        quotients, remainders = divide_each(index, divisor(value, index), numerators)
        assert quotients == [n // value for n in numerators], value
        assert remainders == [n % value for n in numerators], value


@pytest.mark.cuda_on_cpu
@pytest.mark.parametrize("field", ["multiplier", "shift"])
def test_a_planted_wrong_magic_number_is_caught(divide_each, field):
    # The check above fails on a multiplier or shift one off.
    value, bits = 641, 32
    numerators = edge_numerators(value, bits)
    wrong = divisor(value, np.uint32)
    wrong[field] -= 1
    quotients, _ = divide_each(np.uint32, wrong, numerators)
    assert quotients != [n // value for n in numerators]


@pytest.mark.cuda_on_cpu
def test_a_divisor_of_the_wrong_width_or_form_is_refused(divide_each):
    # As CuPy passes a struct by value: a NumPy array of one element of its dtype.
    for wrong in (divisor(7, np.uint64), divisor(7, np.uint32)[()], np.uint32(7)):
        with pytest.raises(TypeError, match="argument 'd'.*Divisor<uint32>"):
            divide_each(np.uint32, wrong, [1, 2, 3])
