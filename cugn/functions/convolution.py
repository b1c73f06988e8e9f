"""2-D convolution and pooling on NHWC arrays, built on one pair of Functions.

``Patches`` (im2col) gathers every sliding window of a padded input into an
array of shape ``(N, H_out, W_out, KH, KW, C)``: a strided view of the padded
input (``as_strided``, on NumPy or CuPy alike), copied once. Its adjoint,
``Col2Im``, adds every window back to where it came from. Each is the other's
backward, so convolution (patches times the kernel), max pooling (the
window's maximum) and average pooling (its mean) are plain Tensor expressions
over ``Patches``, and their gradients of every order follow.
"""

import math

import numpy as np

from .. import backend
from ..engine.function import Function
from ..engine.tensor import Tensor, as_tensor
from .arithmetic import matmul
from .reduction import max as reduce_max
from .reduction import sum as reduce_sum


def window_geometry(size, kernel, stride, padding):
    """``(output size, pad before, pad after)`` along one axis, as Keras computes it:
    "valid" drops incomplete windows; "same" gives ``ceil(size / stride)`` outputs
    with the padding split evenly, the odd one after."""
    if padding == "valid":
        if size < kernel:
            raise ValueError(f"a window of {kernel} does not fit an input of size {size} "
                             f"with padding='valid'")
        return (size - kernel) // stride + 1, 0, 0
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def windowed_output_shape(input_shape, kernel, strides, padding, data_format, channels):
    """The output shape of a 2-D windowed layer (convolution or pooling) for an input
    shape, with ``channels`` output channels (None: the input's); None sizes stay None."""
    if len(input_shape) != 4:
        raise ValueError(f"expected a 4-D input shape, got {tuple(input_shape)}")
    first = data_format == "channels_first"
    n, c = input_shape[0], input_shape[1 if first else 3]
    spatial = input_shape[2:] if first else input_shape[1:3]
    out = tuple(None if size is None else window_geometry(size, k, st, padding)[0]
                for size, k, st in zip(spatial, kernel, strides))
    c = c if channels is None else channels
    return (n, c, *out) if first else (n, *out, c)


def _windows(padded, kernel, strides, out_hw):
    """The strided view ``(N, H_out, W_out, KH, KW, C)`` of a padded NHWC array."""
    xp = backend.array_module(padded)
    n, _, _, c = padded.shape
    s_n, s_h, s_w, s_c = padded.strides
    shape = (n, out_hw[0], out_hw[1], kernel[0], kernel[1], c)
    strides = (s_n, s_h * strides[0], s_w * strides[1], s_h, s_w, s_c)
    return xp.lib.stride_tricks.as_strided(padded, shape=shape, strides=strides)


class Patches(Function):
    """im2col: ``x`` (N, H, W, C) -> its windows (N, H_out, W_out, KH, KW, C)."""

    @staticmethod
    def forward(ctx, x, kernel, strides, pads, out_hw, pad_value):
        xp = backend.array_module(x)
        ctx.args = (x.shape, kernel, strides, pads, out_hw)
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
                       constant_values=pad_value)
        return xp.ascontiguousarray(_windows(x, kernel, strides, out_hw))

    @staticmethod
    def backward(ctx, grad):
        return Col2Im.apply(grad, *ctx.args), None, None, None, None, None


class Col2Im(Function):
    """The adjoint of ``Patches``: windows (N, H_out, W_out, KH, KW, C) summed back
    into an array of ``x_shape`` (N, H, W, C); the padding is dropped."""

    @staticmethod
    def forward(ctx, cols, x_shape, kernel, strides, pads, out_hw):
        xp = backend.array_module(cols)
        ctx.args = (kernel, strides, pads, out_hw)
        n, h, w, c = x_shape
        (top, bottom), (left, right) = pads
        padded = xp.zeros((n, h + top + bottom, w + left + right, c), cols.dtype)
        rows_end = strides[0] * (out_hw[0] - 1) + 1
        cols_end = strides[1] * (out_hw[1] - 1) + 1
        # One vectorised add per kernel offset (KH * KW of them, few): windows overlap,
        # so a single fancy-indexed assignment would drop repeated positions.
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                padded[:, i:i + rows_end:strides[0], j:j + cols_end:strides[1], :] += \
                    cols[:, :, :, i, j, :]
        return padded[:, top:top + h, left:left + w, :]

    @staticmethod
    def backward(ctx, grad):
        return Patches.apply(grad, *ctx.args, 0), None, None, None, None, None


def _pair(value, name):
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return tuple(value)


def check_padding(padding):
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding


def check_data_format(data_format):
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
    return data_format


def _to_nhwc(x, data_format):
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D input (batch, height, width, channels or "
                         f"batch, channels, height, width), got shape {x.shape}")
    return x.permute(0, 2, 3, 1) if data_format == "channels_first" else x


def _from_nhwc(y, data_format):
    return y.permute(0, 3, 1, 2) if data_format == "channels_first" else y


def patches(x, kernel_size, strides, padding, pad_value=0, kernel_name="kernel_size"):
    """The windows of an NHWC tensor, (N, H_out, W_out, KH, KW, C), differentiable;
    ``kernel_name`` names the window size in errors (``pool_size`` for pooling)."""
    x = as_tensor(x)
    kernel = _pair(kernel_size, kernel_name)
    strides = _pair(strides, "strides")
    padding = check_padding(padding)
    geometry = [window_geometry(x.shape[1 + a], kernel[a], strides[a], padding) for a in (0, 1)]
    out_hw = tuple(g[0] for g in geometry)
    pads = tuple((g[1], g[2]) for g in geometry)
    return Patches.apply(x, kernel, strides, pads, out_hw, pad_value)


def conv2d(x, kernel, bias=None, strides=1, padding="valid", data_format="channels_last"):
    """2-D cross-correlation, as Keras's Conv2D: ``kernel`` is (KH, KW, C_in, C_out) and
    ``bias`` (C_out,) in either ``data_format``."""
    x, kernel = as_tensor(x), as_tensor(kernel)
    data_format = check_data_format(data_format)
    x = _to_nhwc(x, data_format)
    if kernel.ndim != 4 or kernel.shape[2] != x.shape[3]:
        raise ValueError(f"kernel must have shape (KH, KW, {x.shape[3]}, filters) for an input "
                         f"with {x.shape[3]} channels, got {kernel.shape}")
    kh, kw, c_in, filters = kernel.shape
    cols = patches(x, (kh, kw), strides, padding)
    n, h_out, w_out = cols.shape[:3]
    y = matmul(cols.reshape(n * h_out * w_out, kh * kw * c_in),
               kernel.reshape(kh * kw * c_in, filters))
    y = y.reshape(n, h_out, w_out, filters)
    if bias is not None:
        bias = as_tensor(bias)
        if bias.shape != (filters,):
            raise ValueError(f"bias must have shape ({filters},), got {bias.shape}")
        y = y + bias
    return _from_nhwc(y, data_format)


def max_pool2d(x, pool_size=2, strides=None, padding="valid", data_format="channels_last"):
    """The maximum of each window; tied maxima share the gradient equally."""
    x = _to_nhwc(as_tensor(x), check_data_format(data_format))
    strides = pool_size if strides is None else strides
    windows = patches(x, pool_size, strides, padding, pad_value=-np.inf, kernel_name="pool_size")
    return _from_nhwc(reduce_max(windows, axis=(3, 4)), data_format)


def avg_pool2d(x, pool_size=2, strides=None, padding="valid", data_format="channels_last"):
    """The mean of each window; with "same", padded positions are not counted (as Keras)."""
    x = _to_nhwc(as_tensor(x), check_data_format(data_format))
    strides = pool_size if strides is None else strides
    total = reduce_sum(patches(x, pool_size, strides, padding, kernel_name="pool_size"),
                       axis=(3, 4))
    xp = backend.array_module(x.data)
    ones = xp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
    counts = reduce_sum(patches(Tensor(ones), pool_size, strides, padding), axis=(3, 4))
    return _from_nhwc(total / counts, data_format)
