"""The CUDA kernels of ``cugn/kernels/cuda/`` run on the CPU.

The real source is built by the host compiler (``cugn.kernels.cuda_on_cpu``) and
launched by cugn's real host code (``group_norm_cuda``), one host thread per
CUDA thread, with the rules of barriers and shuffles enforced and memory
checked. Every kernel, tier and configuration the planner can choose is
compared with the NumPy path in float64; the harness itself is proven on
planted bugs. ``tests/test_cuda_on_cpu_sanitizers.py`` runs a subset of this
file again under AddressSanitizer with UBSan, and under ThreadSanitizer.

CUGN_CUDA_ON_CPU_VARIANT selects the build (checked, address, thread); the
sanitizer runs set it. CUGN_SWEEP_SEED fixes the random sweep's seed.
"""

import os
import time
from dataclasses import replace

import ml_dtypes
import numpy as np
import pytest

pytest.importorskip("cupy", reason="group_norm_cuda imports CuPy (no GPU needed)")

from cugn.functions.normalization import check_axis, feature_axes, resolve_groups  # noqa: E402
from cugn.kernels import cuda_loader, cuda_plan, group_norm_cuda, group_norm_numpy  # noqa: E402
from cugn.kernels.cuda_on_cpu import (LINE_BYTES, Device, KernelError, Schedule,  # noqa: E402
                                      Span, compiler)
from cugn.kernels.layout import GroupLayout  # noqa: E402
from kernel_cases import CASES  # noqa: E402

if compiler() is None:
    pytest.skip("needs g++ (>= 12) or clang++ to build the kernels for the host",
                allow_module_level=True)

pytestmark = pytest.mark.cuda_on_cpu

VARIANT = os.environ.get("CUGN_CUDA_ON_CPU_VARIANT", "checked")
# ThreadSanitizer watches threads that run at once; the other builds run one at a time.
SCHEDULE = Schedule(parallel=VARIANT == "thread")
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def make_device(**kwargs):
    return Device(variant=VARIANT, schedule=kwargs.pop("schedule", SCHEDULE), **kwargs)


@pytest.fixture(scope="module", autouse=True)
def built_kernels():
    """Every configuration without an activation built up front, on every core (then
    cached on disk); those with one are built when a test first launches them."""
    if VARIANT == "checked":
        make_device().prepare([c for c in cuda_loader.configurations() if c.activation is None])


@pytest.fixture(autouse=True)
def tiers_that_read_twice(monkeypatch):
    """Tests run the tiers that reduce, then re-read their inputs, unless they ask for
    the on-chip tier (the fixture ``on_chip``), which most small shapes here would take."""
    monkeypatch.setattr(group_norm_cuda, "on_chip", False)


@pytest.fixture
def on_chip(monkeypatch):
    monkeypatch.setattr(group_norm_cuda, "on_chip", True)


# ------------------------------------------------------------------ running and comparing


def make_layout(shape, axis, groups):
    axes = feature_axes(check_axis(axis), shape)
    channels = int(np.prod([shape[a] for a in axes]))
    return GroupLayout(shape, axes, resolve_groups(groups, channels))


def make_inputs(shape, layout, dtype, center=True, scale=True, seed=0):
    rng = np.random.default_rng(seed)
    x = (0.5 + 2 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = (1 + 0.5 * rng.standard_normal(layout.feature_shape)) if scale else None
    beta = rng.standard_normal(layout.feature_shape) if center else None
    return x, dy, gamma, beta


def on_device(device, host, offset=0):
    """``host`` copied to ``device``, ``offset`` elements past an allocation's start
    (an offset that is not a multiple of the vector misaligns it)."""
    if host is None:
        return None
    flat = device.empty(host.size + offset, host.dtype)
    array = flat[offset:].reshape(host.shape)
    array[...] = host
    return array


def run_cuda(device, layout, x, dy, gamma, beta, epsilon, offset=0, activation=None):
    """y, mean, rstd, dx, dgamma, dbeta of the CUDA path on ``device``, as host arrays,
    with ``activation`` fused into both passes when given. bfloat16 goes as 16-bit
    words, as CuPy arrays on a GPU must hold it."""
    words = x.dtype == BFLOAT16
    storage = {"storage": "bfloat16"} if words else {}
    as_words = (lambda a: a.view(np.uint16)) if words else (lambda a: a)  # noqa: E731
    with device.installed():
        put = lambda a: on_device(device, a, offset)  # noqa: E731
        fused = {"activation": activation, "beta": put(beta)} if activation else {}
        y, mean, rstd = group_norm_cuda.forward(put(as_words(x)), put(gamma), put(beta), layout,
                                                epsilon, activation=activation, **storage)
        dx, dgamma, dbeta = group_norm_cuda.backward(put(as_words(x)), put(as_words(dy)),
                                                     put(gamma), mean, rstd, layout, **storage,
                                                     **fused)
    if words:
        y, dx = y.view(BFLOAT16), dx.view(BFLOAT16)
    return [np.array(a) for a in (y, mean, rstd, dx, dgamma, dbeta)]


def run_reference(layout, x, dy, gamma, beta, epsilon):
    """The same outputs from the NumPy path in float64, on the same (rounded) inputs."""
    as64 = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
    y, mean, rstd = group_norm_numpy.forward(as64(x), as64(gamma), as64(beta), layout, epsilon)
    return [y, mean, rstd, *group_norm_numpy.backward(as64(x), as64(dy), as64(gamma), mean, rstd,
                                                      layout)]


def tolerance(dtype, count):
    """The error allowed, relative to a result's scale, for a result reduced from
    ``count`` values of ``dtype``: the final rounding to the storage type (half an
    ulp, twice over: the input to the statistics and the output), and a
    random-walk bound of accumulation errors in the compute type."""
    compute = np.float64 if dtype == np.float64 else np.float32
    return 2 * float(ml_dtypes.finfo(dtype).eps) + 8 * float(np.finfo(compute).eps) * np.sqrt(count)


NAMES = ("y", "mean", "rstd", "dx", "dgamma", "dbeta")


def assert_matches(got, want, layout, dtype, case="", dy=None, gamma=None):
    """Every output against the float64 reference, each relative to its scale: the
    largest finite value of the reference, and for dx the size of the terms that
    cancel in it (rstd*gamma*dy, large where a group's variance is small)."""
    compute = np.float64 if dtype == np.float64 else np.float32
    terms = {}
    if dy is not None and dy.size:
        rstd = want[2][np.isfinite(want[2])]
        weight = 1.0 if gamma is None else float(np.abs(gamma).max())
        terms["dx"] = float(rstd.max(initial=0)) * weight * float(np.nanmax(np.abs(dy)))
    counts = {"y": layout.group_size, "mean": layout.group_size, "rstd": layout.group_size,
              "dx": layout.group_size, "dgamma": layout.batch * layout.group_size,
              "dbeta": layout.batch * layout.group_size}
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape, (case, name)
        assert a.dtype == (dtype if name in ("y", "dx") else compute), (case, name)
        tol = tolerance(dtype, counts[name])
        finite = np.isfinite(b)
        scale = max(1.0, float(np.abs(b[finite]).max())) if finite.any() else 1.0
        scale = max(scale, terms.get(name, 0.0))
        np.testing.assert_allclose(a.astype(np.float64), b, rtol=tol, atol=tol * scale,
                                   err_msg=f"{case} {name}")


def check(shape, axis, groups, dtype, device=None, center=True, scale=True, epsilon=1e-3,
          offset=0, seed=0):
    device = device or make_device()
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, dtype, center, scale, seed)
    got = run_cuda(device, layout, x, dy, gamma, beta, epsilon, offset)
    case = f"shape={shape} axis={axis} groups={groups} dtype={np.dtype(dtype).name} " \
           f"center={center} scale={scale} offset={offset} sm_count={device.sm_count} " \
           f"blocks_per_sm={device.blocks_per_sm}"
    assert_matches(got, run_reference(layout, x, dy, gamma, beta, epsilon), layout, dtype, case,
                   dy, gamma)
    return device


def plan_of(shape, axis, groups, dtype, device):
    layout = make_layout(shape, axis, groups)
    view = layout.view
    return cuda_plan.plan(view, np.dtype(dtype).itemsize, [0], device.sm_count,
                          device.blocks_per_sm, device.l2_bytes,
                          on_chip_tier=group_norm_cuda.on_chip,
                          cluster_blocks=device.cluster_blocks)


# ------------------------------------------------------------------ every tier and configuration

DTYPES = [np.float16, BFLOAT16, np.float32, np.float64]
dtype_ids = lambda d: np.dtype(d).name  # noqa: E731



@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups", CASES, ids=str)
def test_matches_numpy(shape, axis, groups, dtype):
    check(shape, axis, groups, dtype)


@pytest.mark.parametrize("center, scale", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("shape, axis, groups", [CASES[0], CASES[1], CASES[16]], ids=str)
def test_without_gamma_or_beta(shape, axis, groups, center, scale):
    check(shape, axis, groups, np.float32, center=center, scale=scale)


@pytest.mark.parametrize("shape, axis, groups, split", [((1, 16, 16, 64), -1, 4, 4),
                                                        ((2, 4, 4096), 1, 2, 2)], ids=str)
@pytest.mark.parametrize("sm_count, blocks_per_sm", [(1, 1), (132, 8)])
def test_small_and_large_devices(shape, axis, groups, split, sm_count, blocks_per_sm):
    # A large device splits few groups across blocks; a device of one block splits none.
    device = make_device(sm_count=sm_count, blocks_per_sm=blocks_per_sm)
    planned = plan_of(shape, axis, groups, np.float32, device).statistics.split
    assert planned == (1 if sm_count == 1 else split)
    check(shape, axis, groups, np.float32, device=device)


def test_the_planner_reaches_every_tier_in_these_tests():
    device = make_device()
    big = make_device(sm_count=132, blocks_per_sm=8)
    tiers = {(p.statistics.tier, p.partials.tier)
             for d in (device, big) for shape, axis, groups in CASES
             for p in [plan_of(shape, axis, groups, np.float32, d)]}
    statistics = {t for t, _ in tiers}
    partials = {t for _, t in tiers}
    assert statistics == {"warp", "block", "split", "column"}
    assert partials == {"warp", "block", "split", "column"}


# ------------------------------------------------------------------ vectors, alignment, indices


def launched(device, kernel):
    return [launch.name_expression for launch in device.launches if launch.kernel == kernel]


@pytest.mark.parametrize("offset, vector", [(0, 8), (4, 4), (2, 2), (1, 1), (3, 1)])
def test_vector_width_follows_alignment(offset, vector):
    # float16 channels-last with 8 channels per group: 16-byte vectors when aligned.
    device = check((2, 4, 4, 32), -1, 4, np.float16, offset=offset)
    (apply,) = launched(device, "forward_apply")
    assert apply == f"cugn::forward_apply<cugn::Half, {vector}, unsigned int, true, cugn::kLinear>"


@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "one value in"])
def test_gamma_and_beta_in_the_compute_dtype_at_any_alignment(offset):
    # float32 parameters need no conversion, so a view one value into an allocation
    # reaches the host code as it is: it must go to the kernels as an aligned copy, or
    # their vector loads of it fault (the harness refuses them, as a GPU would).
    shape, axis, groups = (2, 4, 4, 32), -1, 4
    device = make_device()
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, np.float32)
    gamma, beta = gamma.astype(np.float32), beta.astype(np.float32)
    with device.installed():
        weight, bias = (on_device(device, p, offset) for p in (gamma, beta))
        xs, dys = device.asarray(x), device.asarray(dy)
        y, mean, rstd = group_norm_cuda.forward(xs, weight, bias, layout, 1e-3)
        grads = group_norm_cuda.backward(xs, dys, weight, mean, rstd, layout)
    assert {"forward_apply", "backward_dx"} <= {launch.kernel for launch in device.launches}
    got = [np.array(a) for a in (y, mean, rstd, *grads)]
    assert_matches(got, run_reference(layout, x, dy, gamma, beta, 1e-3), layout, np.float32,
                   dy=dy, gamma=gamma)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_64_bit_indices(monkeypatch, dtype):
    monkeypatch.setattr(cuda_plan, "INDEX64_THRESHOLD", 0)
    for shape, axis, groups in [CASES[0], CASES[1], CASES[16]]:
        device = check(shape, axis, groups, dtype)
        assert all("unsigned long long" in name for launch in device.launches
                   for name in [launch.name_expression])


@pytest.mark.parametrize("on_chip_tier", [False, True], ids=["read twice", "on chip"])
def test_non_contiguous_inputs(on_chip_tier, monkeypatch):
    monkeypatch.setattr(group_norm_cuda, "on_chip", on_chip_tier)
    device = make_device()
    layout = make_layout((2, 8, 8, 16), -1, 4)
    x, dy, gamma, beta = make_inputs((2, 8, 16, 16), layout, np.float32)
    with device.installed():
        strided = lambda a: device.asarray(a)[:, :, ::2]  # noqa: E731
        y, mean, rstd = group_norm_cuda.forward(strided(x), device.asarray(gamma),
                                                device.asarray(beta), layout, 1e-3)
        grads = group_norm_cuda.backward(strided(x), strided(dy), device.asarray(gamma), mean,
                                         rstd, layout)
    if on_chip_tier:
        assert [launch.kernel for launch in device.launches] == [
            *ON_CHIP_KERNELS["forward"], *ON_CHIP_KERNELS["backward"]]
    got = [np.array(a) for a in (y, mean, rstd, *grads)]
    want = run_reference(layout, x[:, :, ::2], dy[:, :, ::2], gamma, beta, 1e-3)
    assert_matches(got, want, layout, np.float32)


# ------------------------------------------------------------------ edge cases


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape, axis", [((2, 8, 4, 4), 1), ((2, 4, 4, 8), -1), ((1, 2, 4096), 1)])
def test_constant_groups_with_epsilon_zero_give_beta(shape, axis, dtype):
    device = make_device()
    layout = make_layout(shape, axis, 2)
    x, dy, gamma, beta = make_inputs(shape, layout, dtype)
    x[...] = 3
    got = run_cuda(device, layout, x, dy, gamma, beta, 0.0)
    want = run_reference(layout, x, dy, gamma, beta, 0.0)
    assert_matches(got, want, layout, dtype)
    np.testing.assert_array_equal(got[2], 0)  # rstd
    np.testing.assert_array_equal(got[0], want[0].astype(dtype))  # beta, exactly


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape, axis", [((2, 8, 4, 4), 1), ((2, 4, 4, 8), -1), ((1, 4, 2048), 1)])
def test_nan_and_infinity_stay_in_their_group(shape, axis, dtype):
    device = make_device()
    layout = make_layout(shape, axis, 4)
    x, dy, gamma, beta = make_inputs(shape, layout, dtype)
    view = layout.to_view(x)  # (N, M, G, D, S) view of x itself
    view[0, 0, 1, 0, 0] = np.nan
    view[-1, 0, 2, 0, 0] = np.inf
    got = run_cuda(device, layout, x, dy, gamma, beta, 1e-3)
    want = run_reference(layout, x, dy, gamma, beta, 1e-3)
    assert np.isnan(got[1][0, 1]) and np.isnan(got[1][-1, 2]) and np.isnan(got[2][0, 1])
    assert np.isfinite(got[1]).sum() == got[1].size - 2
    assert_matches(got, want, layout, dtype)


# Shapes on each side of every tier boundary of the planner (float32, vectors of 4).
BOUNDARIES = [
    ((2, 8, 512), 1, 8),     # 128 vectors a group: the last size of the warp tier
    ((2, 8, 516), 1, 8),     # 129: a block per group
    ((2, 4, 128), -1, 1),    # channels-last, 32 vectors a group: column tiles
    ((2, 4, 132), -1, 1),    # 33 vectors a group: segment units
]


def test_boundaries_are_on_both_sides_of_each_tier():
    device = make_device()
    tiers = [plan_of(*case, np.float32, device).statistics.tier for case in BOUNDARIES]
    assert tiers == ["warp", "block", "column", "block"]


@pytest.mark.parametrize("shape, axis, groups", BOUNDARIES, ids=str)
def test_tier_boundaries(shape, axis, groups):
    check(shape, axis, groups, np.float32)


SCHEDULES = [Schedule(block_order="reversed"), Schedule(block_order="shuffled", seed=7),
             Schedule(thread_order="reversed"), Schedule(parallel=True)]


@pytest.mark.parametrize("shape, axis, groups", [CASES[0], CASES[5], CASES[16], CASES[17]], ids=str)
def test_bitwise_equal_in_every_block_and_thread_order(shape, axis, groups):
    layout = make_layout(shape, axis, groups)
    inputs = make_inputs(shape, layout, np.float32)
    first = run_cuda(make_device(), layout, *inputs, 1e-3)
    for schedule in SCHEDULES:
        if VARIANT == "thread":
            schedule = Schedule(schedule.block_order, schedule.thread_order, True, schedule.seed)
        again = run_cuda(make_device(schedule=schedule), layout, *inputs, 1e-3)
        for name, a, b in zip(NAMES, first, again):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=name)


# ------------------------------------------------------------------ a seeded random sweep

SWEEP_SEED = int(os.environ.get("CUGN_SWEEP_SEED", time.time_ns() % 2 ** 32))
SWEEP_SIZE = 100


def sweep_case(rng):
    """A random layout, dtype, device size, L2 and alignment."""
    dtype = rng.choice(DTYPES)
    rank = int(rng.integers(2, 6))
    shape = [int(rng.integers(1, 4))] + [int(rng.integers(1, 9)) for _ in range(rank - 1)]
    axis = int(rng.integers(1, rank)) if rng.random() < 0.8 else sorted(
        rng.choice(np.arange(1, rank), size=min(2, rank - 1), replace=False).tolist())
    axes = feature_axes(check_axis(axis), tuple(shape))
    channels = int(np.prod([shape[a] for a in axes]))
    # Group sizes that favour vectors: scale the channel count up sometimes.
    if rng.random() < 0.5:
        for a in axes[:1]:
            shape[a] *= int(rng.choice([2, 4, 8]))
        channels = int(np.prod([shape[a] for a in axes]))
    divisors = [g for g in range(1, channels + 1) if channels % g == 0]
    groups = int(rng.choice(divisors))
    while np.prod(shape) > 4096:
        shape[int(np.argmax(shape[1:])) + 1] //= 2  # keep it small, keep it valid
        axes = feature_axes(check_axis(axis), tuple(shape))
        channels = int(np.prod([shape[a] for a in axes]))
        groups = max(g for g in range(1, groups + 1) if channels % g == 0)
    return dict(shape=tuple(shape), axis=axis, groups=groups, dtype=dtype,
                center=bool(rng.random() < 0.7), scale=bool(rng.random() < 0.7),
                offset=int(rng.choice([0, 0, 0, 1, 2, 4])),
                sm_count=int(rng.choice([1, 4, 16, 132])),
                blocks_per_sm=int(rng.integers(1, 5)), seed=int(rng.integers(2 ** 31)),
                # An L2 small enough, at times, to run the passes in parts or pieces.
                l2_bytes=int(rng.choice([60 * 2 ** 20, 16384, 2048, 256])),
                on_chip=bool(rng.random() < 0.5))


@pytest.mark.parametrize("index", range(SWEEP_SIZE), ids=lambda i: f"seed{SWEEP_SEED}-{i}")
def test_random_sweep(index, monkeypatch):
    rng = np.random.default_rng([SWEEP_SEED, index])
    case = sweep_case(rng)
    monkeypatch.setattr(group_norm_cuda, "on_chip", case.pop("on_chip"))
    device = make_device(sm_count=case.pop("sm_count"), blocks_per_sm=case.pop("blocks_per_sm"),
                         l2_bytes=case.pop("l2_bytes"))
    check(device=device, **case)


# ------------------------------------------------------------------ memory traffic


def test_elementwise_kernels_write_each_output_once_and_traffic_is_per_allocation():
    device = check((2, 8, 8, 32), -1, 4, np.float32)
    nbytes = 2 * 8 * 8 * 32 * 4
    by_kernel = {launch.kernel: launch for launch in device.launches}
    apply = {t.parameters: t for t in by_kernel["forward_apply"].traffic}
    assert apply[("y",)].written == nbytes and apply[("y",)].read == 0
    assert apply[("x",)].read == nbytes and apply[("x",)].written == 0
    dx = {t.parameters: t for t in by_kernel["backward_dx"].traffic}
    assert dx[("dx",)].written == nbytes
    assert dx[("x",)].read == dx[("dy",)].read == nbytes
    statistics = {t.parameters: t for t in by_kernel["forward_stats_column"].traffic}
    assert statistics[("x",)].read >= nbytes and statistics[("x",)].written == 0
    assert len(device.launches) == 6  # forward: statistics, apply; backward: four


@pytest.mark.parametrize("shape, axis, groups, kernel, split", [
    (*CASES[0], "forward_stats_column", False), (*CASES[1], "forward_stats_segment", False),
    (*CASES[14], "forward_stats_column", True), (*CASES[17], "forward_stats_segment", True)],
    ids=str)
def test_the_forward_finalizes_in_its_statistics_kernel_unless_groups_are_split(
        shape, axis, groups, kernel, split):
    device = check(shape, axis, groups, np.float32)
    forward = [launch.kernel for launch in device.launches][:3 if split else 2]
    want = [kernel, "forward_finalize", "forward_apply"] if split else [kernel, "forward_apply"]
    assert forward == want
    assert (plan_of(shape, axis, groups, np.float32, device).statistics.split > 1) == split


# ------------------------------------------------------------------ parts sized from the L2


def outputs_and_plan(shape, axis, groups, dtype, l2_bytes, center=True, scale=True, **device):
    """The six outputs on a device of ``l2_bytes`` of L2, its launches and its plan."""
    device = make_device(l2_bytes=l2_bytes, **device)
    layout = make_layout(shape, axis, groups)
    got = run_cuda(device, layout, *make_inputs(shape, layout, dtype, center, scale), 1e-3)
    return got, device.launches, plan_of(shape, axis, groups, dtype, device)


SLICED = [  # shape, axis, groups, an L2 of which half holds one sample's x and dy
    ((4, 8, 8, 32), -1, 4, 2 * 2 * 8 * 8 * 32 * 4),   # channels-last: whole samples
    ((3, 32, 8, 8), 1, 4, 2 * 2 * 8 * 8 * 8 * 4),     # channels-first: two groups a part
    ((3, 6, 12, 5), 2, 3, 2 * 2 * 6 * 12 * 5 * 4),    # a middle axis (M = 6, S = 5)
    # channels-last, half the L2 holding a quarter of a float32 sample's x and dy (16
    # kB): windows of 2 groups (float32, backward) to 8 (16-bit, forward); at least 32
    # vectors of channels in each, so tiles of as many lanes and rows as the whole's.
    ((2, 4, 4, 512), -1, 8, 32 * 1024),
]


@pytest.mark.parametrize("center, scale", [(True, True), (False, False)])
@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16, np.float32], ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups, l2_bytes", SLICED, ids=str)
def test_parts_give_bitwise_the_results_of_one_pass(shape, axis, groups, l2_bytes, dtype,
                                                    center, scale):
    whole, whole_launches, one = outputs_and_plan(shape, axis, groups, dtype, 2 ** 40,
                                                  center, scale)
    parts, part_launches, sliced = outputs_and_plan(shape, axis, groups, dtype, l2_bytes,
                                                    center, scale)
    assert len(one.forward) == len(one.backward) == 1
    assert len(sliced.backward) > 1 and len(part_launches) > len(whole_launches)
    # The same reductions (tiers, splits, chunks, tiles' lanes and rows) per unit: only
    # the launches differ.
    for a, b in ((one.statistics, sliced.statistics), (one.partials, sliced.partials)):
        assert replace(a, grid=0, column_chunks=0) == replace(b, grid=0, column_chunks=0)
    for name, a, b in zip(NAMES, whole, parts):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=name)


def test_the_backward_sums_dgamma_and_dbeta_over_every_part_once():
    shape, axis, groups, l2_bytes = SLICED[0]
    _, launches, plan = outputs_and_plan(shape, axis, groups, np.float32, l2_bytes)
    kernels = [launch.kernel for launch in launches]
    backward = kernels[kernels.index("backward_partials_column"):]
    assert len(plan.backward) == 4
    assert backward == ["backward_partials_column", "backward_coefficients",
                        "backward_dx"] * 4 + ["backward_parameters"]
    (parameters,) = [t for t in launches[-1].traffic if t.parameters == ("partials",)]
    # The sums of dy and of dy*(x - mean), of every part, in one array.
    assert parameters.nbytes == 3 * 4 * 4 * 32 and parameters.read == 2 * 4 * 4 * 32


def x_spans(launch):
    """The spans ``launch`` touched in its argument x, as (first byte, end)."""
    (x,) = [t for t in launch.traffic if t.parameters[0] == "x"]
    return [(s.offset, s.offset + s.nbytes) for s in x.touched]


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=dtype_ids)
@pytest.mark.parametrize("shape, groups", [((1, 16, 16, 512), 8),    # column tiles
                                           ((1, 8, 8, 4096), 8)],    # segments: D = 512
                         ids=str)
def test_a_window_of_channels_last_groups_touches_only_its_channels_of_each_row(
        shape, groups, dtype):
    itemsize = np.dtype(dtype).itemsize
    rows, channels = shape[1] * shape[2], shape[3]
    row = channels * itemsize
    group_bytes = rows * channels // groups * itemsize
    # Half the L2 holds 4 groups of x, or x and dy of 2: windows of half of each row
    # (forward) and a quarter (backward).
    device = make_device(l2_bytes=2 * 4 * group_bytes, line_bytes=128)
    check(shape, -1, groups, dtype, device=device)
    plan = plan_of(shape, -1, groups, dtype, device)
    for parts, kernels, window in ((plan.forward, ("forward_stats", "forward_apply"), row // 2),
                                   (plan.backward, ("backward_partials", "backward_dx"),
                                    row // 4)):
        assert [part.view[2] * channels // groups * itemsize for part in parts] == \
            [window] * (row // window)
        for kernel in kernels:
            launches = [l for l in device.launches if l.kernel.startswith(kernel)]
            assert len(launches) == len(parts)
            for k, launch in enumerate(launches):
                # Every row's window, each line whole (windows start on one), nothing else.
                assert x_spans(launch) == [(m * row + k * window, m * row + (k + 1) * window)
                                           for m in range(rows)], (kernel, k)
                if kernel.endswith(("_apply", "_dx")):  # each value read once
                    (x,) = [t for t in launch.traffic if t.parameters[0] == "x"]
                    assert x.read == rows * window


@pytest.mark.parametrize("shape, axis, groups", [((1, 96, 8, 64), -1, 2),    # column tiles
                                                 ((1, 96, 4, 80), 2, 4)],   # segments, S = 80
                         ids=str)
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=dtype_ids)
def test_a_sample_larger_than_its_share_runs_in_pieces_the_second_pass_last_first(
        shape, axis, groups, dtype):
    # One multiprocessor and an L2 of 64 kB: pieces of at least 16 kB of each input (a
    # group alone is larger than half the L2: no window of groups holds it).
    device = make_device(sm_count=1, blocks_per_sm=1, l2_bytes=64 * 1024)
    check(shape, axis, groups, dtype, device=device)
    plan = plan_of(shape, axis, groups, dtype, device)
    for part, first, second in ((plan.forward[0], "forward_stats", "forward_apply"),
                                (plan.backward[0], "backward_partials", "backward_dx")):
        assert len(part.pieces) > 1
        reductions = [x_spans(l) for l in device.launches if l.kernel.startswith(first)]
        elementwise = [x_spans(l) for l in device.launches if l.kernel == second]
        assert len(reductions) == len(elementwise) == len(part.pieces)
        # The reduction in address order, each piece its own rows (pieces share at
        # most the line across their boundary), all of x...
        flat = [span for spans in reductions for span in spans]
        assert flat[0][0] == 0 and flat[-1][1] == np.prod(shape) * np.dtype(dtype).itemsize
        assert all(a[0] < b[0] and a[1] <= b[1] and b[0] >= a[1] - LINE_BYTES
                   for a, b in zip(flat, flat[1:]))
        # ... and the elementwise pass over the same pieces, the last first.
        assert elementwise == reductions[::-1]


@pytest.mark.parametrize("dtype", [BFLOAT16, np.float32], ids=dtype_ids)
def test_pieces_keep_the_statistics_exact_when_the_mean_dwarfs_the_spread(dtype):
    # Each piece's statistics are shifted by its own first values; the host moves them
    # onto the part's before they are merged.
    shape, axis, groups = (1, 96, 8, 64), -1, 2
    device = make_device(sm_count=1, blocks_per_sm=1, l2_bytes=64 * 1024)
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, np.float64)
    x = (300 + x).astype(dtype)
    got = run_cuda(device, layout, x, dy.astype(dtype), gamma, beta, 1e-3)
    assert len(plan_of(shape, axis, groups, dtype, device).forward[0].pieces) > 1
    want = run_reference(layout, x, dy.astype(dtype), gamma, beta, 1e-3)
    assert_matches(got, want, layout, dtype, dy=dy, gamma=gamma)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5)  # rstd, as exact as without pieces


# ------------------------------------------------------------------ the launcher checks arguments


def test_the_source_declares_every_kernel_the_loader_names():
    from cugn.kernels.cuda_on_cpu import library

    names = {*cuda_loader.VECTOR_KERNELS, *cuda_loader.ACTIVATED_VECTOR_KERNELS,
             *cuda_loader.LAYOUT_KERNELS, *cuda_loader.CLUSTER_KERNELS,
             *cuda_loader.SCALAR_KERNELS}
    assert set(library.parameter_names(cuda_loader.source())) == names


def test_every_instantiation_the_loader_names_is_built():
    device = make_device()
    device.prepare(cuda_loader.configurations())  # those with activations too, on every core
    for configuration in cuda_loader.configurations():
        kernels = device.kernels(configuration)
        assert list(kernels) == configuration.name_expressions()


def test_an_argument_of_the_wrong_width_is_caught(monkeypatch):
    # The host passes I as uint32 below 2^31 elements; an int64 there would be an ABI error.
    device = make_device()
    layout = make_layout((2, 4, 4, 16), -1, 4)
    original = group_norm_cuda._prepare

    def wrong_index(*args):
        plan, kernels, index = original(*args)
        return plan, kernels, np.int64

    monkeypatch.setattr(group_norm_cuda, "_prepare", wrong_index)
    with device.installed(), pytest.raises(TypeError, match="'rows'.*int64.*uint32"):
        group_norm_cuda.forward(device.asarray(np.ones(layout.shape)), None, None, layout, 1e-3)


def test_host_memory_and_wrong_dtypes_are_caught():
    device = make_device()
    configuration = cuda_loader.Configuration(np.dtype(np.float32), 1, False)
    finalize = device.kernels(configuration)[configuration.kernel("forward_finalize")]
    acc = device.empty(12, np.float32)
    scalars = (np.uint32(1),) * 5 + (np.float32(1), np.float32(0))
    with pytest.raises(TypeError, match="'x' is ndarray, not an array in this device's memory"):
        finalize((1,), (256,), (np.ones(4, np.float32), acc, acc, acc, acc, acc, *scalars))
    with pytest.raises(TypeError, match="'partials' is a float64 array"):
        finalize((1,), (256,), (acc, device.empty(3, np.float64), acc, acc, acc, acc, *scalars))
    with pytest.raises(TypeError, match="7 arguments for 13 parameters"):
        finalize((1,), (256,), (acc,) * 7)
    frozen = device.empty(12, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(TypeError, match="'mean' is read-only, and the kernel writes it"):
        finalize((1,), (256,), (acc, acc, frozen, acc, acc, acc, *scalars))


def test_each_launch_is_inside_a_named_nvtx_kernel_range(monkeypatch):
    from cugn.profiling import nvtx

    events = []
    monkeypatch.setattr(nvtx, "_push", lambda key, category, make, *args: events.append(
        ("push", category, make(*args))))
    monkeypatch.setattr(nvtx, "pop", lambda: events.append(("pop",)))
    configuration = cuda_loader.Configuration(np.dtype(np.float16), 8, False)
    launch = group_norm_cuda._Launch(lambda grid, block, args: events.append(("launch", args)),
                                     "forward_apply", configuration)
    with nvtx(True):
        launch((1,), (256,), ("x",))
    with nvtx(False):
        launch((1,), (256,), ("y",))
    assert events == [("push", "kernel", "kernel:group_norm_forward_apply<float16, 8>"),
                      ("launch", ("x",)), ("pop",), ("launch", ("y",))]


# ------------------------------------------------------------------ the harness fails on planted bugs


def planted(old, new, count=1):
    """A copy of the source with ``old`` replaced by ``new`` (which must occur ``count`` times)."""
    source = cuda_loader.source()
    assert source.count(old) == count, old
    return source.replace(old, new)


def run_planted(source, shape, axis, groups, dtype=np.float32):
    device = make_device(source=source)
    layout = make_layout(shape, axis, groups)
    return run_cuda(device, layout, *make_inputs(shape, layout, dtype), 1e-3)


BLOCK_TIER = ((2, 4, 2048), 1, 2)  # a block per group: block_merge and its barrier


def test_planted_missing_barrier_reads_unwritten_shared_memory():
    # Without the barrier, warp 0 (which runs first) reads the other warps' slots
    # before they are written: the NaN the shared memory was filled with.
    source = planted("  if (lane == 0) warp_results[warp] = value;\n  __syncthreads();",
                     "  if (lane == 0) warp_results[warp] = value;")
    y, mean = run_planted(source, *BLOCK_TIER)[:2]
    assert np.isnan(mean).all() and np.isnan(y).all()


def test_planted_shared_index_past_its_end():
    source = planted("if (lane == 0) warp_results[warp] = value;",
                     "if (lane == 0) warp_results[warp + 1] = value;")
    with pytest.raises(KernelError, match="store of .* bytes .* of 'warp_results' .* past its end"):
        run_planted(source, *BLOCK_TIER)


def test_planted_global_write_past_the_end():
    source = planted("    store_pack<V>(y, address, out);", "    store_pack<V>(y, address + 1, out);")
    # Caught as it happens in the checked build, by the guard zones after the launch in the others.
    with pytest.raises(KernelError, match=r"global store of 16 bytes at byte 8192 of allocation"
                                          r"|wrote outside an allocation of 8192 bytes \(y\), "
                                          r"at byte 8192"):
        run_planted(source, (2, 8, 8, 16), -1, 4)


def test_planted_misaligned_vector_load():
    source = planted("    const Pack<T, V> in = load_pack<V>(x, address);",
                     "    const Pack<T, V> in = load_pack<V>(x + 1, address);")
    with pytest.raises(KernelError, match=r"misaligned load of a 16-byte vector at byte 4 "
                                          r"of allocation"):
        run_planted(source, (2, 8, 8, 16), -1, 4)


def test_planted_shuffle_in_a_divergent_branch():
    source = planted("    value = merge(value, shuffle_xor(value, offset));",
                     "    if (threadIdx.x % 32 < 16) value = merge(value, shuffle_xor(value, offset));")
    with pytest.raises(KernelError, match="(exited|reached __syncthreads).* while lanes of its "
                                          "warp wait for it at __shfl_xor_sync"):
        run_planted(source, *BLOCK_TIER)


def test_planted_early_return_before_a_barrier():
    source = planted("  if (lane == 0) warp_results[warp] = value;\n",
                     "  if (lane == 0) warp_results[warp] = value;\n"
                     "  if (threadIdx.x == kBlock - 1) return value;\n")
    # One at a time, lowest index first, threads 0-254 wait at the barrier when 255
    # leaves; all at once, 255 may leave before or after others arrive. The barrier
    # is named by its file and line (the loader's line markers), one line lower for
    # the planted one.
    lines = (cuda_loader.SOURCE_DIRECTORY / "reduction.cuh").read_text().split("\n")
    barrier = f"__syncthreads \\(reduction.cuh:{lines.index('  __syncthreads();') + 2}\\)"
    with pytest.raises(KernelError, match=rf"thread 255 exited while threads [-\d, ]+ wait at "
                                          rf"{barrier}|{barrier} reached by "
                                          r"thread \d+ after threads 255 exited"):
        run_planted(source, *BLOCK_TIER)


def test_a_deadlock_is_reported_not_hung():
    # Half the block waits at a barrier the other half never reaches.
    source = planted("  if (lane == 0) warp_results[warp] = value;\n  __syncthreads();",
                     "  if (lane == 0) warp_results[warp] = value;\n"
                     "  if (warp < 4) __syncthreads();")
    with pytest.raises(KernelError, match="exited while threads 0-127 wait at __syncthreads"):
        run_planted(source, *BLOCK_TIER)


# ------------------------------------------------------------------ the shuffle rules themselves

SHUFFLES = """
namespace cugn {
__global__ void shuffles(const int* __restrict__ in, int* __restrict__ out, unsigned mask,
                         int delta, int width) {
  const int v = in[threadIdx.x];
  if (mask >> (threadIdx.x % 32) & 1u) {
    out[threadIdx.x] = __shfl_down_sync(mask, v, unsigned(delta), width);
    out[blockDim.x + threadIdx.x] = __shfl_xor_sync(mask, v, delta, width);
  }
}
}  // namespace cugn
"""


def run_shuffles(mask, delta, width, threads=64):
    device = make_device(source=cuda_loader.source() + SHUFFLES)
    shuffles = device.compile(["cugn::shuffles"])["cugn::shuffles"]
    values = device.asarray(np.arange(100, 100 + threads, dtype=np.int32))
    out = device.zeros(2 * threads, np.int32)
    shuffles((1,), (threads,), (values, out, np.uint32(mask), np.int32(delta), np.int32(width)))
    return np.array(out[:threads]) - 100, np.array(out[threads:]) - 100


@pytest.mark.parametrize("width", [32, 16, 4, 1])
@pytest.mark.parametrize("delta", [1, 2, 5, 16])
def test_shuffles_follow_the_ptx_lane_rules(width, delta):
    # A source lane past the end of the caller's segment of `width` lanes gives the
    # caller its own value (CUDA's __shfl_down_sync and __shfl_xor_sync).
    down, xor = run_shuffles(0xFFFFFFFF, delta, width)
    lane, warp = np.arange(64) % 32, np.arange(64) // 32 * 32
    end = (lane & ~(width - 1)) + width  # one past the caller's segment
    np.testing.assert_array_equal(down, warp + np.where(lane + delta < end, lane + delta, lane))
    np.testing.assert_array_equal(xor, warp + np.where(lane ^ delta < end, lane ^ delta, lane))


def test_a_shuffle_among_the_lanes_of_its_mask():
    down, xor = run_shuffles(0x0000FFFF, 1, 16)
    lane = np.arange(64)
    active = lane % 32 < 16
    np.testing.assert_array_equal(xor[active], (lane ^ 1)[active])
    np.testing.assert_array_equal(down[active], np.where(lane % 16 == 15, lane, lane + 1)[active])


def test_a_shuffle_reading_a_lane_outside_its_mask_fails():
    with pytest.raises(KernelError, match="lane 0 of warp 0 reads lane 16 .* which the mask "
                                          "leaves out"):
        run_shuffles(0x0000FFFF, 16, 32)


# ------------------------------------------------------------------ the byte ranges of a launch

TOUCH = """
namespace cugn {
__global__ void touch(const float* __restrict__ in, float* __restrict__ out, unsigned first,
                      unsigned count, unsigned stride) {
  for (unsigned i = threadIdx.x; i < count; i += blockDim.x) {
    out[first + i * stride] = in[first + i * stride];
  }
}
}  // namespace cugn
"""


def touched(first, count, stride, values=10000, line_bytes=LINE_BYTES):
    """The spans of ``in`` and ``out`` one launch of ``touch`` gives."""
    device = make_device(source=cuda_loader.source() + TOUCH, line_bytes=line_bytes)
    touch = device.compile(["cugn::touch"])["cugn::touch"]
    data, out = device.zeros(values, np.float32), device.zeros(values, np.float32)
    touch((1,), (64,), (data, out, np.uint32(first), np.uint32(count), np.uint32(stride)))
    (launch,) = device.launches
    spans = {t.parameters: t.touched for t in launch.traffic}
    return spans[("in",)], spans[("out",)]


def test_a_launch_records_the_lines_it_touched_in_each_allocation():
    line = LINE_BYTES
    # Floats 1100 to 3099 (bytes 4400 to 12400): lines 1 to 3, read in one and written in the other.
    read, written = touched(1100, 2000, 1)
    assert read == (Span(line, 3 * line, 8000, 0),)
    assert written == (Span(line, 3 * line, 0, 8000),)
    # Every other line: three spans of one line, 4 bytes each.
    read, _ = touched(0, 3, 2 * line // 4)
    assert read == tuple(Span(k * line, line, 4, 0) for k in (0, 2, 4))
    # The last line ends with the allocation (40000 bytes, 9 whole lines and 3136 bytes).
    read, _ = touched(9999, 1, 1)
    assert read == (Span(9 * line, 40000 - 9 * line, 4, 0),)


def test_a_device_records_lines_of_its_own_size():
    # Floats 1100 to 3099 in lines of 128 bytes: lines 34 to 96, bytes 4352 to 12416.
    read, _ = touched(1100, 2000, 1, line_bytes=128)
    assert read == (Span(34 * 128, 63 * 128, 8000, 0),)
    # Every 64th float: 256 bytes apart, every other line.
    read, _ = touched(0, 3, 64, line_bytes=128)
    assert read == tuple(Span(k * 128, 128, 4, 0) for k in (0, 2, 4))
    with pytest.raises(ValueError, match="line_bytes must be a power of two, got 100"):
        Device(line_bytes=100)
    with pytest.raises(ValueError, match=r"cluster_blocks must be one of \(1, 2, 4, 8\), got 3"):
        Device(cluster_blocks=3)



CONVERSIONS = """
namespace cugn {
template <typename T>
__global__ void round_from_float(const float* __restrict__ in, T* __restrict__ out, unsigned n) {
  for (unsigned i = threadIdx.x; i < n; i += blockDim.x) from_acc(in[i], out[i]);
}
template <typename T>
__global__ void widen_to_float(const T* __restrict__ in, float* __restrict__ out, unsigned n) {
  for (unsigned i = threadIdx.x; i < n; i += blockDim.x) out[i] = to_acc(in[i]);
}
}  // namespace cugn
"""


def special_floats(rng):
    """Random floats, every rounding tie and its neighbours, and the edges: zeros,
    subnormals, infinities, NaN, and values that round up to infinity."""
    bits = rng.integers(0, 2 ** 32, 4096, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2 ** 16, 512, dtype=np.uint64).astype(np.uint32) << 16) | 0x8000
    edges = np.array([0, 0x80000000, 1, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x7F7F8000,
                      0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0x477FF000, 0x477FEFFF,
                      0x33000000, 0x33000001], np.uint32)
    return np.concatenate([bits, ties, ties - 1, ties + 1, edges]).view(np.float32)


@pytest.mark.parametrize("dtype", [np.dtype(np.float16), BFLOAT16], ids=dtype_ids)
def test_conversions_round_to_nearest_even_and_widen_exactly(dtype):
    ctype = cuda_loader.STORAGE_TYPES[dtype]
    device = make_device(source=cuda_loader.source() + CONVERSIONS)
    round_from_float, widen_to_float = device.compile(
        [f"cugn::round_from_float<{ctype}>", f"cugn::widen_to_float<{ctype}>"]).values()
    values = special_floats(np.random.default_rng(0))
    n = np.uint32(values.size)
    rounded = device.empty(values.size, dtype)
    round_from_float((1,), (256,), (device.asarray(values), rounded, n))
    with np.errstate(over="ignore", invalid="ignore"):
        want = values.astype(dtype)  # NumPy's and ml_dtypes' casts round to nearest even
    got = np.array(rounded)
    nan = np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint16), want[~nan].view(np.uint16))
    widened = device.empty(values.size, np.float32)
    widen_to_float((1,), (256,), (rounded, widened, n))
    np.testing.assert_array_equal(np.array(widened)[~nan], want[~nan].astype(np.float32))


# ------------------------------------------------------------------ fused activations


def activation_reference(name, z):
    """Keras's activation and its derivative, in float64 (gelu exact, with erf)."""
    from scipy.special import erf

    if name == "relu":
        return np.maximum(z, 0), (z > 0).astype(np.float64)
    if name == "gelu":
        cdf = 0.5 * (1 + erf(z / np.sqrt(2)))
        return z * cdf, cdf + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    sigmoid = 1 / (1 + np.exp(-z))
    return z * sigmoid, sigmoid * (1 + z * (1 - sigmoid))


def activated_reference(layout, x, dy, gamma, beta, epsilon, activation):
    """The composition in float64: normalise, activate; dy times the activation's
    slope into the normalisation's backward."""
    as64 = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
    z, mean, rstd = group_norm_numpy.forward(as64(x), as64(gamma), as64(beta), layout, epsilon)
    activated, slope = activation_reference(activation, z)
    return [activated, mean, rstd, *group_norm_numpy.backward(as64(x), as64(dy) * slope,
                                                              as64(gamma), mean, rstd, layout)]


ACTIVATION_CASES = [CASES[0], CASES[1], CASES[5], CASES[14], CASES[17], CASES[18]]


@pytest.mark.parametrize("activation", ["silu", "relu", "gelu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups", ACTIVATION_CASES, ids=str)
def test_a_fused_activation_equals_the_composition(shape, axis, groups, dtype, activation):
    fused = check_fused_activation(make_device(), shape, axis, groups, dtype, activation)
    assert len(fused) == 3  # the apply, one partial-sums kernel and dx


def check_fused_activation(device, shape, axis, groups, dtype, activation):
    """Runs both passes with ``activation`` fused against the float64 composition;
    returns the name expressions of the launches the activation changes, each of
    which must be instantiated for it."""
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, dtype)
    got = run_cuda(device, layout, x, dy, gamma, beta, 1e-3, activation=activation)
    want = activated_reference(layout, x, dy, gamma, beta, 1e-3, activation)
    assert_matches(got, want, layout, np.dtype(dtype), activation, dy, gamma)
    fused = [launch.name_expression for launch in device.launches
             if launch.kernel in cuda_loader.ACTIVATED_KERNELS]
    assert all(cuda_loader.ACTIVATIONS[activation] in name for name in fused)
    return fused


@pytest.mark.parametrize("center, scale", [(False, False), (True, False), (False, True)])
def test_a_fused_activation_without_gamma_or_beta(center, scale):
    shape, axis, groups = CASES[1]
    device = make_device()
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, np.float32, center, scale)
    got = run_cuda(device, layout, x, dy, gamma, beta, 1e-3, activation="silu")
    want = activated_reference(layout, x, dy, gamma, beta, 1e-3, "silu")
    assert_matches(got, want, layout, np.dtype(np.float32), "silu", dy, gamma)


def test_swish_is_silu_bit_for_bit():
    shape, axis, groups = CASES[0]
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, np.float16)
    silu = run_cuda(make_device(), layout, x, dy, gamma, beta, 1e-3, activation="silu")
    swish = run_cuda(make_device(), layout, x, dy, gamma, beta, 1e-3, activation="swish")
    for a, b in zip(silu, swish):
        np.testing.assert_array_equal(a, b)


def test_a_fused_activation_leaves_mean_and_rstd_and_uses_beta_in_the_backward():
    # beta moves z across relu's kink: a backward that ignored beta gets dx wrong.
    shape, axis, groups = CASES[1]
    device = make_device()
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, np.float32)
    beta = 3 * beta
    plain = run_cuda(device, layout, x, dy, gamma, beta, 1e-3)
    relu = run_cuda(device, layout, x, dy, gamma, beta, 1e-3, activation="relu")
    np.testing.assert_array_equal(relu[1], plain[1])
    np.testing.assert_array_equal(relu[2], plain[2])
    np.testing.assert_array_equal(relu[0], np.maximum(plain[0], 0))
    without_beta = activated_reference(layout, x, dy, gamma, None, 1e-3, "relu")
    assert not np.allclose(relu[3], without_beta[3], atol=1e-2)


def test_an_unknown_activation_is_refused_before_any_work():
    device = make_device()
    layout = make_layout((2, 4, 4, 8), -1, 2)
    x = np.ones(layout.shape, np.float32)
    with device.installed():
        with pytest.raises(ValueError, match="activation must be one of .*got 'tanh'"):
            group_norm_cuda.forward(device.asarray(x), None, None, layout, 1e-3,
                                    activation="tanh")
        with pytest.raises(ValueError, match="activation must be one of .*got 1"):
            group_norm_cuda.backward(device.asarray(x), device.asarray(x), None,
                                     device.zeros((2, 2), np.float32),
                                     device.zeros((2, 2), np.float32), layout, activation=1)
    assert device.launches == []


@pytest.mark.parametrize("activation", ["silu", "gelu"])
@pytest.mark.parametrize("dtype", [BFLOAT16, np.float32], ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups, l2_bytes", SLICED, ids=str)
def test_a_fused_activation_in_parts_gives_bitwise_the_results_of_one_pass(
        shape, axis, groups, l2_bytes, dtype, activation):
    layout = make_layout(shape, axis, groups)
    inputs = make_inputs(shape, layout, dtype)
    whole = run_cuda(make_device(l2_bytes=2 ** 40), layout, *inputs, 1e-3, activation=activation)
    sliced_device = make_device(l2_bytes=l2_bytes)
    parts = run_cuda(sliced_device, layout, *inputs, 1e-3, activation=activation)
    assert len(plan_of(shape, axis, groups, dtype, sliced_device).backward) > 1
    for name, a, b in zip(NAMES, whole, parts):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=name)


def test_a_fused_activation_in_pieces_of_one_sample_equals_the_composition():
    shape, axis, groups = (1, 96, 8, 64), -1, 2
    device = make_device(sm_count=1, blocks_per_sm=1, l2_bytes=64 * 1024)
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, np.float32)
    got = run_cuda(device, layout, x, dy, gamma, beta, 1e-3, activation="silu")
    assert len(plan_of(shape, axis, groups, np.float32, device).forward[0].pieces) > 1
    want = activated_reference(layout, x, dy, gamma, beta, 1e-3, "silu")
    assert_matches(got, want, layout, np.dtype(np.float32), "silu", dy, gamma)


def test_with_l2_slicing_off_every_pass_is_one_part(monkeypatch):
    shape, axis, groups, l2_bytes = SLICED[0]
    whole, whole_launches, _ = outputs_and_plan(shape, axis, groups, np.float32, 2 ** 40)
    monkeypatch.setattr(group_norm_cuda, "l2_slicing", False)
    unsliced, unsliced_launches, _ = outputs_and_plan(shape, axis, groups, np.float32, l2_bytes)
    assert [launch.kernel for launch in unsliced_launches] == [
        launch.kernel for launch in whole_launches]
    for name, a, b in zip(NAMES, whole, unsliced):
        np.testing.assert_array_equal(a, b, err_msg=name)


# ------------------------------------------------------------------ the on-chip tier
#
# A group whose slice fits in one block's shared memory, with groups enough to fill
# the device, is read once: one launch forward, two backward. A device of one SM
# takes it for every case that fits.

ON_CHIP_KERNELS = {"forward": ["forward_on_chip"],
                   "backward": ["backward_on_chip", "backward_parameters"]}


def one_sm(**kwargs):
    return make_device(sm_count=1, blocks_per_sm=1, **kwargs)


def assert_on_chip_launches(device, plan):
    """The launches of one forward and one backward: the on-chip kernels where the plan
    chose the tier (for every case here, the forward at least)."""
    kernels = [launch.kernel for launch in device.launches]
    assert plan.forward_on_chip is not None
    assert kernels[:1] == ON_CHIP_KERNELS["forward"]
    if plan.backward_on_chip is not None:
        assert kernels[1:] == ON_CHIP_KERNELS["backward"]
    else:
        assert "backward_on_chip" not in kernels and kernels[1] == "backward_partials_" + (
            "column" if plan.channels_last else "segment")


def fits_on_chip(shape, axis, groups, dtype):
    layout = make_layout(shape, axis, groups)
    return layout.group_size * np.dtype(dtype).itemsize <= cuda_plan.ON_CHIP_BYTES


ON_CHIP_CASES = [(case, dtype) for case in CASES for dtype in DTYPES
                 if fits_on_chip(*case, dtype)]


@pytest.mark.parametrize("shape, axis, groups, dtype",
                         [(*case, dtype) for case, dtype in ON_CHIP_CASES],
                         ids=lambda v: dtype_ids(v) if isinstance(v, type | np.dtype) else str(v))
def test_on_chip_matches_numpy(on_chip, shape, axis, groups, dtype):
    device = check(shape, axis, groups, dtype, device=one_sm())
    assert_on_chip_launches(device, plan_of(shape, axis, groups, dtype, device))


def test_on_chip_cases_reach_every_layout_and_dtype_of_both_passes(on_chip):
    device = one_sm()
    reached = {(pass_name, np.dtype(dtype).name, p.channels_last)
               for (shape, axis, groups), dtype in ON_CHIP_CASES
               for p in [plan_of(shape, axis, groups, dtype, device)]
               for pass_name in ("forward", "backward")
               if getattr(p, f"{pass_name}_on_chip") is not None}
    assert reached == {(pass_name, np.dtype(dtype).name, channels_last)
                       for pass_name in ("forward", "backward") for dtype in DTYPES
                       for channels_last in (True, False)}
    # and the backward that does not fit next to a forward that does
    assert any(plan_of(*case, dtype, device).backward_on_chip is None
               for case, dtype in ON_CHIP_CASES)


# Each side of the tier's boundaries (float32, 32 KiB: 8192 values of x forward, 4096
# of x and dy backward; a device of 4 SMs without clusters needs 4 groups).
ON_CHIP_BOUNDARIES = [
    ((4, 2, 4096), 1, 2, (True, True)),       # 4096 values a group: both passes
    ((4, 2, 4100), 1, 2, (True, False)),      # 4100: the forward only
    ((2, 2, 8192), 1, 2, (True, False)),      # 8192: still the forward
    ((2, 2, 8196), 1, 2, (False, False)),     # just over
    ((1, 3, 512), 1, 3, (False, False)),      # 3 groups on 4 SMs: too few
    ((4, 64, 64), -1, 4, (True, True)),       # channels-last, 1024 values a group
    ((2, 6, 12, 5), 2, 3, (True, True)),      # a middle axis
]


@pytest.mark.parametrize("shape, axis, groups, tiers", ON_CHIP_BOUNDARIES, ids=str)
def test_on_chip_boundaries(on_chip, shape, axis, groups, tiers):
    device = check(shape, axis, groups, np.float32, device=make_device(cluster_blocks=1))
    plan = plan_of(shape, axis, groups, np.float32, device)
    assert (plan.forward_on_chip is not None, plan.backward_on_chip is not None) == tiers
    kernels = {launch.kernel for launch in device.launches}
    assert ("forward_on_chip" in kernels, "backward_on_chip" in kernels) == tiers


@pytest.mark.parametrize("center, scale", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("shape, axis, groups", [CASES[0], CASES[1], CASES[2]], ids=str)
def test_on_chip_without_gamma_or_beta(on_chip, shape, axis, groups, center, scale):
    check(shape, axis, groups, np.float32, device=one_sm(), center=center, scale=scale)


@pytest.mark.parametrize("offset, vector", [(0, 8), (4, 4), (2, 2), (1, 1)])
def test_on_chip_vector_width_follows_alignment(on_chip, offset, vector):
    device = check((2, 4, 4, 32), -1, 4, np.float16, offset=offset)
    assert launched(device, "forward_on_chip") == [
        f"cugn::forward_on_chip<cugn::Half, {vector}, unsigned int, true, cugn::kLinear>"]
    assert launched(device, "backward_on_chip") == [
        f"cugn::backward_on_chip<cugn::Half, {vector}, unsigned int, true, cugn::kLinear>"]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_on_chip_64_bit_indices(on_chip, monkeypatch, dtype):
    monkeypatch.setattr(cuda_plan, "INDEX64_THRESHOLD", 0)
    for shape, axis, groups in [CASES[0], CASES[1], CASES[2]]:
        device = check(shape, axis, groups, dtype, device=one_sm())
        assert "backward_on_chip" in {launch.kernel for launch in device.launches}
        assert all("unsigned long long" in launch.name_expression for launch in device.launches)


@pytest.mark.parametrize("shape, axis, groups", [CASES[0], CASES[1], CASES[5], CASES[13]],
                         ids=str)
def test_on_chip_bitwise_equal_in_every_block_and_thread_order(on_chip, shape, axis, groups):
    layout = make_layout(shape, axis, groups)
    inputs = make_inputs(shape, layout, np.float32)
    first = run_cuda(one_sm(), layout, *inputs, 1e-3)
    for schedule in [Schedule(), *SCHEDULES]:
        if VARIANT == "thread":
            schedule = Schedule(schedule.block_order, schedule.thread_order, True, schedule.seed)
        device = one_sm(schedule=schedule)
        again = run_cuda(device, layout, *inputs, 1e-3)
        assert [launch.kernel for launch in device.launches] == [
            *ON_CHIP_KERNELS["forward"], *ON_CHIP_KERNELS["backward"]]
        for name, a, b in zip(NAMES, first, again):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=name)


@pytest.mark.parametrize("activation", ["silu", "relu", "gelu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups", [CASES[0], CASES[1], CASES[2], CASES[5]],
                         ids=str)
def test_on_chip_fused_activation_equals_the_composition(on_chip, shape, axis, groups, dtype,
                                                         activation):
    fused = check_fused_activation(one_sm(), shape, axis, groups, dtype, activation)
    assert [name.split("<")[0] for name in fused] == ["cugn::forward_on_chip",
                                                      "cugn::backward_on_chip"]


def test_on_chip_fused_activation_uses_beta_in_the_backward(on_chip):
    shape, axis, groups = CASES[1]
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, np.float32)
    beta = 3 * beta
    got = run_cuda(one_sm(), layout, x, dy, gamma, beta, 1e-3, activation="relu")
    want = activated_reference(layout, x, dy, gamma, beta, 1e-3, "relu")
    assert_matches(got, want, layout, np.dtype(np.float32), "relu", dy, gamma)
    without_beta = activated_reference(layout, x, dy, gamma, None, 1e-3, "relu")
    assert not np.allclose(got[3], without_beta[3], atol=1e-2)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape, axis", [((2, 8, 4, 4), 1), ((2, 4, 4, 8), -1), ((2, 6, 4, 5), 2)])
def test_on_chip_constant_groups_with_epsilon_zero_give_beta(on_chip, shape, axis, dtype):
    device = one_sm()
    layout = make_layout(shape, axis, 2)
    x, dy, gamma, beta = make_inputs(shape, layout, dtype)
    x[...] = 3
    got = run_cuda(device, layout, x, dy, gamma, beta, 0.0)
    assert launched(device, "backward_on_chip")
    want = run_reference(layout, x, dy, gamma, beta, 0.0)
    assert_matches(got, want, layout, dtype)
    np.testing.assert_array_equal(got[2], 0)  # rstd
    np.testing.assert_array_equal(got[0], want[0].astype(dtype))  # beta, exactly


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape, axis", [((2, 8, 4, 4), 1), ((2, 4, 4, 8), -1)])
def test_on_chip_nan_and_infinity_stay_in_their_group(on_chip, shape, axis, dtype):
    device = one_sm()
    layout = make_layout(shape, axis, 4)
    x, dy, gamma, beta = make_inputs(shape, layout, dtype)
    view = layout.to_view(x)
    view[0, 0, 1, 0, 0] = np.nan
    view[-1, 0, 2, 0, 0] = np.inf
    got = run_cuda(device, layout, x, dy, gamma, beta, 1e-3)
    assert launched(device, "backward_on_chip")
    want = run_reference(layout, x, dy, gamma, beta, 1e-3)
    assert np.isnan(got[1][0, 1]) and np.isnan(got[1][-1, 2]) and np.isnan(got[2][0, 1])
    assert np.isfinite(got[1]).sum() == got[1].size - 2
    assert_matches(got, want, layout, dtype)


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16, np.float32], ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups", [CASES[0], CASES[1], CASES[2]], ids=str)
def test_on_chip_statistics_stay_exact_when_the_mean_dwarfs_the_spread(on_chip, shape, axis,
                                                                       groups, dtype):
    device = one_sm()
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, np.float64)
    x = (300 + x).astype(dtype)
    got = run_cuda(device, layout, x, dy.astype(dtype), gamma, beta, 1e-3)
    assert launched(device, "backward_on_chip")
    want = run_reference(layout, x, dy.astype(dtype), gamma, beta, 1e-3)
    assert_matches(got, want, layout, dtype, dy=dy, gamma=gamma)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5)  # rstd


@pytest.mark.parametrize("shape, axis", [((0, 8, 8, 32), -1), ((0, 32, 8, 8), 1)])
def test_on_chip_empty_batch(on_chip, shape, axis):
    device = one_sm()
    layout = make_layout(shape, axis, 4)
    x = device.empty(shape, np.float32)
    with device.installed():
        y, mean, rstd = group_norm_cuda.forward(x, None, None, layout, 1e-3)
        dx, dgamma, dbeta = group_norm_cuda.backward(x, x, None, mean, rstd, layout)
    assert device.launches == []
    assert y.shape == dx.shape == shape and mean.shape == rstd.shape == (0, 4)
    np.testing.assert_array_equal(np.array(dgamma), 0)
    np.testing.assert_array_equal(np.array(dbeta), 0)


@pytest.mark.parametrize("shape, axis, groups", [CASES[0], CASES[1], CASES[2]], ids=str)
@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=dtype_ids)
def test_on_chip_reads_each_input_once_and_writes_each_output_once(on_chip, shape, axis, groups,
                                                                   dtype):
    device = check(shape, axis, groups, dtype, device=one_sm())
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    forward, backward, parameters = device.launches
    by_name = {t.parameters: t for t in forward.traffic}
    assert (by_name[("x",)].read, by_name[("x",)].written) == (nbytes, 0)
    assert (by_name[("y",)].read, by_name[("y",)].written) == (0, nbytes)
    by_name = {t.parameters: t for t in backward.traffic}
    assert by_name[("x",)].read == by_name[("dy",)].read == nbytes
    assert (by_name[("dx",)].read, by_name[("dx",)].written) == (0, nbytes)
    # Beside them, a few float32 values per group and channel: gamma, beta and rstd
    # for the per-channel table, gamma again for the group's sums, mean and rstd,
    # the partial sums, the residual.
    layout = make_layout(shape, axis, groups)
    small = 24 * layout.batch * (layout.channels + layout.groups)
    assert nbytes * 2 < forward.bytes_read + forward.bytes_written <= nbytes * 2 + small
    assert nbytes * 3 < backward.bytes_read + backward.bytes_written <= nbytes * 3 + small
    assert parameters.kernel == "backward_parameters"


def test_planted_missing_on_chip_barrier_reads_unwritten_shared_memory(on_chip):
    # Without the barrier after the loads, the channels' sums read cached vectors
    # and table entries that other threads (which run later) have not written: the
    # NaN shared memory was filled with.
    source = planted("  __syncthreads();  // the channels' sums read every thread's vectors "
                     "and the table\n", "")
    device = make_device(source=source, sm_count=1, blocks_per_sm=1)
    shape, axis, groups = CASES[0]
    layout = make_layout(shape, axis, groups)
    y, mean, rstd, dx, dgamma, dbeta = run_cuda(device, layout, *make_inputs(shape, layout,
                                                                             np.float32), 1e-3)
    assert np.isfinite(y).all() and np.isnan(dgamma).any() and np.isnan(dx).any()


# ------------------------------------------------------------------ clusters of the on-chip tier
#
# A group larger than one block's cache, up to 8 times it, takes a cluster of 2, 4 or
# 8 blocks (sm_90), each caching whole rows (or whole channels of a one-row group).
# On the default device of 4 SMs, in float32:
CLUSTER_CASES = [  # shape, axis, groups, blocks a group forward and backward
    ((2, 8, 4096), 1, 2, (2, 4)),       # channels-first, one row: 2 channels, then 1, a block
    ((2, 1501, 16), -1, 2, (2, 4)),     # channels-last rows, 751 and 750, then 376..373
    ((2, 80, 12, 50), 2, 3, (2, 4)),    # a middle axis: rows of D*S = 200 values
    ((4, 3, 4096), 1, 1, (2, 4)),       # 3 channels: the backward's last block holds none
    ((1, 64, 32, 32), 1, 1, (8, None)),  # 256 kB of x a group; 512 kB backward: too large
]
CLUSTER_KERNELS = {"forward": "forward_on_chip_cluster", "backward": "backward_on_chip_cluster"}


def cluster_launches(device):
    """{pass: blocks a cluster} of the cluster kernels ``device`` launched."""
    return {name: launch.cluster[0] for launch in device.launches
            for name, kernel in CLUSTER_KERNELS.items() if launch.kernel == kernel}


@pytest.mark.parametrize("shape, axis, groups, blocks", CLUSTER_CASES, ids=str)
def test_clusters_match_numpy(on_chip, shape, axis, groups, blocks):
    device = check(shape, axis, groups, np.float32)
    plan = plan_of(shape, axis, groups, np.float32, device)
    forward, backward = blocks
    assert (plan.forward_on_chip.cluster, plan.backward_on_chip and
            plan.backward_on_chip.cluster) == blocks
    assert cluster_launches(device) == {"forward": forward, **(
        {"backward": backward} if backward else {})}
    kernels = [launch.kernel for launch in device.launches]
    assert kernels[0] == "forward_on_chip_cluster"
    if backward:
        assert kernels[1:] == ["backward_on_chip_cluster", "backward_parameters"]
    # Each pass reads its inputs once, x forward, x and dy backward, and writes once;
    # beside them, each block reads gamma and beta. (Only the checked build counts.)
    nbytes = np.prod(shape) * 4
    launches = device.launches[:2 if backward else 1] if VARIANT == "checked" else []
    for launch, minimum in zip(launches, (2 * nbytes, 3 * nbytes)):
        assert minimum < launch.bytes_read + launch.bytes_written <= 1.02 * minimum


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups", [((2, 32, 32, 32), -1, 2), ((2, 32, 32, 32), 1, 2)],
                         ids=str)
def test_clusters_in_every_dtype_and_layout(on_chip, shape, axis, groups, dtype):
    # 64 kB of float32 a group: clusters in every dtype but one pass of float16 and
    # bfloat16, whose forward fits in one block.
    device = check(shape, axis, groups, dtype)
    launches = cluster_launches(device)
    assert "backward" in launches and ("forward" in launches) == (np.dtype(dtype).itemsize > 2)


@pytest.mark.parametrize("shape, axis, groups, blocks", CLUSTER_CASES[:3], ids=str)
def test_clusters_bitwise_equal_in_every_block_and_thread_order(on_chip, shape, axis, groups,
                                                               blocks):
    layout = make_layout(shape, axis, groups)
    inputs = make_inputs(shape, layout, np.float32)
    first = run_cuda(make_device(), layout, *inputs, 1e-3)
    for schedule in [s for s in SCHEDULES if not s.parallel]:  # clusters run serially
        device = make_device(schedule=schedule)
        again = run_cuda(device, layout, *inputs, 1e-3)
        assert cluster_launches(device) == dict(zip(("forward", "backward"), blocks))
        for name, a, b in zip(NAMES, first, again):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=name)


@pytest.mark.parametrize("activation", ["silu", "gelu"])
@pytest.mark.parametrize("dtype", [BFLOAT16, np.float32], ids=dtype_ids)
@pytest.mark.parametrize("shape, axis, groups, blocks", CLUSTER_CASES[:3], ids=str)
def test_clusters_fused_activation_equals_the_composition(on_chip, shape, axis, groups, blocks,
                                                          dtype, activation):
    device = make_device()
    fused = check_fused_activation(device, shape, axis, groups, dtype, activation)
    plan = plan_of(shape, axis, groups, dtype, device)
    assert plan.backward_on_chip.cluster > 1  # in bfloat16 the forward may fit in one block
    assert [name.split("<")[0] for name in fused] == [
        "cugn::forward_on_chip" + ("_cluster" if plan.forward_on_chip.cluster > 1 else ""),
        "cugn::backward_on_chip_cluster"]


@pytest.mark.parametrize("center, scale", [(False, False), (True, True)])
def test_clusters_keep_the_statistics_exact_when_the_mean_dwarfs_the_spread(on_chip, center,
                                                                           scale):
    shape, axis, groups, _ = CLUSTER_CASES[1]
    layout = make_layout(shape, axis, groups)
    x, dy, gamma, beta = make_inputs(shape, layout, np.float64, center, scale)
    x = (1000 + x).astype(np.float32)
    got = run_cuda(make_device(), layout, x, dy.astype(np.float32), gamma, beta, 1e-3)
    want = run_reference(layout, x, dy.astype(np.float32), gamma, beta, 1e-3)
    assert_matches(got, want, layout, np.float32, dy=dy, gamma=gamma)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4)  # rstd


def test_without_clusters_a_large_group_takes_the_tiers_that_read_twice(on_chip):
    shape, axis, groups, _ = CLUSTER_CASES[0]
    device = check(shape, axis, groups, np.float32, device=make_device(cluster_blocks=1))
    assert cluster_launches(device) == {}
    assert "forward_on_chip" not in {launch.kernel for launch in device.launches}


def test_planted_cluster_merge_of_its_own_block_only(on_chip):
    # Each block merges its own partial K times instead of every block's once.
    source = planted(
        "value = merge(value, *static_cast<const S*>(__cluster_map_shared_rank(slot, rank)));",
        "value = merge(value, *slot);")
    shape, axis, groups, _ = CLUSTER_CASES[0]
    layout = make_layout(shape, axis, groups)
    inputs = make_inputs(shape, layout, np.float32)
    got = run_cuda(make_device(source=source), layout, *inputs, 1e-3)
    want = run_reference(layout, *inputs, 1e-3)
    # Each block normalises its share by its own statistics, not the group's.
    with pytest.raises(AssertionError, match=" y\n"):
        assert_matches(got, want, layout, np.float32)


def test_planted_cluster_block_leaving_while_others_read_its_memory(on_chip):
    # The forward's last wait left out: a block leaves while others may read its sums.
    source = planted("    store_pack<V>(y, cached.offset(j), out);\n  }\n  cluster_leave<K>();\n",
                     "    store_pack<V>(y, cached.offset(j), out);\n  }\n")
    with pytest.raises(KernelError, match="exited"):
        run_planted(source, *CLUSTER_CASES[0][:3])
