"""The real CUDA sources of cugn, run on the CPU.

The CUDA source, as the loader assembles it, is compiled by the host's C++
compiler against a small CUDA header (``runtime.h``) and run by a launcher
(``runtime.cpp``) that gives every CUDA thread a host thread, enforces the
rules of barriers and warp shuffles, and checks memory; thread-block clusters
run with shared memory of their own per block and distributed shared memory
between them. ``Device`` puts cugn's CUDA host code on top of it, with NumPy
standing in for CuPy::

    device = Device(sm_count=4, blocks_per_sm=2)
    with device.installed():
        y, mean, rstd = group_norm_cuda.forward(device.asarray(x), None, None, layout, 1e-5)
    device.launches  # every launch, with its global bytes read and written, and where

What it cannot show: the GPU's rounding (fused multiply-adds, fast division),
races between blocks (blocks run one after another, a cluster's blocks one
thread at a time), timing, and the limits of a real device (shared memory,
registers).
"""

from .build import BuildError, compiler
from .device import LINE_BYTES, Device, Launch, Schedule, Span, Traffic
from .library import KernelError

__all__ = ["LINE_BYTES", "BuildError", "Device", "KernelError", "Launch", "Schedule", "Span",
           "Traffic", "compiler"]
