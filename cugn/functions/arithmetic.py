"""Arithmetic with NumPy broadcasting: + - * / ** unary - and @.

Python numbers stay plain numbers (not Tensors), so ``x * 2.0`` keeps x's
dtype under NumPy's rules and needs no gradient of its own.
"""

import math
import numbers

import numpy as np

from .. import backend
from ..engine.function import Function
from ..engine.tensor import Tensor, as_tensor
from .selection import where
from .shape import sum_to


def operand(value):
    """A Tensor, or a plain Python number left as it is. NumPy scalars count as
    Python numbers (as in PyTorch): ``x * np.float64(0.1)`` keeps x's dtype and
    the exact value."""
    # The common cases first (this runs per op); np.float64 is a float subclass, so the
    # exact type is compared.
    if isinstance(value, Tensor) or type(value) in (float, int):
        return value
    if isinstance(value, np.generic) and value.ndim == 0 and value.dtype.kind in "biufc":
        return value.item()
    if isinstance(value, numbers.Number):
        return value
    return as_tensor(value)


def _shape(value):
    return value.shape if isinstance(value, Tensor) else ()


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return a + b

    @staticmethod
    def backward(ctx, grad):
        needs = ctx.needs_input_grad
        return (sum_to(grad, ctx.shapes[0]) if needs[0] else None,
                sum_to(grad, ctx.shapes[1]) if needs[1] else None)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return a - b

    @staticmethod
    def backward(ctx, grad):
        needs = ctx.needs_input_grad
        return (sum_to(grad, ctx.shapes[0]) if needs[0] else None,
                sum_to(-grad, ctx.shapes[1]) if needs[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = sum_to(grad * b, _shape(a)) if ctx.needs_input_grad[0] else None
        grad_b = sum_to(grad * a, _shape(b)) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = sum_to(grad / b, _shape(a)) if ctx.needs_input_grad[0] else None
        grad_b = sum_to(-grad * a / (b * b), _shape(b)) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        result = a**b
        ctx.save_for_backward(a, b, result)
        return result

    @staticmethod
    def backward(ctx, grad):
        a, b, result = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = sum_to(grad * _power_derivative(a, b), _shape(a))
        if ctx.needs_input_grad[1]:
            grad_b = sum_to(grad * result * _log_or_zero(a), _shape(b))
        return grad_a, grad_b


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


class MatMul(Function):
    """Matrix product with NumPy's rules: 1-D operands are promoted and the
    promoted axes dropped again; batch axes broadcast."""

    op_name = "matmul"

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        xp = backend.array_module(a)
        return xp.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        a2 = a.reshape(1, -1) if a.ndim == 1 else a
        b2 = b.reshape(-1, 1) if b.ndim == 1 else b
        if a.ndim == 1:
            grad = _unsqueeze(grad, -2)
        if b.ndim == 1:
            grad = _unsqueeze(grad, -1)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = sum_to(matmul(grad, b2.transpose(-1, -2)), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = sum_to(matmul(a2.transpose(-1, -2), grad), b2.shape).reshape(b.shape)
        return grad_a, grad_b


def _power_derivative(a, b):
    """d(a**b)/da = b * a**(b-1), taken as 0 where b == 0 (also at a == 0, where the
    formula gives 0 * inf), as in PyTorch."""
    if not isinstance(b, Tensor):
        return b * a ** (b - 1) if b != 0 else a * 0.0
    return b * a ** where(b == 0, 1.0, b - 1)  # b == 0: 0 * a, not 0 * a**-1


def _log_or_zero(a):
    """log(a), taken as 0 where a == 0 so that d(0**b)/db is 0, as in PyTorch; NaN
    for a negative number, as the Tensor path gives."""
    if not isinstance(a, Tensor):
        if a == 0:
            return 0.0
        return math.log(a) if a > 0 else math.nan
    zero = a == 0
    return where(zero, 0.0, where(zero, 1.0, a).log())


def _unsqueeze(tensor, axis):
    shape = list(tensor.shape)
    shape.insert(axis % (len(shape) + 1), 1)
    return tensor.reshape(tuple(shape))


def add(a, b):
    return Add.apply(operand(a), operand(b))


def sub(a, b):
    return Sub.apply(operand(a), operand(b))


def mul(a, b):
    return Mul.apply(operand(a), operand(b))


def div(a, b):
    return Div.apply(operand(a), operand(b))


def pow(a, b):  # noqa: A001 - the operator's name
    return Pow.apply(operand(a), operand(b))


def neg(a):
    return Neg.apply(operand(a))


def matmul(a, b):
    a, b = operand(a), operand(b)
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul needs operands of at least one dimension; use * for scalars")
    return MatMul.apply(a, b)

