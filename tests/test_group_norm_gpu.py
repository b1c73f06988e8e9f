"""The CUDA GroupNorm kernels against the NumPy path in float64 and against
finite differences. The tests marked ``gpu`` need a CUDA device and CuPy and
skip without them (tests/conftest.py); the unmarked ones at the end run the
same reference helpers on the CPU, with the NumPy path in place of the
kernels, so that the helpers and tolerances are proven wherever the suite runs.

Run on a GPU host: PYTHONPATH=$PWD python -m pytest -m gpu tests/test_group_norm_gpu.py;
.ci/gpu runs them, then a subset under compute-sanitizer's memcheck and racecheck.
"""

import contextlib

import numpy as np
import pytest

import cugn
from cugn.functions.normalization import check_axis, feature_axes, resolve_groups
from cugn.kernels import GroupLayout, group_norm_numpy
from kernel_cases import CASES as SHARED_CASES

gpu = pytest.mark.gpu

# (rtol, atol) of outputs of order one against the float64 NumPy path.
TOLERANCE = {np.float16: (5e-3, 2e-2), np.float32: (1e-5, 1e-4), np.float64: (1e-11, 1e-10)}


@pytest.fixture
def cp():
    import cupy

    return cupy


@pytest.fixture
def cuda():
    from cugn.kernels import group_norm_cuda

    return group_norm_cuda


def make_layout(shape, axis, groups):
    axes = feature_axes(check_axis(axis), shape)
    channels = int(np.prod([shape[a] for a in axes]))
    return GroupLayout(shape, axes, resolve_groups(groups, channels))


def make_inputs(shape, layout, dtype, center=True, scale=True, offset=0.5, std=2.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (offset + std * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = (1 + 0.5 * rng.standard_normal(layout.feature_shape)).astype(np.float32) if scale else None
    beta = rng.standard_normal(layout.feature_shape).astype(np.float32) if center else None
    return x, dy, gamma, beta


def as64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def to_host(a):
    """A NumPy copy of a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def assert_close(got, want, dtype, scale_with_magnitude=False):
    rtol, atol = TOLERANCE[dtype]
    if scale_with_magnitude:  # sums over many values: an absolute error that grows with them
        atol *= max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol, atol=atol)


def run_both_passes(implementation, xp, layout, x, dy, gamma, beta, epsilon):
    """y, mean, rstd, dx, dgamma, dbeta of ``implementation`` on arrays of ``xp``."""
    put = lambda a: None if a is None else xp.asarray(a)  # noqa: E731
    y, mean, rstd = implementation.forward(put(x), put(gamma), put(beta), layout, epsilon)
    return (y, mean, rstd, *implementation.backward(put(x), put(dy), put(gamma), mean, rstd,
                                                    layout))


def check_against_numpy(implementation, xp, shape, axis, groups, dtype, center=True, scale=True,
                        epsilon=1e-3, tolerance=None, **data):
    """Run ``implementation`` (the CUDA path on CuPy, or the NumPy path on NumPy)
    in ``dtype`` and compare every output with the NumPy path in float64."""
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, dtype, center, scale, **data)
    y64, mean64, rstd64 = group_norm_numpy.forward(as64(x), as64(gamma), as64(beta), layout,
                                                   epsilon)
    dx64, dgamma64, dbeta64 = group_norm_numpy.backward(as64(x), as64(dy), as64(gamma), mean64,
                                                        rstd64, layout)
    y, mean, rstd, dx, dgamma, dbeta = run_both_passes(implementation, xp, layout, x, dy, gamma,
                                                       beta, epsilon)
    compute = np.float64 if dtype == np.float64 else np.float32
    assert y.dtype == dtype and y.shape == shape and dx.dtype == dtype and dx.shape == shape
    assert mean.dtype == compute and mean.shape == (layout.batch, layout.groups)
    assert rstd.dtype == compute and rstd.shape == mean.shape
    assert dgamma.dtype == compute and dgamma.shape == layout.feature_shape
    assert dbeta.dtype == compute and dbeta.shape == layout.feature_shape
    close = tolerance or assert_close
    close(to_host(mean), mean64, dtype, scale_with_magnitude=True)
    close(to_host(rstd), rstd64, dtype, scale_with_magnitude=True)
    close(to_host(y), y64, dtype)
    close(to_host(dx), dx64, dtype, scale_with_magnitude=True)
    close(to_host(dgamma), dgamma64, dtype, scale_with_magnitude=True)
    close(to_host(dbeta), dbeta64, dtype, scale_with_magnitude=True)


DTYPES = [np.float16, np.float32, np.float64]
dtype_ids = lambda d: np.dtype(d).name  # noqa: E731

CASES = [
    # shape, axis, groups
    ((2, 8, 8, 32), -1, 4),        # NHWC, column tiles
    ((2, 32, 8, 8), 1, 4),         # NCHW, rows of D*S
    ((2, 6, 12, 5), 2, 3),         # a middle axis: M = 6, S = 5
    ((2, 4, 6, 10), [1, 3], 2),    # non-adjacent axes (moved together)
    ((2, 4, 6, 10), (2, 3), 4),    # adjacent axes as a list
    ((2, 6, 10, 4), (-1, -3), 4),  # negative axes in a list
    ((3, 5, 5, 24), -1, 8),        # D = 3: not a multiple of any vector width
    ((2, 4, 16, 48), -1, 16),      # D = 3 over 48 channels: tiles of 30 lanes
    ((3, 33, 7, 7), 1, 3),         # S = 49, D = 11
    ((2, 9, 9, 48), -1, -1),       # one channel per group
    ((2, 48, 9, 9), 1, -1),        # one channel per group, S = 81 (warp tier)
    ((2, 16, 4, 4), 1, 1),         # one group
    ((4, 64), -1, 8),              # spatial size 1, M = 1
    ((4, 64, 1, 1), 1, 8),         # spatial size 1 channels-first
    ((1, 32, 32, 64), -1, 32),     # B = 1: split column tiles
    ((1, 64, 32, 32), 1, 32),      # B = 1: split rows
    ((2, 4, 4, 8192), -1, 2),      # long channels-last groups: segment units
    ((5, 300, 7), -1, 7),          # odd everything
]
HUGE_CASES = [
    ((1, 4096, 4096), 1, 1),       # one group of 16M values: split segment units
    ((1, 4096, 4096), -1, 1),      # the same channels-last: segments of 4096 channels
]


# The cases the kernels run on the CPU too (tests/test_cuda_on_cpu.py).
CASES += [case for case in SHARED_CASES if case not in CASES]


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups", CASES + HUGE_CASES, ids=str)
def test_matches_numpy(cp, cuda, shape, axis, groups, dtype):
    check_against_numpy(cuda, cp, shape, axis, groups, dtype)


@gpu
@pytest.mark.parametrize("center, scale", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("shape, axis", [((2, 6, 6, 16), -1), ((2, 16, 6, 6), 1)])
def test_matches_numpy_without_center_or_scale(cp, cuda, shape, axis, center, scale):
    check_against_numpy(cuda, cp, shape, axis, 4, np.float32, center=center, scale=scale)


def check_large_mean_forward(implementation, xp, shape, axis, dtype):
    """|mean| = 1e4 with std 1e-2: the statistics must not cancel."""
    layout = make_layout(shape, axis, 8)
    x, _, gamma, beta = make_inputs(shape, layout, dtype, offset=1e4, std=1e-2)
    y64, mean64, rstd64 = group_norm_numpy.forward(as64(x), as64(gamma), as64(beta), layout, 1e-6)
    put = lambda a: None if a is None else xp.asarray(a)  # noqa: E731
    y, mean, rstd = implementation.forward(put(x), put(gamma), put(beta), layout, 1e-6)
    np.testing.assert_allclose(to_host(y), y64, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(to_host(rstd), rstd64, rtol=1e-4)
    np.testing.assert_allclose(to_host(mean), mean64, rtol=1e-6)


LARGE_MEAN_CASES = [((2, 16, 16, 32), -1), ((2, 32, 16, 16), 1), ((1, 32, 64, 64), 1),
                    ((1, 64, 64, 32), -1)]


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=dtype_ids)
@pytest.mark.parametrize("shape, axis", LARGE_MEAN_CASES)
def test_large_mean_small_std_forward(cp, cuda, shape, axis, dtype):
    check_large_mean_forward(cuda, cp, shape, axis, dtype)


@gpu
@pytest.mark.parametrize("shape, axis", LARGE_MEAN_CASES)
def test_large_mean_small_std_backward_float64(cp, cuda, shape, axis):
    check_against_numpy(cuda, cp, shape, axis, 8, np.float64, epsilon=1e-6, offset=1e4, std=1e-2)


def mean_dwarfs_spread_float32(got, want, dtype, scale_with_magnitude=False):
    """float32 at |mean| = 1e4 with std 1e-2: the saved float32 mean is off by up to
    5e-4 (5 % of the spread) and the backward must correct for it, as the NumPy
    path does, to stay within float32 accuracy of the float64 result. Every output
    is compared relative to its largest value: float32 sums over the thousands of
    values of a group leave a relative error of about 1e-6 in the variance, which
    reaches every output of the group."""
    del scale_with_magnitude  # always, see above
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-4, atol=1e-5 * scale)


@gpu
@pytest.mark.parametrize("shape, axis", LARGE_MEAN_CASES)
def test_large_mean_backward_float32(cp, cuda, shape, axis):
    check_against_numpy(cuda, cp, shape, axis, 8, np.float32, epsilon=1e-6, offset=1e4,
                        std=1e-2, tolerance=mean_dwarfs_spread_float32)


@gpu
@pytest.mark.parametrize("axis", [-1, 1])
def test_constant_group_with_zero_epsilon_gives_beta(cp, cuda, axis):
    # The NumPy path's rule: rstd = 0 where var + epsilon == 0, so y = beta and dx = 0.
    shape = (2, 8, 8, 16)
    layout = make_layout(shape, axis, 4)
    beta = np.arange(np.prod(layout.feature_shape), dtype=np.float32).reshape(layout.feature_shape)
    x = cp.full(shape, 3.0, cp.float32)
    y, mean, rstd = cuda.forward(x, None, cp.asarray(beta), layout, 0.0)
    want = np.broadcast_to(layout.params_view(beta), layout.view)
    np.testing.assert_array_equal(layout.to_view(y).get(), want)
    assert (rstd.get() == 0).all() and (mean.get() == 3).all()
    dy = cp.ones(shape, cp.float32)
    dx = cuda.backward(x, dy, None, mean, rstd, layout)[0]
    assert (dx.get() == 0).all()


@gpu
@pytest.mark.parametrize("axis", [-1, 1])
def test_a_group_holding_infinity_gives_nan_as_the_numpy_path(cp, cuda, axis):
    shape = (2, 8, 8, 16)
    layout = make_layout(shape, axis, 4)
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    x[(0,) * 4] = np.inf
    with np.errstate(invalid="ignore"):
        want = group_norm_numpy.forward(x, None, None, layout, 1e-3)
    got = cuda.forward(cp.asarray(x), None, None, layout, 1e-3)
    for index in (0, 2):  # y and rstd (the mean of such a group may be inf or NaN)
        np.testing.assert_array_equal(np.isnan(to_host(got[index])), np.isnan(want[index]))
    assert np.isnan(want[2][0, 0]) and np.isfinite(want[2][1]).all()


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_non_contiguous_inputs(cp, cuda, dtype):
    rng = np.random.default_rng(1)
    base = cp.asarray(rng.standard_normal((4, 12, 10, 64)).astype(dtype))
    x = base[::2, :, ::2, :].transpose(0, 3, 1, 2)  # (2, 64, 12, 5), strided and permuted
    dy = cp.asarray(rng.standard_normal((2, 5, 64, 12)).astype(dtype)).transpose(0, 2, 3, 1)
    layout = make_layout(x.shape, 1, 8)
    gamma = cp.asarray(rng.standard_normal(64).astype(np.float32))[::-1]
    assert not (x.flags.c_contiguous or dy.flags.c_contiguous or gamma.flags.c_contiguous)
    xc, dyc, gammac = (cp.ascontiguousarray(a) for a in (x, dy, gamma))
    got = cuda.forward(x, gamma, None, layout, 1e-3)
    want = cuda.forward(xc, gammac, None, layout, 1e-3)
    for a, b in zip(got, want):
        cp.testing.assert_array_equal(a, b)
    got = cuda.backward(x, dy, gamma, want[1], want[2], layout)
    want = cuda.backward(xc, dyc, gammac, want[1], want[2], layout)
    for a, b in zip(got, want):
        cp.testing.assert_array_equal(a, b)
    check_against_numpy(cuda, cp, (2, 64, 12, 5), 1, 8, dtype)


@gpu
@pytest.mark.parametrize("axis, shape", [(-1, (2, 8, 8, 32)), (1, (2, 32, 8, 8))])
def test_unaligned_input_uses_narrower_vectors(cp, cuda, axis, shape):
    rng = np.random.default_rng(2)
    size = int(np.prod(shape))
    storage = cp.asarray(rng.standard_normal(1 + 2 * size).astype(np.float32))
    x = storage[1:1 + size].reshape(shape)  # 4 bytes past a 16-byte boundary
    dy = storage[1 + size:].reshape(shape)
    layout = make_layout(shape, axis, 4)
    y, mean, rstd = cuda.forward(x, None, None, layout, 1e-3)
    dx = cuda.backward(x, dy, None, mean, rstd, layout)[0]
    y64, mean64, rstd64 = group_norm_numpy.forward(as64(x.get()), None, None, layout, 1e-3)
    dx64 = group_norm_numpy.backward(as64(x.get()), as64(dy.get()), None, mean64, rstd64,
                                     layout)[0]
    assert_close(y.get(), y64, np.float32)
    assert_close(dx.get(), dx64, np.float32, scale_with_magnitude=True)


@gpu
@pytest.mark.parametrize("shape, axis, groups", [((1, 64, 64, 64), -1, 32),
                                                 ((1, 64, 64, 64), 1, 32),
                                                 ((3, 2048, 2048), 1, 1), ((2, 9, 48), 1, -1)])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_bitwise_deterministic(cp, cuda, shape, axis, groups, dtype):
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = (None if a is None else cp.asarray(a)
                          for a in make_inputs(shape, layout, dtype))
    first = run_both_passes(cuda, cp, layout, x, dy, gamma, beta, 1e-5)
    second = run_both_passes(cuda, cp, layout, x, dy, gamma, beta, 1e-5)
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()


@contextlib.contextmanager
def nan_filled_allocations(cp):
    """Every CuPy allocation in the block starts as NaN bytes (0xFF), workspaces included."""
    pool = cp.cuda.MemoryPool()

    def allocate(size):
        memory = pool.malloc(size)
        if size:
            cp.cuda.runtime.memsetAsync(memory.ptr, 0xFF, size, cp.cuda.get_current_stream().ptr)
        return memory

    previous = cp.cuda.get_allocator()
    cp.cuda.set_allocator(allocate)
    try:
        yield
    finally:
        cp.cuda.set_allocator(previous)


@gpu
@pytest.mark.parametrize("shape, axis, groups", [((2, 8, 8, 32), -1, 4), ((1, 32, 64, 64), 1, 32),
                                                 ((1, 64, 64, 64), -1, 32), ((3, 33, 7, 7), 1, 3),
                                                 ((2, 48, 9, 9), 1, -1), ((3, 5, 5, 24), -1, 8)])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_every_output_and_workspace_value_is_written(cp, cuda, shape, axis, groups, dtype):
    check_every_value_written(cp, cuda, shape, axis, groups, dtype)


def check_every_value_written(cp, cuda, shape, axis, groups, dtype):
    """Outputs finite with every fresh allocation NaN-filled, and right."""
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = (None if a is None else cp.asarray(a)
                          for a in make_inputs(shape, layout, dtype))
    with nan_filled_allocations(cp):
        outputs = [a.get() for a in run_both_passes(cuda, cp, layout, x, dy, gamma, beta, 1e-3)]
    assert all(np.isfinite(a).all() for a in outputs)
    check_against_numpy(cuda, cp, shape, axis, groups, dtype)


@gpu
@pytest.mark.parametrize("shape, axis, groups, l2_bytes", [
    ((8, 16, 16, 64), -1, 8, 256 * 1024),   # whole samples a part (64 kB a sample)
    ((2, 64, 64, 64), 1, 32, 1 << 20),      # channels-first: groups of a 1 MB sample a part
    # A sample of 32 or 64 MB: windows of 1 or 2 groups of 1 or 2 MB; the float32
    # backward's x and dy of one group exceed the 2 MB share: pieces of rows.
    ((1, 8192, 2048), -1, 32, 4 << 20),
    ((1, 8192, 2048), -1, 1, 4 << 20),      # one group: pieces of rows
    ((1, 8192, 2048), 1, 32, 16 << 20),     # channels-first: groups a part
])
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=dtype_ids)
def test_passes_in_parts_of_a_small_l2(cp, cuda, monkeypatch, shape, axis, groups, l2_bytes,
                                       dtype):
    monkeypatch.setattr(cuda, "_l2_bytes", lambda device_id: l2_bytes)
    check_every_value_written(cp, cuda, shape, axis, groups, dtype)


@gpu
@pytest.mark.parametrize("on_chip", [True, False])
@pytest.mark.parametrize("shape, axis, groups", [((32, 32, 32, 256), -1, 32),
                                                 ((32, 256, 32, 32), 1, 32),
                                                 ((64, 6, 12, 5), 2, 3),
                                                 ((2, 4096, 320), -1, 32),
                                                 ((2, 320, 64, 64), 1, 32)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_with_the_on_chip_tier_on_and_off(cp, cuda, monkeypatch, shape, axis, groups, dtype,
                                          on_chip):
    # Groups of 8192 values at the first two shapes (float16: both passes fit in one
    # block's shared memory; float32: the forward, the backward in clusters of 2 blocks
    # on sm_90; float64: clusters), of 120 at the third (every pass), and of 40960 at
    # the last two (clusters of 4 and 8 blocks on sm_90, in 16-bit types), on the
    # on-chip tier and on the others.
    monkeypatch.setattr(cuda, "on_chip", on_chip)
    check_every_value_written(cp, cuda, shape, axis, groups, dtype)


@gpu
@pytest.mark.parametrize("shape, axis, groups", [((0, 8, 8, 16), -1, 4), ((0, 16, 8, 8), 1, 4),
                                                 ((0, 16), -1, -1)])
def test_empty_batch(cp, cuda, shape, axis, groups):
    layout = make_layout(shape, axis, groups)
    x = np.zeros(shape, np.float32)
    want = group_norm_numpy.forward(x, None, None, layout, 1e-3)
    want = (*want, *group_norm_numpy.backward(x, x, None, want[1], want[2], layout))
    got = run_both_passes(cuda, cp, layout, x, x, None, None, 1e-3)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a.get(), b)


@gpu
def test_other_dtypes_are_rejected_before_any_work(cp, cuda):
    layout = make_layout((2, 8), -1, 2)
    with pytest.raises(TypeError, match="x must be float16, float32 or float64.*complex64"):
        cuda.forward(cp.zeros((2, 8), cp.complex64), None, None, layout, 1e-3)


GRADCHECK_CASES = [((2, 3, 4, 6), -1, 3), ((2, 6, 3, 4), 1, 2), ((2, 3, 4, 5), [1, 3], 5),
                   ((3, 4), -1, -1), ((1, 2, 3, 4), 2, 1)]


def gradcheck_inputs(xp, shape, axis, seed=3):
    rng = np.random.default_rng(seed)
    feature_shape = tuple(shape[a] for a in feature_axes(check_axis(axis), shape))
    x = cugn.Tensor(xp.asarray(rng.standard_normal(shape)), requires_grad=True)
    gamma = cugn.Tensor(xp.asarray(rng.standard_normal(feature_shape)), requires_grad=True)
    beta = cugn.Tensor(xp.asarray(rng.standard_normal(feature_shape)), requires_grad=True)
    return x, gamma, beta


@gpu
@pytest.mark.parametrize("shape, axis, groups", GRADCHECK_CASES)
def test_gradcheck_with_cupy_tensors(cp, shape, axis, groups):
    inputs = gradcheck_inputs(cp, shape, axis)
    assert inputs[0].device == "cuda:0"
    assert cugn.gradcheck(
        lambda x, g, b: cugn.functional.group_norm(x, groups, g, b, axis=axis), list(inputs))


@gpu
@pytest.mark.parametrize("shape, axis, groups", GRADCHECK_CASES[:3])
def test_second_derivatives_with_cupy_tensors(cp, shape, axis, groups):
    # create_graph=True: the kernels' forward under a backward recorded as Tensor ops.
    assert cugn.gradgradcheck(
        lambda x, g, b: cugn.functional.group_norm(x, groups, g, b, axis=axis),
        list(gradcheck_inputs(cp, shape, axis)))


@gpu
def test_functional_group_norm_dispatches_to_the_kernels(cp, cuda, monkeypatch):
    calls = []
    for name in ("forward", "backward"):
        original = getattr(cuda, name)
        monkeypatch.setattr(cuda, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    x = cugn.Tensor(cp.asarray(np.random.default_rng(4).standard_normal((2, 8, 8, 16)),
                               dtype=cp.float32), requires_grad=True)
    y = cugn.functional.group_norm(x, 4)
    y.sum().backward()
    assert calls == ["forward", "backward"]
    assert y.device == "cuda:0" and x.grad.device == "cuda:0"
    np.testing.assert_allclose(x.grad.numpy(), 0, atol=1e-4)  # d(sum of normalised)/dx = 0


@gpu
@pytest.mark.parametrize("axis, shape", [(-1, (2, 6, 6, 16)), (1, (2, 16, 6, 6)),
                                         ([1, 3], (2, 4, 5, 4))])
def test_layer_on_the_gpu_matches_the_layer_on_the_cpu(cp, axis, shape):
    from cugn.layers import GroupNormalization

    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    layers, outputs, grads = [], [], []
    for to_device in (np.asarray, cp.asarray):
        layer = GroupNormalization(groups=4, axis=axis, gamma_initializer="random_normal",
                                   beta_initializer="random_normal")
        xt = cugn.Tensor(to_device(x), requires_grad=True)
        if layers:  # built on the GPU by a first call, then given the CPU layer's weights
            layer(xt)
            layer.set_weights(layers[0].get_weights())
        y = layer(xt)
        y.backward(cugn.Tensor(to_device(dy)))
        layers.append(layer)
        outputs.append(y.numpy())
        grads.append([xt.grad.numpy(), layer.gamma.grad.numpy(), layer.beta.grad.numpy()])
    assert layers[1].gamma.device == "cuda:0" and layers[1].beta.device == "cuda:0"
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(grads[1], grads[0]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@gpu
def test_runs_on_the_current_stream_without_synchronising(cp, cuda):
    # Captured into a CUDA graph on a non-default stream: a launch on another
    # stream or any synchronisation during capture makes the capture fail.
    layout = make_layout((4, 32, 32, 64), -1, 8)
    x, dy, gamma, beta = (cp.asarray(a) for a in make_inputs(layout.shape, layout, np.float32))
    want = run_both_passes(cuda, cp, layout, x, dy, gamma, beta, 1e-3)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        run_both_passes(cuda, cp, layout, x, dy, gamma, beta, 1e-3)  # this stream's memory pool
        stream.begin_capture()
        got = run_both_passes(cuda, cp, layout, x, dy, gamma, beta, 1e-3)
        graph = stream.end_capture()
        graph.launch()
    stream.synchronize()
    for a, b in zip(got, want):
        cp.testing.assert_array_equal(a, b)


@gpu
def test_more_than_two_to_the_31_elements_use_64_bit_indices(cp, cuda):
    """2^31 + 2^15 float16 values; batch 1 is shifted and scaled so that an index
    that wrapped to the start of the tensor would be caught."""
    from cugn.kernels import cuda_plan

    shape = (2, 2 ** 15 + 1, 2 ** 15)
    layout = make_layout(shape, -1, 32)
    x = cp.random.default_rng(6).standard_normal(shape, dtype=cp.float32)
    x[1] = 5 + 3 * x[1]
    x = x.astype(cp.float16)
    assert cuda_plan.needs_index64(x.size)
    y, mean, rstd = cuda.forward(x, None, None, layout, 1e-3)
    np.testing.assert_allclose(mean.get()[1], 5, atol=0.01)
    np.testing.assert_allclose(rstd.get()[1], 1 / 3, rtol=0.01)
    tail = x[1, -1].get().astype(np.float64).reshape(32, -1)
    want = (tail - mean.get()[1][:, None]) * rstd.get()[1][:, None]
    np.testing.assert_allclose(y[1, -1].get().reshape(32, -1), want, atol=2e-2)
    del x
    dx, dgamma, dbeta = cuda.backward(y, y, None, mean, rstd, layout)
    assert np.isfinite(dx[1, -1].get()).all() and np.isfinite(dgamma.get()).all()


# ------------------------------------------------------------------ the helpers on the CPU
# The same checks with the NumPy path in float32 / float16 in place of the kernels:
# the reference logic and the tolerances hold for an implementation that computes in
# float32 like the kernels do.


# These check the GPU tests' helpers on the CPU: they accept the NumPy path run in a
# lower precision (float64 would compare it with itself) and reject a wrong output
# (below). The NumPy path itself is tested against tests/reference.py elsewhere.
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups", CASES, ids=str)
def test_reference_helpers_accept_the_numpy_path(shape, axis, groups, dtype):
    check_against_numpy(group_norm_numpy, np, shape, axis, groups, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=dtype_ids)
@pytest.mark.parametrize("shape, axis", LARGE_MEAN_CASES)
def test_large_mean_helpers_accept_the_numpy_path(shape, axis, dtype):
    check_large_mean_forward(group_norm_numpy, np, shape, axis, dtype)
    check_against_numpy(group_norm_numpy, np, shape, axis, 8, np.float32, epsilon=1e-6,
                        offset=1e4, std=1e-2, tolerance=mean_dwarfs_spread_float32)


class _Wrong:
    """The NumPy path with one output perturbed: the helpers must catch it."""

    def __init__(self, output, relative):
        self.output, self.relative = output, relative

    def forward(self, *args):
        return self._perturb(group_norm_numpy.forward(*args), 0)

    def backward(self, *args):
        return self._perturb(group_norm_numpy.backward(*args), 3)

    def _perturb(self, arrays, first):
        arrays = list(arrays)
        index = self.output - first
        if 0 <= index < len(arrays):
            arrays[index] = arrays[index] * arrays[index].dtype.type(1 + self.relative)
        return tuple(arrays)


@pytest.mark.parametrize("output", range(6), ids=["y", "mean", "rstd", "dx", "dgamma", "dbeta"])
def test_reference_helpers_reject_a_wrong_output(output):
    with pytest.raises(AssertionError):
        check_against_numpy(_Wrong(output, 1e-3), np, (2, 8, 8, 32), -1, 4, np.float32)


def test_gradcheck_helper_inputs_on_the_cpu():
    for shape, axis, groups in GRADCHECK_CASES:
        inputs = gradcheck_inputs(np, shape, axis)
        assert cugn.gradcheck(
            lambda x, g, b: cugn.functional.group_norm(x, groups, g, b, axis=axis), list(inputs))


# ------------------------------------------------------------------ fused activations


@gpu
@pytest.mark.parametrize("activation", ["silu", "swish", "relu", "gelu"])
@pytest.mark.parametrize("axis, shape", [(-1, (2, 6, 6, 16)), (1, (2, 16, 6, 6))])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_fused_activation_matches_the_cpu_composition(cp, activation, axis, shape, dtype):
    x, dy, gamma, beta = make_inputs(shape, make_layout(shape, axis, 4), dtype)
    results = []
    for xp in (np, cp):
        xs = cugn.Tensor(xp.asarray(x), requires_grad=True)
        g = cugn.Tensor(xp.asarray(gamma, dtype), requires_grad=True)
        b = cugn.Tensor(xp.asarray(beta, dtype), requires_grad=True)
        y = cugn.functional.group_norm(xs, 4, g, b, axis=axis, activation=activation)
        y.backward(cugn.Tensor(xp.asarray(dy)))
        results.append([t.numpy().astype(np.float64) for t in (y, xs.grad, g.grad, b.grad)])
    for got, want in zip(results[1], results[0]):
        assert_close(got, want, dtype, scale_with_magnitude=True)


@gpu
@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_fused_activation_derivatives_with_cupy_tensors(cp, activation):
    shape, axis, groups = GRADCHECK_CASES[0]
    fn = lambda x, g, b: cugn.functional.group_norm(x, groups, g, b, axis=axis,  # noqa: E731
                                                    activation=activation)
    assert cugn.gradcheck(fn, list(gradcheck_inputs(cp, shape, axis)))
    assert cugn.gradgradcheck(fn, list(gradcheck_inputs(cp, shape, axis)))
