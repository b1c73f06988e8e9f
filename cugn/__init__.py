"""cugn: a tape-based autodiff engine over NumPy and CuPy arrays, and a
Keras-exact GroupNormalization with CUDA kernels.

``import cugn`` needs only NumPy: CuPy is imported when a CUDA array or
device is first used.
"""

from . import (activations, constraints, functional, initializers, interop, layers, losses,
               optim, profiling, random, regularizers)
from .engine import (Function, Tensor, backward, enable_grad, grad, is_grad_enabled, no_grad,
                     set_grad_enabled)
from .engine.gradcheck import GradcheckError, gradcheck, gradgradcheck
from .engine.parameter import Parameter
from .engine.tensor import tensor
from .factories import (arange, empty, eye, full, linspace, ones, ones_like, rand, randint, randn,
                        zeros, zeros_like)
from .interop import from_dlpack
from .losses import regularization_loss
from .random import manual_seed
from .functions import (abs, clone, concatenate, erf, exp, log, log_softmax, matmul, max, mean,
                        permute, relu, reshape, sigmoid, silu, softmax, sqrt, stack, sum, tanh,
                        transpose, var, where)

__version__ = "0.1.0"

__all__ = [
    "Function", "GradcheckError", "Parameter", "Tensor", "abs", "activations", "arange",
    "backward", "clone", "concatenate", "constraints", "empty", "enable_grad", "erf", "exp", "eye",
    "from_dlpack", "full", "functional", "grad", "gradcheck", "gradgradcheck", "initializers",
    "interop", "is_grad_enabled", "layers", "linspace", "log", "log_softmax", "losses",
    "manual_seed", "matmul", "max", "mean", "no_grad", "ones", "ones_like", "optim", "permute",
    "profiling", "rand", "randint", "randn", "random", "regularization_loss", "regularizers",
    "relu", "reshape", "set_grad_enabled", "sigmoid", "silu", "softmax", "sqrt", "stack", "sum",
    "tanh", "tensor", "transpose", "var", "where", "zeros", "zeros_like",
]
