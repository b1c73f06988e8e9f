"""Every differentiable operation: a ``Function`` subclass with its forward and
backward side by side, and the plain function that applies it."""

from .arithmetic import add, div, matmul, mul, neg, pow, sub
from .elementwise import abs, erf, exp, gelu, log, relu, sigmoid, silu, sqrt, tanh
from .reduction import log_softmax, max, mean, softmax, sum, var
from .selection import where
from .shape import (broadcast_to, cast, clone, concatenate, getitem, permute, reshape, stack,
                    sum_to, to_device, transpose)

__all__ = [
    "abs", "add", "broadcast_to", "cast", "clone", "concatenate", "div", "erf", "exp", "gelu",
    "getitem", "log", "log_softmax", "matmul", "max", "mean", "mul", "neg", "permute", "pow",
    "relu", "reshape", "sigmoid", "silu", "softmax", "sqrt", "stack", "sub", "sum", "sum_to",
    "tanh", "to_device", "transpose", "var", "where",
]
