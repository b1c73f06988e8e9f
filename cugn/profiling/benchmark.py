"""The GroupNorm benchmark of one case: cugn against the bandwidth ceiling and its peers.

For one shape, feature axis, group count and dtype, all in one run:

- cugn's forward and backward (``cugn.kernels``, the array-level ops the
  autodiff op calls: the CUDA kernels on a GPU, the NumPy path on the CPU);
- a copy of the same traffic (the ceiling): the forward reads and writes the
  tensor once (2x its bytes), the backward reads x and dy and writes dx (3x);
- ``torch.nn.functional.group_norm`` on the same memory layout (contiguous
  NCHW for ``axis=1``, channels_last for ``axis=-1``), when torch is installed
  (and has CUDA, for the GPU);
- ``keras.layers.GroupNormalization`` on its JAX backend under ``jax.jit``,
  when Keras and JAX are installed (and JAX has a GPU, for the GPU);
- a plain composition of mean/var/normalize in CuPy (NumPy on the CPU).

On the GPU every time is a CUDA-event median on the current stream, with the
launches queued behind a spin kernel so that Python's launch overhead is not
counted (``timing.time_cuda``), except Keras/JAX, which runs on JAX's own
streams and is timed by wall clock around ``block_until_ready`` (ten calls per
sample, so its dispatch overlaps the GPU's work). On the CPU every time is a
``perf_counter`` median. Times are in microseconds; absent peers are None.
"""

import datetime
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import backend, kernels
from ..backend import compute_dtype
from ..functions.normalization import (check_axis, check_epsilon, check_groups, feature_axes,
                                       resolve_groups)
from ..kernels.layout import GroupLayout
from .timing import optional_import, time_cpu, time_cuda

# Bytes moved, in multiples of the tensor's size, by the least traffic possible.
TRAFFIC = {"forward": 2, "backward": 3}
PASSES = tuple(TRAFFIC)
DTYPES = ("float16", "float32", "float64")


def naive_column(device):
    """The naive composition is CuPy's on the GPU, NumPy's on the CPU."""
    return "cupy_naive_us" if device == "cuda" else "numpy_naive_us"


def columns(device):
    """The columns of a result row (on the GPU also cugn with its L2 slicing off, and
    with its on-chip tier off)."""
    unsliced = ["cugn_unsliced_us", "cugn_on_chip_off_us"] if device == "cuda" else []
    return ["device", "date", "commit", "shape", "axis", "groups", "dtype", "pass", "cugn_us",
            *unsliced, "copy_us", "torch_us", "keras_jax_us", naive_column(device), "cugn_gbps",
            "pct_of_copy"]


@dataclass(frozen=True)
class Case:
    """One benchmark case; the arguments are checked like group_norm's."""

    shape: tuple
    axis: object
    groups: int
    dtype: str
    epsilon: float = 1e-3

    def __post_init__(self):
        shape = tuple(self.shape)
        if not shape or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
                            for n in shape):
            raise ValueError(f"shape must be positive integers, got {self.shape!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        object.__setattr__(self, "axis", check_axis(self.axis))
        object.__setattr__(self, "groups", check_groups(self.groups))
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))
        # The axis and the groups must fit the shape: the layout is built here, once.
        axes = feature_axes(self.axis, self.shape)
        channels = int(np.prod([self.shape[a] for a in axes]))
        object.__setattr__(self, "layout",
                           GroupLayout(self.shape, axes, resolve_groups(self.groups, channels)))

    @property
    def nbytes(self):
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def run_case(case, device="cuda", warmup=None, repeats=None):
    """One row per pass (forward, backward) for ``case`` on "cuda" or "cpu"."""
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    timers = _cuda_timers(case) if device == "cuda" else _cpu_timers(case)
    naive = naive_column(device)
    rows = []
    for pass_name in PASSES:
        times = {}
        for name, (fn, timer) in timers[pass_name].items():
            times[name] = None if fn is None else _measure(name, fn, timer, warmup, repeats)
        row = {"device": device_name(device), "date": datetime.date.today().isoformat(),
               "commit": commit(), "shape": "x".join(map(str, case.shape)),
               "axis": _axis_text(case.axis), "groups": case.layout.groups, "dtype": case.dtype,
               "pass": pass_name, "cugn_us": times["cugn"], "copy_us": times["copy"],
               "torch_us": times.get("torch"), "keras_jax_us": times.get("keras_jax"),
               naive: times.get("naive")}
        if device == "cuda":
            row["cugn_unsliced_us"] = times["cugn_unsliced"]
            row["cugn_on_chip_off_us"] = times["cugn_on_chip_off"]
        row["cugn_gbps"] = TRAFFIC[pass_name] * case.nbytes / row["cugn_us"] / 1e3
        row["pct_of_copy"] = 100 * row["copy_us"] / row["cugn_us"]
        rows.append(row)
    return rows


def _peer(name, build, *args):
    """A peer's (forward, backward), or (None, None) when it cannot run this case."""
    try:
        return build(*args)
    except Exception as error:  # noqa: BLE001 - any failure of a third-party peer
        _warn(name, error)
        return None, None


def _warn(name, error):
    print(f"warning: {name} left out: {type(error).__name__}: {error}", file=sys.stderr)


def _measure(name, fn, timer, warmup, repeats):
    if name in ("cugn", "cugn_unsliced", "cugn_on_chip_off", "copy"):
        return timer(fn, warmup, repeats)
    try:  # a peer that cannot run this case (a dtype, an axis list) is left out, loudly
        return timer(fn, warmup, repeats)
    except Exception as error:  # noqa: BLE001 - any failure of a third-party peer
        _warn(name, error)
        return None


# ------------------------------------------------------------------ the GPU


def _cuda_timers(case):
    import cupy as cp

    def timer(library):
        def run(fn, warmup, repeats):
            return time_cuda(fn, **_counts(warmup, repeats, 10, 50), library=library)
        return run

    data = _inputs(case, cp)
    functions = {
        "cugn": _cugn(case, data),
        "cugn_unsliced": _unsliced(_cugn(case, data)),
        "cugn_on_chip_off": _on_chip_off(_cugn(case, data)),
        "copy": tuple(_device_copy(cp, TRAFFIC[p] * case.nbytes // 2) for p in PASSES),
        "torch": _peer("torch", _torch, case, data, "cuda"),
        "keras_jax": _peer("keras_jax", _keras_jax, case, data, "gpu"),
        "naive": _naive(cp, case, data),
    }
    cupy_timer = timer("cupy")
    return _by_pass(functions, {"cugn": cupy_timer, "cugn_unsliced": cupy_timer,
                                "cugn_on_chip_off": cupy_timer,
                                "copy": cupy_timer, "torch": timer("torch"),
                                "keras_jax": _jax_timer, "naive": cupy_timer})


def _unsliced(functions):
    """cugn's (forward, backward) with the CUDA path's L2 slicing off: one part a pass."""
    return _switched_off("l2_slicing", functions)


def _on_chip_off(functions):
    """cugn's (forward, backward) with the CUDA path's on-chip tier off: every pass on
    the tiers that read their inputs twice."""
    return _switched_off("on_chip", functions)


def _switched_off(switch, functions):
    """``functions`` each run with ``group_norm_cuda``'s flag ``switch`` off, for its call only."""
    from ..kernels import group_norm_cuda

    def switched_off(fn):
        def call():
            setattr(group_norm_cuda, switch, False)
            try:
                return fn()
            finally:
                setattr(group_norm_cuda, switch, True)
        return call

    return tuple(switched_off(fn) for fn in functions)


def _device_copy(cp, nbytes):
    """A device-to-device copy of ``nbytes`` bytes (cudaMemcpyAsync on the current stream)."""
    source = cp.ones(nbytes, cp.uint8)
    target = cp.empty_like(source)
    return lambda: target.data.copy_from_device_async(source.data, nbytes)


def _jax_timer(fn, warmup, repeats):
    """JAX dispatches asynchronously: ten calls per sample, then a wait for the last
    result (JAX runs them in order)."""
    jax = optional_import("jax")
    last = []

    def call():
        last[:] = [fn()]

    return time_cpu(call, **_counts(warmup, repeats, 3, 20), min_seconds=_min_seconds(repeats),
                    calls=10,
                    finish=lambda: jax.block_until_ready(last[0]))


# ------------------------------------------------------------------ the CPU


def _cpu_timers(case):
    def timer(fn, warmup, repeats):
        return time_cpu(fn, **_counts(warmup, repeats, 2, 10), min_seconds=_min_seconds(repeats))

    data = _inputs(case, np)
    source = np.ones(3 * case.nbytes // 2, np.uint8)
    target = np.empty_like(source)
    functions = {
        "cugn": _cugn(case, data),
        "copy": tuple((lambda n=TRAFFIC[p] * case.nbytes // 2: np.copyto(target[:n], source[:n]))
                      for p in PASSES),
        "torch": _peer("torch", _torch, case, data, "cpu"),
        "keras_jax": _peer("keras_jax", _keras_jax, case, data, "cpu"),
        "naive": _naive(np, case, data),
    }
    return _by_pass(functions, {"cugn": timer, "copy": timer, "torch": timer,
                                "keras_jax": _jax_timer, "naive": timer})


# ------------------------------------------------------------------ shared pieces


def _cugn(case, data):
    """cugn's forward and backward (the array-level kernels) on ``data``."""
    x, dy, gamma, beta = data
    layout, epsilon = case.layout, case.epsilon
    _, mean, rstd = kernels.forward(x, gamma, beta, layout, epsilon)
    return (lambda: kernels.forward(x, gamma, beta, layout, epsilon),
            lambda: kernels.backward(x, dy, gamma, mean, rstd, layout))


def _by_pass(functions, timers):
    """``{pass: {peer: (fn, timer)}}`` from each peer's (forward, backward) functions."""
    return {pass_name: {name: (fns[index], timers[name]) for name, fns in functions.items()}
            for index, pass_name in enumerate(PASSES)}


def _counts(warmup, repeats, default_warmup, default_repeats):
    return {"warmup": default_warmup if warmup is None else warmup,
            "repeats": default_repeats if repeats is None else repeats}


def _min_seconds(repeats):
    """Time at least 0.2 s a measurement, unless an exact sample count was asked for."""
    return 0.2 if repeats is None else 0.0


def _inputs(case, xp):
    """x and dy in the case's dtype, gamma and beta in float32 (Keras's weights), on ``xp``."""
    rng = np.random.default_rng(0)
    feature_shape = case.layout.feature_shape
    arrays = [rng.standard_normal(case.shape).astype(case.dtype) for _ in range(2)]
    arrays += [rng.standard_normal(feature_shape).astype(np.float32) for _ in range(2)]
    return tuple(xp.asarray(a) for a in arrays)


def _naive(xp, case, data):
    """GroupNorm forward and backward composed of plain ``xp`` reductions and
    elementwise ops on the (N, M, G, D, S) view (what a user writes first)."""
    x, dy, gamma, beta = data
    layout, epsilon = case.layout, case.epsilon
    acc = compute_dtype(x.dtype)
    reduced = (1, 3, 4)
    gamma5, beta5 = layout.params_view(gamma), layout.params_view(beta)

    def statistics():
        x5 = layout.to_view(x).astype(acc)
        mean = x5.mean(axis=reduced, keepdims=True)
        return x5, mean, 1 / xp.sqrt(x5.var(axis=reduced, keepdims=True) + epsilon)

    def forward():
        x5, mean, rstd = statistics()
        return layout.from_view(((x5 - mean) * rstd * gamma5 + beta5).astype(x.dtype))

    x5, mean, rstd = statistics()

    def backward():
        dy5 = layout.to_view(dy).astype(acc)
        xhat = (x5 - mean) * rstd
        g = dy5 * gamma5
        dx = rstd * (g - g.mean(axis=reduced, keepdims=True)
                     - xhat * (g * xhat).mean(axis=reduced, keepdims=True))
        return (layout.from_view(dx.astype(x.dtype)),
                (dy5 * xhat).sum(axis=(0, 1, 4)).reshape(layout.feature_shape),
                dy5.sum(axis=(0, 1, 4)).reshape(layout.feature_shape))

    return forward, backward


def _channels_first(case):
    """How to see a channels-last case as torch's (N, C, ...), or None for other axes."""
    ndim, axis = len(case.shape), case.axis
    if axis == 1 or axis == 1 - ndim:
        return ()
    if axis == -1 or axis == ndim - 1:
        return (0, ndim - 1, *range(1, ndim - 1))
    return None


def _torch(case, data, device):
    """torch's forward and backward on the same memory layout, or (None, None)."""
    torch = optional_import("torch")
    permutation = _channels_first(case)
    if torch is None or permutation is None or (device == "cuda" and not torch.cuda.is_available()):
        return None, None
    x, dy, gamma, beta = (_to_torch(torch, a, device) for a in data)
    if permutation:  # a channels-last array seen as (N, C, ...): torch's channels_last strides
        x, dy = x.permute(permutation), dy.permute(permutation)
    gamma, beta = gamma.reshape(-1).to(x.dtype), beta.reshape(-1).to(x.dtype)
    groups, epsilon = case.layout.groups, case.epsilon
    group_norm = torch.nn.functional.group_norm

    def forward():
        with torch.no_grad():
            return group_norm(x, groups, gamma, beta, epsilon)

    leaves = [a.detach().requires_grad_() for a in (x, gamma, beta)]
    y = group_norm(leaves[0], groups, leaves[1], leaves[2], epsilon)
    return forward, lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True)


def _to_torch(torch, array, device):
    if device == "cuda":
        return torch.from_dlpack(array)
    return torch.from_numpy(array)


def _keras_jax(case, data, platform_name):
    """Keras GroupNormalization on JAX under jit: forward, and the backward alone
    (the pullback of a vjp taken once), or (None, None)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras, jax = optional_import("keras"), optional_import("jax")
    if keras is None or jax is None or keras.backend.backend() != "jax":
        return None, None
    if jax.default_backend() != platform_name:
        return None, None
    x, dy, gamma, beta = (np.asarray(a.get() if hasattr(a, "get") else a) for a in data)
    policy = "mixed_float16" if case.dtype == "float16" else case.dtype
    layer = keras.layers.GroupNormalization(groups=case.layout.groups, axis=_keras_axis(case.axis),
                                            epsilon=case.epsilon, dtype=policy)
    layer.build(case.shape)
    layer.set_weights([gamma, beta])
    weights = [v.value for v in layer.trainable_variables]
    xj, dyj = jax.device_put(x), jax.device_put(dy)

    def apply(weights, inputs):
        return layer.stateless_call(weights, [], inputs)[0]

    forward = jax.jit(apply)
    _, pullback = jax.vjp(apply, weights, xj)
    backward = jax.jit(pullback)
    return (lambda: forward(weights, xj)), (lambda: backward(dyj))


def _keras_axis(axis):
    return list(axis) if isinstance(axis, tuple) else axis


def _axis_text(axis):
    return ",".join(map(str, axis)) if isinstance(axis, tuple) else str(axis)


def device_name(device):
    if device == "cuda":
        import cupy as cp

        name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def commit():
    """The short commit of the source tree, or "" outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def cuda_available():
    """True when CuPy is installed and sees a CUDA device."""
    return backend.cuda_available()
