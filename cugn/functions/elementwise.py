"""Elementwise functions. Each backward is written with Tensor operations on the
saved input or output, so it is itself differentiable. The activations whose
gradients take several operations (sigmoid, tanh) also have a first-order
backward on raw arrays for when no graph is being built, NumPy passes that update
one temporary in place; silu's forward leaves its derivative for a first-order
backward of one product. With Numba, sigmoid, silu and the backwards of sigmoid
and tanh run compiled loops instead (``cugn.kernels.elementwise_numba``: one
pass over memory each, with an exponential of their own, so that sigmoid and
silu are within a few units in the last place of the NumPy path's results)."""

import numpy as np

from .. import backend, kernels
from ..engine.function import Function
from ..engine.grad_mode import is_grad_enabled
from ..engine.tensor import Tensor, as_tensor


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        result = backend.array_module(a).exp(a)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        return grad * result


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.array_module(a).log(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad / a


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        result = backend.array_module(a).sqrt(a)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        return grad / (2 * result)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.sign = backend.array_module(a).sign(a)
        return backend.array_module(a).abs(a)

    @staticmethod
    def backward(ctx, grad):
        return grad * Tensor(ctx.sign)


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        result = backend.array_module(a).tanh(a)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        if is_grad_enabled():  # create_graph: recorded, so differentiable again
            return grad * (1 - result * result)
        return Tensor(_on_arrays("tanh_backward", result.data, grad.data))


def _tanh_backward(t, grad):
    """grad * (1 - t * t) in one temporary."""
    xp = backend.array_module(t)
    out = xp.multiply(t, t, out=xp.empty_like(t))  # an array, also for 0-d t
    xp.subtract(1, out, out=out)
    out *= grad
    return out


def _sigmoid_array(a):
    """sigmoid(a) = 1 / (1 + exp(-a)) as a new array of a's dtype, in four passes that
    update one array in place (torch's formula, without its fused loop).

    It needs no branch on the sign: below about -88 (float32; -709 in float64)
    exp(-a) overflows to inf and 1 / (1 + inf) is exactly 0, the nearest float to
    the true value but for subnormals, so that overflow is expected and silenced.
    float16 and bfloat16 are computed in float32, whose exp overflows only where
    their sigmoid is 0 too (exp(-a) in float16 overflows below a = -11.09, where
    the sigmoid is still 1.7e-5).
    """
    xp = backend.array_module(a)
    with np.errstate(over="ignore", under="ignore"):
        # Into an array made here: a ufunc of a 0-d array returns a scalar.
        result = xp.empty(a.shape, backend.compute_dtype(a.dtype))
        xp.negative(a, out=result)  # casts float16 and bfloat16 in the same pass
        xp.exp(result, out=result)
        result += 1
        xp.reciprocal(result, out=result)
        return result.astype(a.dtype, copy=False)  # float16 may underflow here


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        result = _on_arrays("sigmoid", a)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        if is_grad_enabled():  # create_graph: recorded, so differentiable again
            return grad * result * (1 - result)
        return Tensor(_on_arrays("sigmoid_backward", result.data, grad.data))


def _sigmoid_backward(s, grad):
    """grad * s * (1 - s) in one temporary."""
    out = 1 - s
    out *= s
    out *= grad
    return out


class ReLU(Function):
    op_name = "relu"

    @staticmethod
    def forward(ctx, a):
        ctx.mask = a > 0  # the gradient is grad times it: bool multiplies as 0 and 1
        # max(a, 0): relu(-inf) = 0 and NaN stays NaN, as in PyTorch.
        return backend.array_module(a).maximum(a, a.dtype.type(0))

    @staticmethod
    def backward(ctx, grad):
        return grad * Tensor(ctx.mask)


class SiLU(Function):
    """x * sigmoid(x), also called swish."""

    op_name = "silu"

    @staticmethod
    def forward(ctx, a):
        if not ctx.needs_input_grad[0]:
            return _on_arrays("silu", a)
        # The derivative is made here, while sigmoid(a) is at hand: the first-order
        # backward is then one product, and only a (for create_graph) and it are kept.
        result, slope = _on_arrays("silu_and_slope", a)
        ctx.save_for_backward(a, slope)
        return result

    @staticmethod
    def backward(ctx, grad):
        a, slope = ctx.saved_tensors
        if is_grad_enabled():  # create_graph: recorded from a, so differentiable
            return grad * silu_derivative(a)
        return grad * slope


def _silu_array(a):
    return a * _sigmoid_array(a)


def _silu_and_slope(a):
    """(silu(a), its derivative s * (1 + a * (1 - s)) = (1 - s) * silu(a) + s), with
    s = sigmoid(a), in one temporary beside them."""
    s = _sigmoid_array(a)
    result = a * s
    slope = 1 - s
    slope *= result
    slope += s
    return result, slope


_ON_NUMPY = {"sigmoid": _sigmoid_array, "silu": _silu_array,
             "silu_and_slope": _silu_and_slope, "sigmoid_backward": _sigmoid_backward,
             "tanh_backward": _tanh_backward}


def _on_arrays(name, *arrays):
    """The array function ``name`` of the table above: Numba's function of that name
    when Numba is on and compiles these arrays, else the NumPy (or CuPy) one."""
    compiled = kernels.numba_elementwise()
    if compiled is not None and compiled.supports(*arrays):
        return getattr(compiled, name)(*arrays)
    return _ON_NUMPY[name](*arrays)


class Erf(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.erf(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad * (_TWO_OVER_SQRT_PI * exp(-(a * a)))


_TWO_OVER_SQRT_PI = 1.1283791670955126
_SQRT_HALF = 0.7071067811865476
_ONE_OVER_SQRT_TWO_PI = 0.3989422804014327
_DENSITY_CUTOFF = 40.0  # exp(-40**2 / 2) is 0 even in float64


class GELU(Function):
    """x * Phi(x), Phi the standard normal CDF: the exact GELU (Keras's and PyTorch's
    default, not the tanh approximation)."""

    op_name = "gelu"

    @staticmethod
    def forward(ctx, a):
        cdf = backend.erf(a * a.dtype.type(_SQRT_HALF))
        cdf += 1
        cdf *= a.dtype.type(0.5)
        ctx.save_for_backward(a, cdf)
        return a * cdf

    @staticmethod
    def backward(ctx, grad):
        a, cdf = ctx.saved_tensors
        if is_grad_enabled():  # create_graph: recorded from a, so differentiable
            return grad * gelu_derivative(a)
        # grad * (Phi(a) + a * phi(a)), phi the normal density, in one temporary.
        # |a| is clamped where phi is already 0 in every dtype, so a*a cannot overflow.
        a = a.data
        xp = backend.array_module(a)
        out = xp.abs(a)
        xp.minimum(out, a.dtype.type(_DENSITY_CUTOFF), out=out)
        out *= out
        out *= a.dtype.type(-0.5)
        xp.exp(out, out=out)
        out *= a.dtype.type(_ONE_OVER_SQRT_TWO_PI)
        out *= a
        out += cdf.data
        out *= grad.data
        return Tensor(out)


def exp(a):
    return Exp.apply(as_tensor(a))


def erf(a):
    return Erf.apply(as_tensor(a))


def gelu(a):
    """The exact GELU, x * Phi(x)."""
    return GELU.apply(as_tensor(a))


# The derivatives of the activations as recorded ops of their input (differentiable
# again), for backwards built with create_graph=True.


def relu_derivative(a):
    return (a > 0).to(dtype=a.dtype)  # 0 at a = 0, as the relu op's backward


def silu_derivative(a):
    s = sigmoid(a)
    return s * (1 + a * (1 - s))


def gelu_derivative(a):
    """Phi(a) + a*phi(a), with phi the standard normal density."""
    return 0.5 * (1 + erf(a * _SQRT_HALF)) + a * (_ONE_OVER_SQRT_TWO_PI * exp(-0.5 * (a * a)))


def log(a):
    return Log.apply(as_tensor(a))


def sqrt(a):
    return Sqrt.apply(as_tensor(a))


def abs(a):  # noqa: A001 - the function's name
    return Abs.apply(as_tensor(a))


def tanh(a):
    return Tanh.apply(as_tensor(a))


def sigmoid(a):
    return Sigmoid.apply(as_tensor(a))


def relu(a):
    return ReLU.apply(as_tensor(a))


def silu(a):
    return SiLU.apply(as_tensor(a))
