"""Elementwise functions. Each backward is written with Tensor operations on the
saved input or output, so it is itself differentiable."""

from .. import backend
from ..engine.function import Function
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
    """1 / (1 + exp(-a)) without overflow: exp is only taken of -|a|."""
    xp = backend.array_module(a)
    e = xp.exp(-xp.abs(a))
    return xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        result = _stable_sigmoid(a)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad):
        (result,) = ctx.saved_tensors
        return grad * result * (1 - result)


class ReLU(Function):
    op_name = "relu"

    @staticmethod
    def forward(ctx, a):
        positive = a > 0
        ctx.mask = positive.astype(a.dtype)
        return backend.array_module(a).where(positive, a, a.dtype.type(0))  # relu(-inf) = 0

    @staticmethod
    def backward(ctx, grad):
        return grad * Tensor(ctx.mask)


class SiLU(Function):
    """x * sigmoid(x), also called swish."""

    op_name = "silu"

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * _stable_sigmoid(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        s = sigmoid(a)
        return grad * (s * (1 + a * (1 - s)))


def exp(a):
    return Exp.apply(as_tensor(a))


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
