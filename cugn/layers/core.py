"""``Dense``, ``Activation``, ``Flatten`` and ``Dropout``."""

import math
import numbers

import numpy as np

from .. import activations, backend, constraints, initializers, random, regularizers
from ..engine.tensor import Tensor
from ..functions import matmul
from ..functions.convolution import check_data_format
from .layer import Layer, require_default


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class KernelLayer(Layer):
    """What Dense and Conv2D share: an activation, a kernel and an optional bias,
    with their initializers, regularizers and constraints (checked before the
    layer takes a name) and their part of the config."""

    def __init__(self, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        activation = activations.get(activation)
        kernel_initializer = initializers.get(kernel_initializer)
        bias_initializer = initializers.get(bias_initializer)
        kernel_regularizer = regularizers.get(kernel_regularizer)
        bias_regularizer = regularizers.get(bias_regularizer)
        kernel_constraint = constraints.get(kernel_constraint)
        bias_constraint = constraints.get(bias_constraint)
        super().__init__(**kwargs)
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.kernel_regularizer = kernel_regularizer
        self.bias_regularizer = bias_regularizer
        self.kernel_constraint = kernel_constraint
        self.bias_constraint = bias_constraint
        self.kernel = None
        self.bias = None

    def build_kernel_and_bias(self, kernel_shape, bias_size):
        self.kernel = self.add_weight("kernel", kernel_shape, self.kernel_initializer,
                                      self.kernel_regularizer, self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (bias_size,), self.bias_initializer,
                                        self.bias_regularizer, self.bias_constraint)

    def get_config(self):
        return {
            **super().get_config(),
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize_initializer(self.kernel_initializer),
            "bias_initializer": initializers.serialize_initializer(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize_regularizer(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize_regularizer(self.bias_regularizer),
            "kernel_constraint": constraints.serialize_constraint(self.kernel_constraint),
            "bias_constraint": constraints.serialize_constraint(self.bias_constraint),
        }


class Dense(KernelLayer):
    """``activation(inputs @ kernel + bias)`` on the last axis, as Keras's Dense."""

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, activity_regularizer=None,
                 quantization_config=None, lora_rank=None, lora_alpha=None, **kwargs):
        for name, value in (("activity_regularizer", activity_regularizer),
                            ("quantization_config", quantization_config),
                            ("lora_rank", lora_rank), ("lora_alpha", lora_alpha)):
            require_default(value, None, name, "Dense")
        units = check_positive_int(units, "units")
        super().__init__(activation, use_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer, bias_regularizer, kernel_constraint,
                         bias_constraint, **kwargs)
        self.units = units

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self.name} needs inputs of rank >= 2, got shape {input_shape}")
        self.build_kernel_and_bias((input_shape[-1], self.units), self.units)

    def call(self, inputs):
        if inputs.shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"{self.name} was built for {self.kernel.shape[0]} input features, "
                             f"got an input of shape {inputs.shape}")
        y = matmul(inputs, self.kernel)
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "quantization_config": None}


class Activation(Layer):
    """Applies an activation function given by name or as a callable."""

    def __init__(self, activation, **kwargs):
        activation = activations.get(activation)
        super().__init__(**kwargs)
        self.activation = activation

    def call(self, inputs):
        return self.activation(inputs)

    def get_config(self):
        return {**super().get_config(), "activation": activations.serialize(self.activation)}


class Flatten(Layer):
    """Keeps the batch axis and flattens the rest in row-major order; as in Keras,
    ``channels_first`` inputs are flattened in channels-last order."""

    def __init__(self, data_format="channels_last", **kwargs):
        data_format = check_data_format(data_format)
        super().__init__(**kwargs)
        self.data_format = data_format

    def call(self, inputs):
        if inputs.ndim < 1:
            raise ValueError(f"{self.name} needs an input with a batch axis, got a scalar")
        if self.data_format == "channels_first" and inputs.ndim > 2:
            inputs = inputs.permute(0, *range(2, inputs.ndim), 1)
        # An explicit size, since -1 cannot be inferred for an empty batch.
        return inputs.reshape(inputs.shape[0], math.prod(inputs.shape[1:]))

    def compute_output_shape(self, input_shape):
        rest = input_shape[1:]
        return (input_shape[0], None if None in rest else math.prod(rest))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Dropout(Layer):
    """Inverted dropout: while ``training``, each value is zeroed with probability
    ``rate`` and the rest are scaled by ``1 / (1 - rate)``; otherwise the identity."""

    def __init__(self, rate, seed=None, noise_shape=None, **kwargs):
        require_default(noise_shape, None, "noise_shape", "Dropout")
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
            raise ValueError(f"rate must be a number in [0, 1), got {rate!r}")
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        # Without a seed, masks come from cugn's generator (cugn.manual_seed).
        self._rng = None if seed is None else np.random.default_rng(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        keep = (self._rng or random.generator()).random(inputs.shape) >= self.rate
        mask = (keep / (1.0 - self.rate)).astype(inputs.dtype)
        return inputs * Tensor(backend.to_device(mask, inputs.device))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed,
                "noise_shape": None}
