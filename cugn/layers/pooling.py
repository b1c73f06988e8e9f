"""``MaxPooling2D``, ``AveragePooling2D`` and ``GlobalAveragePooling2D``."""

from ..functions.convolution import (_pair, avg_pool2d, check_data_format, check_padding,
                                     max_pool2d, windowed_output_shape)
from .layer import Layer


class _Pooling2D(Layer):
    _pool = None

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format="channels_last",
                 **kwargs):
        pool_size = _pair(pool_size, "pool_size")
        strides = pool_size if strides is None else _pair(strides, "strides")
        padding = check_padding(padding)
        data_format = check_data_format(data_format)
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.strides = strides
        self.padding = padding
        self.data_format = data_format

    def call(self, inputs):
        return type(self)._pool(inputs, self.pool_size, self.strides, self.padding,
                                self.data_format)

    def compute_output_shape(self, input_shape):
        return windowed_output_shape(tuple(input_shape), self.pool_size, self.strides,
                                     self.padding, self.data_format, None)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding, "data_format": self.data_format}


class MaxPooling2D(_Pooling2D):
    """The maximum of each window (tied maxima share the gradient equally)."""

    _pool = staticmethod(max_pool2d)


class AveragePooling2D(_Pooling2D):
    """The mean of each window (with "same", over the positions inside the input)."""

    _pool = staticmethod(avg_pool2d)


class GlobalAveragePooling2D(Layer):
    """The mean over height and width: (N, C)."""

    def __init__(self, data_format="channels_last", keepdims=False, **kwargs):
        data_format = check_data_format(data_format)
        super().__init__(**kwargs)
        self.data_format = data_format
        self.keepdims = bool(keepdims)

    def call(self, inputs):
        if inputs.ndim != 4:
            raise ValueError(f"{self.name} needs 4-D inputs, got shape {inputs.shape}")
        axes = (2, 3) if self.data_format == "channels_first" else (1, 2)
        return inputs.mean(axis=axes, keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        n, *rest = tuple(input_shape)
        if len(rest) != 3:
            raise ValueError(f"expected a 4-D input shape, got {tuple(input_shape)}")
        first = self.data_format == "channels_first"
        c = rest[0] if first else rest[2]
        if not self.keepdims:
            return (n, c)
        return (n, c, 1, 1) if first else (n, 1, 1, c)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format,
                "keepdims": self.keepdims}
