"""Conv2D and pooling: outputs against direct loops (and torch), gradients by finite differences."""

import numpy as np
import pytest

import cugn
from cugn.functions.convolution import avg_pool2d, conv2d, max_pool2d, window_geometry
from cugn.layers import AveragePooling2D, Conv2D, GlobalAveragePooling2D, MaxPooling2D

LAYOUTS = ["channels_last", "channels_first"]


def _padded_nhwc(x, kernel, strides, padding, fill):
    geometry = [window_geometry(x.shape[1 + a], kernel[a], strides[a], padding) for a in (0, 1)]
    pads = ((0, 0), geometry[0][1:], geometry[1][1:], (0, 0))
    return np.pad(x, pads, constant_values=fill), geometry[0][0], geometry[1][0]


def conv_loop(x, kernel, bias, strides, padding):
    """Direct NHWC cross-correlation, one output position at a time."""
    kh, kw, _, filters = kernel.shape
    padded, h_out, w_out = _padded_nhwc(x, (kh, kw), strides, padding, 0.0)
    y = np.zeros((x.shape[0], h_out, w_out, filters))
    for i in range(h_out):
        for j in range(w_out):
            window = padded[:, i * strides[0]:i * strides[0] + kh, j * strides[1]:j * strides[1] + kw]
            y[:, i, j] = np.einsum("nhwc,hwcf->nf", window, kernel) + bias
    return y


def pool_loop(x, pool, strides, padding, reduce):
    fill = -np.inf if reduce == "max" else np.nan
    padded, h_out, w_out = _padded_nhwc(x, pool, strides, padding, fill)
    y = np.zeros((x.shape[0], h_out, w_out, x.shape[3]))
    for i in range(h_out):
        for j in range(w_out):
            window = padded[:, i * strides[0]:i * strides[0] + pool[0],
                            j * strides[1]:j * strides[1] + pool[1]]
            y[:, i, j] = window.max(axis=(1, 2)) if reduce == "max" else np.nanmean(window, axis=(1, 2))
    return y


def _nchw(a):
    return a.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (2, 1)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_matches_direct_loop(data_format, strides, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3))
    kernel = rng.standard_normal((3, 2, 3, 4))
    bias = rng.standard_normal(4)
    expected = conv_loop(x, kernel, bias, strides, padding)
    if data_format == "channels_first":
        x, expected = _nchw(x), _nchw(expected)
    got = conv2d(x, kernel, bias, strides, padding, data_format)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("strides", [1, (2, 1)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_gradcheck(data_format, strides, padding):
    rng = np.random.default_rng(1)
    shape = (2, 5, 4, 2) if data_format == "channels_last" else (2, 2, 5, 4)
    x = cugn.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)
    kernel = cugn.tensor(rng.standard_normal((3, 2, 2, 3)), dtype=np.float64, requires_grad=True)
    cugn.gradcheck(lambda a, k: conv2d(a, k, None, strides, padding, data_format), [x, kernel])


def test_conv2d_second_derivative():
    rng = np.random.default_rng(2)
    x = cugn.tensor(rng.standard_normal((1, 4, 4, 2)), dtype=np.float64, requires_grad=True)
    kernel = cugn.tensor(rng.standard_normal((2, 2, 2, 2)), dtype=np.float64, requires_grad=True)
    cugn.gradgradcheck(lambda a, k: conv2d(a, k, None, 2, "same").tanh(), [x, kernel])


@pytest.mark.parametrize("data_format", LAYOUTS)
def test_conv2d_layer_is_the_checked_function(data_format):
    layer = Conv2D(3, 3, strides=2, padding="same", data_format=data_format, dtype="float64",
                   bias_initializer="random_normal", activation="tanh")
    rng = np.random.default_rng(3)
    shape = (2, 5, 5, 2) if data_format == "channels_last" else (2, 2, 5, 5)
    x = cugn.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)
    cugn.gradcheck(layer, [x])
    kernel = cugn.tensor(layer.kernel.data, requires_grad=True)
    bias = cugn.tensor(layer.bias.data, requires_grad=True)

    def conv(a, k, b):
        return conv2d(a, k, b, (2, 2), "same", data_format).tanh()

    cugn.gradcheck(conv, [x, kernel, bias])
    layer(x).sum().backward()
    conv(x, kernel, bias).sum().backward()
    np.testing.assert_allclose(layer.kernel.grad.numpy(), kernel.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad.numpy(), bias.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("strides, padding", [  # torch's "same" needs stride 1
    ((1, 1), "valid"), ((2, 2), "valid"), ((1, 2), "valid"), ((1, 1), "same")])
def test_conv2d_matches_torch(data_format, strides, padding):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x),
                                          torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()),
                                          stride=strides, padding=padding).numpy()
    if data_format == "channels_last":
        x, expected = x.transpose(0, 2, 3, 1), expected.transpose(0, 2, 3, 1)
    got = conv2d(x, kernel, None, strides, padding, data_format)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reduce, pool", [("max", max_pool2d), ("avg", avg_pool2d)])
@pytest.mark.parametrize("strides", [None, 1, (1, 2)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pooling_matches_direct_loop(reduce, pool, strides, padding):
    x = np.random.default_rng(5).standard_normal((2, 5, 7, 3))
    step = (2, 3) if strides is None else (strides, strides) if isinstance(strides, int) else strides
    expected = pool_loop(x, (2, 3), step, padding, reduce)
    np.testing.assert_allclose(pool(x, (2, 3), strides, padding).numpy(), expected, rtol=1e-12)
    got_nchw = pool(_nchw(x), (2, 3), strides, padding, "channels_first").numpy()
    np.testing.assert_allclose(got_nchw, _nchw(expected), rtol=1e-12)


@pytest.mark.parametrize("pool", [max_pool2d, avg_pool2d])
@pytest.mark.parametrize("data_format", LAYOUTS)
@pytest.mark.parametrize("strides, padding", [(None, "valid"), (1, "same"), (2, "same")])
def test_pooling_gradcheck(pool, data_format, strides, padding):
    # Distinct values: finite differences at a tie are not a derivative.
    values = np.random.default_rng(6).permutation(2 * 5 * 5 * 2).reshape(2, 5, 5, 2) / 10.0
    x = cugn.tensor(values, dtype=np.float64, requires_grad=True)
    cugn.gradcheck(lambda a: pool(a, 2, strides, padding, data_format), [x])


def test_max_pool_ties_share_the_gradient_equally():
    x = cugn.tensor(np.ones((1, 2, 2, 1)), dtype=np.float64, requires_grad=True)
    max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((1, 2, 2, 1), 0.25))
    # Overlapping windows: each window hands its share to its own maxima.
    y = cugn.tensor([[[[1.0], [3.0], [3.0]]]], dtype=np.float64, requires_grad=True)
    max_pool2d(y, (1, 2), strides=1).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy().ravel(), [0.0, 1.5, 0.5])


def test_pooling_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(7).standard_normal((2, 3, 6, 8)).astype(np.float32)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(
        max_pool2d(x, 2, None, "valid", "channels_first").numpy(),
        torch.nn.functional.max_pool2d(t, 2).numpy())
    np.testing.assert_allclose(
        avg_pool2d(x, (2, 3), 1, "valid", "channels_first").numpy(),
        torch.nn.functional.avg_pool2d(t, (2, 3), 1).numpy(), rtol=1e-6)


def test_pooling_layers_and_global_average():
    x = np.random.default_rng(8).standard_normal((2, 4, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(MaxPooling2D()(x).numpy(), max_pool2d(x, 2).numpy())
    np.testing.assert_array_equal(AveragePooling2D(3, 1, "same")(x).numpy(),
                                  avg_pool2d(x, 3, 1, "same").numpy())
    np.testing.assert_allclose(GlobalAveragePooling2D()(x).numpy(), x.mean(axis=(1, 2)), rtol=1e-6)
    first = GlobalAveragePooling2D("channels_first", keepdims=True)(_nchw(x)).numpy()
    np.testing.assert_allclose(first, _nchw(x).mean(axis=(2, 3), keepdims=True), rtol=1e-6)
    t = cugn.tensor(x, dtype=np.float64, requires_grad=True)
    cugn.gradcheck(GlobalAveragePooling2D(dtype="float64"), [t])


@pytest.mark.parametrize("kwargs, match", [
    ({"filters": 0, "kernel_size": 3}, "filters"),
    ({"filters": 2, "kernel_size": (3, 0)}, "kernel_size"),
    ({"filters": 2, "kernel_size": 3, "strides": 1.5}, "strides"),
    ({"filters": 2, "kernel_size": 3, "padding": "full"}, "padding"),
    ({"filters": 2, "kernel_size": 3, "data_format": "NHWC"}, "data_format"),
])
def test_conv2d_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Conv2D(**kwargs)


def test_conv2d_rejects_bad_inputs():
    with pytest.raises(ValueError, match="4-D"):
        conv2d(np.zeros((2, 3, 3)), np.zeros((1, 1, 3, 1)))
    with pytest.raises(ValueError, match="kernel must have shape"):
        conv2d(np.zeros((2, 3, 3, 2)), np.zeros((1, 1, 3, 1)))
    with pytest.raises(ValueError, match="does not fit"):
        conv2d(np.zeros((1, 2, 2, 1)), np.zeros((3, 3, 1, 1)))
