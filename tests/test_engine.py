"""The tape: backward, accumulation, graph lifetime, grad modes, hooks and grad()."""

import threading

import ml_dtypes
import numpy as np
import pytest

import cugn


def test_backward_accumulates_into_leaves():
    x = cugn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0, 12.0])


def test_a_leaf_used_twice_gets_both_contributions():
    x = cugn.tensor(3.0, requires_grad=True)
    (x * x + x).backward()
    assert x.grad.item() == pytest.approx(7.0)


def test_graph_is_freed_after_backward():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_non_scalar_backward_needs_a_gradient():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    with pytest.raises(RuntimeError, match="implicit"):
        y.backward()
    y.backward(np.array([1.0, 10.0], dtype=np.float32))
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 30.0])


def test_gradient_of_wrong_shape_is_an_error():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="shape"):
        (x * 2).backward(np.ones(3, np.float32))


def test_grads_do_not_alias_the_seed_or_each_other():
    a = cugn.tensor([1.0, 2.0], requires_grad=True)
    b = cugn.tensor([3.0, 4.0], requires_grad=True)
    seed = np.array([1.0, 1.0], dtype=np.float32)
    (a + b).backward(seed)
    a.grad.data += 5
    np.testing.assert_array_equal(seed, [1.0, 1.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_grads_seen_through_views_do_not_alias_the_seed_or_each_other():
    a = cugn.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    b = cugn.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    seed = np.ones((2, 2), dtype=np.float32)
    (a.reshape(2, 2) + b.T).backward(seed)
    assert not np.shares_memory(a.grad.numpy(), seed)
    assert not np.shares_memory(b.grad.numpy(), seed)
    assert not np.shares_memory(a.grad.numpy(), b.grad.numpy())


def test_broadcast_gradients_sum_back_to_each_shape():
    a = cugn.tensor(np.ones((2, 3)), requires_grad=True)
    b = cugn.tensor(np.ones((3,)), requires_grad=True)
    c = cugn.tensor(np.ones((2, 1)), requires_grad=True)
    (a * b + c).sum().backward()
    assert a.grad.shape == (2, 3) and b.grad.shape == (3,) and c.grad.shape == (2, 1)
    np.testing.assert_allclose(b.grad.numpy(), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(c.grad.numpy(), [[3.0], [3.0]])


def test_gradient_has_the_dtype_of_its_input():
    x = cugn.tensor([1.0, 2.0], dtype=np.float32, requires_grad=True)
    (x * np.array([2.0, 3.0], dtype=np.float64)).sum().backward()
    assert x.grad.dtype == np.float32


def test_a_chain_of_100000_ops_backpropagates():
    x = cugn.tensor(1.0, dtype=np.float64, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0


def test_no_grad_records_nothing():
    x = cugn.tensor([1.0], requires_grad=True)
    with cugn.no_grad():
        y = x * 2
        assert not cugn.is_grad_enabled()
        with cugn.enable_grad():
            z = x * 2
    assert cugn.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad


def test_no_grad_as_a_decorator_and_set_grad_enabled():
    @cugn.no_grad()
    def double(t):
        return t * 2

    x = cugn.tensor([1.0], requires_grad=True)
    assert not double(x).requires_grad
    assert cugn.is_grad_enabled()
    with cugn.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert cugn.is_grad_enabled()


def test_grad_mode_is_per_thread():
    seen = []
    with cugn.no_grad():
        thread = threading.Thread(target=lambda: seen.append(cugn.is_grad_enabled()))
        thread.start()
        thread.join()
    assert seen == [True]


def test_only_floating_tensors_require_grad():
    with pytest.raises(TypeError, match="int64"):
        cugn.tensor([1, 2], requires_grad=True)


def test_requires_grad_cannot_change_on_non_leaves():
    y = cugn.tensor([1.0], requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad = False


def test_detach_cuts_the_graph_and_shares_data():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert d.is_leaf and not d.requires_grad
    d2 = x.detach()
    d2.data[0] = 7.0
    assert x.data[0] == 7.0


def test_hooks_see_and_replace_gradients():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy().copy()))
    handle = x.register_hook(lambda g: g * 10)
    y.sum().backward(retain_graph=True)
    np.testing.assert_allclose(seen[0], [1.0, 1.0])
    np.testing.assert_allclose(x.grad.numpy(), [30.0, 30.0])
    handle.remove()
    x.grad = None
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    y.retain_grad()
    z = y * 2
    z.sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [2.0, 2.0])
    assert z.grad is None


def test_grad_returns_gradients_without_touching_dot_grad():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    w = cugn.tensor([3.0, 4.0], requires_grad=True)
    y = (x * w).sum()
    gx, gw = cugn.grad(y, [x, w])
    np.testing.assert_allclose(gx.numpy(), [3.0, 4.0])
    np.testing.assert_allclose(gw.numpy(), [1.0, 2.0])
    assert x.grad is None and w.grad is None


def test_grad_of_a_non_leaf_input():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    (g,) = cugn.grad((h * h).sum(), h)
    np.testing.assert_allclose(g.numpy(), [4.0, 8.0])


def test_grad_of_an_unused_input():
    x = cugn.tensor([1.0], requires_grad=True)
    unused = cugn.tensor([1.0], requires_grad=True)
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="allow_unused"):
        cugn.grad(y, [x, unused], retain_graph=True)
    gx, gu = cugn.grad(y, [x, unused], allow_unused=True)
    assert gu is None and gx.item() == 2.0


def test_create_graph_gives_differentiable_gradients():
    x = cugn.tensor(2.0, dtype=np.float64, requires_grad=True)
    (dy,) = cugn.grad(x ** 3, x, create_graph=True)
    (d2y,) = cugn.grad(dy, x, create_graph=True)
    (d3y,) = cugn.grad(d2y, x)
    assert (dy.item(), d2y.item(), d3y.item()) == pytest.approx((12.0, 12.0, 6.0))


def test_backward_with_create_graph_leaves_a_differentiable_grad():
    x = cugn.tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    (g2,) = cugn.grad(x.grad.sum(), x)
    np.testing.assert_allclose(g2.numpy(), [6.0, 12.0])


class Cube(cugn.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x * x


class WrongShape(cugn.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad.sum()


def test_custom_function_is_checked_to_second_order():
    x = cugn.tensor(np.linspace(-1, 1, 5), dtype=np.float64, requires_grad=True)
    assert cugn.gradcheck(Cube.apply, [x])
    assert cugn.gradgradcheck(Cube.apply, [x])


def test_custom_function_with_a_wrong_gradient_shape_is_reported():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="WrongShape.backward returned a gradient of shape"):
        WrongShape.apply(x).sum().backward()


def test_tensor_basics():
    t = cugn.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.dtype == np.float32 and t.shape == (2, 2) and t.ndim == 2 and t.device == "cpu"
    assert len(t) == 2 and t.numel() == 4
    assert t[1, 0].item() == 3.0
    assert t.to("cpu") is t
    assert "tensor(" in repr(t)
    data = np.arange(3.0)
    copy = cugn.tensor(data)
    copy.data[0] = 9
    assert data[0] == 0 and copy.dtype == np.float64


def test_bfloat16_tensors():
    t = cugn.tensor(np.array([1.5, 2.5], dtype=ml_dtypes.bfloat16), requires_grad=True)
    (t * t).sum().backward()
    assert t.grad.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(t.grad.numpy().astype(np.float32), [3.0, 5.0])


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="'tpu'"):
        cugn.tensor([1.0], device="tpu")


def test_set_grad_enabled_as_a_decorator_changes_the_mode_inside_only():
    @cugn.set_grad_enabled(False)
    def inside():
        return cugn.is_grad_enabled()

    assert cugn.is_grad_enabled()
    assert inside() is False
    assert cugn.is_grad_enabled()


def test_numpy_scalars_are_operands_like_python_numbers():
    x = cugn.tensor(np.ones(2))                      # float64
    np.testing.assert_array_equal((x * np.float64(0.1)).numpy(), [0.1, 0.1])
    assert (cugn.tensor([1.0]) * np.float64(0.1)).dtype == np.float32
    assert cugn.tensor(np.float64(0.1)).dtype == np.float64


def test_integer_outputs_carry_no_gradient():
    x = cugn.tensor([1.5, 2.5], requires_grad=True)
    assert not x.to(dtype=np.int64).requires_grad
    assert not (x > 2).requires_grad


def test_leaf_grads_are_writable_arrays_of_their_own():
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    (x.sum() * 2).backward()                         # the gradient arrives as a broadcast view
    x.grad.data *= 0.5
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])


def test_replacing_saved_data_before_backward_is_an_error():
    w = cugn.tensor([1.0, 2.0], requires_grad=True)
    x = cugn.tensor([1.0, 2.0], requires_grad=True)
    loss = (w * x).sum()
    x.data = np.array([100.0, 100.0], np.float32)
    with pytest.raises(RuntimeError, match="replaced since the forward"):
        loss.backward()


def test_relu_and_pow_at_their_edges():
    x = cugn.tensor([-np.inf, 0.0, np.inf], requires_grad=True)
    np.testing.assert_array_equal(cugn.relu(x).numpy(), [0.0, 0.0, np.inf])
    a = cugn.tensor([0.0, 2.0], requires_grad=True)
    (a ** 0).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 0.0])
    b = cugn.tensor([0.0, 2.0], requires_grad=True)
    (b ** cugn.tensor([0.0, 0.0])).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), [0.0, 0.0])
    e = cugn.tensor([0.5], requires_grad=True)
    with np.errstate(invalid="ignore"):
        ((-2.0) ** e).sum().backward()            # NaN, as for a Tensor base, not a crash
    assert np.isnan(e.grad.numpy()).all()


def test_a_leaf_hook_runs_once_on_the_summed_gradient():
    x = cugn.tensor([1.0, 1.0], requires_grad=True)
    seen = []

    def clamp(grad):
        seen.append(grad.numpy().copy())
        return cugn.tensor(np.minimum(grad.numpy(), 4.0))

    x.register_hook(clamp)
    (x * 2 + x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 4.0])   # as torch: clamp(2 + 3)
    assert len(seen) == 1 and seen[0].tolist() == [5.0, 5.0]
    (g,) = cugn.grad((x * 2 + x * 3).sum(), x)                    # grad() runs it too
    np.testing.assert_array_equal(g.numpy(), [4.0, 4.0])
    other, other_calls = cugn.tensor([1.0, 1.0], requires_grad=True), []
    other.register_hook(other_calls.append)
    cugn.grad((x * other).sum(), x)                              # but not on other leaves
    assert other_calls == [] and other.grad is None


def test_a_leaf_gradient_is_delivered_as_soon_as_it_is_complete():
    # w2 is used by the last op only: its hooks run before the backward reaches the first
    # op, whose output hook marks that point; w1, used by the first op, comes after.
    x = cugn.tensor([0.5, -1.0], dtype=np.float64)
    w1 = cugn.tensor([2.0, 3.0], dtype=np.float64, requires_grad=True)
    w2 = cugn.tensor([4.0, 5.0], dtype=np.float64, requires_grad=True)
    events = []
    first = x * w1
    first.register_hook(lambda g: events.append("first op's output"))
    w1.register_post_accumulate_grad_hook(lambda t: events.append("w1"))
    w2.register_hook(lambda g: events.append("w2 hook"))
    w2.register_post_accumulate_grad_hook(lambda t: events.append("w2 accumulated"))
    (first.tanh() * w2).sum().backward()
    assert events == ["w2 hook", "w2 accumulated", "first op's output", "w1"]


def test_post_accumulate_hooks_see_the_complete_gradient_once():
    x = cugn.tensor([0.5, -1.0], dtype=np.float64)
    w = cugn.tensor([2.0, 3.0], dtype=np.float64, requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))

    def loss():  # w feeds the last op and, through a longer path, the first one
        return (w * (w * x).tanh()).sum()

    w_, x_ = w.numpy(), x.numpy()
    expected = np.tanh(w_ * x_) + w_ * x_ * (1 - np.tanh(w_ * x_) ** 2)
    loss().backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], expected, rtol=1e-14)
    loss().backward()                                   # accumulated: the hook sees the sum
    np.testing.assert_allclose(seen[1], 2 * expected, rtol=1e-14)
    cugn.grad(loss(), w)                                # grad() does not accumulate
    assert len(seen) == 2
    handle.remove()
    loss().backward()
    assert len(seen) == 2


def test_post_accumulate_hooks_need_a_leaf_that_requires_grad():
    x = cugn.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor"):
        (x * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(RuntimeError, match="leaf tensor"):
        cugn.tensor([1.0]).register_post_accumulate_grad_hook(print)
