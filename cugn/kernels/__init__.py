"""Array-level GroupNorm implementations, chosen by where the data lives.

``forward(x, gamma, beta, layout, epsilon) -> (y, mean, rstd)`` and
``backward(x, dy, gamma, mean, rstd, layout) -> (dx, dgamma, dbeta)`` take and
return raw arrays; ``layout`` is the ``GroupLayout`` of ``layout.py``.
"""

from .. import backend
from . import group_norm_numpy
from .layout import GroupLayout


def _implementation(array):
    if backend.is_cupy_array(array):
        # Imported here: importing cugn must not import CuPy.
        from . import group_norm_cuda

        return group_norm_cuda
    return group_norm_numpy


def forward(x, gamma, beta, layout, epsilon):
    return _implementation(x).forward(x, gamma, beta, layout, epsilon)


def backward(x, dy, gamma, mean, rstd, layout):
    return _implementation(x).backward(x, dy, gamma, mean, rstd, layout)


__all__ = ["GroupLayout", "backward", "forward"]
