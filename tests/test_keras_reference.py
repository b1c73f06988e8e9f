"""cugn against keras.layers.GroupNormalization itself: outputs, gradients, and
configs in both directions."""

import numpy as np
import pytest

import cugn
from cugn.layers import GroupNormalization

keras = pytest.importorskip("keras")

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
def test_outputs_match_keras(shape, axis, groups, center, scale, rng):
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
    # With one value per group the exact output is beta, which cugn gives; Keras's rstd of
    # 1/sqrt(epsilon) = 100 magnifies its rounding of x - mean to a few 1e-5.
    np.testing.assert_allclose(ours(x).numpy(), np.asarray(theirs(x)), rtol=1e-5, atol=1e-4)


def test_gradients_match_keras_on_jax(rng):
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


def test_same_config_gives_same_regularization_losses(rng):
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


def test_same_config_gives_same_constraint_projection(rng):
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
