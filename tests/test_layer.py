"""GroupNormalization as a layer: building, weights, dtype policies, losses,
constraints, get/set weights and its config."""

import numpy as np
import pytest

import cugn
from cugn import constraints, regularizers
from cugn.layers import GroupNormalization
from reference import group_norm_reference

rng = np.random.default_rng(5)


def test_builds_on_first_call_with_keras_weight_order():
    layer = GroupNormalization(groups=2)
    assert not layer.built and layer.weights == []
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    y = layer(x)
    assert layer.built
    assert [w.name for w in layer.weights] == ["gamma", "beta"]
    assert layer.gamma is layer.weights[0] and layer.beta is layer.weights[1]
    np.testing.assert_array_equal(layer.gamma.numpy(), np.ones(4, np.float32))
    np.testing.assert_array_equal(layer.beta.numpy(), np.zeros(4, np.float32))
    np.testing.assert_allclose(y.numpy(), group_norm_reference(x, 2), atol=1e-5)


def test_explicit_build_and_output_shape():
    layer = GroupNormalization(groups=4, axis=1)
    layer.build((None, 8, 3, 3))
    assert layer.built and layer.gamma.shape == (8,)
    assert layer.compute_output_shape((None, 8, 3, 3)) == (None, 8, 3, 3)


@pytest.mark.parametrize("center, scale, names", [(True, True, ["gamma", "beta"]),
                                                  (False, True, ["gamma"]),
                                                  (True, False, ["beta"]),
                                                  (False, False, [])])
def test_center_and_scale_choose_the_weights(center, scale, names):
    layer = GroupNormalization(groups=1, center=center, scale=scale)
    layer.build((2, 4))
    assert [w.name for w in layer.weights] == names
    assert (layer.gamma is None) == (not scale) and (layer.beta is None) == (not center)


def test_axis_list_gives_weights_of_the_feature_shape():
    layer = GroupNormalization(groups=6, axis=[1, 3])
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    y = layer(x)
    assert layer.gamma.shape == (3, 4) and layer.beta.shape == (3, 4)
    np.testing.assert_allclose(y.numpy(), group_norm_reference(x, 6, axis=[1, 3]), atol=1e-5)
    assert layer.get_config()["axis"] == [1, 3]


def test_groups_minus_one_becomes_the_channel_count_when_built():
    layer = GroupNormalization(groups=-1)
    assert layer.get_config()["groups"] == -1
    layer.build((2, 3, 6))
    assert layer.groups == 6 and layer.get_config()["groups"] == 6


def test_gradients_reach_gamma_and_beta_like_the_functional_form():
    x = rng.standard_normal((2, 4, 6))
    layer = GroupNormalization(groups=3, dtype="float64")
    layer.build(x.shape)
    layer.set_weights([rng.standard_normal(6), rng.standard_normal(6)])
    dy = rng.standard_normal(x.shape)
    layer(x).backward(cugn.tensor(dy))

    gamma = cugn.tensor(layer.gamma.numpy(), requires_grad=True)
    beta = cugn.tensor(layer.beta.numpy(), requires_grad=True)
    cugn.functional.group_norm(x, 3, gamma, beta).backward(cugn.tensor(dy))
    np.testing.assert_array_equal(layer.gamma.grad.numpy(), gamma.grad.numpy())
    np.testing.assert_array_equal(layer.beta.grad.numpy(), beta.grad.numpy())


@pytest.mark.parametrize("policy, weight_dtype", [(None, np.float32), ("float64", np.float64),
                                                  ("mixed_float16", np.float32),
                                                  ("mixed_bfloat16", np.float32)])
def test_dtype_policy_sets_the_weight_dtype(policy, weight_dtype):
    layer = GroupNormalization(groups=2, dtype=policy)
    layer.build((2, 4))
    assert all(w.dtype == weight_dtype for w in layer.weights)


def test_float16_input_keeps_its_dtype_with_float32_weights():
    layer = GroupNormalization(groups=2, dtype="mixed_float16")
    x = rng.standard_normal((2, 3, 4)).astype(np.float16)
    y = layer(x)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.numpy(), group_norm_reference(x, 2), atol=3e-3)


def test_trainable_flag_follows_the_layer():
    layer = GroupNormalization(groups=2)
    layer.build((2, 4))
    assert len(layer.trainable_weights) == 2 and layer.non_trainable_weights == []
    layer.trainable = False
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2
    assert not any(w.requires_grad for w in layer.weights)
    layer.trainable = True
    assert all(w.requires_grad for w in layer.weights)
    frozen = GroupNormalization(groups=2, trainable=False)
    frozen.build((2, 4))
    assert frozen.trainable_weights == []


def test_regularization_losses_are_differentiable_penalties():
    layer = GroupNormalization(groups=2, gamma_regularizer=regularizers.L2(0.01),
                               beta_regularizer=regularizers.L1(0.1))
    layer.build((2, 4))
    gamma = np.array([1.0, -2.0, 3.0, 0.5], np.float32)
    beta = np.array([-1.0, 0.0, 2.0, 1.0], np.float32)
    layer.set_weights([gamma, beta])
    gamma_loss, beta_loss = layer.losses
    np.testing.assert_allclose(gamma_loss.item(), 0.01 * (gamma ** 2).sum(), rtol=1e-6)
    np.testing.assert_allclose(beta_loss.item(), 0.1 * np.abs(beta).sum(), rtol=1e-6)
    (gamma_loss + beta_loss).backward()
    np.testing.assert_allclose(layer.gamma.grad.numpy(), 0.02 * gamma, rtol=1e-6)
    np.testing.assert_allclose(layer.beta.grad.numpy()[[0, 2, 3]], [-0.1, 0.1, 0.1], rtol=1e-6)


def test_constraints_are_applied_on_request():
    layer = GroupNormalization(groups=2, gamma_constraint=constraints.NonNeg(),
                               beta_constraint=lambda w: w.clip(-0.5, 0.5))
    layer.build((2, 4))
    layer.set_weights([[-1.0, 2.0, -3.0, 0.5], [-1.0, 0.2, 2.0, 0.5]])
    for weight in layer.weights:
        weight.apply_constraint()
    np.testing.assert_array_equal(layer.gamma.numpy(), [0.0, 2.0, 0.0, 0.5])
    np.testing.assert_array_equal(layer.beta.numpy(), np.float32([-0.5, 0.2, 0.5, 0.5]))


def test_get_and_set_weights_round_trip_as_copies():
    layer = GroupNormalization(groups=2)
    layer.build((2, 4))
    values = [rng.standard_normal(4).astype(np.float32) for _ in range(2)]
    layer.set_weights(values)
    got = layer.get_weights()
    for g, v in zip(got, values):
        np.testing.assert_array_equal(g, v)
    got[0][:] = 99.0  # a copy: the layer is unchanged
    np.testing.assert_array_equal(layer.gamma.numpy(), values[0])


def test_set_weights_is_all_or_nothing():
    layer = GroupNormalization(groups=2)
    layer.build((2, 4))
    before = layer.get_weights()
    with pytest.raises(ValueError, match="beta.*shape \\(4,\\).*\\(5,\\)"):
        layer.set_weights([np.full(4, 3.0), np.zeros(5)])
    with pytest.raises(ValueError, match="expected 2 arrays.*got 1"):
        layer.set_weights([np.full(4, 3.0)])
    for b, a in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_layer_names_are_unique_and_keras_style():
    first, second = GroupNormalization(), GroupNormalization()
    assert first.name.startswith("group_normalization")
    assert first.name != second.name
    assert GroupNormalization(name="norm").name == "norm"


def test_config_round_trip():
    layer = GroupNormalization(groups=4, axis=(1, 2), epsilon=1e-5, center=False,
                               gamma_initializer="he_normal",
                               gamma_regularizer=regularizers.L1L2(0.1, 0.2),
                               gamma_constraint=constraints.MaxNorm(2.0, axis=0),
                               name="gn", dtype="float64", trainable=False)
    config = layer.get_config()
    clone = GroupNormalization.from_config(config)
    assert clone.get_config() == config
    assert config["gamma_initializer"] == {"module": "keras.initializers",
                                           "class_name": "HeNormal",
                                           "config": {"seed": None, "input_axes": None,
                                                      "output_axes": None},
                                           "registered_name": None}
    assert config["dtype"]["config"]["name"] == "float64"


def test_layer_on_cpu_device_and_repr():
    layer = GroupNormalization(groups=2).to("cpu")
    layer(np.zeros((1, 4), np.float32))
    assert all(w.device == "cpu" for w in layer.weights)
    assert "GroupNormalization" in repr(layer)


# Keras's autocast: (policy, input dtype) -> the dtype the layer computes in and returns.
AUTOCAST = [(None, "float16", "float32"), (None, "float64", "float32"),
            (None, "bfloat16", "float32"), ("float64", "float32", "float64"),
            ("float64", "float16", "float64"), ("float16", "float32", "float16"),
            ("bfloat16", "float32", "bfloat16"), ("mixed_float16", "float32", "float16"),
            ("mixed_float16", "float16", "float16"), ("mixed_bfloat16", "float64", "bfloat16")]


@pytest.mark.parametrize("policy, input_dtype, output_dtype", AUTOCAST)
def test_floating_inputs_are_cast_to_the_compute_dtype_like_keras(policy, input_dtype,
                                                                   output_dtype):
    import ml_dtypes

    def dtype(name):
        return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)

    x = rng.standard_normal((2, 3, 4)).astype(dtype(input_dtype))
    layer = GroupNormalization(groups=2, dtype=policy)
    y = layer(x)
    assert y.dtype == dtype(output_dtype) and layer.compute_dtype == dtype(output_dtype)
    expected = group_norm_reference(x.astype(dtype(output_dtype)), 2)
    tolerance = {"float64": 1e-12, "float32": 1e-5}.get(output_dtype, 3e-2)
    np.testing.assert_allclose(y.numpy().astype(np.float64), expected, atol=tolerance)
    if output_dtype != "float64":  # Keras on JAX computes float64 as float32 unless x64 is on
        import keras

        theirs = keras.layers.GroupNormalization(groups=2, dtype=policy)(x)
        assert np.dtype(theirs.dtype) == dtype(output_dtype)


def test_autocast_is_differentiable_back_to_the_input_dtype():
    x = cugn.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)  # float64
    layer = GroupNormalization(groups=2)  # float32
    y = layer(x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float64
    integers = np.arange(24).reshape(2, 3, 4)
    with pytest.raises(TypeError, match="floating point"):  # not cast: Keras casts floats only
        layer(integers)
