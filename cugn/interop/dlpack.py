"""``from_dlpack``: a Tensor sharing memory with any DLPack producer."""

import numpy as np

from .. import backend
from ..engine.tensor import Tensor

# DLPack device types (dlpack.h): host memory, and CUDA device memory.
_DLPACK_CPU = 1
_DLPACK_CUDA = 2


def from_dlpack(obj, requires_grad=False):
    """A leaf Tensor viewing the memory of ``obj`` (a torch tensor, JAX or CuPy array,
    NumPy array or cugn Tensor: anything with ``__dlpack__``), without a copy.
    Host memory becomes a NumPy array, CUDA memory a CuPy array."""
    if not hasattr(obj, "__dlpack__") or not hasattr(obj, "__dlpack_device__"):
        raise TypeError(f"from_dlpack needs an object with __dlpack__ and __dlpack_device__, "
                        f"got {type(obj).__name__}")
    device_type, _ = obj.__dlpack_device__()
    if device_type == _DLPACK_CPU:
        array = np.from_dlpack(obj)
    elif device_type == _DLPACK_CUDA:
        array = backend.cupy().from_dlpack(obj)
    else:
        raise ValueError(f"from_dlpack supports host (1) and CUDA (2) memory, got DLPack device "
                         f"type {device_type}")
    return Tensor(array, requires_grad=requires_grad)
