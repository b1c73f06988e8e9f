"""New tensors by PyTorch's names and defaults: ``zeros``, ``ones``, ``full``,
``empty``, ``zeros_like``, ``ones_like``, ``arange``, ``linspace``, ``eye``,
``randn``, ``rand`` and ``randint``.

Each takes ``dtype`` (float32 by default, as PyTorch's default dtype; int64 for
integer ``arange``/``full`` and ``randint``), ``device`` ("cpu", "cuda" or
"cuda:N"; the CPU by default) and ``requires_grad``. Sizes are given as
separate ints or one tuple: ``zeros(2, 3)`` or ``zeros((2, 3))``.
"""

import math
import numbers

import numpy as np

from . import backend, random
from .engine.tensor import Tensor

_DEFAULT_FLOAT = np.dtype(np.float32)
_DEFAULT_INT = np.dtype(np.int64)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    shape = _size(size, "zeros")
    return _leaf(lambda xp: xp.zeros(shape, _dtype(dtype)), device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    shape = _size(size, "ones")
    return _leaf(lambda xp: xp.ones(shape, _dtype(dtype)), device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    """Uninitialised values, as in PyTorch."""
    shape = _size(size, "empty")
    return _leaf(lambda xp: xp.empty(shape, _dtype(dtype)), device, requires_grad)


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False):
    """``fill_value`` everywhere; its type sets the default dtype (bool, int64, float32)."""
    shape = _size((size,), "full")
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if not isinstance(fill_value, numbers.Number):
        raise TypeError(f"full: fill_value must be a number, got {fill_value!r}")
    dtype = _dtype(dtype, _inferred_dtype(fill_value))
    return _leaf(lambda xp: xp.full(shape, fill_value, dtype), device, requires_grad)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False):  # noqa: A002 - torch's name
    """Zeros of ``input``'s shape, dtype and device unless given."""
    shape, dtype, device = _like(input, dtype, device)
    return _leaf(lambda xp: xp.zeros(shape, dtype), device, requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad=False):  # noqa: A002 - torch's name
    """Ones of ``input``'s shape, dtype and device unless given."""
    shape, dtype, device = _like(input, dtype, device)
    return _leaf(lambda xp: xp.ones(shape, dtype), device, requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    """``start, start + step, ...`` below ``end`` (``arange(end)`` starts at 0); int64
    when every bound is an int, else float32. Values are computed in float64, then cast."""
    if end is None:
        start, end = 0, start
    bounds = {"start": start, "end": end, "step": step}
    for name, value in bounds.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(
                value):
            raise ValueError(f"arange: {name} must be a finite number, got {value!r}")
    if step == 0:
        raise ValueError("arange: step must be nonzero, got 0")
    if (end - start) * step < 0:
        raise ValueError(f"arange: the range from start={start} to end={end} goes against "
                         f"the sign of step={step}")
    integral = all(isinstance(v, numbers.Integral) for v in bounds.values())
    dtype = _dtype(dtype, _DEFAULT_INT if integral else _DEFAULT_FLOAT)
    count = math.ceil((end - start) / step)
    wide = np.int64 if integral else np.float64
    return _leaf(lambda xp: (start + step * xp.arange(count, dtype=wide)).astype(dtype),
                 device, requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    """``steps`` values evenly spaced from ``start`` to ``end``, both included.

    As in PyTorch, the first half counts up from ``start`` and the second half down
    from ``end``, so both ends are exact, and integer dtypes truncate ``start`` and
    ``end`` first. Computed in float64, then rounded to the dtype.
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"linspace: steps must be an int >= 0, got {steps!r}")
    dtype = _dtype(dtype)
    if not backend.is_floating(dtype):
        start, end = int(start), int(end)

    def make(xp):
        index = xp.arange(steps, dtype=np.float64)
        step = (end - start) / max(steps - 1, 1)
        values = xp.where(index < steps // 2, start + step * index,
                          end - step * (steps - 1 - index))
        return (values if steps != 1 else xp.full(1, float(start))).astype(dtype)

    return _leaf(make, device, requires_grad)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False):
    """The identity matrix of ``n`` rows and ``m`` (default ``n``) columns."""
    rows = _size((n,), "eye")
    columns = rows if m is None else _size((m,), "eye")
    if len(rows) != 1 or len(columns) != 1:
        raise ValueError(f"eye: n and m must be ints, got n={n!r}, m={m!r}")
    return _leaf(lambda xp: xp.eye(rows[0], columns[0], dtype=_dtype(dtype)), device,
                 requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Standard normal values from cugn's generator (``cugn.manual_seed``)."""
    shape = _size(size, "randn")
    dtype = _floating(dtype, "randn")
    return _random(lambda gen: gen.standard_normal(shape, dtype=_drawn(dtype)), dtype, device,
                   requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Uniform values in [0, 1) from cugn's generator (``cugn.manual_seed``)."""
    shape = _size(size, "rand")
    dtype = _floating(dtype, "rand")
    return _random(lambda gen: _uniform(gen, shape, _drawn(dtype)), dtype, device,
                   requires_grad)


def randint(low, high=None, size=None, *, dtype=None, device=None, requires_grad=False):
    """Integers in [low, high) from cugn's generator: ``randint(high, size)`` or
    ``randint(low, high, size)``; int64 unless ``dtype`` is given."""
    if size is None:
        low, high, size = 0, low, high
    elif high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint needs a size: randint(high, size) or randint(low, high, size)")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"randint: {name} must be an int, got {value!r}")
    if not low < high:
        raise ValueError(f"randint needs low < high, got low={low}, high={high}")
    shape = _size((size,), "randint")
    dtype = _dtype(dtype, _DEFAULT_INT)
    return _random(lambda gen: _integers(gen, int(low), int(high), shape), dtype, device,
                   requires_grad)


# ------------------------------------------------------------------ helpers


def _size(size, name):
    """``(2, 3)`` from ``(2, 3)``, ``((2, 3),)`` or ``([2, 3],)``; () for no size."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if len(size) == 1 and isinstance(size[0], Tensor):
        size = tuple(size[0].numpy().tolist()) if size[0].ndim else (size[0].item(),)
    for dim in size:
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(f"{name}: size must be ints or one tuple of ints, got {size!r}")
        if dim < 0:
            raise ValueError(f"{name}: size must not be negative, got {tuple(size)!r}")
    return tuple(int(dim) for dim in size)


def _dtype(dtype, default=_DEFAULT_FLOAT):
    return default if dtype is None else np.dtype(dtype)


def _floating(dtype, name):
    dtype = _dtype(dtype)
    if not backend.is_floating(dtype):
        raise TypeError(f"{name} makes floating point values; dtype={dtype} is not one")
    return dtype


def _drawn(dtype):
    """The dtype a generator draws in: float64 for float64, float32 for the rest (float16
    and bfloat16 are rounded from float32 draws)."""
    return np.float64 if dtype == np.float64 else np.float32


def _inferred_dtype(value):
    if isinstance(value, bool):
        return np.dtype(np.bool_)
    return _DEFAULT_INT if isinstance(value, numbers.Integral) else _DEFAULT_FLOAT


def _like(input, dtype, device):  # noqa: A002 - torch's name
    if not isinstance(input, Tensor) and not backend.is_array(input):
        raise TypeError(f"input must be a Tensor or an array, got {type(input).__name__}")
    data = input.data if isinstance(input, Tensor) else input
    return (tuple(data.shape), data.dtype if dtype is None else np.dtype(dtype),
            backend.device_of(data) if device is None else device)


def _uniform(gen, shape, dtype):
    # NumPy's Generator calls it random, CuPy's module random_sample.
    return gen.random(shape, dtype=dtype) if isinstance(gen, np.random.Generator) else (
        gen.random_sample(shape, dtype=dtype))


def _integers(gen, low, high, shape):
    return gen.integers(low, high, shape, dtype=np.int64) if isinstance(
        gen, np.random.Generator) else gen.randint(low, high, shape, dtype=np.int64)


def _on_device(make, device):
    """``make(xp)`` with NumPy for the CPU, or CuPy inside the CUDA device."""
    device = backend.parse_device("cpu" if device is None else device)
    if device == "cpu":
        return make(np)
    cp = backend.cupy()
    with cp.cuda.Device(int(device.split(":")[1])):
        return make(cp)


def _random(draw, dtype, device, requires_grad):
    """``draw(generator)`` from the CPU's generator or the CUDA device's, cast to ``dtype``."""
    device = backend.parse_device("cpu" if device is None else device)

    def make(xp):
        gen = random.generator() if xp is np else random.cuda_random(
            xp, int(device.split(":")[1]))
        return draw(gen).astype(dtype, copy=False)

    return _leaf(make, device, requires_grad)


def _leaf(make, device, requires_grad):
    return Tensor(_on_device(make, device), requires_grad=requires_grad)
