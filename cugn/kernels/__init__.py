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

``numba_elementwise()`` gives the compiled loops of sigmoid, silu and tanh
(``elementwise_numba.py``) on the same terms.
"""

import importlib
import os

from .. import backend
from . import group_norm_numpy
from .layout import GroupLayout

numba_enabled = os.environ.get("CUGN_NUMBA", "1") != "0"
_numba_modules = {}  # name -> the module once imported, False when Numba is not installed


def numba_kernels():
    """``group_norm_numba``, or None when Numba is switched off or not installed; Numba
    is imported on the first call, not with cugn."""
    return _numba_module("group_norm_numba")


def numba_elementwise():
    """``elementwise_numba``, or None when Numba is switched off or not installed."""
    return _numba_module("elementwise_numba")


def _numba_module(name):
    if not numba_enabled:
        return None
    module = _numba_modules.get(name)
    if module is None:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ImportError:
            module = False
        _numba_modules[name] = module
    return module or None


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


__all__ = ["GroupLayout", "backward", "forward", "numba_elementwise", "numba_enabled",
           "numba_kernels"]
