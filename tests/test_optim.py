"""Optimizers: hand-computed updates, torch.optim parity, constraints, all-or-nothing steps."""

import numpy as np
import pytest

import cugn
from cugn.engine.parameter import Parameter
from cugn.layers import Dense
from cugn.optim import SGD, Adam, AdamW


def _param(values, **kwargs):
    return Parameter(np.array(values, dtype=np.float64), **kwargs)


def _set_grad(param, values):
    param.grad = cugn.tensor(np.array(values, dtype=np.float64))


def test_sgd_plain_and_weight_decay_by_hand():
    p = _param([1.0, -2.0])
    opt = SGD([p], lr=0.1, weight_decay=0.5)
    _set_grad(p, [0.2, 0.4])
    opt.step()
    # g = grad + 0.5 p = [0.7, -0.6]; p - 0.1 g
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.07, -2.0 + 0.06])


def test_sgd_momentum_and_nesterov_by_hand():
    p, q = _param([1.0]), _param([1.0])
    heavy, nesterov = SGD([p], lr=0.1, momentum=0.9), SGD([q], lr=0.1, momentum=0.9, nesterov=True)
    for grad in ([1.0], [2.0]):
        _set_grad(p, grad)
        _set_grad(q, grad)
        heavy.step()
        nesterov.step()
    # buffers: 1, then 0.9 * 1 + 2 = 2.9
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.1 * 1.0 - 0.1 * 2.9])
    # nesterov steps: g + 0.9 buf = 1 + 0.9 = 1.9, then 2 + 0.9 * 2.9 = 4.61
    np.testing.assert_allclose(q.numpy(), [1.0 - 0.1 * 1.9 - 0.1 * 4.61])


def test_adam_and_adamw_first_steps_by_hand():
    p, q = _param([1.0]), _param([1.0])
    adam = Adam([p], lr=0.01, weight_decay=0.1)
    adamw = AdamW([q], lr=0.01, weight_decay=0.1)
    _set_grad(p, [0.5])
    _set_grad(q, [0.5])
    adam.step()
    adamw.step()
    # Adam's first step moves by lr * m_hat / (sqrt(v_hat) + eps) = lr * sign(g) (nearly).
    g = 0.5 + 0.1 * 1.0
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.01 * g / (abs(g) + 1e-8)], rtol=1e-12)
    decayed = 1.0 * (1 - 0.01 * 0.1)
    np.testing.assert_allclose(q.numpy(), [decayed - 0.01 * 0.5 / (0.5 + 1e-8)], rtol=1e-12)
    _set_grad(p, [-0.25])
    adam.step()
    g2 = -0.25 + 0.1 * (1.0 - 0.01 * g / (abs(g) + 1e-8))
    m = 0.9 * 0.1 * g + 0.1 * g2
    v = 0.999 * 0.001 * g * g + 0.001 * g2 * g2
    expected = (1.0 - 0.01 * g / (abs(g) + 1e-8)) - 0.01 / (1 - 0.81) * m / (
        np.sqrt(v) / np.sqrt(1 - 0.999 ** 2) + 1e-8)
    np.testing.assert_allclose(p.numpy(), [expected], rtol=1e-12)


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "eps": 1e-6}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.02, "weight_decay": 0.3}),
])
def test_matches_torch_optim(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((3, 4)), rng.standard_normal(4)]
    ours = [Parameter(a.copy()) for a in start]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in start]
    opt = getattr(cugn.optim, name)(ours, **kwargs)
    reference = getattr(torch.optim, name)(theirs, **kwargs)
    for _ in range(5):
        grads = [rng.standard_normal(a.shape) for a in start]
        for p, t, g in zip(ours, theirs, grads):
            p.grad = cugn.tensor(g)
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        reference.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_constraint_is_applied_after_the_update():
    p = _param([0.5, 2.0], constraint=cugn.constraints.NonNeg())
    opt = SGD([p], lr=1.0)
    _set_grad(p, [1.0, 1.0])
    opt.step()
    np.testing.assert_array_equal(p.numpy(), [0.0, 1.0])


def test_failing_step_changes_nothing():
    good, bad = _param([1.0, 2.0]), _param([3.0])
    opt = Adam([good, bad], lr=0.1)
    _set_grad(good, [0.1, 0.1])
    _set_grad(bad, [0.1])
    opt.step()
    weights = [good.numpy().copy(), bad.numpy().copy()]
    state = [{k: np.copy(v) for k, v in s.items()} for s in opt.state]
    _set_grad(good, [0.2, 0.2])
    _set_grad(bad, [0.1, 0.2])  # wrong shape, after a good gradient
    with pytest.raises(ValueError, match=r"params\[1\].*shape \(2,\).*nothing was updated"):
        opt.step()
    _assert_unchanged(opt, [good, bad], weights, state)

    checked = SGD([good, bad], lr=0.1, momentum=0.9, nan_check=True)
    _set_grad(bad, [np.nan])
    with pytest.raises(ValueError, match="NaN"):
        checked.step()
    _assert_unchanged(opt, [good, bad], weights, state)
    assert checked.state == [{}, {}] and checked.steps == 0


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_nan_check_rejects_every_non_finite_gradient(value):
    good, bad = _param([1.0, 2.0]), _param([3.0])
    opt = SGD([good, bad], lr=0.1, nan_check=True)
    _set_grad(good, [0.5, 0.5])
    _set_grad(bad, [value])
    with pytest.raises(ValueError, match=r"params\[1\].*NaN or infinity"):
        opt.step()
    _assert_unchanged(opt, [good, bad], [[1.0, 2.0], [3.0]], [{}, {}])


def test_a_constraint_that_raises_mid_step_changes_nothing():
    def refuse(weight):
        raise RuntimeError("constraint refused")

    first, second = _param([1.0, 2.0]), _param([3.0], constraint=refuse)
    opt = Adam([first, second], lr=0.1)
    _set_grad(first, [0.1, 0.1])
    _set_grad(second, [0.1])
    with pytest.raises(RuntimeError, match="constraint refused"):
        opt.step()
    _assert_unchanged(opt, [first, second], [[1.0, 2.0], [3.0]], [{}, {}])
    assert opt.steps == 0


def test_a_non_floating_gradient_is_rejected():
    p = _param([1.0, 2.0])
    opt = SGD([p], lr=0.1)
    p.grad = cugn.Tensor(np.array([1, 2]))
    with pytest.raises(TypeError, match=r"params\[0\].*dtype int64"):
        opt.step()
    _assert_unchanged(opt, [p], [[1.0, 2.0]], [{}])


def _assert_unchanged(opt, params, weights, state):
    for p, w in zip(params, weights):
        np.testing.assert_array_equal(p.numpy(), w)
    for now, before in zip(opt.state, state):
        assert now.keys() == before.keys()
        for key in now:
            np.testing.assert_array_equal(now[key], before[key])


def test_zero_grad_skips_and_model_params():
    layer = Dense(2)
    layer(np.ones((1, 3), np.float32))
    opt = SGD(layer, lr=0.1)  # a layer stands for its trainable weights
    assert opt.params == layer.trainable_weights
    before = layer.get_weights()
    opt.step()  # no gradients yet: nothing moves
    for a, b in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    layer(np.ones((1, 3), np.float32)).sum().backward()
    opt.step()
    assert not np.array_equal(layer.get_weights()[0], before[0])
    opt.zero_grad()
    assert all(p.grad is None for p in opt.params)


def test_regularization_loss_helper():
    layer = Dense(2, kernel_regularizer=cugn.regularizers.L2(0.5))
    assert cugn.regularization_loss(layer).item() == 0.0  # not built: no weights yet
    layer(np.ones((1, 3), np.float32))
    expected = 0.5 * np.sum(layer.kernel.numpy() ** 2)
    np.testing.assert_allclose(cugn.regularization_loss(layer).item(), expected, rtol=1e-6)
    with pytest.raises(TypeError, match="model must be a Layer"):
        cugn.regularization_loss([1, 2])


@pytest.mark.parametrize("make, match", [
    (lambda p: SGD(p, lr=-1), "lr"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "nesterov"),
    (lambda p: Adam(p, betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda p: Adam(p, betas=0.9), "betas"),
    (lambda p: AdamW(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: SGD([], lr=0.1), "empty"),
    (lambda p: SGD(p + p, lr=0.1), "more than once"),
    (lambda p: SGD([np.zeros(2)], lr=0.1), "must be a Tensor"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make([_param([1.0])])


def test_step_is_an_nvtx_range_in_the_optimizer_category(monkeypatch):
    from cugn.profiling import nvtx

    pushed = []
    monkeypatch.setattr(nvtx, "push", lambda message, category: pushed.append((message, category)))
    monkeypatch.setattr(nvtx, "pop", lambda: None)
    p = _param([1.0])
    _set_grad(p, [1.0])
    with nvtx(True):
        AdamW([p]).step()
    with nvtx(False):
        SGD([p], lr=0.1).step()
    assert pushed == [("AdamW.step", "optimizer")]
