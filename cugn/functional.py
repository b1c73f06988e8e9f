"""Neural-network functions, like ``torch.nn.functional``."""

from .functions import log_softmax, relu, sigmoid, silu, softmax, tanh
from .functions.normalization import group_norm

__all__ = ["group_norm", "log_softmax", "relu", "sigmoid", "silu", "softmax", "tanh"]
