"""Elementwise functions. Each backward is written with Tensor operations on the
saved input or output, so it is itself differentiable. The activations whose
gradients take several operations (sigmoid, silu) also have a first-order
backward on raw arrays, updated in place, for when no graph is being built:
one temporary instead of one per operation."""

from .. import backend
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
        return grad * (1 - result * result)


def _stable_sigmoid(a):
    """(sigmoid(a), a spare array of a's shape and dtype that the caller may overwrite).

    1 / (1 + exp(-a)) without overflow: with e = exp(-|a|) (at most 1), it is
    1 / (1 + e) for a >= 0 and e / (1 + e) below, and the numerator is max(e, a >= 0).
    Two arrays updated in place, and no np.where (slow on mixed signs).
    """
    xp = backend.array_module(a)
    result = xp.abs(a)
    xp.negative(result, out=result)
    xp.exp(result, out=result)  # e
    denominator = result + 1
    xp.maximum(result, a >= 0, out=result)
    xp.divide(result, denominator, out=result)
    return result, denominator


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        result, _ = _stable_sigmoid(a)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        if is_grad_enabled():  # create_graph: recorded, so differentiable again
            return grad * result * (1 - result)
        # grad * s * (1 - s) in one temporary.
        s = result.data
        out = 1 - s
        out *= s
        out *= grad.data
        return Tensor(out)


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
        s, spare = _stable_sigmoid(a)
        result = backend.array_module(a).multiply(a, s, out=spare)
        ctx.save_for_backward(a, s, result)
        return result

    @staticmethod
    def backward(ctx, grad):
        a, s, result = ctx.saved_tensors
        if is_grad_enabled():  # create_graph: sigmoid recorded from a, so differentiable
            s = sigmoid(a)
            return grad * (s * (1 + a * (1 - s)))
        # grad * s * (1 + a * (1 - s)) = grad * (silu * (1 - s) + s), in one temporary.
        s = s.data
        out = 1 - s
        out *= result.data
        out += s
        out *= grad.data
        return Tensor(out)


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
