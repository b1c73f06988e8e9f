"""cugn's group normalization as PyTorch operators: ``torch.ops.cugn.group_norm`` and
``torch.ops.cugn.group_norm_backward``.

Registered with ``torch.library`` as custom ops, each with a fake implementation
(shapes, dtypes and strides without running anything) so that ``torch.compile``
and ``torch.export`` trace them as single nodes, and the forward with its
autograd formula. Both run cugn's kernels (``cugn.kernels``) on torch's memory
without copying it (``torch_memory``). In eager mode ``group_norm`` skips the ops'
dispatch (a few hundred microseconds a step in Python) and runs the same
functions through an ``autograd.Function``.

The first-order backward runs the kernels; under ``create_graph=True`` (grad mode
on inside the backward) the same analytic formula runs as differentiable torch
operations, with the statistics recomputed from x, so that it can be
differentiated again.

A fused ``activation`` ("silu", "relu", "gelu") runs in the CUDA kernels: the
forward applies it in its store, the backward recomputes its input from x, the
statistics, weight and bias. CPU tensors are not given one (``torch.py`` applies
it after the op there).

The ops take valid arguments only: ``cugn.interop.torch.group_norm`` checks them.
"""

import math
from typing import Optional

import torch

from .. import kernels
from . import torch_memory as memory


def group_norm(x, weight, bias, num_groups, eps, activation=None):
    """y: the op under ``torch.compile``/``torch.export``, on traced (fake) tensors and
    on the meta device; in eager mode the same kernels and formulas through an
    ``autograd.Function``, which costs a fraction of a custom op's dispatch."""
    if torch.compiler.is_compiling() or type(x) is not torch.Tensor or x.is_meta:
        return torch.ops.cugn.group_norm(x, weight, bias, num_groups, eps, activation)[0]
    return _EagerGroupNorm.apply(x, weight, bias, num_groups, eps, activation)


def forward(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
            num_groups: int, eps: float, activation: Optional[str] = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd) for an ``(N, C, *)`` input; y in x's dtype and memory order,
    mean and rstd ``(N, num_groups)`` in the compute dtype."""
    layout = memory.layout(x, num_groups)
    with memory.kernel_context(x):
        y, mean, rstd = kernels.forward(
            memory.as_array(memory.to_kernel(x, x)), _array_or_none(weight),
            _array_or_none(bias), layout, eps, activation, memory.storage(x))
        return (memory.from_kernel(memory.as_tensor(y, x.dtype), x), memory.as_tensor(mean),
                memory.as_tensor(rstd))


def backward(x: torch.Tensor, dy: torch.Tensor, weight: Optional[torch.Tensor],
             bias: Optional[torch.Tensor], mean: torch.Tensor, rstd: torch.Tensor,
             num_groups: int, activation: Optional[str] = None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias): dx in x's dtype and memory order, dweight and dbias
    ``(C,)`` in the compute dtype (also without weights, where nobody reads them).
    ``bias`` is read only with an activation (to recompute its input)."""
    layout = memory.layout(x, num_groups)
    with memory.kernel_context(x):
        dx, dweight, dbias = kernels.backward(
            memory.as_array(memory.to_kernel(x, x)), memory.as_array(memory.to_kernel(dy, x)),
            _array_or_none(weight), memory.as_array(mean), memory.as_array(rstd), layout,
            _array_or_none(bias) if activation else None, activation, memory.storage(x))
        return (memory.from_kernel(memory.as_tensor(dx, x.dtype), x), memory.as_tensor(dweight),
                memory.as_tensor(dbias))


def _array_or_none(tensor):
    return None if tensor is None else memory.as_array(tensor.contiguous())


def _save(ctx, x, weight, bias, num_groups, eps, activation, mean, rstd):
    ctx.save_for_backward(x, weight, bias if activation else None, mean, rstd)
    ctx.num_groups, ctx.eps, ctx.activation = num_groups, eps, activation
    ctx.weight_dtype = None if weight is None else weight.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype


def _gradients(ctx, dy, kernel_backward):
    """The gradients of (x, weight, bias, num_groups, eps): ``kernel_backward`` (the
    kernels), or under grad mode (create_graph=True) the differentiable formula."""
    x, weight, bias, mean, rstd = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if torch.is_grad_enabled():
        dx, dweight, dbias = differentiable_backward(x, dy, weight, ctx.num_groups, ctx.eps,
                                                     bias, ctx.activation)
    else:
        dx, dweight, dbias = kernel_backward(x, dy, weight, bias, mean, rstd, ctx.num_groups,
                                             ctx.activation)
    # dweight and dbias come in the compute dtype; torch wants the weights' own.
    return (dx if needs[0] else None, dweight.to(ctx.weight_dtype) if needs[1] else None,
            dbias.to(ctx.bias_dtype) if needs[2] else None, None, None, None)


class _EagerGroupNorm(torch.autograd.Function):
    # y alone is the output: a Function with more outputs costs more per call.
    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps, activation):
        y, mean, rstd = forward(x, weight, bias, num_groups, eps, activation)
        _save(ctx, x, weight, bias, num_groups, eps, activation, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        return _gradients(ctx, dy, backward)


# ------------------------------------------------------------------ the torch.library ops

forward_op = torch.library.custom_op("cugn::group_norm", forward, mutates_args=())
backward_op = torch.library.custom_op("cugn::group_norm_backward", backward, mutates_args=())


@forward_op.register_fake
def _(x, weight, bias, num_groups, eps, activation=None):
    statistics = x.new_empty((x.shape[0], num_groups), dtype=memory.compute_dtype(x.dtype))
    return memory.empty_like_output(x), statistics, torch.empty_like(statistics)


@backward_op.register_fake
def _(x, dy, weight, bias, mean, rstd, num_groups, activation=None):
    dweight = x.new_empty((x.shape[1],), dtype=memory.compute_dtype(x.dtype))
    return memory.empty_like_output(x), dweight, torch.empty_like(dweight)


def _setup_context(ctx, inputs, output):
    _, mean, rstd = output
    x, weight, bias, num_groups, eps, *activation = inputs  # activation may be left out
    _save(ctx, x, weight, bias, num_groups, eps, activation[0] if activation else None, mean,
          rstd)
    ctx.mark_non_differentiable(mean, rstd)


def _op_gradients(ctx, dy, _dmean, _drstd):
    return _gradients(ctx, dy, backward_op)


forward_op.register_autograd(_op_gradients, setup_context=_setup_context)


def differentiable_backward(x, dy, weight, num_groups, eps, bias=None, activation=None):
    """(dx, dweight, dbias) as recorded torch operations (for create_graph=True).

    With xhat = (x - mean) * rstd and g = weight * dy, per group:
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). With an activation, dy is
    first multiplied by its derivative at z = xhat * weight + bias.
    """
    dtype = memory.compute_dtype(x.dtype)
    batch, channels = x.shape[:2]
    view = (batch, num_groups, channels // num_groups, math.prod(x.shape[2:]))
    x4 = x.reshape(view).to(dtype)
    dy4 = dy.reshape(view).to(dtype)
    reduced = (2, 3)
    # Shifting by a constant of each group first (its first value) keeps the mean
    # accurate when |mean| >> std; the shift cancels, so the gradients are unchanged.
    shifted = x4 - x4[:, :, :1, :1].detach()
    centered = shifted - shifted.mean(reduced, keepdim=True)
    rstd = (centered.square().mean(reduced, keepdim=True) + eps).rsqrt()
    xhat = centered * rstd
    per_channel = lambda p: p.to(dtype).reshape(1, *view[1:3], 1)  # noqa: E731
    if activation is not None:
        z = (xhat if weight is None else xhat * per_channel(weight))
        z = z if bias is None else z + per_channel(bias)
        dy4 = dy4 * _activation_derivative(activation, z)
    g = dy4 if weight is None else dy4 * per_channel(weight)
    dx4 = rstd * (g - g.mean(reduced, keepdim=True)
                  - xhat * (g * xhat).mean(reduced, keepdim=True))
    dweight = (dy4 * xhat).sum((0, 3)).reshape(channels)
    dbias = dy4.sum((0, 3)).reshape(channels)
    return dx4.reshape(x.shape).to(x.dtype), dweight, dbias


def _activation_derivative(activation, z):
    """d activation(z) / dz as differentiable torch operations."""
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "silu":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    cdf = 0.5 * (1 + torch.erf(z * math.sqrt(0.5)))  # gelu, exact
    return cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
