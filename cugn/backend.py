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
    """Normalise a device spec to ``"cpu"`` or ``"cuda:N"``; a CUDA device must exist."""
    if device is None:
        return None
    text = str(device).strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        count = _cuda_device_count(device)
        index = cupy().cuda.Device().id if text == "cuda" else int(text[5:])
        if index >= count:
            raise RuntimeError(f"device {device!r} does not exist: CuPy sees {count} CUDA "
                               f"device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
        return f"cuda:{index}"
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


_CUDA_ERROR_INSUFFICIENT_DRIVER = 35
_CUDA_ERROR_NO_DEVICE = 100
_device_count = None  # once a CUDA device has been seen, how many there are


def _cuda_device_count(device):
    """The number of CUDA devices, or an error in one sentence saying why there is none
    (CuPy missing, no driver, no device)."""
    global _device_count
    if _device_count:
        return _device_count
    try:
        import cupy as cp
    except ImportError:
        raise RuntimeError(f"device {device!r} needs CuPy, which is not installed: pip install "
                           "'cugn[cuda13]' (or 'cugn[cuda12]'), or use device='cpu'") from None
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError as error:
        if error.status == _CUDA_ERROR_INSUFFICIENT_DRIVER:
            reason = "it has no NVIDIA driver, or one too old for this CuPy"
        elif error.status == _CUDA_ERROR_NO_DEVICE:
            reason = "the NVIDIA driver sees no CUDA device"
        else:
            reason = f"CUDA cannot start ({error})"
        raise RuntimeError(f"device {device!r} is not available on this machine: {reason}; "
                           "use device='cpu'") from None
    if count == 0:
        raise RuntimeError(f"device {device!r} is not available on this machine: the NVIDIA "
                           "driver sees no CUDA device; use device='cpu'")
    _device_count = count
    return count


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
    # Asked for every output of every op: a dict lookup once a dtype has been seen.
    known = _FLOATING.get(dtype)
    if known is None:
        resolved = np.dtype(dtype)
        known = _FLOATING[dtype] = bool(np.issubdtype(resolved, np.floating)
                                        or resolved.name == "bfloat16")
    return known


_FLOATING = {}


def compute_dtype(dtype):
    """The dtype statistics are computed in: float64 for float64, float32 for anything
    else (float16 and bfloat16 included)."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def erf(array):
    """The error function of a floating array, in its dtype: SciPy's on NumPy arrays,
    CuPy's on CuPy arrays (float16 and bfloat16 computed in float32)."""
    if is_cupy_array(array):
        from cupyx.scipy.special import erf as special_erf
    else:
        from scipy.special import erf as special_erf
    compute = compute_dtype(array.dtype)
    return special_erf(array.astype(compute, copy=False)).astype(array.dtype, copy=False)
