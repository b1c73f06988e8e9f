"""group_norm's forward and backward against an independent float64 reference
and finite differences, over axes, group counts, dtypes and layouts."""

import ml_dtypes
import numpy as np
import pytest

import cugn
from cugn.functional import group_norm
from reference import group_norm_reference

rng = np.random.default_rng(7)

# (shape, axis, groups): channels-last, channels-first, middle axes, negative axes,
# axis lists (adjacent and not), one group, one group per channel, -1.
LAYOUTS = [
    ((2, 5, 6, 8), -1, 4),
    ((2, 8, 5, 6), 1, 4),
    ((3, 4, 6, 5), 2, 3),
    ((3, 4, 6, 5), -2, 2),
    ((2, 6, 3), -1, 1),
    ((2, 6, 3), 1, 6),
    ((2, 6, 3), 1, -1),
    ((4, 12), -1, 3),
    ((2, 3, 4, 5), [1, 2], 6),
    ((2, 3, 4, 5), (3, 1), 5),
    ((2, 3, 4, 5), [-1, 2, 1], 4),
    ((1, 1, 1, 1), -1, 1),
    ((2, 1, 1, 16), -1, 8),
]
IDS = [f"{s}-axis{a}-g{g}" for s, a, g in LAYOUTS]


def feature_shape(shape, axis):
    axes = sorted(a % len(shape) for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
    return tuple(shape[a] for a in axes)


def make_case(shape, axis, dtype=np.float64, center=True, scale=True):
    x = rng.standard_normal(shape) * 3.0 + 1.5
    params = feature_shape(shape, axis)
    gamma = rng.standard_normal(params) if scale else None
    beta = rng.standard_normal(params) if center else None
    return x.astype(dtype), gamma, beta


@pytest.mark.parametrize("shape, axis, groups", LAYOUTS, ids=IDS)
@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False),
                                           (False, False)])
def test_forward_matches_reference_float64(shape, axis, groups, center, scale):
    x, gamma, beta = make_case(shape, axis, center=center, scale=scale)
    y = group_norm(x, groups, gamma, beta, axis=axis, epsilon=1e-3)
    assert y.dtype == np.float64 and y.shape == shape
    np.testing.assert_allclose(y.numpy(), group_norm_reference(x, groups, gamma, beta, axis),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, axis, groups", LAYOUTS, ids=IDS)
def test_gradients_match_finite_differences(shape, axis, groups):
    x, gamma, beta = make_case(shape, axis)
    inputs = [cugn.tensor(v, requires_grad=True) for v in (x, gamma, beta)]
    assert cugn.gradcheck(lambda x, g, b: group_norm(x, groups, g, b, axis=axis), inputs)


@pytest.mark.parametrize("center, scale", [(False, True), (True, False), (False, False)])
def test_gradients_without_affine(center, scale):
    x, gamma, beta = make_case((2, 6, 4), 1, center=center, scale=scale)
    params = [cugn.tensor(p, requires_grad=True) if p is not None else None for p in (gamma, beta)]
    xt = cugn.tensor(x, requires_grad=True)
    assert cugn.gradcheck(lambda x, *ps: group_norm(x, 3, params[0], params[1], axis=1),
                          [xt] + [p for p in params if p is not None])


@pytest.mark.parametrize("shape, axis, groups", [LAYOUTS[0], LAYOUTS[1], LAYOUTS[8]],
                         ids=[IDS[0], IDS[1], IDS[8]])
def test_second_order_gradients(shape, axis, groups):
    x, gamma, beta = make_case(shape, axis)
    inputs = [cugn.tensor(v, requires_grad=True) for v in (x, gamma, beta)]
    assert cugn.gradgradcheck(lambda x, g, b: group_norm(x, groups, g, b, axis=axis), inputs)


def test_plain_and_create_graph_backward_agree():
    x, gamma, beta = make_case((3, 4, 5, 8), -1)
    results = []
    for create_graph in (False, True):
        inputs = [cugn.tensor(v, requires_grad=True) for v in (x, gamma, beta)]
        y = group_norm(inputs[0], 4, inputs[1], inputs[2])
        (y * y.detach()).sum().backward(create_graph=create_graph)
        results.append([t.grad.numpy() for t in inputs])
    for plain, graph in zip(*results):
        np.testing.assert_allclose(plain, graph, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ dtypes

HALF_TOLERANCE = {np.float16: 2e-3, ml_dtypes.bfloat16: 1.6e-2, np.float32: 2e-6}


@pytest.mark.parametrize("dtype", list(HALF_TOLERANCE), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape, axis, groups", [LAYOUTS[0], LAYOUTS[1], LAYOUTS[9]],
                         ids=[IDS[0], IDS[1], IDS[9]])
def test_lower_precision_forward(dtype, shape, axis, groups):
    x, gamma, beta = make_case(shape, axis, dtype=dtype)
    gamma, beta = gamma.astype(np.float32), beta.astype(np.float32)
    y = group_norm(x, groups, gamma, beta, axis=axis)
    assert y.dtype == np.dtype(dtype)
    # Reference on the same (rounded) inputs; what is left is the output rounding.
    expected = group_norm_reference(x.astype(np.float64), groups, gamma, beta, axis)
    tolerance = HALF_TOLERANCE[dtype] * max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(y.numpy().astype(np.float64), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype", list(HALF_TOLERANCE), ids=lambda d: np.dtype(d).name)
def test_lower_precision_backward(dtype):
    x, gamma, beta = make_case((2, 8, 3, 3), 1, dtype=dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    grads = {}
    for name, cast in (("low", dtype), ("high", np.float64)):
        inputs = [cugn.tensor(x.astype(cast), requires_grad=True),
                  cugn.tensor(gamma.astype(np.float32 if name == "low" else np.float64),
                              requires_grad=True),
                  cugn.tensor(beta.astype(np.float32 if name == "low" else np.float64),
                              requires_grad=True)]
        y = group_norm(inputs[0], 4, inputs[1], inputs[2], axis=1)
        y.backward(cugn.tensor(dy.astype(cast)))
        grads[name] = [t.grad for t in inputs]
    assert grads["low"][0].dtype == np.dtype(dtype)
    assert grads["low"][1].dtype == np.float32
    for low, high in zip(grads["low"], grads["high"]):
        high = high.numpy()
        tolerance = 4 * HALF_TOLERANCE[dtype] * max(1.0, np.abs(high).max())
        np.testing.assert_allclose(low.numpy().astype(np.float64), high, rtol=0, atol=tolerance)


# ------------------------------------------------------------------ numerics


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-3), (np.float64, 1e-9)])
@pytest.mark.parametrize("axis", [-1, 1])
def test_statistics_stay_accurate_far_from_zero(dtype, tolerance, axis):
    # |mean| / std = 1e6: sums of squares minus the squared mean would lose it all.
    shape = (2, 16, 4, 4) if axis == 1 else (2, 4, 4, 16)
    x = (1e4 + 1e-2 * rng.standard_normal(shape)).astype(dtype)
    y = group_norm(x, 4, axis=axis, epsilon=1e-9)
    expected = group_norm_reference(x, 4, axis=axis, epsilon=1e-9)
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=tolerance)

    xt = cugn.tensor(x.astype(np.float64), requires_grad=True)
    assert cugn.gradcheck(lambda t: group_norm(t, 4, axis=axis, epsilon=1e-9), [xt], eps=1e-8,
                          atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("outlier", [1e3, 3e4])
@pytest.mark.parametrize("axis", [-1, 1])
def test_an_outlier_at_the_first_position_keeps_the_variance_exact(outlier, axis, rng):
    # The first value of a group is where the statistics are anchored; far from the
    # rest it must not make the float32 variance cancel.
    shape = (2, 4, 64, 64) if axis == 1 else (2, 64, 64, 4)
    x = rng.standard_normal(shape).astype(np.float32)
    x[(0,) * 4] = outlier
    y = group_norm(x, 2, axis=axis, epsilon=0.0)
    expected = group_norm_reference(x, 2, axis=axis, epsilon=0.0)
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=5e-5 * np.abs(expected).max())


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("axis", [-1, 1])
def test_float32_gradients_stay_accurate_far_from_zero(create_graph, axis):
    # The saved float32 mean is off by up to 5e-4 at 1e4, 5 % of the spread here.
    shape = (2, 16, 4, 4) if axis == 1 else (2, 4, 4, 16)
    x = (1e4 + 1e-2 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape)
    gamma = rng.standard_normal(16)
    grads = []
    for dtype in (np.float32, np.float64):
        xt = cugn.tensor(x.astype(dtype), requires_grad=True)
        gt = cugn.tensor(gamma.astype(dtype), requires_grad=True)
        group_norm(xt, 4, gt, axis=axis, epsilon=1e-9).backward(cugn.tensor(dy.astype(dtype)),
                                                                create_graph=create_graph)
        grads.append([xt.grad.numpy().astype(np.float64), gt.grad.numpy().astype(np.float64)])
    for low, high in zip(*grads):
        np.testing.assert_allclose(low, high, rtol=0, atol=2e-6 * np.abs(high).max())


@pytest.mark.parametrize("epsilon", [0.0, 1e-3])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_constant_groups_give_beta(epsilon, dtype):
    x = np.full((2, 4, 3), 5.0, dtype=dtype)
    x[1, :, :2] = rng.standard_normal((4, 2))  # a non-constant group beside constant ones
    beta = np.arange(3, dtype=np.float32)
    gamma = np.ones(3, dtype=np.float32)
    xt = cugn.tensor(x, requires_grad=True)
    gt, bt = cugn.tensor(gamma, requires_grad=True), cugn.tensor(beta, requires_grad=True)
    y = group_norm(xt, 3, gt, bt, epsilon=epsilon)
    np.testing.assert_array_equal(y.numpy()[0], np.broadcast_to(beta, (4, 3)).astype(dtype))
    np.testing.assert_array_equal(y.numpy()[1, :, 2], np.full(4, beta[2], dtype=dtype))
    y.sum().backward()
    # d(sum y)/dx is 0 in every group (each group's normalised values sum to 0), and
    # dbeta counts the values of each channel.
    np.testing.assert_allclose(xt.grad.numpy().astype(np.float64), 0.0, atol=1e-5)
    np.testing.assert_array_equal(bt.grad.numpy(), [8.0, 8.0, 8.0])
    assert np.isfinite(gt.grad.numpy()).all()


def test_a_group_holding_infinity_gives_nan_only_there():
    x = np.ones((2, 4, 3), np.float32)
    x[0, 1, 0] = np.inf
    with np.errstate(invalid="ignore"):
        y = group_norm(x, 3).numpy()
    assert np.isnan(y[0, :, 0]).all()
    assert np.isfinite(y[0, :, 1:]).all() and np.isfinite(y[1]).all()


@pytest.mark.parametrize("scale", [6e4, 3e4])
def test_float16_inputs_in_the_ten_thousands(scale):
    x = (scale * rng.uniform(-1, 1, (2, 4, 8))).astype(np.float16)
    x[0] = np.float16(6e4)  # a constant group at the top of float16's range
    y = group_norm(x, 2, axis=1)
    assert np.isfinite(y.numpy()).all()
    np.testing.assert_allclose(y.numpy().astype(np.float64),
                               group_norm_reference(x, 2, axis=1), rtol=0, atol=4e-3)


def test_keras_overflow_case_float32():
    # Keras's test: an input full of 70000 must not give NaN.
    y = group_norm(np.full((2, 4, 8), 70000.0, np.float32), 2)
    np.testing.assert_array_equal(y.numpy(), np.zeros((2, 4, 8), np.float32))


# ------------------------------------------------------------------ layouts and shapes


@pytest.mark.parametrize("axis", [-1, 1])
def test_empty_batch(axis):
    shape = (0, 6, 3, 3) if axis == 1 else (0, 3, 3, 6)
    x = cugn.tensor(np.zeros(shape, np.float32), requires_grad=True)
    gamma = cugn.tensor(np.ones(6, np.float32), requires_grad=True)
    beta = cugn.tensor(np.zeros(6, np.float32), requires_grad=True)
    y = group_norm(x, 3, gamma, beta, axis=axis)
    assert y.shape == shape and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.shape == shape
    np.testing.assert_array_equal(gamma.grad.numpy(), np.zeros(6, np.float32))
    np.testing.assert_array_equal(beta.grad.numpy(), np.zeros(6, np.float32))


@pytest.mark.parametrize("shape, axis", [((2, 0, 8), -1), ((2, 4, 0), 1), ((0, 0, 4), -1)])
def test_groups_without_values(shape, axis):
    x = cugn.tensor(np.zeros(shape, np.float32), requires_grad=True)
    gamma = cugn.tensor(np.ones(shape[axis], np.float32), requires_grad=True)
    y = group_norm(x, 2, gamma, axis=axis)
    assert y.shape == shape
    y.sum().backward()
    assert x.grad.shape == shape
    np.testing.assert_array_equal(gamma.grad.numpy(), np.zeros(shape[axis], np.float32))


def test_no_channels_is_an_error():
    with pytest.raises(ValueError, match="at least one channel"):
        group_norm(np.zeros((2, 3, 0), np.float32), -1)


@pytest.mark.parametrize("make_view", [
    lambda a: a.transpose(0, 2, 3, 1),          # NCHW memory seen as NHWC
    lambda a: a[:, :, ::2, 1:],                 # strided slices
    lambda a: a[::-1],                          # negative strides
    lambda a: np.broadcast_to(a[:1], a.shape),  # zero strides
], ids=["transposed", "strided", "reversed", "broadcast"])
def test_non_contiguous_inputs(make_view):
    base = rng.standard_normal((3, 8, 6, 5)).astype(np.float32)
    view = make_view(base)
    assert not view.flags.c_contiguous
    dense = np.ascontiguousarray(view)
    params = view.shape[-1]
    gamma = rng.standard_normal(params).astype(np.float32)
    beta = rng.standard_normal(params).astype(np.float32)
    dy = rng.standard_normal(view.shape).astype(np.float32)
    results = []
    for x in (view, dense):
        xt = cugn.tensor(x, requires_grad=True)
        gt, bt = cugn.tensor(gamma, requires_grad=True), cugn.tensor(beta, requires_grad=True)
        y = group_norm(xt, 1 if params == 5 else params // 2, gt, bt)
        y.backward(cugn.tensor(dy))
        results.append([y.numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()])
    # Same values up to float32 rounding: the summation order may follow the memory order.
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_large_batch_spans_several_chunks():
    # Several MiB: the NumPy path splits the batch into cache-sized chunks on threads.
    x, gamma, beta = make_case((40, 16, 32, 32), 1, dtype=np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    xt = cugn.tensor(x, requires_grad=True)
    gt = cugn.tensor(gamma.astype(np.float32), requires_grad=True)
    bt = cugn.tensor(beta.astype(np.float32), requires_grad=True)
    y = group_norm(xt, 8, gt, bt, axis=1)
    np.testing.assert_allclose(y.numpy(), group_norm_reference(x, 8, gamma, beta, 1),
                               rtol=0, atol=2e-5)
    y.backward(cugn.tensor(dy))

    x64 = [cugn.tensor(v.astype(np.float64), requires_grad=True) for v in (x, gamma, beta)]
    group_norm(x64[0], 8, x64[1], x64[2], axis=1).backward(cugn.tensor(dy.astype(np.float64)))
    for got, expected in zip((xt, gt, bt), x64):
        scale = np.abs(expected.grad.numpy()).max()
        np.testing.assert_allclose(got.grad.numpy(), expected.grad.numpy(), rtol=0,
                                   atol=1e-5 * scale)


def test_results_are_deterministic():
    x, gamma, beta = make_case((24, 32, 16, 16), 1, dtype=np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    runs = []
    for _ in range(2):
        inputs = [cugn.tensor(v.astype(np.float32), requires_grad=True) for v in (x, gamma, beta)]
        y = group_norm(inputs[0], 8, inputs[1], inputs[2], axis=1)
        y.backward(cugn.tensor(dy))
        runs.append([y.numpy()] + [t.grad.numpy() for t in inputs])
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


def test_input_is_left_untouched_and_output_is_new():
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    before = x.copy()
    y = group_norm(x, 2)
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(y.numpy(), x)


def test_accepts_tensors_arrays_and_lists():
    x = [[-1.0, 1.0, 0.0, 2.0], [1.0, 3.0, -4.0, -2.0]]
    from_list = group_norm(x, 2).numpy()
    from_array = group_norm(np.asarray(x, np.float32), 2).numpy()
    np.testing.assert_array_equal(from_list, from_array)
    np.testing.assert_allclose(from_list, group_norm_reference(x, 2), atol=1e-6)
