"""sigmoid, silu and tanh on both CPU paths (NumPy, and Numba's fused loops): values
and first-order gradients against float64 references, every float dtype, large |x|,
non-contiguous inputs, both paths' agreement, and the exponential of Numba's loops."""

import ml_dtypes
import numba
import numpy as np
import pytest

import cugn
from cugn import kernels
from cugn.kernels import elementwise_numba

DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
# A few units in the last place of each dtype, for a value and its gradient.
RTOL = {np.float16: 4e-3, ml_dtypes.bfloat16: 3e-2, np.float32: 1e-6, np.float64: 1e-14}
# Below this, a result may be 0: float32's exp(-x) overflows to inf from x = -88.7, where
# sigmoid(x) is a subnormal, so 1 / (1 + inf) gives 0 (bfloat16 is computed in float32);
# float16 is computed in float32 too, exactly down to its own subnormals.
FLOOR = {np.float16: np.finfo(np.float16).smallest_subnormal,
         ml_dtypes.bfloat16: np.finfo(np.float32).tiny, np.float32: np.finfo(np.float32).tiny,
         np.float64: np.finfo(np.float64).tiny}
HUGE = [-1e4, -1e3, -100.0, -90.0, -20.0, -12.0, 0.0, 12.0, 20.0, 90.0, 100.0, 1e3, 1e4]


def sigmoid64(x):
    return np.exp(-np.logaddexp(0.0, -x))  # stable in float64 too


REFERENCES = {  # name: (value, derivative) of float64 x
    "sigmoid": (sigmoid64, lambda x: sigmoid64(x) * sigmoid64(-x)),
    "silu": (lambda x: x * sigmoid64(x),
             lambda x: sigmoid64(x) * (1 + x * sigmoid64(-x))),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
}


def value_and_grad(name, x, dy):
    leaf = cugn.tensor(x, requires_grad=True)
    y = getattr(cugn, name)(leaf)
    y.backward(cugn.tensor(dy))
    return y.numpy(), leaf.grad.numpy()


def check_against_reference(name, x, dy, dtype):
    y, dx = value_and_grad(name, x, dy)
    assert y.dtype == dx.dtype == np.dtype(dtype)
    value, derivative = REFERENCES[name]
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    tiny = float(FLOOR[dtype]) * (1 + np.abs(x64))  # silu(x) is x times sigmoid(x)
    rtol = RTOL[dtype]
    _assert_within(name, x64, y.astype(np.float64), value(x64), rtol * np.abs(value(x64)) + tiny)
    # The backward works from the forward's output, rounded to the dtype: an error of
    # a few units in its last place (at most about eps * (1 + |x|) in sigmoid, silu or
    # tanh), which sigmoid's s * (1 - s) and tanh's 1 - t * t keep in absolute terms.
    expected = derivative(x64) * dy64
    bound = rtol * np.abs(expected) + 4 * np.finfo(dtype).eps * (1 + np.abs(x64)) * np.abs(dy64)
    _assert_within(f"the {name} gradient", x64, dx.astype(np.float64), expected, bound + tiny)


def _assert_within(what, x, actual, expected, bound):
    outside = ~(np.abs(actual - expected) <= bound)  # NaN is outside
    if outside.any():
        at = np.flatnonzero(outside.reshape(-1))[0]
        raise AssertionError(f"{what} at x={x.reshape(-1)[at]}: {actual.reshape(-1)[at]}, "
                             f"expected {expected.reshape(-1)[at]} within {bound.reshape(-1)[at]}")


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_values_and_gradients_match_float64(name, dtype, rng, cpu_kernels):
    # Spread wide enough that sigmoid reaches float16's subnormals (x near -12).
    x = (6 * rng.standard_normal(5000)).astype(dtype)
    dy = rng.standard_normal(5000).astype(dtype)
    check_against_reference(name, x, dy, dtype)


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_large_inputs_give_no_warning_and_no_nan(name, dtype, cpu_kernels):
    x = np.array(HUGE, dtype)
    dy = np.ones_like(x)
    with np.errstate(all="raise"):
        y, dx = value_and_grad(name, x, dy)
    assert np.isfinite(y.astype(np.float64)).all() and np.isfinite(dx.astype(np.float64)).all()
    ends = np.abs(x.astype(np.float64)) >= 1e3
    np.testing.assert_array_equal(dx[ends & (x < 0)].astype(np.float64), 0)
    if name == "sigmoid":
        np.testing.assert_array_equal(y[ends].astype(np.float64), (x[ends] > 0).astype(float))
    if name == "silu":
        np.testing.assert_array_equal(y[ends].astype(np.float64),
                                      np.maximum(x[ends].astype(np.float64), 0))
        np.testing.assert_array_equal(dx[ends & (x > 0)].astype(np.float64), 1)
    check_against_reference(name, x, dy, dtype)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_infinities_and_nan(name, cpu_kernels):
    x = np.array([-np.inf, np.inf, np.nan], np.float32)
    with np.errstate(over="raise", invalid="ignore"):  # NumPy's -inf * 0 says it makes NaN
        y = getattr(cugn, name)(cugn.tensor(x)).numpy()
    expected = {"sigmoid": [0, 1, np.nan], "tanh": [-1, 1, np.nan],
                "silu": [np.nan, np.inf, np.nan]}
    np.testing.assert_array_equal(y, expected[name])  # silu(-inf) = -inf * 0, as in PyTorch


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_both_paths_agree(name, dtype, rng, monkeypatch):
    # The loops compute exp themselves: within a few units in the last place of NumPy's
    # results (tanh's only loop, its backward, is NumPy's formula: the same bits).
    x = (8 * rng.standard_normal((3, 70001))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    results = {}
    for enabled in (False, True):
        monkeypatch.setattr(kernels, "numba_enabled", enabled)
        results[enabled] = value_and_grad(name, x, dy)
    assert_paths_agree(name, results[True], results[False], dy)


def assert_paths_agree(name, results, expected, dy):
    """(value, gradient) pairs of the two paths: the same bits for tanh, within a few
    units in the last place for the others (silu's gradient near a zero of its
    derivative cancels, hence an absolute term)."""
    eps = np.finfo(dy.dtype).eps
    for result, reference in zip(results, expected):
        if name == "tanh":
            np.testing.assert_array_equal(result, reference)
        else:
            np.testing.assert_allclose(result, reference, rtol=4 * eps,
                                       atol=16 * eps * np.abs(dy).max())


# Each dtype's exponential in the loops: where it clamps its argument from below, the
# units in the last place it may be off by above that, and a bound on the value it
# stops at (below that, 1 + e is 1 in the dtype).
EXPONENTIALS = {np.float32: (-86.6, 1, 1e-37), np.float64: (-707.0, 2, 1e-306)}


@pytest.mark.parametrize("dtype", sorted(EXPONENTIALS, key=str), ids=lambda d: np.dtype(d).name)
def test_the_loops_exponential_is_within_units_in_the_last_place(dtype, rng):
    bottom, ulps, stop = EXPONENTIALS[dtype]
    exp = elementwise_numba.EXP[np.dtype(dtype)]
    info = np.finfo(dtype)
    top = np.log(np.longdouble(info.max))
    x = np.concatenate([np.linspace(bottom, top, 400_001)[:-1],
                        3 * rng.standard_normal(100_000)]).astype(dtype)
    exact = np.exp(x.astype(np.longdouble))  # 64 bits of mantissa on x86-64
    error = np.abs(apply_scalar(exp, x).astype(np.longdouble) - exact)
    at = np.argmax(error / np.spacing(exact.astype(dtype)))
    assert (error <= ulps * np.spacing(exact.astype(dtype)).astype(np.longdouble)).all(), x[at]
    # Past the top it overflows as the exact exponential does, and NaN stays NaN.
    edges = np.array([top * (1 + 1e-6), 1e4, np.inf, np.nan], dtype)
    np.testing.assert_array_equal(apply_scalar(exp, edges), [np.inf, np.inf, np.inf, np.nan])
    below = apply_scalar(exp, np.array([bottom, bottom - 1, -1e4, -np.inf], dtype))
    assert (below == below[0]).all() and info.tiny <= below[0] <= stop
    assert (1 + below == 1).all()


def apply_scalar(function, x):
    out = np.empty_like(x)
    _apply(function, x, out)
    return out


@numba.njit
def _apply(function, x, out):
    for i in range(x.shape[0]):
        out[i] = function(x[i])


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_non_contiguous_inputs_and_gradients(name, rng, cpu_kernels):
    x = (5 * rng.standard_normal((40, 30))).astype(np.float32)
    dy = rng.standard_normal((30, 40)).astype(np.float32)
    # A transposed x and a reversed dy take NumPy's path; their copies, Numba's if on.
    results = value_and_grad(name, x.T, dy.T[::-1].T[::-1])
    copies = value_and_grad(name, np.ascontiguousarray(x.T),
                            np.ascontiguousarray(dy.T[::-1].T[::-1]))
    assert_paths_agree(name, results, copies, dy)
    check_against_reference(name, x.T, dy, np.float32)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_empty_and_zero_dimensional_inputs(name, cpu_kernels):
    for x in (np.zeros((0, 3), np.float32), np.array(0.5, np.float32)):
        y, dx = value_and_grad(name, x, np.ones_like(x))
        assert y.shape == dx.shape == x.shape
        check_against_reference(name, x, np.ones_like(x), np.float32)


def test_a_gradient_of_another_dtype(cpu_kernels):
    x = np.linspace(-3, 3, 7, dtype=np.float32)
    leaf = cugn.tensor(x, requires_grad=True)
    cugn.silu(leaf).backward(cugn.tensor(np.ones(7)))  # float64 seed
    assert leaf.grad.dtype == np.float32
    np.testing.assert_allclose(leaf.grad.numpy(), REFERENCES["silu"][1](x.astype(np.float64)),
                               rtol=1e-6)


def test_which_arrays_the_numba_loops_take():
    x = np.zeros((4, 5), np.float32)
    assert elementwise_numba.supports(x, x.copy())
    assert not elementwise_numba.supports(x.T, x.T.copy())  # strided
    assert not elementwise_numba.supports(x, x.astype(np.float64))
    assert not elementwise_numba.supports(x.astype(np.float16))
    assert not elementwise_numba.supports(x, x[:, :1])  # broadcasting is NumPy's


def test_second_derivatives_still_record(cpu_kernels):
    for name, (_, derivative) in REFERENCES.items():
        x = cugn.tensor(np.linspace(-4, 4, 9), requires_grad=True)
        (grad,) = cugn.grad(getattr(cugn, name)(x).sum(), [x], create_graph=True)
        np.testing.assert_allclose(grad.numpy(), derivative(np.linspace(-4, 4, 9)), rtol=1e-12)
        assert grad.requires_grad


@pytest.mark.parametrize("name, loops", [("sigmoid", ["sigmoid", "sigmoid_backward"]),
                                         ("silu", ["silu_and_slope"]),
                                         ("tanh", ["tanh_backward"])])
def test_numba_runs_where_it_compiles_the_arrays(name, loops, monkeypatch):
    calls = []
    for loop in loops:
        original = getattr(elementwise_numba, loop)
        monkeypatch.setattr(elementwise_numba, loop,
                            lambda *arrays, _loop=loop, _original=original:
                            calls.append(_loop) or _original(*arrays))
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    value_and_grad(name, x, np.ones_like(x))
    assert calls == loops
    calls.clear()
    value_and_grad(name, x.astype(np.float16), np.ones_like(x, np.float16))
    monkeypatch.setattr(kernels, "numba_enabled", False)
    value_and_grad(name, x, np.ones_like(x))
    assert calls == []


def test_silu_without_a_gradient_keeps_no_derivative(rng, cpu_kernels):
    x = (4 * rng.standard_normal((5, 30000))).astype(np.float32)  # several chunks
    y = cugn.silu(cugn.tensor(x))
    assert y.grad_fn is None
    np.testing.assert_array_equal(y.numpy(), value_and_grad("silu", x, np.ones_like(x))[0])
    check_against_reference("silu", x, np.ones_like(x), np.float32)
