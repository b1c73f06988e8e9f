"""cugn.interop.torch against torch.nn.GroupNorm: torch's own module inputs, every
dtype and memory format, gradcheck and gradgradcheck, the torch.library ops,
torch.compile, torch.export and DistributedDataParallel."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cugn import kernels
from cugn.interop.torch import GroupNorm, group_norm

# Tolerances against float64 references: the output rounding of each dtype, a few ulps.
_TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 2e-3,
              torch.bfloat16: 1.6e-2}


def _random(shape, dtype=torch.float32, seed=0, scale=1.0, shift=0.0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale
            + shift).to(dtype)


def _randomise_weights(*modules, seed=0):
    """The same random weight and bias (where there is one) in every module."""
    for module in modules:
        with torch.no_grad():
            for index, parameter in enumerate((module.weight, module.bias)):
                if parameter is not None:
                    parameter.copy_(_random(parameter.shape, seed=seed + index))


def _reference(module, x, dy):
    """torch.nn.GroupNorm in float64 on the same (rounded) values as ``module``'s: the
    output and the gradients of x, weight and bias (None where there is none)."""
    reference = torch.nn.GroupNorm(module.num_groups, module.num_channels, module.eps,
                                   module.affine, bias=module.bias is not None,
                                   dtype=torch.float64)
    with torch.no_grad():
        for mine, theirs in ((module.weight, reference.weight), (module.bias, reference.bias)):
            if mine is not None:
                theirs.copy_(mine.double())
    x64 = x.detach().double().requires_grad_()
    y = reference(x64)
    y.backward(dy.double())
    grads = [None if p is None else p.grad for p in (reference.weight, reference.bias)]
    return y.detach(), x64.grad, *grads


def _assert_close_scaled(actual, expected, tolerance):
    """Equal within ``tolerance`` relative to the largest magnitude of ``expected`` (for
    sums such as the weight gradients, whose small entries carry the big ones' error)."""
    scale = max(expected.abs().max().item() if expected.numel() else 0.0, 1.0)
    torch.testing.assert_close(actual.double(), expected, rtol=tolerance,
                               atol=tolerance * scale)


def _check_against_reference(module, x, dy, tolerance):
    x = x.detach().requires_grad_()
    y = module(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    y.backward(dy)
    expected_y, expected_dx, expected_dweight, expected_dbias = _reference(module, x, dy)
    torch.testing.assert_close(y.double(), expected_y, rtol=tolerance, atol=tolerance)
    _assert_close_scaled(x.grad, expected_dx, tolerance)
    assert x.grad.dtype == x.dtype
    for parameter, expected in ((module.weight, expected_dweight), (module.bias, expected_dbias)):
        if parameter is not None:
            assert parameter.grad.dtype == parameter.dtype
            _assert_close_scaled(parameter.grad, expected, tolerance)


# ------------------------------------------------------------------ torch's own module tests

def _group_norm_module_info():
    from torch.testing._internal import common_modules
    (info,) = [m for m in common_modules.module_db if m.module_cls is torch.nn.GroupNorm]
    return info


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_torch_module_inputs_match_torch_group_norm(dtype):
    info = _group_norm_module_info()
    inputs = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                     training=True)
    assert len(inputs) >= 10 and any("not_bias" in i.desc for i in inputs)
    for seed, module_input in enumerate(inputs):
        constructor = module_input.constructor_input
        module = GroupNorm(*constructor.args, **constructor.kwargs, dtype=dtype)
        if module.affine:
            _randomise_weights(module, seed=seed)
        (x,) = module_input.forward_input.args
        dy = _random(x.shape, dtype, seed=100 + seed)
        _check_against_reference(module, x, dy, _TOLERANCE[dtype])


def test_torch_module_error_inputs_raise_torch_errors():
    info = _group_norm_module_info()
    errors = info.module_error_inputs_func(info, device="cpu", dtype=torch.float32,
                                           requires_grad=False, training=True)
    assert errors
    for error in errors:
        constructor = error.module_error_input.constructor_input
        with pytest.raises(error.error_type, match=error.error_regex):
            GroupNorm(*constructor.args, **constructor.kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, groups", [((4, 6, 5, 7), 3), ((2, 8, 9), 8), ((3, 4), 1),
                                           ((2, 6, 3, 4, 5), 2), ((0, 6, 3), 3)])
@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, False)])
def test_matches_torch_group_norm(dtype, shape, groups, affine, bias):
    module = GroupNorm(groups, shape[1], affine=affine, bias=bias, dtype=dtype)
    if affine:
        _randomise_weights(module)
    x = _random(shape, dtype, seed=1, scale=3, shift=1)
    _check_against_reference(module, x, _random(shape, dtype, seed=2), _TOLERANCE[dtype])


def test_module_matches_torch_constructor_parameters_and_repr():
    for args, kwargs in (((2, 4), {}), ((2, 4, 1e-3, False), {}), ((1, 6), {"bias": False})):
        ours, theirs = GroupNorm(*args, **kwargs), torch.nn.GroupNorm(*args, **kwargs)
        assert repr(ours) == repr(theirs)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        for name, value in theirs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[name], value)
        ours.load_state_dict(theirs.state_dict())
    module = GroupNorm(2, 4, dtype=torch.float64)
    assert module.weight.dtype == torch.float64 and module.bias.dtype == torch.float64


# ------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("weight_dtype", ["input", torch.float32])
def test_half_inputs_are_computed_in_float32(dtype, weight_dtype):
    weight_dtype = dtype if weight_dtype == "input" else weight_dtype
    module = GroupNorm(4, 8, dtype=weight_dtype)
    _randomise_weights(module, seed=3)
    # A mean far larger than the spread: float32 statistics keep it, float16 sums would not.
    x = _random((2, 8, 5, 5), dtype, seed=4, scale=5, shift=100)
    _check_against_reference(module, x, _random(x.shape, dtype, seed=5), _TOLERANCE[dtype])


def test_float64_stays_float64():
    x = _random((2, 4, 3), torch.float64)
    y, mean, rstd = torch.ops.cugn.group_norm(x, None, None, 2, 1e-5)
    assert y.dtype == mean.dtype == rstd.dtype == torch.float64
    y, mean, rstd = torch.ops.cugn.group_norm(x.bfloat16(), None, None, 2, 1e-5)
    assert y.dtype == torch.bfloat16 and mean.dtype == rstd.dtype == torch.float32


def test_bfloat16_reaches_the_kernels_without_a_copy(monkeypatch):
    seen = _record_kernel_inputs(monkeypatch)
    x = _random((2, 4, 3, 3), torch.bfloat16)
    y = GroupNorm(2, 4)(x)
    (array,) = seen
    assert array.dtype.name == "bfloat16"
    assert array.__array_interface__["data"][0] == x.data_ptr()
    assert y.data_ptr() == seen.outputs[0]


def test_autocast_bfloat16_gives_bfloat16_output_and_float32_weight_gradients():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    ours, theirs = GroupNorm(4, 8), torch.nn.GroupNorm(4, 8)
    _randomise_weights(ours, theirs, seed=40)
    x = _random((2, 3, 6, 6), seed=41)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = conv(x).detach()  # bfloat16, as autocast makes it
        y = ours(features)
        expected = theirs(features)
    assert features.dtype == y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected.float(), rtol=1.6e-2, atol=1.6e-2)
    y.float().square().sum().backward()
    expected.float().square().sum().backward()
    assert ours.weight.grad.dtype == torch.float32
    _assert_close_scaled(ours.weight.grad, theirs.weight.grad.double(), 3e-2)


# ------------------------------------------------------------------ memory formats


class _Recorded(list):
    """The x arrays kernels.forward received; ``outputs``: the addresses of its y arrays."""

    def __init__(self):
        super().__init__()
        self.outputs = []


def _record_kernel_inputs(monkeypatch):
    seen = _Recorded()
    forward = kernels.forward

    def recording(x, *args):
        seen.append(x)
        result = forward(x, *args)
        seen.outputs.append(result[0].__array_interface__["data"][0])
        return result

    monkeypatch.setattr(kernels, "forward", recording)
    return seen


@pytest.mark.parametrize("shape, memory_format", [
    ((2, 8, 5, 6), torch.channels_last), ((2, 8, 3, 4, 5), torch.channels_last_3d)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_channels_last_in_channels_last_out_without_a_copy(monkeypatch, shape, memory_format,
                                                           dtype):
    module = GroupNorm(4, 8, dtype=torch.float32 if dtype == torch.bfloat16 else dtype)
    _randomise_weights(module, seed=6)
    x = _random(shape, dtype, seed=7, scale=2).to(memory_format=memory_format)
    seen = _record_kernel_inputs(monkeypatch)
    y = module(x)
    assert y.is_contiguous(memory_format=memory_format) and not y.is_contiguous()
    assert seen[0].shape == (shape[0], *shape[2:], shape[1])  # the NHWC view, axis -1
    assert seen[0].__array_interface__["data"][0] == x.data_ptr()
    assert y.data_ptr() == seen.outputs[0]
    monkeypatch.undo()
    _check_against_reference(module, x, _random(shape, dtype, seed=8), _TOLERANCE[dtype])
    x = x.detach().requires_grad_()
    module(x).backward(_random(shape, dtype, seed=8))
    assert x.grad.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("make", [
    lambda x: x.transpose(2, 3),                        # spatial axes swapped
    lambda x: x[:, :, ::2],                             # a stride of two
    lambda x: x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)[..., 1:],  # NHWC, sliced
    lambda x: x.movedim(1, -1).contiguous().movedim(-1, 1)[:, :, :1, :1],  # channels-last 1x1
    lambda x: x.expand(3, -1, -1, -1),                  # a broadcast batch
])
def test_other_strides_give_torch_numbers(make):
    module = GroupNorm(2, 6, dtype=torch.float64)
    _randomise_weights(module, seed=9)
    x = make(_random((1, 6, 4, 5), torch.float64, seed=10))
    y = module(x)
    assert y.is_contiguous() or y.is_contiguous(memory_format=torch.channels_last)
    _check_against_reference(module, x, _random(x.shape, torch.float64, seed=11), 1e-12)


def test_channels_last_of_a_rank_three_input():
    # (N, C, L) whose memory is (N, L, C): the same channels-last path as NHWC.
    x = _random((3, 6, 7), torch.float64, seed=12).transpose(1, 2).contiguous().transpose(1, 2)
    module = GroupNorm(3, 6, dtype=torch.float64)
    _randomise_weights(module, seed=13)
    y = module(x)
    assert y.stride() == x.stride()
    _check_against_reference(module, x, _random(x.shape, torch.float64, seed=14), 1e-12)


def test_meta_tensors_give_shapes_strides_and_gradients_without_running():
    module = GroupNorm(2, 4, device="meta")
    x = torch.empty(2, 4, 5, 6, device="meta").to(memory_format=torch.channels_last)
    x.requires_grad_()
    y = module(x)
    assert y.is_meta and y.shape == x.shape and y.stride() == x.stride()
    y.sum().backward()
    assert x.grad.is_meta and x.grad.stride() == x.stride() and module.weight.grad.is_meta


# ------------------------------------------------------------------ gradients


def _gradcheck_inputs(memory_format=torch.contiguous_format, bias=True):
    x = _random((2, 6, 3, 4), torch.float64, seed=15, scale=2, shift=1).to(
        memory_format=memory_format).requires_grad_()
    weight = _random((6,), torch.float64, seed=16).requires_grad_()
    b = _random((6,), torch.float64, seed=17).requires_grad_() if bias else None
    return x, weight, b


def _through_the_op(x, weight, bias):
    return torch.ops.cugn.group_norm(x, weight, bias, 3, 1e-5)[0]


def _through_the_function(x, weight, bias):
    return group_norm(x, 3, weight, bias, 1e-5)


@pytest.mark.parametrize("function", [_through_the_function, _through_the_op])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_and_gradgradcheck_float64(function, memory_format, bias):
    inputs = _gradcheck_inputs(memory_format, bias)
    inputs = tuple(i for i in inputs if i is not None)

    def call(x, weight, *rest):
        return function(x, weight, rest[0] if rest else None)

    assert torch.autograd.gradcheck(call, inputs)
    assert torch.autograd.gradgradcheck(call, inputs)


def test_gradient_penalty_matches_torch():
    x, weight, bias = _gradcheck_inputs()
    probe = _random(x.shape, torch.float64, seed=18)

    def penalty(norm, *params):
        (dx,) = torch.autograd.grad((norm(x) * probe).sum(), x, create_graph=True)
        return torch.autograd.grad(dx.square().sum(), (x, *params))

    ours = GroupNorm(3, 6, dtype=torch.float64)
    theirs = torch.nn.GroupNorm(3, 6, dtype=torch.float64)
    with torch.no_grad():
        for module in (ours, theirs):
            module.weight.copy_(weight)
            module.bias.copy_(bias)
    for actual, expected in zip(penalty(ours, ours.weight), penalty(theirs, theirs.weight)):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_first_order_backward_runs_the_kernels_and_create_graph_does_not(monkeypatch):
    calls = []
    backward = kernels.backward
    monkeypatch.setattr(kernels, "backward", lambda *args: calls.append(1) or backward(*args))
    x, weight, bias = _gradcheck_inputs()
    for function in (_through_the_function, _through_the_op):
        loss = (function(x, weight, bias) * x.detach()).square().sum()
        kernel_grads = torch.autograd.grad(loss, (x, weight, bias))
        assert len(calls) == 1
        loss = (function(x, weight, bias) * x.detach()).square().sum()
        formula_grads = torch.autograd.grad(loss, (x, weight, bias), create_graph=True)
        assert len(calls) == 1
        for formula, kernel in zip(formula_grads, kernel_grads):
            assert formula.requires_grad
            torch.testing.assert_close(formula, kernel, rtol=1e-12, atol=1e-12)
        calls.clear()


def test_op_registration_passes_torch_library_opcheck():
    x, weight, bias = _gradcheck_inputs()
    cases = [
        (x, weight, bias, 3, 1e-5),
        (x.detach().to(memory_format=torch.channels_last).requires_grad_(), weight, None, 3, 0.0),
        (_random((2, 4, 2, 3, 2), seed=19).to(memory_format=torch.channels_last_3d), None, None,
         2, 1e-3),
        (_random((2, 4, 6), torch.bfloat16, seed=20)[:, :, ::2], weight[:4].float(), None, 2,
         1e-5),
        (_random((0, 6, 3), seed=21), None, None, 3, 1e-5),
    ]
    for args in cases:
        torch.library.opcheck(torch.ops.cugn.group_norm.default, args)
    dy = _random(x.shape, torch.float64, seed=22)
    _, mean, rstd = torch.ops.cugn.group_norm(x.detach(), weight.detach(), None, 3, 1e-5)
    torch.library.opcheck(torch.ops.cugn.group_norm_backward.default,
                          (x.detach(), dy, weight.detach(), None, mean, rstd, 3))


# ------------------------------------------------------------------ torch.compile and export


class _ConvNormSiLU(torch.nn.Module):
    def __init__(self, memory_format):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = GroupNorm(4, 8)
        self.memory_format = memory_format

    def forward(self, x):
        return F.silu(self.norm(self.conv(x.to(memory_format=self.memory_format))))


def _recording_backend(graphs):
    """aot_eager that keeps the forward and backward graphs it is given."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def keep(graph_module, _inputs):
        graphs.append(graph_module)
        return make_boxed_func(graph_module.forward)

    return aot_autograd(fw_compiler=keep, bw_compiler=keep)


def _ops_in(graph_module):
    return {node.target for node in graph_module.graph.nodes if node.op == "call_function"}


@pytest.mark.parametrize("backend", ["aot_eager", "inductor", "recording"])
def test_torch_compile_fullgraph_matches_eager(backend):
    torch.manual_seed(0)
    model = _ConvNormSiLU(torch.channels_last)
    _randomise_weights(model.norm, seed=23)
    x = _random((2, 3, 6, 6), seed=24).requires_grad_()

    def run(function):
        model.zero_grad()
        x.grad = None
        y = function(x)
        y.square().sum().backward()
        return y.detach(), x.grad, *(p.grad for p in model.parameters())

    expected = run(model)
    graphs = []
    compiled = torch.compile(model, fullgraph=True,
                             backend=_recording_backend(graphs) if backend == "recording"
                             else backend)
    from torch._inductor import config as inductor_config

    # Inductor's C++ compiles in this process: a pool of compile workers costs more to
    # start than the few kernels of this model take to build.
    with inductor_config.patch(compile_threads=1):
        actual = run(compiled)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    assert actual[0].is_contiguous(memory_format=torch.channels_last)
    if backend == "recording":
        forward_graph, backward_graph = graphs
        assert torch.ops.cugn.group_norm.default in _ops_in(forward_graph)
        # The first-order backward is the kernels' op, not the differentiable formula.
        assert torch.ops.cugn.group_norm_backward.default in _ops_in(backward_graph)
        assert torch.ops.aten.rsqrt.default not in _ops_in(backward_graph)


def test_dynamo_sees_no_graph_break():
    model = _ConvNormSiLU(torch.contiguous_format)
    explanation = torch._dynamo.explain(model)(_random((2, 3, 6, 6)))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_torch_export_carries_the_op():
    model = _ConvNormSiLU(torch.contiguous_format)
    _randomise_weights(model.norm, seed=25)
    x = _random((2, 3, 5, 5), seed=26)
    exported = torch.export.export(model, (x,),
                                   dynamic_shapes=({0: torch.export.Dim("batch")},))
    exported = exported.run_decompositions()  # to core ATen: the op stays one node
    assert torch.ops.cugn.group_norm.default in _ops_in(exported.graph_module)
    other = _random((5, 3, 5, 5), seed=27)
    torch.testing.assert_close(exported.module()(other), model(other))


# ------------------------------------------------------------------ activation


@pytest.mark.parametrize("name, reference", [
    ("silu", F.silu), ("swish", F.silu), ("relu", F.relu),
    ("gelu", lambda y: F.gelu(y, approximate="none"))])
def test_activation_applies_after_the_normalization(name, reference):
    module = GroupNorm(2, 4, activation=name, dtype=torch.float64)
    plain = GroupNorm(2, 4, dtype=torch.float64)
    _randomise_weights(module, plain, seed=28)
    x = _random((3, 4, 5), torch.float64, seed=29).requires_grad_()
    torch.testing.assert_close(module(x), reference(plain(x)))
    assert torch.autograd.gradcheck(module, (x,))
    assert repr(module).endswith(f"activation={name!r})")


@pytest.mark.parametrize("activation", ["silu", "relu", "gelu"])
def test_the_fused_create_graph_backward_is_the_compositions(activation):
    # On CUDA the activation is fused and its create_graph backward is this formula;
    # here it is checked on the CPU against torch's autograd of the composition.
    from cugn.interop import torch_ops

    reference = {"silu": F.silu, "relu": F.relu,
                 "gelu": lambda y: F.gelu(y, approximate="none")}[activation]
    x = _random((2, 4, 3, 3), torch.float64, seed=48, scale=2).requires_grad_()
    weight = _random((4,), torch.float64, seed=49).requires_grad_()
    bias = _random((4,), torch.float64, seed=50).requires_grad_()
    dy = _random((2, 4, 3, 3), torch.float64, seed=51).requires_grad_()
    y = reference(F.group_norm(x, 2, weight, bias, 1e-5))
    want = torch.autograd.grad(y, (x, weight, bias), dy, create_graph=True)
    got = torch_ops.differentiable_backward(x, dy, weight, 2, 1e-5, bias, activation)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    v = _random((2, 4, 3, 3), torch.float64, seed=52)
    second = [torch.autograd.grad((dx * v).sum(), (x, weight, bias, dy), allow_unused=True)
              for dx in (got[0], want[0])]
    for g, w in zip(*second):
        if w is None or activation == "relu" and g is None:
            continue  # relu's slope does not depend on its input
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


def test_the_op_takes_an_activation_and_can_leave_it_out():
    x = _random((2, 4, 3), torch.float32, seed=53)
    without = torch.ops.cugn.group_norm(x, None, None, 2, 1e-5)
    with_none = torch.ops.cugn.group_norm(x, None, None, 2, 1e-5, None)
    for a, b in zip(without, with_none):
        torch.testing.assert_close(a, b)
    fake = torch.ops.cugn.group_norm(x.to("meta"), None, None, 2, 1e-5, "silu")
    assert fake[0].shape == x.shape and fake[1].shape == (2, 2)


def test_the_functional_form_takes_an_activation():
    x = _random((2, 4, 3), torch.float64, seed=54)
    torch.testing.assert_close(group_norm(x, 2, activation="swish"), F.silu(group_norm(x, 2)))
    with pytest.raises(ValueError, match="activation must be one of None, 'silu', 'relu', "
                                         "'gelu', 'swish', got 'elu'"):
        group_norm(x, 2, activation="elu")


def test_gelu_is_keras_gelu():
    import keras
    module = GroupNorm(2, 4, activation="gelu", dtype=torch.float64)
    x = _random((3, 4, 5), torch.float64, seed=30, scale=2)
    normalized = GroupNorm(2, 4, dtype=torch.float64)(x).detach().numpy()
    expected = np.asarray(keras.activations.gelu(normalized))
    np.testing.assert_allclose(module(x).detach().numpy(), expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ bad input


def test_constructor_errors_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"num_channels \(4\) must be divisible by num_groups "
                                         r"\(3\)"):
        GroupNorm(3, 4)
    for args, match in (((0, 4), "num_groups must be a positive integer, got 0"),
                        ((2.0, 4), "num_groups must be a positive integer, got 2.0"),
                        ((2, True), "num_channels must be a positive integer, got True"),
                        ((2, 4, -1.0), "eps must be a finite number >= 0, got -1.0"),
                        ((2, 4, float("nan")), "eps must be a finite number >= 0, got nan")):
        with pytest.raises(ValueError, match=match):
            GroupNorm(*args)
    with pytest.raises(ValueError, match="activation must be one of None, 'silu', 'relu', "
                                         "'gelu', 'swish', got 'tanh'"):
        GroupNorm(2, 4, activation="tanh")


def test_input_errors_name_the_argument_and_value():
    module = GroupNorm(2, 4)
    with pytest.raises(ValueError, match=r"\(N, 4, \*\), got \(2, 3, 5\)"):
        module(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"shape \(N, C, \*\), got shape \(4,\)"):
        module(torch.randn(4))
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64.*torch.int64"):
        module(torch.zeros(2, 4, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="input must be a torch.Tensor, got ndarray"):
        module(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="weight is torch.float64 on cpu but the input is "
                                         "torch.float32 on cpu: weight must be torch.float32"):
        GroupNorm(2, 4).double()(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="weight is torch.float64 .* input is torch.float16 .*"
                                         "must be torch.float16 or torch.float32"):
        group_norm(torch.randn(2, 4, 5).half(), 2, torch.ones(4).double())
    with pytest.raises(ValueError, match="weight is torch.bfloat16 .* must be torch.float16 or"):
        group_norm(torch.randn(2, 4, 5).half(), 2, torch.ones(4).bfloat16())
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\) .* got \(3,\)"):
        group_norm(torch.randn(2, 4, 5), 2, torch.ones(4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"channels \(4, shape \(2, 4, 5\)\) must be divisible "
                                         r"by num_groups \(3\)"):
        group_norm(torch.randn(2, 4, 5), 3)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0, got inf"):
        group_norm(torch.randn(2, 4, 5), 2, eps=math.inf)


def test_module_trains_with_a_torch_optimizer():
    module = GroupNorm(2, 4)
    x = _random((3, 4, 5))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    loss = (module(x) * torch.arange(4.0).reshape(1, 4, 1)).sum()
    loss.backward()
    optimizer.step()
    assert not torch.equal(module.weight.detach(), torch.ones(4))
    assert module(x).data_ptr() != x.data_ptr()


# ------------------------------------------------------------------ CUDA


def _cuda_pair(dtype=torch.float32):
    module = GroupNorm(4, 8).cuda().to(dtype)
    _randomise_weights(module, seed=31)
    return module


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_cuda_matches_torch_group_norm(dtype, memory_format):
    module = _cuda_pair(torch.float64 if dtype == torch.float64 else torch.float32)
    x = _random((2, 8, 6, 6), dtype, seed=32, scale=3, shift=5).cuda().to(
        memory_format=memory_format)
    dy = _random(x.shape, dtype, seed=33).cuda()
    x = x.requires_grad_()
    y = module(x)
    assert y.device == x.device
    if memory_format == torch.channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)
    y.backward(dy)
    expected = _reference(module.cpu(), x.detach().cpu(), dy.cpu())  # moves the gradients too
    tolerance = max(_TOLERANCE[dtype], 1e-6)
    torch.testing.assert_close(y.detach().cpu().double(), expected[0], rtol=tolerance,
                               atol=tolerance)
    _assert_close_scaled(x.grad.cpu(), expected[1], tolerance)
    _assert_close_scaled(module.weight.grad, expected[2], tolerance)


@pytest.mark.gpu
def test_cuda_runs_on_torchs_current_stream():
    module = _cuda_pair()
    x = _random((4, 8, 16, 16), seed=34).cuda().requires_grad_()
    expected = module(x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = module(x)
        y.sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(y, expected)


@pytest.mark.gpu
def test_cuda_graph_capture_replays():
    module = _cuda_pair()
    static_x = _random((2, 8, 6, 6), seed=35).cuda().requires_grad_()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up: compiles the kernels outside the capture
        for _ in range(2):
            module(static_x).sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    static_x.grad = None
    with torch.cuda.graph(graph):
        static_y = module(static_x)
        static_y.square().sum().backward()
    fresh = _random(static_x.shape, seed=36).cuda()
    with torch.no_grad():
        static_x.copy_(fresh)
    graph.replay()
    torch.cuda.synchronize()
    x = fresh.clone().requires_grad_()
    expected = module(x)
    expected.square().sum().backward()
    torch.testing.assert_close(static_y, expected)
    torch.testing.assert_close(static_x.grad, x.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_cuda_compile_fullgraph_matches_eager():
    model = _ConvNormSiLU(torch.channels_last).cuda()
    x = _random((2, 3, 6, 6), seed=37).cuda()
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x))


def _on_cpu_and_cuda(module, x, dy):
    """y and the gradients of x, weight and bias (in float64, on the host) from
    ``module`` on the CPU and then on CUDA, and the CUDA output's dtype."""
    results = []
    for device in ("cpu", "cuda"):
        m = module.to(device)
        xd = x.to(device).detach().requires_grad_()
        y = m(xd)
        y.backward(dy.to(device))
        results.append([t.double().cpu() for t in (y, xd.grad, m.weight.grad, m.bias.grad)])
        m.zero_grad()
    return results, y.dtype


@pytest.mark.gpu
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_cuda_bfloat16_reaches_the_kernels_and_matches_the_cpu(memory_format):
    module = GroupNorm(4, 8)
    _randomise_weights(module, seed=40)
    x = _random((2, 8, 6, 6), torch.bfloat16, seed=41).to(memory_format=memory_format)
    (cpu, cuda), dtype = _on_cpu_and_cuda(module, x, _random((2, 8, 6, 6), torch.bfloat16,
                                                             seed=42))
    assert dtype == torch.bfloat16
    for got, want in zip(cuda, cpu):
        torch.testing.assert_close(got, want, rtol=1.6e-2, atol=1.6e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("activation", ["silu", "relu", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_fused_activation_matches_the_cpu_composition(activation, dtype):
    module = GroupNorm(4, 8, activation=activation)
    _randomise_weights(module, seed=43)
    x = _random((2, 8, 5, 5), dtype, seed=44, scale=2)
    (cpu, cuda), _ = _on_cpu_and_cuda(module, x, _random((2, 8, 5, 5), dtype, seed=45))
    tolerance = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5}[dtype]
    for got, want in zip(cuda, cpu):
        torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)


@pytest.mark.gpu
def test_cuda_fused_activation_second_derivatives_and_compile():
    module = GroupNorm(2, 4, activation="silu", dtype=torch.float64).cuda()
    _randomise_weights(module, seed=46)
    x = _random((3, 4, 5), torch.float64, seed=47).cuda().requires_grad_()
    assert torch.autograd.gradcheck(module, (x,))
    assert torch.autograd.gradgradcheck(module, (x,))
    torch.testing.assert_close(torch.compile(module, fullgraph=True)(x), module(x))


# ------------------------------------------------------------------ DistributedDataParallel

# DistributedDataParallel keeps its gloo process group, and the group's threads,
# alive after destroy_process_group (plain PyTorch does too: a DDP Linear does);
# their teardown at interpreter exit aborts now and then ("terminate called without
# an active exception"). The worker leaves with os._exit once its results are
# written, so its exit status says whether its work succeeded, not how the
# teardown raced; an exception before that still exits with 1.
_DDP_WORKER = '''
import os
import sys
import torch
import torch.distributed as dist
from cugn.interop.torch import GroupNorm

rank, world, store, batch_file, out = int(sys.argv[1]), 2, sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), GroupNorm(4, 8), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 4 * 4, 2)).double()
x, target = torch.load(batch_file)
half = x.shape[0] // world
model = torch.nn.parallel.DistributedDataParallel(model)
shard = slice(rank * half, (rank + 1) * half)
torch.nn.functional.mse_loss(model(x[shard]), target[shard]).backward()
if rank == 0:
    torch.save([p.grad for p in model.module.parameters()], out)
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)
'''


def test_distributed_data_parallel_gradients_equal_one_process(tmp_path):
    import os
    import subprocess
    import sys

    import cugn

    x = _random((4, 3, 6, 6), torch.float64, seed=38, scale=2, shift=1)
    target = _random((4, 2), torch.float64, seed=39)
    torch.save((x, target), tmp_path / "batch.pt")
    (tmp_path / "worker.py").write_text(_DDP_WORKER)
    root = os.path.dirname(os.path.dirname(cugn.__file__))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, os.environ.get("PYTHONPATH", "")]), "GLOO_SOCKET_IFNAME": "lo",
        "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(
        [sys.executable, str(tmp_path / "worker.py"), str(rank), str(tmp_path / "store"),
         str(tmp_path / "batch.pt"), str(tmp_path / "grads.pt")],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)]
    try:
        logs = [worker.communicate(timeout=180)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [w.returncode for w in workers] == [0, 0], logs

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), GroupNorm(4, 8), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 4 * 4, 2)).double()
    F.mse_loss(model(x), target).backward()
    distributed = torch.load(tmp_path / "grads.pt")
    assert len(distributed) == 6
    for actual, expected in zip(distributed, (p.grad for p in model.parameters())):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-14)
