"""torch tensors as the arrays cugn's kernels take, and back, sharing memory.

A channels-first tensor ``(N, C, *)`` reaches the kernels in the memory order it
already has: contiguous as ``(N, C, *)`` with the channels on axis 1, or, when
its memory is channels-last (``torch.channels_last``, ``channels_last_3d``, or
the same order for any rank), as the contiguous ``(N, *, C)`` view of that
memory with the channels on the last axis. Any other strides are copied once
into the contiguous order. The output is given back in the same memory order,
so channels-last in is channels-last out.

Host tensors become NumPy arrays (bfloat16 through ml_dtypes' bfloat16 view of
the same bytes, since NumPy has no bfloat16 of its own), CUDA tensors CuPy
arrays (bfloat16 as its 16-bit words, which the CUDA kernels read with
``storage="bfloat16"``, since CuPy has no bfloat16 either), inside
``kernel_context``: torch's device and current stream, with CuPy's allocations
made by torch's caching allocator.
"""

import contextlib
import functools

import numpy as np
import torch

from ..kernels.layout import GroupLayout


def is_channels_last(x):
    """True when x's memory is (N, *, C) contiguous but x is not (N, C, *) contiguous
    (a tensor that is both, with C or the spatial size 1, takes the plain order)."""
    return x.dim() > 2 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


def layout(x, num_groups):
    """The GroupLayout of x in the memory order ``to_kernel`` gives it."""
    if is_channels_last(x):
        shape = (x.shape[0], *x.shape[2:], x.shape[1])
        return GroupLayout(shape, (len(shape) - 1,), num_groups)
    return GroupLayout(tuple(x.shape), (1,), num_groups)


def to_kernel(tensor, x):
    """``tensor`` (shaped like x) contiguous in the memory order the kernels read for x:
    free when it already is, else one copy."""
    if is_channels_last(x):
        return tensor.movedim(1, -1).contiguous()
    return tensor.contiguous()


def from_kernel(tensor, x):
    """A kernel output in the order of ``to_kernel(..., x)``, as a tensor shaped like x."""
    return tensor.movedim(-1, 1) if is_channels_last(x) else tensor


def empty_like_output(x):
    """An uninitialised tensor with the shape and strides the kernels' output has for x
    (the fake implementations use it, so that traced strides match the real ones)."""
    if is_channels_last(x):
        return x.new_empty(x.movedim(1, -1).shape).movedim(-1, 1)
    return x.new_empty(x.shape)


def compute_dtype(dtype):
    """The dtype the kernels compute (and return statistics and weight gradients) in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_array(tensor):
    """The memory of a contiguous torch tensor as a NumPy or CuPy array (zero copy)."""
    tensor = tensor.detach()
    if tensor.is_cuda:
        import cupy

        if tensor.dtype == torch.bfloat16:
            return cupy.from_dlpack(tensor.view(torch.int16))
        return cupy.from_dlpack(tensor)
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return np.from_dlpack(tensor.view(torch.int16)).view(ml_dtypes.bfloat16)
    return np.from_dlpack(tensor)


def storage(tensor):
    """The kernels' ``storage`` argument for ``tensor``'s memory: "bfloat16" for the
    16-bit words of a CUDA bfloat16 tensor, else None (the array's own dtype)."""
    return "bfloat16" if tensor.is_cuda and tensor.dtype == torch.bfloat16 else None


def as_tensor(array, dtype=None):
    """A NumPy or CuPy array as a torch tensor on the same memory (zero copy);
    ``dtype=torch.bfloat16`` reads 16-bit words as bfloat16."""
    if array.dtype.kind == "V":  # ml_dtypes' bfloat16: NumPy files dtypes it lacks as void
        return torch.from_dlpack(array.view(np.int16)).view(torch.bfloat16)
    tensor = torch.from_dlpack(array)
    if dtype == torch.bfloat16 and tensor.dtype != dtype:
        return tensor.view(torch.bfloat16)
    return tensor


@contextlib.contextmanager
def kernel_context(tensor):
    """Run CuPy work for ``tensor`` on its device and torch's current stream there,
    allocating through torch's caching allocator: no synchronisation, the work is
    ordered with the surrounding torch work, and it can be captured in a CUDA graph
    (the allocator then draws from the graph's pool). Nothing to do on the CPU."""
    if not tensor.is_cuda:
        yield
        return
    import cupy

    device = tensor.device.index
    stream = torch.cuda.current_stream(device)
    with torch.cuda.device(device), cupy.cuda.Device(device), \
            cupy.cuda.ExternalStream(stream.cuda_stream, device), \
            cupy.cuda.using_allocator(_torch_allocator().malloc):
        yield


@functools.cache
def _torch_allocator():
    import cupy

    def malloc(size, device):
        # Allocated for torch's current stream, which is the stream the kernels run on.
        return torch.cuda.caching_allocator_alloc(size, device,
                                                  torch.cuda.current_stream(device))

    def free(pointer, device):
        torch.cuda.caching_allocator_delete(pointer)

    return cupy.cuda.memory.PythonFunctionAllocator(malloc, free)
