"""Dense, Activation, Flatten, Dropout, Sequential, save/load and composition."""

import numpy as np
import pytest

import cugn
from cugn.layers import (Activation, AveragePooling2D, Conv2D, Dense, Dropout, Flatten,
                         GlobalAveragePooling2D, GroupNormalization, MaxPooling2D, Sequential,
                         group_normalization)


def small_model():
    return Sequential([
        Conv2D(4, 3, padding="same", activation="relu", kernel_regularizer="l2"),
        GroupNormalization(groups=2),
        MaxPooling2D(),
        Flatten(),
        Dropout(0.5, seed=0),
        Dense(3, bias_regularizer="l1"),
    ])


def test_dense_matches_numpy_and_gradcheck():
    layer = Dense(4, activation="tanh", bias_initializer="random_normal", dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 5))
    y = layer(x)
    kernel, bias = layer.get_weights()
    assert kernel.shape == (5, 4) and bias.shape == (4,)
    np.testing.assert_allclose(y.numpy(), np.tanh(x @ kernel + bias), rtol=1e-12)
    cugn.gradcheck(layer, [cugn.tensor(x, requires_grad=True)])
    # Weight gradients: the same expression with the weights as inputs.
    cugn.gradcheck(lambda a, k, b: (a @ k + b).tanh(),
                   [cugn.tensor(x), cugn.tensor(kernel, requires_grad=True),
                    cugn.tensor(bias, requires_grad=True)])
    layer(x).sum().backward()
    expected = x.T @ (1 - np.tanh(x @ kernel + bias) ** 2)
    np.testing.assert_allclose(layer.kernel.grad.numpy(), expected, rtol=1e-10)


def test_dense_on_batched_inputs_uses_the_last_axis():
    layer = Dense(2)
    assert layer(np.ones((4, 3, 5), np.float32)).shape == (4, 3, 2)
    with pytest.raises(ValueError, match="5 input features"):
        layer(np.ones((4, 6), np.float32))


def test_activation_layer_and_names():
    x = np.linspace(-2, 2, 6).reshape(2, 3)
    np.testing.assert_allclose(Activation("relu")(x).numpy(), np.maximum(x, 0))
    np.testing.assert_allclose(Activation("sigmoid", dtype="float64")(x).numpy(),
                               1 / (1 + np.exp(-x)), rtol=1e-12)
    assert Activation("swish").get_config()["activation"] == "silu"
    with pytest.raises(ValueError, match="Unknown activation: 'gelu_fast'"):
        Dense(2, activation="gelu_fast")


def test_flatten_and_dropout():
    x = cugn.tensor(np.arange(24.0).reshape(2, 3, 4), dtype=np.float64, requires_grad=True)
    # float64 layers: under the default float32 policy inputs are cast, as in Keras.
    np.testing.assert_array_equal(Flatten(dtype="float64")(x).numpy(),
                                  np.arange(24.0).reshape(2, 12))
    cugn.gradcheck(Flatten(dtype="float64"), [x])
    dropout = Dropout(0.25, seed=1, dtype="float64")
    assert dropout(x) is x  # not training: the identity
    ones = np.ones((200, 100))
    y = dropout(ones, training=True).numpy()
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.02
    # The gradient is the mask that scaled the values (x has no zeros, so y / x is it).
    positive = cugn.tensor(np.arange(1.0, 25.0).reshape(2, 12), dtype=np.float64,
                           requires_grad=True)
    y = Dropout(0.5, seed=3, dtype="float64")(positive, training=True)
    y.sum().backward()
    np.testing.assert_allclose(positive.grad.numpy(), y.numpy() / positive.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)


def test_sequential_add_layers_weights_losses():
    model = small_model()
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "GroupNormalization", "MaxPooling2D", "Flatten", "Dropout", "Dense"]
    x = np.random.default_rng(0).random((2, 6, 6, 1)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, 3)
    names = [w.name for w in model.weights]
    assert names == ["kernel", "bias", "gamma", "beta", "kernel", "bias"]
    assert len(model.losses) == 2
    conv, dense = model.layers[0], model.layers[-1]
    expected = 0.01 * np.sum(conv.kernel.numpy() ** 2) + 0.01 * np.sum(np.abs(dense.bias.numpy()))
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)
    model.trainable = False
    assert model.trainable_weights == [] and not conv.trainable
    model.trainable = True
    assert len(model.trainable_weights) == 6
    with pytest.raises(TypeError, match="cugn Layer"):
        model.add("dense")
    with pytest.raises(ValueError, match="already"):
        model.add(conv)


def test_sequential_training_flag_reaches_dropout():
    model = Sequential([Dropout(0.5, seed=0)])
    x = np.ones((50, 50))
    np.testing.assert_array_equal(model(x).numpy(), x)
    assert (model(x, training=True).numpy() == 0).any()


def test_sequential_summary_lists_layers_and_counts():
    model = small_model()
    lines = []
    model.summary(print_fn=lines.append)
    assert "?" in lines[0]  # not called yet: no output shapes
    model(np.zeros((1, 6, 6, 1), np.float32))
    lines.clear()
    model.summary(print_fn=lines.append)
    text = lines[0]
    assert "(None, 6, 6, 4)" in text and "(None, 36)" in text
    total = 3 * 3 * 1 * 4 + 4 + 4 + 4 + 36 * 3 + 3
    assert f"Total params: {total}" in text


def test_sequential_config_round_trip():
    model = small_model()
    config = model.get_config()
    clone = Sequential.from_config(config)
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
    assert clone.get_config()["layers"][0]["config"]["kernel_regularizer"] == \
        config["layers"][0]["config"]["kernel_regularizer"]
    x = np.random.default_rng(1).random((2, 6, 6, 1)).astype(np.float32)
    model(x)
    clone(x)
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())
    with pytest.raises(ValueError, match="Unknown layer class"):
        Sequential.from_config({"name": "m", "layers": [{"class_name": "LSTM", "config": {}}]})


def test_save_and_load_weights_round_trip(tmp_path):
    model = small_model()
    x = np.random.default_rng(2).random((2, 6, 6, 1)).astype(np.float32)
    expected = model(x).numpy()
    path = tmp_path / "weights.npz"
    model.save_weights(path)
    other = small_model()
    other(x)
    other.load_weights(path)
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(other(x).numpy(), expected)
    model.save_weights(str(tmp_path / "no_suffix"))  # numpy adds ".npz"; so does loading
    other.load_weights(str(tmp_path / "no_suffix"))
    assert (tmp_path / "no_suffix.npz").exists()


def test_load_weights_checks_everything_before_changing_anything(tmp_path):
    model = small_model()
    model(np.zeros((1, 6, 6, 1), np.float32))
    path = tmp_path / "weights.npz"
    model.save_weights(path)
    wider = Sequential([Conv2D(4, 3, padding="same"), GroupNormalization(groups=2),
                        MaxPooling2D(), Flatten(), Dropout(0.5), Dense(5)])
    wider(np.zeros((1, 6, 6, 1), np.float32))
    before = wider.get_weights()
    with pytest.raises(ValueError, match="shape"):
        wider.load_weights(path)
    for a, b in zip(wider.get_weights(), before):
        np.testing.assert_array_equal(a, b)  # the conv weights, which fit, did not change either
    shorter = Sequential([Conv2D(4, 3, padding="same")])
    shorter(np.zeros((1, 6, 6, 1), np.float32))
    with pytest.raises(ValueError, match="holds weights"):
        shorter.load_weights(path)
    with pytest.raises(ValueError, match="call it on an input first"):
        small_model().save_weights(tmp_path / "unbuilt.npz")


def test_group_normalization_composition_forms():
    layer = group_normalization(groups=2, epsilon=1e-5)
    assert isinstance(layer, GroupNormalization) and layer.epsilon == 1e-5
    model = Sequential([Dense(4)])
    returned = group_normalization(model, groups=2)
    assert returned is model and isinstance(model.layers[-1], GroupNormalization)
    x = np.random.default_rng(3).random((3, 4))
    y = group_normalization(x, groups=2, epsilon=1e-3, dtype="float64")
    expected = cugn.functional.group_norm(x, 2, np.ones(4), np.zeros(4), epsilon=1e-3)
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-12)
    y_tensor = group_normalization(cugn.tensor(x), groups=4)
    assert y_tensor.shape == (3, 4)
    with pytest.raises(TypeError, match="object must be None"):
        group_normalization("model", groups=2)
    with pytest.raises(ValueError, match="groups"):
        group_normalization(model, groups=0)
    assert len(model.layers) == 2  # the bad call added nothing


def test_global_pooling_in_a_model_and_layer_names():
    model = Sequential([Conv2D(2, 1), GlobalAveragePooling2D()])
    assert model(np.ones((2, 3, 3, 1), np.float32)).shape == (2, 2)
    assert Conv2D(1, 1).name.startswith("conv2d")
    assert MaxPooling2D().name.startswith("max_pooling2d")


def test_dropout_and_activation_gradcheck():
    x = cugn.tensor(np.random.default_rng(4).standard_normal((3, 5)), requires_grad=True)
    # A fresh layer with a fixed seed draws the same mask on every probe.
    cugn.gradcheck(lambda a: Dropout(0.4, seed=5, dtype="float64")(a, training=True), [x])
    for name in ("relu", "sigmoid", "tanh", "softmax", "silu", "linear"):
        cugn.gradcheck(Activation(name, dtype="float64"), [x])


def test_whole_sequential_model_gradcheck_in_float64():
    model = Sequential([
        Conv2D(4, 3, strides=2, padding="same", dtype="float64", activation="tanh"),
        GroupNormalization(groups=2, dtype="float64"),
        MaxPooling2D(2, padding="same", dtype="float64"),
        Flatten(dtype="float64"),
        Dense(3, dtype="float64"),
    ])
    x = cugn.tensor(np.random.default_rng(5).standard_normal((2, 5, 5, 2)), requires_grad=True)
    cugn.gradcheck(model, [x])
    # Through the weights, which gradcheck cannot take as inputs (the layers hold them):
    # the tape's gradient of a random projection against central differences.
    v = cugn.tensor(np.random.default_rng(6).standard_normal((2, 3)))
    x = x.detach()
    for weight in model.weights:
        (analytical,) = cugn.grad((model(x) * v).sum(), [weight])
        numerical = _central_differences(lambda: float((model(x) * v).sum().item()), weight.data)
        np.testing.assert_allclose(analytical.numpy(), numerical, rtol=1e-4, atol=1e-7,
                                   err_msg=weight.name)


def _central_differences(scalar_fn, array, eps=1e-6):
    """d scalar_fn / d array, perturbing ``array`` in place one element at a time."""
    flat = array.reshape(-1)
    result = np.zeros(flat.size)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = scalar_fn()
        flat[i] = saved - eps
        down = scalar_fn()
        flat[i] = saved
        result[i] = (up - down) / (2 * eps)
    return result.reshape(array.shape)


@pytest.mark.parametrize("layer, shape", [
    (lambda: Conv2D(4, 3), (2, 9, 7, 3)),
    (lambda: Conv2D(4, (3, 2), strides=(2, 3), padding="same"), (2, 9, 7, 3)),
    (lambda: Conv2D(4, 3, strides=2, data_format="channels_first"), (2, 3, 9, 7)),
    (lambda: MaxPooling2D(2), (2, 9, 7, 3)),
    (lambda: AveragePooling2D(3, strides=2, padding="same"), (2, 9, 7, 3)),
    (lambda: MaxPooling2D(2, data_format="channels_first"), (2, 3, 9, 7)),
    (lambda: GlobalAveragePooling2D(), (2, 9, 7, 3)),
    (lambda: GlobalAveragePooling2D(data_format="channels_first", keepdims=True), (2, 3, 9, 7)),
    (lambda: Dense(5), (2, 4, 3)),
    (lambda: Flatten(), (2, 4, 3)),
    (lambda: Sequential([Conv2D(4, 3, padding="same"), MaxPooling2D(2), Flatten(), Dense(6)]),
     (2, 9, 7, 3)),
], ids=["conv", "conv-same-strided", "conv-first", "maxpool", "avgpool-same", "maxpool-first",
        "gap", "gap-first-keepdims", "dense", "flatten", "sequential"])
def test_compute_output_shape_matches_the_output(layer, shape):
    layer = layer()
    expected = layer.compute_output_shape(shape)
    assert layer(np.zeros(shape, np.float32)).shape == tuple(expected)
    assert layer.compute_output_shape((None,) + shape[1:])[0] is None


@pytest.mark.parametrize("layer", [lambda: Conv2D(4, 3, padding="same"), lambda: MaxPooling2D(2),
                                   lambda: AveragePooling2D(2), lambda: GlobalAveragePooling2D(),
                                   lambda: Flatten(), lambda: Dense(3)],
                         ids=["conv", "maxpool", "avgpool", "gap", "flatten", "dense"])
def test_empty_batches_pass_through_every_layer(layer):
    layer = layer()
    x = cugn.tensor(np.zeros((0, 4, 4, 2), np.float32), requires_grad=True)
    y = layer(x)
    assert y.shape == tuple(layer.compute_output_shape(x.shape))
    y.sum().backward()
    assert x.grad.shape == x.shape
