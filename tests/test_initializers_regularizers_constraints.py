"""Initializers, regularizers and constraints: values, Keras parity, lookup by
name or Keras dict, and config round trips."""

import math

import numpy as np
import pytest

import cugn
from cugn import constraints, initializers, regularizers

rng = np.random.default_rng(3)


def keras_or_skip():
    return pytest.importorskip("keras")


# ------------------------------------------------------------------ initializers


def test_constant_initializers():
    assert initializers.get("zeros")((2, 3)).tolist() == [[0.0] * 3] * 2
    ones = initializers.get("ones")((4,), dtype="float64")
    assert ones.dtype == np.float64 and ones.tolist() == [1.0] * 4
    np.testing.assert_array_equal(initializers.Constant(2.5)((3,)), np.full(3, 2.5, np.float32))
    np.testing.assert_array_equal(initializers.Identity(gain=2.0)((2, 3)),
                                  2 * np.eye(2, 3, dtype=np.float32))


@pytest.mark.parametrize("name, limit_or_std", [
    ("glorot_uniform", ("uniform", math.sqrt(6 / (200 + 300)))),
    ("he_uniform", ("uniform", math.sqrt(6 / 200))),
    ("lecun_uniform", ("uniform", math.sqrt(3 / 200))),
    ("glorot_normal", ("normal", math.sqrt(2 / (200 + 300)))),
    ("he_normal", ("normal", math.sqrt(2 / 200))),
    ("lecun_normal", ("normal", math.sqrt(1 / 200))),
])
def test_variance_scaling_presets_have_keras_spreads(name, limit_or_std):
    kind, value = limit_or_std
    w = initializers.get(name)((200, 300))
    assert w.shape == (200, 300) and w.dtype == np.float32
    if kind == "uniform":
        assert np.abs(w).max() <= value
        np.testing.assert_allclose(w.std(), value / math.sqrt(3), rtol=0.02)
    else:
        # Truncated at two (rescaled) standard deviations, with the intended stddev.
        np.testing.assert_allclose(w.std(), value, rtol=0.02)
        assert np.abs(w).max() <= 2 * value / 0.87962566103423978 + 1e-7


def test_fans_of_convolution_kernels_count_the_receptive_field():
    assert initializers.compute_fans((3, 3, 16, 32)) == (144, 288)
    assert initializers.compute_fans((5,)) == (5, 5)
    w = initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="uniform")(
        (3, 3, 64, 32))
    np.testing.assert_allclose(w.std(), math.sqrt(2.0 / 288), rtol=0.03)


def test_seeded_initializers_repeat_and_unseeded_do_not():
    seeded = initializers.RandomNormal(stddev=1.0, seed=42)
    np.testing.assert_array_equal(seeded((5,)), seeded((5,)))
    unseeded = initializers.RandomUniform()
    assert not np.array_equal(unseeded((50,)), unseeded((50,)))


def test_truncated_normal_stays_within_two_stddevs():
    w = initializers.TruncatedNormal(mean=1.0, stddev=0.1, seed=0)((10000,))
    assert np.abs(w - 1.0).max() <= 0.2 + 1e-6
    np.testing.assert_allclose(w.mean(), 1.0, atol=0.005)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 2, 5)])
def test_orthogonal_rows_or_columns_are_orthonormal(shape):
    w = initializers.Orthogonal(gain=1.5, seed=1)(shape).astype(np.float64)
    flat = w.reshape(-1, shape[-1])
    small = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(small, 2.25 * np.eye(small.shape[0]), atol=1e-5)


def test_initializer_lookup_and_config_round_trip():
    for name in ["zeros", "ones", "random_normal", "random_uniform", "truncated_normal",
                 "glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal",
                 "lecun_uniform", "orthogonal", "identity", "Zeros", "GlorotUniform"]:
        init = initializers.get(name)
        spec = initializers.serialize_initializer(init)
        assert spec["module"] == "keras.initializers"
        clone = initializers.get(spec)
        assert type(clone) is type(init) and clone.get_config() == init.get_config()
    custom = lambda shape, dtype=None: np.full(shape, 7.0, dtype or np.float32)  # noqa: E731
    assert initializers.get(custom) is custom


def test_initializer_configs_match_keras():
    keras = keras_or_skip()
    for ours, theirs in [
        (initializers.RandomNormal(0.5, 2.0, seed=3), keras.initializers.RandomNormal(0.5, 2.0, 3)),
        (initializers.VarianceScaling(2.0, "fan_avg", "uniform", seed=1),
         keras.initializers.VarianceScaling(2.0, "fan_avg", "uniform", seed=1)),
        (initializers.HeNormal(), keras.initializers.HeNormal()),
        (initializers.Orthogonal(2.0, seed=4), keras.initializers.Orthogonal(2.0, seed=4)),
        (initializers.Constant(3.0), keras.initializers.Constant(3.0)),
    ]:
        assert initializers.serialize_initializer(ours) == keras.initializers.serialize(theirs)
        loaded = keras.initializers.deserialize(initializers.serialize_initializer(ours))
        assert loaded.get_config() == theirs.get_config()


@pytest.mark.parametrize("kwargs, message", [({"scale": 0}, "scale must be positive"),
                                             ({"mode": "fan"}, "mode must be"),
                                             ({"distribution": "normalish"}, "distribution")])
def test_variance_scaling_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        initializers.VarianceScaling(**kwargs)


# ------------------------------------------------------------------ regularizers


def test_regularizer_values():
    w = rng.standard_normal((3, 4))
    t = cugn.tensor(w)
    np.testing.assert_allclose(regularizers.L1(0.1)(t).item(), 0.1 * np.abs(w).sum())
    np.testing.assert_allclose(regularizers.L2(0.2)(t).item(), 0.2 * (w ** 2).sum())
    np.testing.assert_allclose(regularizers.L1L2(0.1, 0.2)(t).item(),
                               0.1 * np.abs(w).sum() + 0.2 * (w ** 2).sum())


@pytest.mark.parametrize("regularizer", [regularizers.L2(0.3), regularizers.L1L2(0.1, 0.2),
                                         regularizers.OrthogonalRegularizer(0.5, mode="rows"),
                                         regularizers.OrthogonalRegularizer(0.5,
                                                                            mode="columns")])
def test_regularizers_are_differentiable(regularizer):
    w = cugn.tensor(rng.standard_normal((3, 4)) + 0.5, requires_grad=True)
    assert cugn.gradcheck(regularizer, [w])


@pytest.mark.parametrize("name, args", [("L1", (0.01,)), ("L2", (0.02,)), ("L1L2", (0.01, 0.3)),
                                        ("OrthogonalRegularizer", (0.1, "rows")),
                                        ("OrthogonalRegularizer", (0.1, "columns"))])
def test_regularizers_match_keras(name, args):
    keras = keras_or_skip()
    w = rng.standard_normal((5, 3)).astype(np.float32)
    ours = getattr(regularizers, name)(*args)
    theirs = getattr(keras.regularizers, name)(*args)
    expected = float(theirs(keras.ops.convert_to_tensor(w)))
    np.testing.assert_allclose(ours(cugn.tensor(w)).item(), expected, rtol=1e-5)
    # Keras stores some factors as float32 (0.01 reads back as 0.009999999776...).
    ours_spec = regularizers.serialize_regularizer(ours)
    theirs_spec = keras.regularizers.serialize(theirs)
    assert {**ours_spec, "config": None} == {**theirs_spec, "config": None}
    assert ours_spec["config"].keys() == theirs_spec["config"].keys()
    for key, value in theirs_spec["config"].items():
        assert ours_spec["config"][key] == (pytest.approx(value, rel=1e-7)
                                            if isinstance(value, float) else value)


def test_regularizer_lookup():
    assert isinstance(regularizers.get("l1"), regularizers.L1)
    assert regularizers.get("l2").get_config() == {"l2": 0.01}
    assert regularizers.get(None) is None
    with pytest.raises(ValueError, match="l1 must be a number >= 0"):
        regularizers.L1(-1.0)


# ------------------------------------------------------------------ constraints


@pytest.mark.parametrize("name, kwargs", [
    ("MaxNorm", {"max_value": 1.5, "axis": 0}),
    ("MaxNorm", {"max_value": 0.5, "axis": 1}),
    ("MinMaxNorm", {"min_value": 0.5, "max_value": 1.0, "rate": 0.7, "axis": 0}),
    ("NonNeg", {}),
    ("UnitNorm", {"axis": 0}),
    ("UnitNorm", {"axis": 1}),
])
def test_constraints_match_keras(name, kwargs):
    keras = keras_or_skip()
    w = (rng.standard_normal((4, 6)) * 2).astype(np.float32)
    ours = getattr(constraints, name)(**kwargs)
    theirs = getattr(keras.constraints, name)(**kwargs)
    np.testing.assert_allclose(ours(w), np.asarray(theirs(w)), rtol=1e-5, atol=1e-6)
    assert constraints.serialize_constraint(ours) == keras.constraints.serialize(theirs)


def test_constraint_values_without_keras():
    w = np.array([[3.0, -4.0], [0.0, 0.0]])
    np.testing.assert_allclose(constraints.MaxNorm(1.0, axis=1)(w), [[0.6, -0.8], [0.0, 0.0]],
                               atol=1e-6)
    np.testing.assert_array_equal(constraints.NonNeg()(w), [[3.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(constraints.UnitNorm(axis=1)(w)[0], [0.6, -0.8], atol=1e-6)


def test_constraint_lookup():
    assert isinstance(constraints.get("non_neg"), constraints.NonNeg)
    assert isinstance(constraints.get({"class_name": "MaxNorm", "config": {"max_value": 3}}),
                      constraints.MaxNorm)
    with pytest.raises(ValueError, match="Unknown constraint: 'positive'"):
        constraints.get("positive")
