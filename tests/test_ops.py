"""Every op's backward against finite differences, to first and second order."""

import numpy as np
import pytest

import cugn

rng = np.random.default_rng(1234)


def leaf(*shape, positive=False):
    data = rng.standard_normal(shape)
    if positive:
        data = np.abs(data) + 0.5
    return cugn.tensor(data, dtype=np.float64, requires_grad=True)


CASES = {
    "add": (lambda a, b: a + b, [(3, 4), (4,)], {}),
    "sub": (lambda a, b: a - b, [(3, 1), (3, 4)], {}),
    "rsub_scalar": (lambda a: 2.0 - a, [(3,)], {}),
    "mul": (lambda a, b: a * b, [(2, 3), (2, 3)], {}),
    "mul_broadcast": (lambda a, b: a * b, [(2, 1, 3), (4, 1)], {}),
    "div": (lambda a, b: a / b, [(2, 3), (3,)], {"positive": True}),
    "rdiv_scalar": (lambda a: 1.5 / a, [(3,)], {"positive": True}),
    "pow_scalar": (lambda a: a ** 3, [(2, 3)], {}),
    "pow_tensor": (lambda a, b: a ** b, [(2, 3), (2, 3)], {"positive": True}),
    "rpow": (lambda a: 2.0 ** a, [(4,)], {}),
    "neg": (lambda a: -a, [(3,)], {}),
    "matmul": (lambda a, b: a @ b, [(2, 3), (3, 4)], {}),
    "matmul_batched": (lambda a, b: a @ b, [(2, 2, 3), (3, 2)], {}),
    "matmul_vector_left": (lambda a, b: a @ b, [(3,), (3, 2)], {}),
    "matmul_vector_right": (lambda a, b: a @ b, [(2, 3), (3,)], {}),
    "matmul_dot": (lambda a, b: a @ b, [(3,), (3,)], {}),
    "exp": (cugn.exp, [(2, 3)], {}),
    "log": (cugn.log, [(2, 3)], {"positive": True}),
    "sqrt": (cugn.sqrt, [(2, 3)], {"positive": True}),
    "abs": (cugn.abs, [(2, 3)], {}),
    "tanh": (cugn.tanh, [(2, 3)], {}),
    "sigmoid": (cugn.sigmoid, [(2, 3)], {}),
    "relu": (cugn.relu, [(2, 3)], {}),
    "silu": (cugn.silu, [(2, 3)], {}),
    "softmax": (lambda a: cugn.softmax(a, axis=1), [(2, 4)], {}),
    "log_softmax": (lambda a: cugn.log_softmax(a, axis=0), [(3, 2)], {}),
    "sum_all": (lambda a: a.sum(), [(2, 3)], {}),
    "sum_axis": (lambda a: a.sum(axis=(0, 2), keepdims=True), [(2, 3, 2)], {}),
    "mean": (lambda a: a.mean(axis=1), [(2, 3)], {}),
    "var": (lambda a: a.var(axis=-1), [(2, 5)], {}),
    "var_ddof": (lambda a: a.var(ddof=1), [(6,)], {}),
    "max": (lambda a: a.max(axis=1), [(3, 4)], {}),
    "reshape": (lambda a: a.reshape(3, 2) * 2, [(2, 3)], {}),
    "permute": (lambda a: a.permute(2, 0, 1), [(2, 3, 4)], {}),
    "transpose": (lambda a: a.transpose(0, 1), [(2, 3)], {}),
    "T": (lambda a: a.T, [(2, 3)], {}),
    "getitem_slice": (lambda a: a[1:, ::2], [(3, 4)], {}),
    "getitem_repeated_index": (lambda a: a[[0, 0, 2]], [(3, 2)], {}),
    "getitem_tensor_index": (lambda a: a[cugn.tensor([1, 1, 0])], [(3,)], {}),
    "concatenate": (lambda a, b: cugn.concatenate([a, b], axis=1), [(2, 3), (2, 1)], {}),
    "stack": (lambda a, b: cugn.stack([a, b], axis=-1), [(2, 3), (2, 3)], {}),
    "where": (lambda a, b: cugn.where(a > 0, a, b), [(3, 3), (3,)], {}),
    # float32 rounding is far above eps=1e-6: a coarser step and tolerance.
    "cast": (lambda a: a.to(dtype=np.float32).to(dtype=np.float64) * a, [(3,)],
             {"eps": 1e-2, "atol": 1e-3}),
}


def inputs_and_tolerances(name):
    fn, shapes, options = CASES[name]
    tolerances = {key: options[key] for key in ("eps", "atol") if key in options}
    inputs = [leaf(*shape, positive=options.get("positive", False)) for shape in shapes]
    return fn, inputs, tolerances


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_derivative(name):
    fn, inputs, tolerances = inputs_and_tolerances(name)
    assert cugn.gradcheck(fn, inputs, **tolerances)


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_derivative(name):
    fn, inputs, tolerances = inputs_and_tolerances(name)
    assert cugn.gradgradcheck(fn, inputs, **tolerances)


def test_max_shares_the_gradient_between_ties():
    x = cugn.tensor([1.0, 3.0, 3.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.5, 0.5])


def test_softmax_is_stable_for_large_inputs():
    x = cugn.tensor([1000.0, 1001.0, 1002.0], dtype=np.float64)
    expected = np.exp([-2.0, -1.0, 0.0]) / np.exp([-2.0, -1.0, 0.0]).sum()
    np.testing.assert_allclose(cugn.softmax(x).numpy(), expected)
    np.testing.assert_allclose(cugn.log_softmax(x).numpy(), np.log(expected))


def test_sigmoid_does_not_overflow():
    x = cugn.tensor([-1000.0, 0.0, 1000.0], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise"):
        np.testing.assert_array_equal(cugn.sigmoid(x).numpy(), [0.0, 0.5, 1.0])


def test_comparisons_give_boolean_tensors_without_grad():
    x = cugn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    mask = x > 1.5
    assert mask.dtype == np.bool_ and not mask.requires_grad
    np.testing.assert_array_equal(mask.numpy(), [False, True, True])
    np.testing.assert_array_equal((x == 2.0).numpy(), [False, True, False])


def test_scalars_keep_the_tensor_dtype():
    x = cugn.tensor([1.0, 2.0])
    assert (x * 2.5 + 1).dtype == np.float32
    assert (2 ** x).dtype == np.float32


def test_axis_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="axis 2"):
        cugn.tensor([[1.0]]).sum(axis=2)


@pytest.mark.parametrize("axis, error, message", [(1.5, TypeError, "axis must be an int"),
                                                  ((0, 0), ValueError, "names an axis twice"),
                                                  (2, ValueError, "out of range"),
                                                  (-3, ValueError, "out of range")])
def test_reductions_reject_bad_axes(axis, error, message):
    x = cugn.tensor(np.ones((2, 3)))
    for reduce in (cugn.sum, cugn.mean, cugn.max, cugn.var):
        with pytest.raises(error, match=message):
            reduce(x, axis=axis)


def test_max_over_an_empty_axis_is_an_error_but_an_empty_batch_is_not():
    with pytest.raises(ValueError, match="max over an empty axis"):
        cugn.max(cugn.tensor(np.ones((2, 0))), axis=1)
    assert cugn.max(cugn.tensor(np.ones((0, 3))), axis=1).shape == (0,)


@pytest.mark.parametrize("call, error, message", [
    (lambda x: x.permute(0, 3), ValueError, "axes 3 is out of range"),
    (lambda x: x.transpose(0, 5), ValueError, "axis1 5 is out of range"),
    (lambda x: x.transpose(0, 1.0), TypeError, "axis1 must be an int"),
    (lambda x: cugn.concatenate([x, x], axis=3), ValueError, "axis 3 is out of range"),
    (lambda x: cugn.stack([x, x], axis=-4), ValueError, "axis -4 is out of range"),
], ids=["permute", "transpose", "transpose-float", "concatenate", "stack"])
def test_shape_ops_reject_bad_axes(call, error, message):
    with pytest.raises(error, match=message):
        call(cugn.tensor(np.ones((2, 3))))
