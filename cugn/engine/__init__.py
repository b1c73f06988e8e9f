"""The autodiff engine: Tensor, Function and the backward walk."""

from .autograd import backward, grad
from .function import Context, Function
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import Tensor

__all__ = [
    "Context", "Function", "Tensor", "backward", "enable_grad", "grad", "is_grad_enabled",
    "no_grad", "set_grad_enabled",
]
