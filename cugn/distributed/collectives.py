"""Collectives on Tensors and arrays: every rank calls them, in the same order.

Both work in place on the Tensor's array (or on the NumPy or CuPy array given)
and return what they were given, as ``torch.distributed``'s do.
"""

import numpy as np

from .. import backend
from ..engine.tensor import Tensor
from ..profiling import nvtx
from .process_group import group

OPS = ("sum", "mean")
DTYPES = ("float16", "float32", "float64")


def _checked_array(tensor):
    """The array behind ``tensor``, checked: a float16/32/64 array that can be written."""
    array = tensor.data if isinstance(tensor, Tensor) else tensor
    if not backend.is_array(array):
        raise TypeError(f"tensor must be a cugn Tensor or a NumPy or CuPy array, got "
                        f"{type(tensor).__name__}")
    if np.dtype(array.dtype).name not in DTYPES:
        raise TypeError(f"tensor must have dtype float16, float32 or float64, got {array.dtype}")
    if not getattr(array.flags, "writeable", True):
        raise ValueError("tensor is read-only; collectives write their result into it")
    return array


def _in_place(array, work):
    """Run ``work`` on a C-contiguous array and leave its result in ``array``."""
    if array.flags.c_contiguous:
        work(array)
        return
    contiguous = backend.array_module(array).ascontiguousarray(array)
    work(contiguous)
    array[...] = contiguous


def all_reduce(tensor, op="sum"):
    """Replace ``tensor`` on every rank by the sum (``op="sum"``) or the mean
    (``op="mean"``) of its values over all ranks; every rank gets the same bits."""
    if op not in OPS:
        raise ValueError(f"op must be 'sum' or 'mean', got {op!r}")
    array = _checked_array(tensor)
    world = group()

    def reduce(contiguous):
        world.transport_for(contiguous).all_reduce_start(contiguous).wait()
        if op == "mean":
            backend.array_module(contiguous).divide(contiguous, world.size, out=contiguous)

    with nvtx.range("all_reduce", category="comm"):
        _in_place(array, reduce)
    return tensor


def broadcast(tensor, src=0):
    """Replace ``tensor`` on every rank by rank ``src``'s."""
    world = group()
    if isinstance(src, bool) or not isinstance(src, (int, np.integer)) \
            or not 0 <= src < world.size:
        raise ValueError(f"src must be a rank from 0 to {world.size - 1}, got {src!r}")
    array = _checked_array(tensor)
    with nvtx.range("broadcast", category="comm"):
        _in_place(array, lambda contiguous: world.transport_for(contiguous).broadcast(
            contiguous, int(src)))
    return tensor
