"""Zero-copy exchange with other array libraries (DLPack) and the PyTorch adapter.

``cugn.interop.torch`` imports PyTorch, so it is imported only on request.
"""

from .dlpack import from_dlpack

__all__ = ["from_dlpack"]
