"""Keras's own numbers, and cugn against keras.layers.GroupNormalization itself:
outputs, gradients through the shared config, and configs in both directions."""

import os

import numpy as np
import pytest

import cugn
from cugn.layers import GroupNormalization

# The values from Keras's test suite (scale=False, center=False, epsilon 1e-3).
KERAS_SUITE = [
    ([[[-1, 1, 0, 2], [1, 3, -4, -2]]], 4, -1, [[[-1, -1, 1, 1], [1, 1, -1, -1]]]),
    ([[[-1, 1, 0, 2], [1, 3, -4, -2]]], -1, -1, [[[-1, -1, 1, 1], [1, 1, -1, -1]]]),
    ([[-1, -1, 1, 1, 2, 2, 0, -2]], 1, -1,
     [[-0.898, -0.898, 0.539, 0.539, 1.257, 1.257, -0.180, -1.616]]),
    ([[-1, -1, 1, 1, 2, 2, 0, -2]], 2, 1,
     [[-1.0, -1.0, 1.0, 1.0, 0.904, 0.904, -0.301, -1.507]]),
    ([[[-1, -1, 2, 2], [1, 1, 0, -2]]], 1, -1,
     [[[-0.898, -0.898, 1.257, 1.257], [0.539, 0.539, -0.180, -1.616]]]),
    ([[[-1, -1, 2, 2], [1, 1, 0, -2]]], 2, 2,
     [[[-1.0, -1.0, 0.904, 0.904], [1.0, 1.0, -0.301, -1.507]]]),
]


@pytest.mark.parametrize("x, groups, axis, expected", KERAS_SUITE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keras_suite_values(x, groups, axis, expected, dtype):
    layer = GroupNormalization(groups=groups, axis=axis, scale=False, center=False,
                               dtype=dtype)
    y = layer(np.asarray(x, dtype=dtype))
    assert y.dtype == dtype
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-3)


def test_keras_suite_nchw_with_default_affine():
    y = GroupNormalization(groups=2, axis=1)(np.arange(16, dtype=np.float32).reshape(1, 4, 2, 2))
    first = [[-1.5274, -1.0910], [-0.6546, -0.2182]]
    second = [[0.2182, 0.6546], [1.0910, 1.5274]]
    np.testing.assert_allclose(y.numpy()[0], [first, second, first, second], atol=1e-3)


def test_keras_suite_regularizers_give_two_losses():
    layer = GroupNormalization(groups=2, gamma_regularizer="l2", beta_regularizer="l2")
    layer(np.ones((2, 4), np.float32))
    assert len(layer.trainable_weights) == 2 and len(layer.losses) == 2


# ------------------------------------------------------------------ against Keras itself

if "keras" not in __import__("sys").modules:
    os.environ["KERAS_BACKEND"] = "jax"
keras = pytest.importorskip("keras")

rng = np.random.default_rng(11)

AGAINST_KERAS = [
    ((2, 6, 5, 8), -1, 4),
    ((2, 8, 5, 6), 1, 2),
    ((3, 4, 6, 5), 2, 3),
    ((3, 4, 6, 5), -2, -1),
    ((2, 7, 9), 1, 1),
    ((4, 12), -1, 12),
]


@pytest.mark.parametrize("shape, axis, groups", AGAINST_KERAS)
@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False)])
def test_outputs_match_keras(shape, axis, groups, center, scale):
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    ours = GroupNormalization(groups=groups, axis=axis, center=center, scale=scale,
                              epsilon=1e-4)
    theirs = keras.layers.GroupNormalization(groups=groups, axis=axis, center=center,
                                             scale=scale, epsilon=1e-4)
    theirs.build(shape)
    ours.build(shape)
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in ours.weights]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    np.testing.assert_allclose(ours(x).numpy(), np.asarray(theirs(x)), rtol=1e-5, atol=2e-5)


def test_gradients_match_keras_on_jax():
    jax = pytest.importorskip("jax")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    x = rng.standard_normal((2, 5, 4, 8)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    theirs = keras.layers.GroupNormalization(groups=4)
    theirs.build(x.shape)
    weights = [rng.standard_normal(8).astype(np.float32) for _ in range(2)]
    theirs.set_weights(weights)

    def keras_loss(x, gamma, beta):
        y = theirs.stateless_call([gamma, beta], [], x)[0]
        return (y * dy).sum()

    expected = jax.grad(keras_loss, argnums=(0, 1, 2))(x, *weights)

    ours = GroupNormalization(groups=4)
    ours.build(x.shape)
    ours.set_weights(weights)
    xt = cugn.tensor(x, requires_grad=True)
    ours(xt).backward(cugn.tensor(dy))
    for got, want in zip((xt.grad, ours.gamma.grad, ours.beta.grad), expected):
        np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-4, atol=1e-4)


KERAS_CONFIGS = [
    {},
    {"groups": -1, "axis": 1, "epsilon": 1e-5, "center": False},
    {"groups": 2, "scale": False, "beta_initializer": "ones"},
    {"gamma_initializer": keras.initializers.RandomNormal(mean=1.0, stddev=0.02, seed=3),
     "beta_initializer": keras.initializers.Constant(0.25)},
    {"gamma_regularizer": keras.regularizers.L2(0.01),
     "beta_regularizer": keras.regularizers.L1L2(l1=0.001, l2=0.02)},
    {"gamma_constraint": keras.constraints.NonNeg(),
     "beta_constraint": keras.constraints.MaxNorm(max_value=2.0, axis=0)},
    {"gamma_constraint": keras.constraints.MinMaxNorm(0.5, 1.5, rate=0.5),
     "beta_constraint": keras.constraints.UnitNorm()},
    {"gamma_initializer": keras.initializers.GlorotUniform(seed=1),
     "beta_initializer": keras.initializers.HeNormal(seed=2)},
    {"name": "gn_named", "trainable": False, "dtype": "mixed_float16"},
    {"groups": 3, "axis": -2, "dtype": "float16"},
]


@pytest.mark.parametrize("kwargs", KERAS_CONFIGS)
def test_keras_config_loads_into_cugn_and_back(kwargs):
    groups = kwargs.pop("groups", 4)
    theirs = keras.layers.GroupNormalization(groups=groups, **kwargs)
    theirs.build((2, 3, 8))
    config = theirs.get_config()

    ours = GroupNormalization.from_config(config)
    ours.build((2, 3, 8))
    ours_config = ours.get_config()
    assert ours_config == config

    back = keras.layers.GroupNormalization.from_config(ours_config)
    assert back.get_config() == config


def test_same_config_gives_same_regularization_losses():
    theirs = keras.layers.GroupNormalization(
        groups=2, gamma_regularizer=keras.regularizers.L2(0.01),
        beta_regularizer=keras.regularizers.L1(0.003))
    theirs.build((2, 6))
    weights = [rng.standard_normal(6).astype(np.float32) for _ in range(2)]
    theirs.set_weights(weights)
    ours = GroupNormalization.from_config(theirs.get_config())
    ours.build((2, 6))
    ours.set_weights(weights)
    np.testing.assert_allclose([float(loss.item()) for loss in ours.losses],
                               [float(np.asarray(loss)) for loss in theirs.losses], rtol=1e-6)


def test_same_config_gives_same_constraint_projection():
    config = keras.layers.GroupNormalization(
        groups=2, gamma_constraint=keras.constraints.MinMaxNorm(0.5, 1.5, rate=0.7),
        beta_constraint=keras.constraints.NonNeg()).get_config()
    ours = GroupNormalization.from_config(config)
    ours.build((2, 6))
    theirs = keras.layers.GroupNormalization.from_config(config)
    theirs.build((2, 6))
    values = rng.standard_normal(6).astype(np.float32) * 3
    for ours_weight, theirs_weight in zip(ours.weights, theirs.weights):
        ours_weight.data = values.copy()
        ours_weight.apply_constraint()
        np.testing.assert_allclose(ours_weight.numpy(),
                                   np.asarray(theirs_weight.constraint(values)), rtol=1e-6)


def test_initializers_from_keras_config_draw_the_same_shapes_and_statistics():
    config = keras.layers.GroupNormalization(
        groups=8, gamma_initializer=keras.initializers.RandomUniform(0.5, 0.75)).get_config()
    ours = GroupNormalization.from_config(config)
    ours.build((4, 4096))
    gamma = ours.gamma.numpy()
    assert gamma.shape == (4096,) and gamma.dtype == np.float32
    assert 0.5 <= gamma.min() and gamma.max() < 0.75
    assert abs(gamma.mean() - 0.625) < 0.01
