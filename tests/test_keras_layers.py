"""Dense, Conv2D, pooling, Flatten, Dropout and Activation against Keras itself:
the same weights give the same outputs, and configs load in both directions."""

import numpy as np
import pytest

import cugn
from cugn import layers

keras = pytest.importorskip("keras")

CASES = [
    ("Dense", {"units": 5, "activation": "tanh"}, (3, 4)),
    ("Dense", {"units": 2, "use_bias": False}, (2, 3, 6)),
    ("Conv2D", {"filters": 4, "kernel_size": 3}, (2, 7, 6, 3)),
    ("Conv2D", {"filters": 3, "kernel_size": (3, 2), "strides": 2, "padding": "same",
                "activation": "relu"}, (2, 7, 6, 2)),
    ("Conv2D", {"filters": 3, "kernel_size": 2, "strides": (2, 1), "padding": "same",
                "data_format": "channels_first"}, (2, 2, 5, 6)),
    ("MaxPooling2D", {"pool_size": 2}, (2, 5, 7, 3)),
    ("MaxPooling2D", {"pool_size": 3, "strides": 2, "padding": "same"}, (2, 5, 7, 3)),
    ("AveragePooling2D", {"pool_size": (2, 3), "strides": 1, "padding": "same"}, (2, 5, 7, 3)),
    ("AveragePooling2D", {"pool_size": 2, "data_format": "channels_first"}, (2, 3, 6, 4)),
    ("GlobalAveragePooling2D", {"keepdims": True}, (2, 4, 5, 3)),
    ("Flatten", {}, (2, 3, 4, 5)),
    ("Flatten", {"data_format": "channels_first"}, (2, 3, 4, 5)),
    ("Activation", {"activation": "softmax"}, (3, 4)),
    ("Dropout", {"rate": 0.3}, (3, 4)),
]


@pytest.mark.parametrize("name, kwargs, shape", CASES)
def test_outputs_match_keras_with_the_same_weights(name, kwargs, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    theirs = getattr(keras.layers, name)(**kwargs)
    expected = np.asarray(theirs(x))
    ours = getattr(layers, name)(**kwargs)
    ours(x)
    ours.set_weights([np.asarray(w) for w in theirs.get_weights()])
    np.testing.assert_allclose(ours(x).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, kwargs, shape", CASES)
def test_configs_load_in_both_directions(name, kwargs, shape):
    theirs = getattr(keras.layers, name)(**kwargs)
    config = theirs.get_config()
    ours = getattr(layers, name).from_config(config)
    assert ours.get_config() == config
    assert getattr(keras.layers, name).from_config(ours.get_config()).get_config() == config


def test_unsupported_keras_arguments_are_named():
    with pytest.raises(ValueError, match="dilation_rate"):
        layers.Conv2D(2, 3, dilation_rate=2)
    with pytest.raises(ValueError, match="groups"):
        layers.Conv2D(2, 3, groups=2)
    with pytest.raises(ValueError, match="lora_rank"):
        layers.Dense(2, lora_rank=4)
    with pytest.raises(ValueError, match="noise_shape"):
        layers.Dropout(0.5, noise_shape=(1, 4))


def test_cross_entropy_matches_keras():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 6)
    expected = float(np.mean(keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True)))
    np.testing.assert_allclose(
        cugn.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True).item(),
        expected, rtol=1e-5)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = float(np.mean(keras.losses.sparse_categorical_crossentropy(labels, probs)))
    np.testing.assert_allclose(cugn.losses.sparse_categorical_crossentropy(labels, probs).item(),
                               expected, rtol=1e-5)
    target = rng.random((6, 5)).astype(np.float32)
    for from_logits, pred in ((True, logits), (False, probs)):
        expected = float(np.mean(keras.losses.binary_crossentropy(target, pred,
                                                                  from_logits=from_logits)))
        np.testing.assert_allclose(
            cugn.losses.binary_crossentropy(target, pred, from_logits=from_logits).item(),
            expected, rtol=1e-5)
    expected = float(np.mean(keras.losses.mean_squared_error(target, probs)))
    np.testing.assert_allclose(cugn.losses.mean_squared_error(target, probs).item(), expected,
                               rtol=1e-6)
