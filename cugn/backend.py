"""Array backends: NumPy on the CPU, CuPy on CUDA devices.

CuPy is never imported here unless the caller asks for a CUDA device, so
``import cugn`` works on a machine with neither CuPy nor a GPU.  An array that
is already a CuPy array implies CuPy is imported, which is how arrays are told
apart without importing anything.
"""

import sys

import numpy as np


def cupy():
    """The CuPy module, imported on first use; a clear error if it is missing."""
    try:
        import cupy as cp
    except ImportError as error:
        raise RuntimeError(
            "a CUDA device needs CuPy: pip install 'cugn[cuda13]' (or 'cugn[cuda12]')"
        ) from error
    return cp


def cuda_available():
    """True when CuPy is installed and sees a CUDA device (imports CuPy if present)."""
    try:
        import cupy as cp

        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, or CuPy without a driver or a device
        return False


def is_cupy_array(obj):
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(obj, cp.ndarray)


def is_array(obj):
    return isinstance(obj, np.ndarray) or is_cupy_array(obj)


def array_module(array):
    """``numpy`` or ``cupy``, whichever owns ``array`` (NumPy for scalars)."""
    return sys.modules["cupy"] if is_cupy_array(array) else np


def device_of(array):
    """The device string of an array: ``"cpu"`` or ``"cuda:N"``."""
    if is_cupy_array(array):
        return f"cuda:{array.device.id}"
    return "cpu"


def parse_device(device):
    """Normalise a device spec to ``"cpu"`` or ``"cuda:N"``."""
    if device is None:
        return None
    text = str(device).strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda":
        return f"cuda:{cupy().cuda.Device().id}"
    if text.startswith("cuda:") and text[5:].isdigit():
        return text
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def to_device(array, device):
    """Copy ``array`` to ``device`` unless it is already there."""
    device = parse_device(device)
    if device is None or device == device_of(array):
        return array
    if device == "cpu":
        return array.get()
    cp = cupy()
    with cp.cuda.Device(int(device.split(":")[1])):
        return cp.asarray(array)


def zeros(shape, dtype, device="cpu"):
    """A zero array on ``device``."""
    if device == "cpu":
        return np.zeros(shape, dtype)
    cp = cupy()
    with cp.cuda.Device(int(device.split(":")[1])):
        return cp.zeros(shape, dtype)


def is_floating(dtype):
    """True for float16/32/64 and ml_dtypes' bfloat16."""
    dtype = np.dtype(dtype)
    return np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"


def compute_dtype(dtype):
    """The dtype statistics are computed in: float64 for float64, float32 for anything
    else (float16 and bfloat16 included)."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)
