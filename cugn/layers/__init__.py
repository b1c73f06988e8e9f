"""Keras-style layers, ``Sequential`` and the functional ``group_normalization``."""

from .convolutional import Conv2D
from .core import Activation, Dense, Dropout, Flatten
from .group_normalization import GroupNormalization
from .layer import Layer
from .pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPooling2D
from .sequential import Sequential
from .composition import group_normalization  # noqa: E402 - needs Sequential

# The classes Sequential.from_config rebuilds layers from, by Keras class name.
LAYER_CLASSES = {cls.__name__: cls for cls in (
    Activation, AveragePooling2D, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling2D,
    GroupNormalization, MaxPooling2D, Sequential)}

__all__ = [
    "Activation", "AveragePooling2D", "Conv2D", "Dense", "Dropout", "Flatten",
    "GlobalAveragePooling2D", "GroupNormalization", "Layer", "MaxPooling2D", "Sequential",
    "group_normalization",
]
