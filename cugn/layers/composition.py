"""Keras/R-style functional composition: ``group_normalization(object, **kwargs)``."""

from .. import backend
from ..engine.tensor import Tensor
from .group_normalization import GroupNormalization
from .sequential import Sequential


def group_normalization(object=None, **kwargs):  # noqa: A002 - the R interface's name
    """A ``GroupNormalization(**kwargs)`` layer, placed by what ``object`` is:

    - None: the layer itself;
    - a ``Sequential``: the layer is appended to it, and the model is returned;
    - a Tensor or an array: the layer applied to it (the output is returned).
    """
    if object is not None and not isinstance(object, (Sequential, Tensor)) \
            and not backend.is_array(object):
        raise TypeError(f"object must be None, a Sequential, a Tensor or an array, "
                        f"got {type(object).__name__}")
    layer = GroupNormalization(**kwargs)
    if object is None:
        return layer
    if isinstance(object, Sequential):
        return object.add(layer)
    return layer(object)
