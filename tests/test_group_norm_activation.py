"""Group normalization with a fused activation, on the CPU: the op, the layer,
gelu and erf (the kernels' fused path is in test_cuda_on_cpu.py and, on a GPU,
test_group_norm_gpu.py)."""

import math

import ml_dtypes
import numpy as np
import pytest

import cugn
from cugn.functional import group_norm
from cugn.functions import normalization
from cugn.kernels import GroupLayout
from cugn.layers import GroupNormalization

ACTIVATIONS = {"silu": cugn.silu, "swish": cugn.silu, "relu": cugn.relu,
               "gelu": cugn.functional.gelu}
LAYOUTS = [((2, 4, 4, 8), -1, 4), ((2, 8, 3, 3), 1, 2), ((2, 3, 4, 6), [1, 3], 3)]
DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]


def make_case(shape, axis, dtype, seed=0):
    rng = np.random.default_rng(seed)
    feature = tuple(shape[a] for a in ([axis] if isinstance(axis, int) else axis))
    x = cugn.tensor((0.5 + 2 * rng.standard_normal(shape)).astype(dtype), requires_grad=True)
    gamma = cugn.tensor(1 + 0.5 * rng.standard_normal(feature), dtype=dtype, requires_grad=True)
    beta = cugn.tensor(rng.standard_normal(feature), dtype=dtype, requires_grad=True)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dy


def outputs_and_grads(fn, x, gamma, beta, dy):
    y = fn(x, gamma, beta)
    return [y, *cugn.grad(y, [x, gamma, beta], cugn.tensor(dy))]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape, axis, groups", LAYOUTS, ids=str)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_the_cpu_path_is_the_composition_bit_for_bit(activation, shape, axis, groups, dtype):
    x, gamma, beta, dy = make_case(shape, axis, dtype)
    fused = outputs_and_grads(
        lambda *a: group_norm(a[0], groups, a[1], a[2], axis, activation=activation),
        x, gamma, beta, dy)
    composed = outputs_and_grads(
        lambda *a: ACTIVATIONS[activation](group_norm(a[0], groups, a[1], a[2], axis)),
        x, gamma, beta, dy)
    for got, want in zip(fused, composed):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("activation", ["silu", "relu", "gelu"])
def test_gradients_match_finite_differences(activation):
    x, gamma, beta, _ = make_case((2, 4, 3, 4), -1, np.float64)
    fn = lambda x, g, b: group_norm(x, 2, g, b, activation=activation)  # noqa: E731
    assert cugn.gradcheck(fn, [x, gamma, beta])
    if activation != "relu":  # relu's second derivative is 0 almost everywhere: nothing to see
        assert cugn.gradgradcheck(fn, [x, gamma, beta])


@pytest.mark.parametrize("activation", ["silu", "relu", "gelu"])
@pytest.mark.parametrize("shape, axis, groups", LAYOUTS[:2], ids=str)
def test_the_fused_create_graph_backward_is_the_compositions(activation, shape, axis, groups):
    # The fused op's create_graph backward runs where the activation is fused (CUDA);
    # here it is called directly, against the composition's, to the second order.
    x, gamma, beta, dy = make_case(shape, axis, np.float64)
    dy = cugn.tensor(dy, requires_grad=True)
    axes = normalization.feature_axes(normalization.check_axis(axis), shape)
    layout = GroupLayout(shape, axes, groups)
    fused = normalization._differentiable_backward(x, dy, gamma, beta, layout, 1e-3, activation)
    y = ACTIVATIONS[activation](group_norm(x, groups, gamma, beta, axis))
    composed = cugn.grad(y, [x, gamma, beta], dy, create_graph=True)
    for got, want in zip(fused, composed):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
    v = np.random.default_rng(1).standard_normal(shape)
    # (relu's slope is constant in beta: beta is then unused in both.)
    second = [cugn.grad((dx * cugn.tensor(v)).sum(), [x, gamma, beta, dy], allow_unused=True)
              for dx in (fused[0], composed[0])]
    for got, want in zip(*second):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-11)


def test_the_fused_backward_needs_beta_to_recompute_the_input():
    # Shifting by beta moves values across relu's kink: the recomputation must see it.
    x, gamma, beta, dy = make_case((2, 4, 3, 4), -1, np.float64)
    layout = GroupLayout((2, 4, 3, 4), (3,), 2)
    with_beta = normalization._differentiable_backward(x, cugn.tensor(dy), gamma, 3 * beta,
                                                       layout, 1e-3, "relu")
    without = normalization._differentiable_backward(x, cugn.tensor(dy), gamma, None, layout,
                                                     1e-3, "relu")
    assert not np.allclose(with_beta[0].numpy(), without[0].numpy())


@pytest.mark.parametrize("activation", [None, "silu"])
def test_the_array_level_kernels_fuse_only_on_cupy_arrays(activation):
    from cugn import kernels

    layout = GroupLayout((2, 8), (1,), 2)
    x = np.ones((2, 8), np.float32)
    if activation is None:
        kernels.forward(x, None, None, layout, 1e-3)
        return
    needs_cupy = "fused activation, or storage='bfloat16', needs CuPy arrays"
    with pytest.raises(ValueError, match=needs_cupy):
        kernels.forward(x, None, None, layout, 1e-3, activation)
    with pytest.raises(ValueError, match=needs_cupy):
        kernels.backward(x, x, None, np.zeros((2, 2)), np.ones((2, 2)), layout, None,
                         activation)


@pytest.mark.parametrize("bad", ["tanh", "Silu", 3, cugn.silu])
def test_an_unknown_activation_is_named_before_any_work(bad):
    x = cugn.tensor(np.ones((2, 8), np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=f"activation must be one of None, 'silu', 'relu', "
                                         f"'gelu', 'swish', got {bad!r}"):
        group_norm(x, 2, activation=bad)
    with pytest.raises(ValueError, match="activation must be one of"):
        GroupNormalization(groups=2, activation=bad)


# ------------------------------------------------------------------ the layer


def test_the_layer_applies_its_activation():
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 8)).astype(np.float32)
    plain = GroupNormalization(groups=4)(x).numpy()
    for name, reference in (("silu", lambda z: z / (1 + np.exp(-z))),
                            ("relu", lambda z: np.maximum(z, 0))):
        got = GroupNormalization(groups=4, activation=name)(x).numpy()
        np.testing.assert_allclose(got, reference(plain), rtol=2e-6, atol=1e-6)


def test_the_config_carries_the_activation_only_when_it_is_set():
    assert "activation" not in GroupNormalization(groups=4).get_config()
    layer = GroupNormalization(groups=4, activation="swish")
    config = layer.get_config()
    assert config["activation"] == "silu"  # Keras serialises swish as silu
    again = GroupNormalization.from_config(config)
    assert again.activation == "silu" and again.get_config() == config


def test_a_config_without_activation_is_still_keras():
    keras = pytest.importorskip("keras")
    ours = GroupNormalization(groups=4).get_config()
    theirs = keras.layers.GroupNormalization(groups=4).get_config()
    assert set(ours) == set(theirs)


# ------------------------------------------------------------------ gelu and erf


def test_erf_and_gelu_match_the_standard_library_in_float64():
    values = np.concatenate([np.linspace(-9, 9, 181), [0.0, -0.0, 1e-300, -40.0, 40.0]])
    erf = np.array([math.erf(v) for v in values])
    np.testing.assert_allclose(cugn.erf(cugn.tensor(values)).numpy(), erf, rtol=1e-15,
                               atol=1e-300)
    np.testing.assert_allclose(cugn.functional.gelu(cugn.tensor(values)).numpy(),
                               values * 0.5 * (1 + np.array([math.erf(v / math.sqrt(2))
                                                             for v in values])),
                               rtol=4e-15, atol=1e-300)


def test_gelu_matches_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(0).standard_normal(1000) * 4
    x = cugn.tensor(values, requires_grad=True)
    cugn.functional.gelu(x).sum().backward()
    t = torch.tensor(values, requires_grad=True)
    torch.nn.functional.gelu(t).sum().backward()
    np.testing.assert_allclose(cugn.functional.gelu(cugn.tensor(values)).numpy(),
                               torch.nn.functional.gelu(torch.tensor(values)).numpy(),
                               rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gelu_keeps_the_dtype_and_stays_finite_for_large_values(dtype):
    big = float(ml_dtypes.finfo(dtype).max) / 4
    values = np.array([-big, -6e4, -10, -1, 0, 1, 10, big], dtype)
    x = cugn.tensor(values, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = cugn.functional.gelu(x)
        y.sum().backward()
    assert y.dtype == np.dtype(dtype) and x.grad.dtype == np.dtype(dtype)
    a = values.astype(np.float64)
    cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in a])
    density = np.exp(-0.5 * np.minimum(np.abs(a), 100) ** 2) / math.sqrt(2 * math.pi)
    eps = float(ml_dtypes.finfo(dtype).eps)
    np.testing.assert_allclose(y.numpy().astype(np.float64), a * cdf, rtol=4 * eps, atol=0)
    np.testing.assert_allclose(x.grad.numpy().astype(np.float64), cdf + a * density,
                               rtol=4 * eps, atol=1e-20)


def test_gelu_and_erf_gradients():
    x = cugn.tensor(np.linspace(-3, 3, 7) + 0.1, requires_grad=True)
    assert cugn.gradcheck(cugn.functional.gelu, [x])
    assert cugn.gradgradcheck(cugn.functional.gelu, [x])
    assert cugn.gradcheck(cugn.erf, [x])
    assert cugn.gradgradcheck(cugn.erf, [x])
    assert cugn.activations.get("gelu") is cugn.functional.gelu
