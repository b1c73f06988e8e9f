"""cugn: a tape-based autodiff engine over NumPy and CuPy arrays, and a
Keras-exact GroupNormalization with CUDA kernels."""

from .engine import (Function, Tensor, backward, enable_grad, grad, is_grad_enabled, no_grad,
                     set_grad_enabled)
from .functions import (abs, concatenate, exp, log, log_softmax, matmul, max, mean, permute,
                        relu, reshape, sigmoid, silu, softmax, sqrt, stack, sum, tanh, transpose,
                        var, where)

from . import functional
from .engine.gradcheck import GradcheckError, gradcheck, gradgradcheck
from .engine.tensor import tensor

__version__ = "0.1.0"
