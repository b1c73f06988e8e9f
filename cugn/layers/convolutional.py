"""``Conv2D``: Keras's 2-D convolution layer on an im2col of NumPy or CuPy arrays."""

from ..functions.convolution import (_pair, check_data_format, check_padding, conv2d,
                                     windowed_output_shape)
from .core import KernelLayer, check_positive_int
from .layer import require_default


class Conv2D(KernelLayer):
    """``activation(conv2d(inputs, kernel) + bias)``; the kernel is (KH, KW, C_in, filters)
    whatever the ``data_format`` ("channels_last", Keras's default, or "channels_first")."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid",
                 data_format="channels_last", dilation_rate=1, groups=1, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, lora_rank=None, lora_alpha=None,
                 **kwargs):
        require_default(_pair(dilation_rate, "dilation_rate"), (1, 1), "dilation_rate", "Conv2D")
        require_default(groups, 1, "groups", "Conv2D")
        for name, value in (("activity_regularizer", activity_regularizer),
                            ("lora_rank", lora_rank), ("lora_alpha", lora_alpha)):
            require_default(value, None, name, "Conv2D")
        filters = check_positive_int(filters, "filters")
        kernel_size = _pair(kernel_size, "kernel_size")
        strides = _pair(strides, "strides")
        padding = check_padding(padding)
        data_format = check_data_format(data_format)
        super().__init__(activation, use_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer, bias_regularizer, kernel_constraint,
                         bias_constraint, **kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.data_format = data_format

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{self.name} needs 4-D inputs, got shape {input_shape}")
        channels = input_shape[1] if self.data_format == "channels_first" else input_shape[-1]
        self.build_kernel_and_bias(self.kernel_size + (channels, self.filters), self.filters)

    def call(self, inputs):
        y = conv2d(inputs, self.kernel, self.bias, self.strides, self.padding, self.data_format)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return windowed_output_shape(tuple(input_shape), self.kernel_size, self.strides,
                                     self.padding, self.data_format, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": (1, 1),
            "groups": 1,
            "activity_regularizer": None,
        }
