"""``where``: choose elementwise between two operands."""

import numbers

import numpy as np

from .. import backend
from ..engine.function import Function
from ..engine.tensor import Tensor, as_tensor
from .shape import sum_to


class Where(Function):
    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.condition = condition
        ctx.shapes = (getattr(a, "shape", ()), getattr(b, "shape", ()))
        return backend.array_module(condition).where(condition, a, b)

    @staticmethod
    def backward(ctx, grad):
        condition = Tensor(ctx.condition)
        grad_a = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_a = sum_to(where(condition, grad, 0.0), ctx.shapes[0])
        if ctx.needs_input_grad[2]:
            grad_b = sum_to(where(condition, 0.0, grad), ctx.shapes[1])
        return None, grad_a, grad_b


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b``; gradients flow to ``a`` and ``b``."""
    condition = condition.data if isinstance(condition, Tensor) else condition
    if not backend.is_array(condition):
        condition = np.asarray(condition)
    a = a if isinstance(a, numbers.Number) else as_tensor(a)
    b = b if isinstance(b, numbers.Number) else as_tensor(b)
    return Where.apply(condition.astype(bool, copy=False), a, b)
