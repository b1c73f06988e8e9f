"""Operations that move or select values without arithmetic: reshape, permute,
broadcast, indexing, concatenate, stack, copies, dtype casts and device moves."""

import numbers

import numpy as np

from .. import backend
from ..engine.function import Function
from ..engine.tensor import Tensor, as_tensor


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.input_shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.input_shape), None


class Permute(Function):
    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return backend.array_module(a).transpose(a, axes)

    @staticmethod
    def backward(ctx, grad):
        return grad.permute(tuple(int(i) for i in np.argsort(ctx.axes))), None


class BroadcastTo(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.input_shape = a.shape
        return backend.array_module(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, grad):
        return sum_to(grad, ctx.input_shape), None


class SumTo(Function):
    """Sum a broadcast result back to the shape of the operand it came from."""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.input_shape = a.shape
        leading = a.ndim - len(shape)
        axes = tuple(range(leading)) + tuple(
            leading + i for i, size in enumerate(shape) if size == 1 and a.shape[leading + i] != 1
        )
        return a.sum(axis=axes, keepdims=True).reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return broadcast_to(grad, ctx.input_shape), None


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.input_shape = a.shape
        ctx.index = index
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        return ScatterAdd.apply(grad, ctx.index, ctx.input_shape), None


class ScatterAdd(Function):
    """The adjoint of indexing: zeros of ``shape`` with ``values`` added at ``index``
    (repeated indices add up)."""

    @staticmethod
    def forward(ctx, values, index, shape):
        ctx.index = index
        xp = backend.array_module(values)
        result = xp.zeros(shape, values.dtype)
        if _is_basic_index(index):
            result[index] = values
        elif xp is np:
            np.add.at(result, index, values)
        else:
            import cupyx

            cupyx.scatter_add(result, index, values)
        return result

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.index], None, None


def _is_basic_index(index):
    """Slices, integers, None and Ellipsis only: no position is selected twice."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(
        part is None or part is Ellipsis or isinstance(part, (slice, int, np.integer))
        for part in parts
    )


class Concatenate(Function):
    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return backend.array_module(arrays[0]).concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        axis = ctx.axis % grad.ndim
        grads, start = [], 0
        for size in ctx.sizes:
            grads.append(grad[(slice(None),) * axis + (slice(start, start + size),)])
            start += size
        return (None, *grads)


class Stack(Function):
    @staticmethod
    def forward(ctx, axis, *arrays):
        ctx.axis = axis
        return backend.array_module(arrays[0]).stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        axis = ctx.axis % grad.ndim
        count = grad.shape[axis]
        return (None, *(grad[(slice(None),) * axis + (i,)] for i in range(count)))


class Clone(Function):
    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, grad):
        return grad


class Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.input_dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(dtype=ctx.input_dtype), None


class ToDevice(Function):
    @staticmethod
    def forward(ctx, a, device):
        ctx.input_device = backend.device_of(a)
        return backend.to_device(a, device)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.input_device), None


def _normalize_shape(shape):
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(size) for size in shape)


def reshape(a, shape):
    return Reshape.apply(as_tensor(a), _normalize_shape(shape))


def alias(name, value, torch_name, torch_value, default):
    """An argument given by NumPy's name (axis, keepdims) or PyTorch's (dim, keepdim),
    or ``default`` when neither is; both at once is an error."""
    if torch_value is None:
        return default if value is None else value
    if value is not None:
        raise TypeError(f"got both {name}={value!r} and {torch_name}={torch_value!r}, NumPy's "
                        "and PyTorch's names for one argument; give one")
    return torch_value


def check_axis(axis, ndim, name="axis"):
    """``axis`` as a non-negative int below ``ndim``, or a clear error naming it."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name} {axis} is out of range for a tensor of {ndim} dimensions")
    return int(axis) % ndim


def permute(a, axes=None, *, dims=None):
    a = as_tensor(a)
    axes = alias("axes", axes, "dims", dims, None)
    if axes is None:
        raise TypeError("permute needs the axes (or dims), a permutation of the tensor's axes")
    axes = tuple(check_axis(axis, a.ndim, "axes") for axis in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"axes {axes} is not a permutation of the {a.ndim} axes of the tensor")
    return Permute.apply(a, axes)


def transpose(a, axis0=None, axis1=None, *, dim0=None, dim1=None):
    """Swap two axes (PyTorch's ``transpose``)."""
    a = as_tensor(a)
    axis0, axis1 = alias("axis0", axis0, "dim0", dim0, None), alias("axis1", axis1, "dim1",
                                                                     dim1, None)
    if axis0 is None or axis1 is None:
        raise TypeError("transpose needs two axes: transpose(a, axis0, axis1)")
    axis0, axis1 = check_axis(axis0, a.ndim, "axis0"), check_axis(axis1, a.ndim, "axis1")
    axes = list(range(a.ndim))
    axes[axis0], axes[axis1] = axes[axis1], axes[axis0]
    return Permute.apply(a, tuple(axes))


def broadcast_to(a, shape):
    a = as_tensor(a)
    shape = _normalize_shape(shape)
    return a if a.shape == shape else BroadcastTo.apply(a, shape)


def sum_to(a, shape):
    """Sum ``a`` down to ``shape`` (the gradient of broadcasting)."""
    if a.shape == shape:  # every gradient of an operand that was not broadcast
        return a
    shape = _normalize_shape(shape)
    return a if a.shape == shape else SumTo.apply(a, shape)


def getitem(a, index):
    return GetItem.apply(as_tensor(a), _plain_index(index))


def _plain_index(index):
    """Tensors inside an index become their arrays."""
    if isinstance(index, tuple):
        return tuple(_plain_index(part) for part in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


def concatenate(tensors, axis=None, *, dim=None):
    axis = alias("axis", axis, "dim", dim, 0)
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    return Concatenate.apply(check_axis(axis, tensors[0].ndim), *tensors)


def stack(tensors, axis=None, *, dim=None):
    axis = alias("axis", axis, "dim", dim, 0)
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    return Stack.apply(check_axis(axis, tensors[0].ndim + 1), *tensors)


def clone(a):
    """A copy of ``a``'s data whose gradient flows back to ``a``."""
    return Clone.apply(as_tensor(a))


def cast(a, dtype):
    return Cast.apply(as_tensor(a), np.dtype(dtype))


def to_device(a, device):
    return ToDevice.apply(as_tensor(a), backend.parse_device(device))
