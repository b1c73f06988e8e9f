"""``GroupNormalization``: Keras's layer, argument for argument and number for number."""

import math

from .. import constraints, initializers, regularizers
from ..functions.normalization import (check_activation, check_axis, check_epsilon,
                                       check_groups, feature_axes, group_norm, resolve_groups)
from .layer import Layer


class GroupNormalization(Layer):
    """Group normalization (Yuxin Wu, Kaiming He, 2018).

    The channels of the feature ``axis`` are split into ``groups`` groups;
    each sample's groups are normalised by their own mean and variance, then
    scaled by ``gamma`` and shifted by ``beta`` (per channel). ``groups=-1``
    means one group per channel (instance normalization) and becomes the
    channel count when the layer is built; ``groups=1`` is layer normalization
    over every non-batch axis. ``axis`` may be a list/tuple of feature axes,
    which Keras documents but rejects: the axes are then taken together, in
    row-major order, and gamma and beta get their shape.

    ``activation`` ("silu" or "swish", "relu", "gelu"), which Keras's layer does
    not have, is applied to the output: fused into the CUDA kernels, composed on
    the CPU. The config carries it only when it is set, so that other configs
    stay Keras's.
    """

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 activation=None, **kwargs):
        # Everything is checked before the base class takes a name.
        groups = check_groups(groups)
        activation = check_activation(activation)
        axis = check_axis(axis)
        epsilon = check_epsilon(epsilon)
        beta_initializer = initializers.get(beta_initializer)
        gamma_initializer = initializers.get(gamma_initializer)
        beta_regularizer = regularizers.get(beta_regularizer)
        gamma_regularizer = regularizers.get(gamma_regularizer)
        beta_constraint = constraints.get(beta_constraint)
        gamma_constraint = constraints.get(gamma_constraint)
        super().__init__(**kwargs)
        self.groups = groups
        self.axis = list(axis) if isinstance(axis, tuple) else axis
        self.epsilon = epsilon
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.beta_regularizer = beta_regularizer
        self.gamma_regularizer = gamma_regularizer
        self.beta_constraint = beta_constraint
        self.gamma_constraint = gamma_constraint
        self.activation = activation
        self.gamma = None
        self.beta = None
        self._built_shape = None

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        axes = feature_axes(check_axis(self.axis), input_shape)
        for a in axes:
            if input_shape[a] is None:
                raise ValueError(
                    f"Axis {self.axis} of input tensor should have a defined dimension but the "
                    f"layer received an input with shape {input_shape}."
                )
        feature_shape = tuple(input_shape[a] for a in axes)
        self.groups = resolve_groups(self.groups, math.prod(feature_shape), input_shape, axes)
        if self.scale:
            self.gamma = self.add_weight("gamma", feature_shape, self.gamma_initializer,
                                         self.gamma_regularizer, self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight("beta", feature_shape, self.beta_initializer,
                                        self.beta_regularizer, self.beta_constraint)
        self._built_shape = (len(input_shape), axes, feature_shape)
        self.built = True

    def call(self, inputs):
        rank, axes, feature_shape = self._built_shape
        if inputs.ndim != rank or tuple(inputs.shape[a] for a in axes) != feature_shape:
            raise ValueError(
                f"{self.name} was built for inputs of rank {rank} with feature axes {axes} of "
                f"size {feature_shape}; got an input of shape {inputs.shape}"
            )
        return group_norm(inputs, self.groups, self.gamma, self.beta, self.axis, self.epsilon,
                          self.activation)

    def get_config(self):
        config = {
            **super().get_config(),
            "groups": self.groups,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize_initializer(self.beta_initializer),
            "gamma_initializer": initializers.serialize_initializer(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize_regularizer(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize_regularizer(self.gamma_regularizer),
            "beta_constraint": constraints.serialize_constraint(self.beta_constraint),
            "gamma_constraint": constraints.serialize_constraint(self.gamma_constraint),
        }
        if self.activation is not None:
            config["activation"] = self.activation
        return config
