"""``GroupNorm``: a ``torch.nn.Module`` that runs cugn's group normalization.

A drop-in for ``torch.nn.GroupNorm`` (same constructor, channels-first inputs
``(N, C, *)``, same numbers). The work is a ``torch.autograd.Function`` whose
forward and backward call cugn's array-level kernels (``cugn.kernels``) on
torch's own memory, shared through DLPack without a copy: NumPy for CPU
tensors, CuPy for CUDA tensors, where the kernels are queued on torch's
current stream so that they are ordered with the surrounding torch work.
"""

import contextlib

import numpy as np
import torch

from .. import kernels
from ..kernels.layout import GroupLayout

# float16 is computed in float32 (and its weights may be float32, as under mixed
# precision); bfloat16 has no NumPy or CuPy array type to share memory with.
_DTYPES = (torch.float16, torch.float32, torch.float64)


def _as_array(tensor):
    """The memory of a torch tensor as a NumPy or CuPy array (zero copy)."""
    tensor = tensor.detach().contiguous()
    if tensor.is_cuda:
        import cupy

        return cupy.from_dlpack(tensor)
    return np.from_dlpack(tensor)


def _as_torch(array):
    return torch.from_dlpack(array)


@contextlib.contextmanager
def _torch_stream(tensor):
    """Queue CuPy's work on torch's current stream of ``tensor``'s device."""
    if not tensor.is_cuda:
        yield
        return
    import cupy

    with cupy.cuda.Device(tensor.device.index), \
            cupy.cuda.ExternalStream(torch.cuda.current_stream(tensor.device).cuda_stream):
        yield


class GroupNormFunction(torch.autograd.Function):
    """group_norm(x, weight, bias, num_groups, eps) on torch tensors, with cugn's kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps):
        layout = GroupLayout(tuple(x.shape), (1,), num_groups)
        with _torch_stream(x):
            x_array = _as_array(x)
            gamma = None if weight is None else _as_array(weight)
            beta = None if bias is None else _as_array(bias)
            y, mean, rstd = kernels.forward(x_array, gamma, beta, layout, eps)
        ctx.layout = layout
        ctx.save_for_backward(x, weight, _as_torch(mean), _as_torch(rstd))
        return _as_torch(y)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        with _torch_stream(x):
            dx, dgamma, dbeta = kernels.backward(
                _as_array(x), _as_array(dy), None if weight is None else _as_array(weight),
                _as_array(mean), _as_array(rstd), ctx.layout)
        needs = ctx.needs_input_grad
        # dgamma and dbeta come in the compute dtype; torch wants the weights' own.
        return (_as_torch(dx) if needs[0] else None,
                _as_torch(dgamma).to(weight.dtype) if needs[1] else None,
                _as_torch(dbeta).to(weight.dtype) if needs[2] else None, None, None)


class GroupNorm(torch.nn.Module):
    """``torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True)``, computed
    by cugn: inputs are ``(N, C, *)`` with C = ``num_channels``."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None):
        super().__init__()
        for name, value in (("num_groups", num_groups), ("num_channels", num_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = float(eps)
        self.affine = bool(affine)
        if self.affine:
            options = {"device": device, "dtype": dtype}
            self.weight = torch.nn.Parameter(torch.ones(num_channels, **options))
            self.bias = torch.nn.Parameter(torch.zeros(num_channels, **options))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self):
        if self.affine:
            torch.nn.init.ones_(self.weight)
            torch.nn.init.zeros_(self.bias)

    def forward(self, input):  # noqa: A002 - torch.nn.Module's argument name
        if input.dim() < 2 or input.shape[1] != self.num_channels:
            raise ValueError(f"expected an input of shape (N, {self.num_channels}, *), "
                             f"got {tuple(input.shape)}")
        if input.dtype not in _DTYPES:
            raise TypeError(f"cugn's GroupNorm takes float16, float32 or float64 tensors, "
                            f"got {input.dtype}")
        if self.affine:
            mixed = input.dtype == torch.float16 and self.weight.dtype == torch.float32
            if (self.weight.dtype != input.dtype and not mixed) or \
                    self.weight.device != input.device:
                raise ValueError(f"weight is {self.weight.dtype} on {self.weight.device} but "
                                 f"the input is {input.dtype} on {input.device}")
        return GroupNormFunction.apply(input, self.weight, self.bias, self.num_groups, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
