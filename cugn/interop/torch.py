"""``GroupNorm`` and ``group_norm``: cugn's group normalization for PyTorch.

Drop-ins for ``torch.nn.GroupNorm`` and ``torch.nn.functional.group_norm``
(same arguments, channels-first inputs ``(N, C, *)``, same numbers) that run
cugn's NumPy kernels for CPU tensors, its CUDA kernels for CUDA tensors, on
torch's memory without a copy (``torch_ops``). Under ``torch.compile`` and
``torch.export`` they are the ``torch.ops.cugn.group_norm`` operator, traced as
one node (``fullgraph=True`` works); in eager mode an ``autograd.Function`` over
the same kernels. An activation after the normalization (silu, relu, gelu) is
fused into the CUDA kernels, and applied with torch's own op on the CPU.
"""

import math
import numbers

import torch
import torch.nn.functional as F

from ..kernels.fused_activation import check_activation
from . import torch_ops

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)

# The activations by canonical name (fused_activation's; "swish" is "silu"): fused into
# the CUDA kernels, these torch ops on the CPU. gelu is the exact form, Keras's default
# and PyTorch's.
_ACTIVATIONS = {
    "silu": F.silu, "relu": F.relu, "gelu": lambda y: F.gelu(y, approximate="none"),
}


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *,  # noqa: A002
               activation=None):
    """``torch.nn.functional.group_norm`` computed by cugn.

    float16 and bfloat16 inputs are computed in float32 and may have weights in
    their own dtype or in float32; float32 and float64 inputs take weights of their
    dtype. The output has the input's dtype and, when the input is channels-last
    (``torch.channels_last``, ``torch.channels_last_3d``), its memory format.
    ``activation`` (None, "silu"/"swish", "relu", "gelu") is applied to the output:
    in the same kernels on CUDA.
    """
    activation = check_activation(activation)
    _check_input(input)
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral) or \
            num_groups <= 0:
        raise ValueError(f"num_groups must be a positive integer, got {num_groups!r}")
    if input.shape[1] % num_groups:
        raise ValueError(f"the input's channels ({input.shape[1]}, shape "
                         f"{tuple(input.shape)}) must be divisible by num_groups ({num_groups})")
    _check_weight("weight", weight, input)
    _check_weight("bias", bias, input)
    eps = _check_eps(eps)
    if activation is not None and input.device.type != "cuda":
        return _ACTIVATIONS[activation](torch_ops.group_norm(input, weight, bias,
                                                             int(num_groups), eps))
    return torch_ops.group_norm(input, weight, bias, int(num_groups), eps, activation)


class GroupNorm(torch.nn.Module):
    """``torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True, device=None,
    dtype=None, *, bias=True)`` computed by cugn: inputs are ``(N, C, *)`` with C =
    ``num_channels``.

    ``activation`` (None, ``"silu"``/``"swish"``, ``"relu"`` or ``"gelu"``, the exact
    gelu as Keras's default) is applied to the output: fused into the CUDA kernels
    (the backward recomputes its input, so nothing more is saved), and with torch's
    op on the CPU.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None,
                 *, bias=True, activation=None):
        super().__init__()
        for name, value in (("num_groups", num_groups), ("num_channels", num_channels)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        check_activation(activation)
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = _check_eps(eps)
        self.affine = bool(affine)
        self.activation = activation
        options = {"device": device, "dtype": dtype}
        if self.affine:
            self.weight = torch.nn.Parameter(torch.empty(self.num_channels, **options))
            if bias:
                self.bias = torch.nn.Parameter(torch.empty(self.num_channels, **options))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def forward(self, input):  # noqa: A002 - torch.nn.Module's argument name
        _check_input(input)
        if input.shape[1] != self.num_channels:
            raise ValueError(f"expected an input of shape (N, {self.num_channels}, *), "
                             f"got {tuple(input.shape)}")
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps,
                          activation=self.activation)

    def extra_repr(self):
        text = (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")
        return text if self.activation is None else f"{text}, activation={self.activation!r}"


def _check_input(input):  # noqa: A002
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() < 2:
        raise ValueError(f"input must have shape (N, C, *), got shape {tuple(input.shape)}")
    if input.dtype not in _DTYPES:
        raise TypeError(f"cugn's GroupNorm takes float16, bfloat16, float32 or float64 "
                        f"tensors, got {input.dtype}")
    if input.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"cugn's GroupNorm runs on CPU and CUDA tensors, got one on "
                         f"{input.device}")


def _check_weight(name, weight, input):  # noqa: A002
    if weight is None:
        return
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(weight).__name__}")
    if tuple(weight.shape) != (input.shape[1],):
        raise ValueError(f"{name} must have shape ({input.shape[1]},) for an input of shape "
                         f"{tuple(input.shape)}, got {tuple(weight.shape)}")
    allowed = (input.dtype, torch.float32) if input.dtype in _HALF else (input.dtype,)
    if weight.dtype not in allowed or weight.device != input.device:
        expected = " or ".join(str(d) for d in allowed)
        raise ValueError(f"{name} is {weight.dtype} on {weight.device} but the input is "
                         f"{input.dtype} on {input.device}: {name} must be {expected} on "
                         f"{input.device}")


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (
            0 <= eps < math.inf):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    return float(eps)
