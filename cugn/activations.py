"""Activation functions by Keras name, for ``activation=`` arguments and ``Activation``."""

from .functions import gelu, relu, sigmoid, silu, softmax, tanh


def linear(x):
    return x


_BY_NAME = {
    "linear": linear, "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax,
    "silu": silu, "swish": silu, "gelu": gelu,
}


def get(identifier):
    """A callable from None (linear), a Keras name or a callable."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"Unknown activation: {identifier!r}. Known: {sorted(_BY_NAME)}")
        return _BY_NAME[identifier]
    if callable(identifier):
        return identifier
    raise TypeError(f"activation must be None, a name or a callable, got {identifier!r}")


def serialize(activation):
    """The Keras config value: the function's name."""
    for name, function in _BY_NAME.items():
        if function is activation:
            return name
    return getattr(activation, "__name__", repr(activation))
