"""Keras-style layers."""

from .group_normalization import GroupNormalization
from .layer import Layer

__all__ = ["GroupNormalization", "Layer"]
