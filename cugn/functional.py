"""Neural-network functions, as ``torch.nn.functional`` gathers them. Their
conventions are Keras's: channels-last by default (``axis=-1``,
``data_format="channels_last"``), ``epsilon=1e-3``, kernels shaped
``(KH, KW, C_in, C_out)``."""

from .functions import gelu, log_softmax, relu, sigmoid, silu, softmax, tanh
from .functions.convolution import avg_pool2d, conv2d, max_pool2d
from .functions.normalization import group_norm

__all__ = ["avg_pool2d", "conv2d", "gelu", "group_norm", "log_softmax", "max_pool2d", "relu",
           "sigmoid", "silu", "softmax", "tanh"]
