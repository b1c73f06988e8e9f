"""Array-level GroupNorm implementations, chosen by where the data lives.

``forward(x, gamma, beta, layout, epsilon) -> (y, mean, rstd)`` and
``backward(x, dy, gamma, mean, rstd, layout) -> (dx, dgamma, dbeta)`` take and
return raw arrays; ``layout`` is the ``GroupLayout`` of ``layout.py``. On CuPy
arrays both also take a fused ``activation`` (``fused_activation.py``), with
``beta`` for the backward, and ``storage="bfloat16"`` for bfloat16 held in
16-bit words (see ``group_norm_cuda``).

CuPy arrays go to the CUDA kernels. NumPy arrays go to the Numba kernels when
Numba is installed (the ``numba`` extra) and the input is one they compile
(float16/32/64, channels-last or channels-first), else to the NumPy
implementation, which needs nothing more. ``CUGN_NUMBA=0`` in the environment,
or ``cugn.kernels.numba_enabled = False``, keeps the CPU on NumPy.
"""

import os

from .. import backend
from . import group_norm_numpy
from .layout import GroupLayout

numba_enabled = os.environ.get("CUGN_NUMBA", "1") != "0"
_numba_kernels = None  # the module once imported, False when Numba is not installed


def numba_kernels():
    """``group_norm_numba``, or None when Numba is switched off or not installed; Numba
    is imported on the first call, not with cugn."""
    global _numba_kernels
    if not numba_enabled:
        return None
    if _numba_kernels is None:
        try:
            from . import group_norm_numba as module
        except ImportError:
            module = False
        _numba_kernels = module
    return _numba_kernels or None


def _implementation(array, layout):
    if backend.is_cupy_array(array):
        # Imported here: importing cugn must not import CuPy.
        from . import group_norm_cuda

        return group_norm_cuda
    compiled = numba_kernels()
    if compiled is not None and compiled.supports(array, layout):
        return compiled
    return group_norm_numpy


def forward(x, gamma, beta, layout, epsilon, activation=None, storage=None):
    if activation is None and storage is None:
        return _implementation(x, layout).forward(x, gamma, beta, layout, epsilon)
    return _cuda(x, layout).forward(x, gamma, beta, layout, epsilon, storage=storage,
                                    activation=activation)


def backward(x, dy, gamma, mean, rstd, layout, beta=None, activation=None, storage=None):
    if activation is None and storage is None:
        return _implementation(x, layout).backward(x, dy, gamma, mean, rstd, layout)
    return _cuda(x, layout).backward(x, dy, gamma, mean, rstd, layout, storage=storage,
                                     beta=beta, activation=activation)


def _cuda(array, layout):
    """The implementation for a fused activation or bfloat16 words: the CUDA kernels only."""
    if not backend.is_cupy_array(array):
        raise ValueError("a fused activation, or storage='bfloat16', needs CuPy arrays (the "
                         "CUDA kernels); on the CPU apply the activation to the result, as "
                         "cugn.functional.group_norm does, and pass bfloat16 as ml_dtypes' "
                         "bfloat16")
    return _implementation(array, layout)


__all__ = ["GroupLayout", "backward", "forward", "numba_enabled", "numba_kernels"]
