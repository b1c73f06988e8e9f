"""Profiling support: NVTX ranges that name cugn's ops, layers, backward steps
and kernel launches in Nsight Systems and Nsight Compute.

``cugn.profiling.nvtx(enabled)`` switches the ranges (also as a context
manager); ``cugn.profiling.nvtx.range(name, category=...)`` annotates code of
one's own. This package is imported by the engine, so it stays light: the
``nvtx`` package is imported only when the first range is pushed.
"""

from . import nvtx

__all__ = ["nvtx"]
