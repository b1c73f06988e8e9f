"""cugn: a tape-based autodiff engine over NumPy and CuPy arrays, and a
Keras-exact GroupNormalization with CUDA kernels.

``import cugn`` needs only NumPy: CuPy is imported when a CUDA array or
device is first used.
"""

from . import (activations, constraints, functional, initializers, interop, layers, losses,
               optim, profiling, regularizers)
from .engine import (Function, Tensor, backward, enable_grad, grad, is_grad_enabled, no_grad,
                     set_grad_enabled)
from .engine.gradcheck import GradcheckError, gradcheck, gradgradcheck
from .engine.parameter import Parameter
from .engine.tensor import tensor
from .interop import from_dlpack
from .losses import regularization_loss
from .functions import (abs, concatenate, exp, log, log_softmax, matmul, max, mean, permute,
                        relu, reshape, sigmoid, silu, softmax, sqrt, stack, sum, tanh, transpose,
                        var, where)

__version__ = "0.1.0"

__all__ = [
    "Function", "GradcheckError", "Parameter", "Tensor", "abs", "activations", "backward",
    "concatenate", "constraints", "enable_grad", "exp", "from_dlpack", "functional", "grad",
    "gradcheck", "gradgradcheck", "initializers", "interop", "is_grad_enabled", "layers",
    "log", "log_softmax", "losses", "matmul", "max", "mean", "no_grad", "optim", "permute",
    "profiling", "regularization_loss", "regularizers", "relu", "reshape", "set_grad_enabled",
    "sigmoid", "silu", "softmax", "sqrt", "stack", "sum", "tanh", "tensor", "transpose", "var",
    "where",
]
