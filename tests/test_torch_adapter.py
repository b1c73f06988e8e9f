"""cugn.interop.torch.GroupNorm against torch.nn.GroupNorm, and torch's gradcheck."""

import pytest

torch = pytest.importorskip("torch")
from cugn.interop.torch import GroupNorm  # noqa: E402 - after the importorskip


def _pair(num_groups, channels, dtype, affine=True, eps=1e-5, seed=0):
    ours = GroupNorm(num_groups, channels, eps=eps, affine=affine).to(dtype)
    reference = torch.nn.GroupNorm(num_groups, channels, eps=eps, affine=affine).to(dtype)
    if affine:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            weight = torch.randn(channels, generator=generator, dtype=dtype)
            bias = torch.randn(channels, generator=generator, dtype=dtype)
            for module in (ours, reference):
                module.weight.copy_(weight)
                module.bias.copy_(bias)
    return ours, reference


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("shape, groups", [((4, 6, 5, 7), 3), ((2, 8, 9), 8), ((3, 4), 1),
                                           ((2, 6, 3, 4, 5), 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_torch_group_norm_forward_and_backward(dtype, tol, shape, groups, affine):
    ours, reference = _pair(groups, shape[1], dtype, affine)
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 3 + 1
    dy = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), reference(x2)
    torch.testing.assert_close(y1, y2, rtol=tol, atol=tol)
    y1.backward(dy)
    y2.backward(dy)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=tol * 10, atol=tol * 10)
    if affine:
        torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=tol * 10,
                                   atol=tol * 10)
        torch.testing.assert_close(ours.bias.grad, reference.bias.grad, rtol=tol * 10,
                                   atol=tol * 10)


@pytest.mark.parametrize("weight_dtype", [torch.float16, torch.float32])
def test_float16_inputs_match_torch_in_float32(weight_dtype):
    ours, reference = _pair(4, 8, torch.float32)
    ours = ours.to(weight_dtype)
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(3)) * 50 + 300
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    x16 = x.half().requires_grad_()
    x32 = x16.detach().float().requires_grad_()  # the same rounded values
    y16, y32 = ours(x16), reference(x32)
    assert y16.dtype == torch.float16
    # float16 rounding of the output (and of the weights, when they are float16)
    torch.testing.assert_close(y16.float(), y32, rtol=2e-3, atol=4e-3)
    y16.backward(dy.half())
    y32.backward(dy.half().float())
    assert x16.grad.dtype == torch.float16 and ours.weight.grad.dtype == weight_dtype
    torch.testing.assert_close(x16.grad.float(), x32.grad, rtol=2e-3, atol=2e-4)
    scale = reference.weight.grad.abs().max()
    torch.testing.assert_close(ours.weight.grad.float(), reference.weight.grad, rtol=0,
                               atol=2e-3 * scale)
    torch.testing.assert_close(ours.bias.grad.float(), reference.bias.grad, rtol=0,
                               atol=2e-3 * reference.bias.grad.abs().max())


def test_torch_gradcheck_float64():
    module = GroupNorm(2, 4).double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 1.5], dtype=torch.float64))
        module.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0], dtype=torch.float64))
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5),
                    requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))
    from cugn.interop.torch import GroupNormFunction

    weight = module.weight.detach().clone().requires_grad_()
    bias = module.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, w, b: GroupNormFunction.apply(a, w, b, 2, 1e-5), (x, weight, bias))


def test_output_shares_no_memory_with_input_and_module_trains():
    module = GroupNorm(2, 4)
    x = torch.randn(3, 4, 5)
    y = module(x)
    assert y.data_ptr() != x.data_ptr()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    loss = (module(x) * torch.arange(4.0).reshape(1, 4, 1)).sum()
    loss.backward()
    optimizer.step()
    assert not torch.equal(module.weight.detach(), torch.ones(4))


def test_constructor_and_input_checks():
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(3, 4)
    with pytest.raises(ValueError, match="num_groups"):
        GroupNorm(0, 4)
    with pytest.raises(ValueError, match=r"\(N, 4, \*\)"):
        GroupNorm(2, 4)(torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match="float16, float32 or float64.*bfloat16"):
        GroupNorm(2, 4)(torch.randn(2, 4, 5).bfloat16())
    with pytest.raises(ValueError, match="weight is torch.float64 .* input is torch.float32"):
        GroupNorm(2, 4).double()(torch.randn(2, 4, 5))
    assert repr(GroupNorm(2, 4)) == "GroupNorm(2, 4, eps=1e-05, affine=True)"


@pytest.mark.gpu
def test_cuda_matches_torch_group_norm():
    ours, reference = _pair(4, 8, torch.float32)
    ours, reference = ours.cuda(), reference.cuda()
    x = torch.randn(2, 8, 6, 6, device="cuda", requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y1, y2 = ours(x), reference(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    y1.sum().backward()
    y2.sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_cuda_float16_matches_torch_in_float32():
    ours, reference = _pair(4, 8, torch.float32)
    ours, reference = ours.cuda(), reference.cuda()
    x16 = (torch.randn(2, 8, 6, 6, device="cuda") * 20 + 100).half().requires_grad_()
    x32 = x16.detach().float().requires_grad_()
    y16, y32 = ours(x16), reference(x32)
    torch.testing.assert_close(y16.float(), y32, rtol=2e-3, atol=4e-3)
    y16.float().square().sum().backward()
    y32.square().sum().backward()
    torch.testing.assert_close(x16.grad.float(), x32.grad, rtol=5e-3, atol=5e-3)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=2e-3, atol=2e-3)
