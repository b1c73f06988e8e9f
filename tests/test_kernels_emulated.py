"""The CUDA path run end to end on the CPU, with each kernel emulated in Python.

``group_norm_cuda.forward`` and ``backward`` run for real, with CuPy replaced
by NumPy-backed arrays and every kernel launch sent to a Python transcription
of that kernel of ``cugn/kernels/cuda/group_norm.cu``. Arguments are bound to
the parameter names parsed from the ``.cu`` source and their types are checked
against the instantiation (``I`` is uint32 or uint64, ``int`` is int32, the
accumulation type is float32 or float64, pointers are arrays of the storage or
accumulation dtype), so a host argument in the wrong place or of the wrong
width is caught here, not first on a GPU. Reductions follow the kernels'
thread-by-thread traversal; the values each partial sums are then reduced
exactly, in float64 (the kernels' merge order and rounding are the GPU
tests' business). The results must equal the NumPy path in float64.
"""

import re
import types

import numpy as np
import pytest

pytest.importorskip("cupy", reason="group_norm_cuda imports CuPy")

from cugn.kernels import cuda_loader, cuda_plan, group_norm_cuda, group_norm_numpy  # noqa: E402
from cugn.kernels.layout import GroupLayout  # noqa: E402

BLOCK = cuda_plan.BLOCK
WARP = 32


# ------------------------------------------------------------------ NumPy standing in for CuPy


class DeviceArray(np.ndarray):
    """A NumPy array with the two CuPy attributes the host code reads."""

    @property
    def device(self):
        return FakeDevice()

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])


class FakeDevice:
    id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _device(array):
    return np.asarray(array).view(DeviceArray)


def _unwritten(shape, dtype):
    """Fresh memory is NaN (or all ones bits): a value a kernel forgot to write shows."""
    array = np.empty(shape, dtype)
    array.fill(np.nan)
    return _device(array)


fake_cupy = types.SimpleNamespace(
    ascontiguousarray=lambda a, dtype=None: _device(np.ascontiguousarray(a, dtype=dtype)),
    empty=_unwritten,
    empty_like=lambda a: _unwritten(a.shape, a.dtype),
    zeros=lambda shape, dtype: _device(np.zeros(shape, dtype)),
    full=lambda shape, value, dtype: _device(np.full(shape, value, dtype)),
)


# ------------------------------------------------------------------ kernel signatures from the source

_SIGNATURE = re.compile(r"__global__ void __launch_bounds__\(kBlock, kMinBlocks\)\s+(\w+)\(([^)]*)\)")


def kernel_parameters():
    """{kernel name: [(parameter name, kind)]}, kind one of T*, A*, I, int, A."""
    result = {}
    for name, params in _SIGNATURE.findall(cuda_loader.source()):
        parsed = []
        for param in params.split(","):
            words = param.replace("__restrict__", "").replace("const ", "").split()
            type_text, pname = " ".join(words[:-1]), words[-1]
            pointer = type_text.endswith("*")
            base = type_text.rstrip("*").strip()
            kind = {"T": "T", "typename AccOf<T>::type": "A", "I": "I", "int": "int"}[base]
            parsed.append((pname, kind + ("*" if pointer else "")))
        result[name] = parsed
    return result


PARAMETERS = kernel_parameters()


def test_the_source_declares_every_kernel_the_loader_names():
    names = {*cuda_loader.VECTOR_KERNELS, *cuda_loader.LAYOUT_KERNELS, *cuda_loader.SCALAR_KERNELS}
    assert set(PARAMETERS) == names


def bind(name, args, storage, acc, index):
    """The launch's arguments by parameter name, after checking each one's type."""
    params = PARAMETERS[name]
    assert len(args) == len(params), f"{name}: {len(args)} arguments for {len(params)} parameters"
    bound = {}
    for (pname, kind), value in zip(params, args):
        where = f"{name}({pname})"
        if kind.endswith("*"):
            if value is None:
                assert pname in ("gamma", "beta"), f"{where}: a null pointer"
            else:
                assert isinstance(value, DeviceArray) and value.flags.c_contiguous, where
                want = storage if kind == "T*" else acc
                assert value.dtype == want, f"{where}: {value.dtype}, want {want}"
                value = value.reshape(-1)
        else:
            want = {"I": index, "int": np.dtype(np.int32), "A": acc}[kind]
            assert isinstance(value, np.generic) and value.dtype == want, (
                f"{where}: {type(value).__name__}, want {want}")
            value = value.item()
        bound[pname] = value
    return bound


# ------------------------------------------------------------------ the kernels in Python


def exact_stats(values, pivot):
    """(count, mean, m2) of values - pivot, as a Welford partial."""
    shifted = np.asarray(values, np.float64) - pivot
    if shifted.size == 0:
        return 0.0, 0.0, 0.0
    mean = shifted.mean()
    return float(shifted.size), mean, float(((shifted - mean) ** 2).sum())


def segment_loads(a, inner, grid, vector):
    """forward_stats_segment / backward_partials_segment: {slot: [element indices]}."""
    threads, split, chunk = a["unit_threads"], a["split"], a["chunk"]
    segments, row = a["segments"], a["row"]
    slots = a["units"] * split
    loads = {}
    for block in range(grid):
        for tid in range(BLOCK):
            lane = tid & (threads - 1)
            slot = block * (BLOCK // threads) + tid // threads
            if slot >= slots:
                continue
            unit, k = divmod(slot, split)
            base = (unit // inner) * segments * inner * row + (unit % inner) * row
            stride = inner * row
            end = min(k * chunk + chunk, segments * row)
            for j in range(k * chunk + lane, end, threads):
                v = base + (j if segments == 1 else (j // row) * stride + j % row)
                loads.setdefault(slot, []).extend(range(v * vector, (v + 1) * vector))
    return loads, slots


def forward_stats_segment(a, grid, vector):
    loads, slots = segment_loads(a, a["inner"], grid, vector)
    x, partials = a["x"], a["partials"]
    for slot, elements in loads.items():
        unit = slot // a["split"]
        base = (unit // a["inner"]) * a["segments"] * a["inner"] * a["row"] + (unit % a["inner"]) * a["row"]
        stats = exact_stats(x[elements], float(x[base * vector]))
        partials[[slot, slots + slot, 2 * slots + slot]] = stats


def forward_stats_column(a, grid, vector):
    x, partials = a["x"], a["partials"]
    rows, channels, d = a["rows"], a["channels"], a["group_channels"]
    lanes, rows_per_block, width = a["lanes"], a["rows_per_block"], a["merge_width"]
    split, chunk_rows, column_chunks = a["split"], a["chunk_rows"], a["column_chunks"]
    for block in range(grid):
        k, h, n = block % split, (block // split) % column_chunks, block // split // column_chunks
        first_channel = h * lanes * vector
        loaded = []
        for tid in range(BLOCK):
            lane, row = tid % lanes, tid // lanes
            c = first_channel + lane * vector
            elements = []
            if c < channels and row < rows_per_block:
                for m in range(k * chunk_rows + row, min(rows, k * chunk_rows + chunk_rows),
                               rows_per_block):
                    v = ((n * rows + m) * channels + c) // vector
                    elements += range(v * vector, (v + 1) * vector)
            loaded.append(elements)
        # warp_merge(w, merge_width): the first lane of each aligned run holds the run.
        merged = [sum((loaded[t] for t in range(tid, tid + width)), []) if tid % width == 0
                  else None for tid in range(BLOCK)]
        group_lanes = d // vector
        for tid in range(lanes // group_lanes):
            g = first_channel // d + tid
            if g >= a["groups"]:
                continue
            elements = []
            for r in range(rows_per_block):
                for lane in range(tid * group_lanes, (tid + 1) * group_lanes, width):
                    elements += merged[r * lanes + lane]
            slots = grid // column_chunks // split * a["groups"] * split
            slot = (n * a["groups"] + g) * split + k
            stats = exact_stats(x[elements], float(x[n * rows * channels + g * d]))
            partials[[slot, slots + slot, 2 * slots + slot]] = stats


def forward_finalize(a, grid, vector):
    units, split = a["units"], a["split"]
    slots = units * split
    p = a["partials"]
    for q in range(min(units, grid * BLOCK)):
        count = mean = m2 = 0.0
        for k in range(split):  # Chan's merge of the split partials, exactly
            c2, mean2, m22 = p[q * split + k], p[slots + q * split + k], p[2 * slots + q * split + k]
            if c2 == 0:
                continue
            total = count + c2
            delta = mean2 - mean
            m2 += m22 + delta * delta * count * c2 / total
            mean += delta * c2 / total
            count = total
        var = m2 / a["count"]
        var = 0.0 if var < 0 else var  # NaN stays NaN, as in the kernel
        denominator = var + a["epsilon"]
        pivot = float(a["x"][(q // a["groups"]) * a["batch_stride"]
                             + (q % a["groups"]) * a["group_stride"]])
        a["mean"][q] = pivot + mean
        a["rstd"][q] = 0.0 if denominator == 0 else 1 / np.sqrt(denominator)
        a["pivot"][q] = pivot
        a["shifted_mean"][q] = mean


def _elementwise_index(a, vector, channels_last, grid):
    assert grid * BLOCK >= 1
    e = np.arange(a["vectors"] * vector)
    c_first = (e // vector * vector) % a["channels"] if channels_last else (
        (e // vector * vector) // a["spatial"]) % a["channels"]
    c = c_first + (e % vector) if channels_last else c_first
    n = (e // vector * vector) // a["batch_stride"]
    return e, n, c, n * a["groups"] + c // a["group_channels"]


def forward_apply(a, grid, vector, channels_last):
    e, n, c, q = _elementwise_index(a, vector, channels_last, grid)
    scale = a["rstd"][q] * (1 if a["gamma"] is None else a["gamma"][c])
    offset = (0 if a["beta"] is None else a["beta"][c]) - scale * a["shifted_mean"][q]
    a["y"][e] = scale * (a["x"][e].astype(np.float64) - a["pivot"][q]) + offset


def backward_partials_segment(a, grid, vector):
    loads, slots = segment_loads(a, a["channels"], grid, vector)
    for slot, elements in loads.items():
        unit, k = divmod(slot, a["split"])
        n, c = divmod(unit, a["channels"])
        mu = a["mean"][n * a["groups"] + c // a["group_channels"]]
        dy = a["dy"][elements].astype(np.float64)
        centered = a["x"][elements] - mu
        index = (n * a["split"] + k) * a["channels"] + c
        a["partials"][[index, slots + index, 2 * slots + index]] = (
            dy.sum(), (dy * centered).sum(), centered.sum())


def backward_partials_column(a, grid, vector):
    rows, channels, lanes = a["rows"], a["channels"], a["lanes"]
    split, chunk_rows, column_chunks = a["split"], a["chunk_rows"], a["column_chunks"]
    rows_per_block = a["rows_per_block"]
    slots = grid // column_chunks * channels
    for block in range(grid):
        k, h, n = block % split, (block // split) % column_chunks, block // split // column_chunks
        first_channel = h * lanes * vector
        row_sums = {}
        for tid in range(lanes * rows_per_block):
            lane, row = tid % lanes, tid // lanes
            c = first_channel + lane * vector
            for i in range(vector):
                row_sums[tid * vector + i] = []
            if c < channels:
                for m in range(k * chunk_rows + row, min(rows, k * chunk_rows + chunk_rows),
                               rows_per_block):
                    for i in range(vector):
                        row_sums[tid * vector + i].append((n * rows + m) * channels + c + i)
        width = lanes * vector
        for col in range(width):
            if first_channel + col >= channels:
                break
            elements = sum((row_sums[r * width + col] for r in range(rows_per_block)), [])
            c = first_channel + col
            mu = a["mean"][n * a["groups"] + c // a["group_channels"]]
            dy = a["dy"][elements].astype(np.float64)
            centered = a["x"][elements] - mu
            index = (n * split + k) * channels + c
            a["partials"][[index, slots + index, 2 * slots + index]] = (
                dy.sum(), (dy * centered).sum(), centered.sum())


def backward_coefficients(a, grid, vector):
    groups, d, split = a["groups"], a["group_channels"], a["split"]
    channels = groups * d
    slots = a["units"] // groups * split * channels
    for q in range(min(a["units"], grid * BLOCK // WARP)):
        n = q // groups
        s_dy = s_dy_centered = s_centered = 0.0
        for t in range(d * split):
            c = (q % groups) * d + t // split
            index = (n * split + t % split) * channels + c
            w = 1.0 if a["gamma"] is None else a["gamma"][c]
            s_dy += w * a["partials"][index]
            s_dy_centered += w * a["partials"][slots + index]
            s_centered += a["partials"][2 * slots + index]
        r = a["rstd"][q]
        e = s_centered / a["count"]
        k2 = -r * r * ((s_dy_centered - e * s_dy) * r / a["count"])
        a["c2"][q] = k2
        a["c3"][q] = -r * (s_dy / a["count"]) - k2 * e
        a["residual"][q] = e


def backward_parameters(a, grid, vector):
    batch, channels, split = a["batch"], a["channels"], a["split"]
    slots = batch * split * channels
    for c in range(min(channels, grid * BLOCK)):
        total_dy = total_dgamma = 0.0
        for n in range(batch):
            dy = dy_centered = 0.0
            for k in range(split):
                index = (n * split + k) * channels + c
                dy += a["partials"][index]
                dy_centered += a["partials"][slots + index]
            q = n * a["groups"] + c // a["group_channels"]
            total_dy += dy
            total_dgamma += (dy_centered - a["residual"][q] * dy) * a["rstd"][q]
        a["dbeta"][c] = total_dy
        a["dgamma"][c] = total_dgamma


def backward_dx(a, grid, vector, channels_last):
    e, n, c, q = _elementwise_index(a, vector, channels_last, grid)
    k1 = a["rstd"][q] * (1 if a["gamma"] is None else a["gamma"][c])
    a["dx"][e] = (k1 * a["dy"][e] + a["c2"][q] * (a["x"][e].astype(np.float64) - a["mean"][q])
                  + a["c3"][q])


EMULATIONS = {f.__name__: f for f in (
    forward_stats_segment, forward_stats_column, forward_finalize, forward_apply,
    backward_partials_segment, backward_partials_column, backward_coefficients,
    backward_parameters, backward_dx)}


class EmulatedKernels:
    """Stands in for group_norm_cuda._Kernels: each attribute launches an emulation."""

    def __init__(self, configuration, channels_last, launches):
        acc = np.dtype(np.float64) if configuration.dtype == np.float64 else np.dtype(np.float32)
        index = np.dtype(np.uint64 if configuration.index64 else np.uint32)
        for name, emulation in EMULATIONS.items():
            setattr(self, name, self._launcher(name, emulation, configuration, channels_last,
                                               acc, index, launches))

    @staticmethod
    def _launcher(name, emulation, configuration, channels_last, acc, index, launches):
        def launch(grid, block, args):
            assert block == (BLOCK,) and len(grid) == 1 and grid[0] >= 1, (name, grid, block)
            bound = bind(name, args, configuration.dtype, acc, index)
            launches.append(name)
            if name in cuda_loader.LAYOUT_KERNELS:
                emulation(bound, grid[0], configuration.vector, channels_last)
            else:
                emulation(bound, grid[0], configuration.vector)
        return launch


@pytest.fixture
def emulated(monkeypatch):
    """group_norm_cuda on NumPy arrays with emulated kernels; yields the launch log."""
    launches = []
    monkeypatch.setattr(group_norm_cuda, "cupy", fake_cupy)
    monkeypatch.setattr(group_norm_cuda, "_sm_count", lambda device_id: 4)
    monkeypatch.setattr(group_norm_cuda, "_blocks_per_sm", lambda device_id, configuration: 2)
    monkeypatch.setattr(group_norm_cuda, "_kernels",
                        lambda configuration, channels_last, device_id:
                        EmulatedKernels(configuration, channels_last, launches))
    return launches


# ------------------------------------------------------------------ the tests

CASES = [
    ((2, 4, 4, 16), (3,), 4),        # NHWC, column tiles, warp runs of 4 lanes (float64: 2)
    ((2, 3, 5, 24), (3,), 8),        # D = 3: shared-memory merge
    ((1, 40, 8), (2,), 2),           # B = 1 channels-last: split over pixel rows
    ((2, 3, 300), (2,), 1),          # channels-last groups of 300 channels: segments
    ((2, 16, 3, 3), (1,), 4),        # NCHW, S = 9
    ((2, 6, 2, 2), (1,), 6),         # one channel per group, S = 4: lanes of a warp per group
    ((1, 4, 1024), (1,), 2),         # B = 1, long rows: split across blocks
    ((2, 3, 4, 5), (2,), 2),         # a middle axis: M = 3, S = 5
    ((2, 4, 3, 6), (1, 3), 4),       # non-adjacent feature axes
    ((1, 2048, 8), (2,), 2),         # B = 1 channels-last, many rows: every reduction split
    ((1, 2, 8192), (1,), 2),         # B = 1 channels-first, long rows: every reduction split
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("shape, axes, groups", CASES, ids=str)
def test_the_cuda_path_with_emulated_kernels_equals_the_numpy_path(emulated, shape, axes, groups,
                                                                    dtype):
    layout = GroupLayout(shape, axes, groups)
    rng = np.random.default_rng(0)
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = rng.standard_normal(layout.feature_shape)
    beta = rng.standard_normal(layout.feature_shape)
    acc = np.float64 if dtype == np.float64 else np.float32
    y, mean, rstd = group_norm_cuda.forward(_device(x), _device(gamma), _device(beta), layout, 1e-3)
    dx, dgamma, dbeta = group_norm_cuda.backward(_device(x), _device(dy), _device(gamma), mean,
                                                 rstd, layout)
    assert emulated[-1] == "backward_dx" and len(emulated) == 7

    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    want = group_norm_numpy.forward(x64, gamma, beta, layout, 1e-3)
    want = (*want, *group_norm_numpy.backward(x64, dy64, gamma, want[1], want[2], layout))
    got = (y, mean, rstd, dx, dgamma, dbeta)
    for name, a, b in zip(("y", "mean", "rstd", "dx", "dgamma", "dbeta"), got, want):
        assert a.shape == b.shape, name
        assert a.dtype == (dtype if name in ("y", "dx") else acc), name
        # The emulations compute in float64; only the stores round to the dtypes.
        tol = {np.float64: 1e-12, np.float32: 2e-6, np.float16: 2e-3}[dtype]
        np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=tol,
                                   atol=tol * max(1.0, np.abs(b).max()), err_msg=name)


def test_an_argument_of_the_wrong_width_is_caught(emulated, monkeypatch):
    # The host passes I as uint32 below 2^31 elements; an int64 there would be an ABI error.
    layout = GroupLayout((2, 4, 4, 16), (3,), 4)
    x = _device(np.ones(layout.shape))
    original = group_norm_cuda._prepare

    def wrong_index(x5, arrays):
        plan, kernels, index = original(x5, arrays)
        return plan, kernels, np.int64

    monkeypatch.setattr(group_norm_cuda, "_prepare", wrong_index)
    with pytest.raises(AssertionError, match="want uint32"):
        group_norm_cuda.forward(x, None, None, layout, 1e-3)


@pytest.mark.parametrize("shape, axes", [((2, 16, 4, 4), (1,)), ((2, 4, 4, 16), (3,)),
                                         ((1, 2, 8192), (1,))])
def test_float32_gradients_stay_accurate_when_the_mean_dwarfs_the_spread(emulated, shape, axes):
    # The saved float32 mean is off by up to 5e-4 at 1e4; with a spread of 1e-2 that
    # would skew dgamma by 5 % without the residual correction. What this checks is the
    # host's side of it (the residual's arrays and arguments) and the emulation's
    # arithmetic; the kernels' own arithmetic is checked by the GPU tests.
    layout = GroupLayout(shape, axes, 2)
    rng = np.random.default_rng(1)
    x = (1e4 + 1e-2 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.standard_normal(layout.feature_shape).astype(np.float32)
    y, mean, rstd = group_norm_cuda.forward(_device(x), _device(gamma), None, layout, 1e-6)
    got = group_norm_cuda.backward(_device(x), _device(dy), _device(gamma), mean, rstd, layout)
    x64 = x.astype(np.float64)
    want = group_norm_numpy.forward(x64, gamma.astype(np.float64), None, layout, 1e-6)
    want = group_norm_numpy.backward(x64, dy.astype(np.float64), gamma.astype(np.float64),
                                     want[1], want[2], layout)
    for name, a, b in zip(("dx", "dgamma", "dbeta"), got, want):
        np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-4,
                                   atol=1e-4 * np.abs(b).max(), err_msg=name)


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
        launch((1,), (BLOCK,), ("x",))
    with nvtx(False):
        launch((1,), (BLOCK,), ("y",))
    assert events == [("push", "kernel", "kernel:group_norm_forward_apply<float16, 8>"),
                      ("launch", ("x",)), ("pop",), ("launch", ("y",))]
