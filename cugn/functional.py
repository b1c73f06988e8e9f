"""Neural-network functions, like ``torch.nn.functional``."""

from .functions import log_softmax, relu, sigmoid, silu, softmax, tanh
from .functions.convolution import avg_pool2d, conv2d, max_pool2d
from .functions.normalization import group_norm

__all__ = ["avg_pool2d", "conv2d", "group_norm", "log_softmax", "max_pool2d", "relu", "sigmoid",
           "silu", "softmax", "tanh"]
