"""Every bad input gets a clear error that names the argument and the value,
before any work is done."""

import re

import numpy as np
import pytest

import cugn
from cugn.functional import group_norm
from cugn.layers import GroupNormalization

x4 = np.zeros((2, 8, 3, 3), np.float32)


@pytest.mark.parametrize("groups", [0, -2, 1.5, "4", True, None, 4.0])
def test_invalid_groups(groups):
    pattern = f"groups.*{repr(groups)[:3]}"
    with pytest.raises(ValueError, match=pattern):
        GroupNormalization(groups=groups)
    with pytest.raises(ValueError, match=pattern):
        group_norm(x4, groups, axis=1)


def test_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match=r"channels \(8\).*groups \(3\)"):
        group_norm(x4, 3, axis=1)
    with pytest.raises(ValueError, match=r"channels \(8\).*groups \(3\)"):
        GroupNormalization(groups=3, axis=1).build(x4.shape)


def test_more_groups_than_channels():
    with pytest.raises(ValueError, match=r"groups \(16\) cannot be more than .*channels \(8\)"):
        group_norm(x4, 16, axis=1)
    with pytest.raises(ValueError, match=r"groups \(16\) cannot be more than .*channels \(8\)"):
        GroupNormalization(groups=16, axis=1)(x4)


@pytest.mark.parametrize("axis, message", [(4, "axis 4 is out of range"),
                                           (-5, "axis -5 is out of range"),
                                           (0, "axis 0 is the batch axis"),
                                           (-4, "axis -4 is the batch axis"),
                                           ([1, 5], "axis 5 is out of range"),
                                           ([1, -3], "names the same axis twice")])
def test_bad_axis(axis, message):
    with pytest.raises(ValueError, match=message):
        group_norm(x4, 1, axis=axis)
    layer = GroupNormalization(groups=1, axis=axis)
    with pytest.raises(ValueError, match=message):
        layer(x4)
    assert not layer.built and layer.weights == []


@pytest.mark.parametrize("axis, error", [(1.0, TypeError), ("1", TypeError), (True, TypeError),
                                         ([], ValueError), ([1, 1], ValueError)])
def test_axis_of_the_wrong_type(axis, error):
    with pytest.raises(error, match="axis"):
        GroupNormalization(axis=axis)
    with pytest.raises(error, match="axis"):
        group_norm(x4, 1, axis=axis)


def test_rank_one_input():
    with pytest.raises(ValueError, match=r"rank >= 2.*shape \(8,\)"):
        group_norm(np.zeros(8, np.float32), 2)
    with pytest.raises(ValueError, match=r"rank >= 2.*shape \(8,\)"):
        GroupNormalization(groups=2)(np.zeros(8, np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.uint8])
def test_non_floating_input(dtype):
    with pytest.raises(TypeError, match=f"x must be a floating point tensor.*{np.dtype(dtype)}"):
        group_norm(np.zeros((2, 4), dtype), 2)


@pytest.mark.parametrize("epsilon", [-1e-3, float("nan"), float("inf"), "0.001", True])
def test_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        GroupNormalization(epsilon=epsilon)
    with pytest.raises(ValueError, match="epsilon"):
        group_norm(x4, 1, axis=1, epsilon=epsilon)


@pytest.mark.parametrize("argument, module", [("beta_initializer", "initializer"),
                                              ("gamma_initializer", "initializer"),
                                              ("beta_regularizer", "regularizer"),
                                              ("gamma_regularizer", "regularizer"),
                                              ("beta_constraint", "constraint"),
                                              ("gamma_constraint", "constraint")])
def test_unknown_names(argument, module):
    with pytest.raises(ValueError, match=f"Unknown {module}: 'no_such_thing'"):
        GroupNormalization(**{argument: "no_such_thing"})
    with pytest.raises(ValueError, match=f"Unknown {module}"):
        GroupNormalization(**{argument: {"class_name": "NoSuchThing", "config": {}}})
    with pytest.raises(ValueError, match=f"Could not interpret {module}: 3"):
        GroupNormalization(**{argument: 3})


def test_unknown_keyword_argument():
    with pytest.raises(TypeError, match="momentum"):
        GroupNormalization(momentum=0.9)


def test_set_weights_with_wrong_count_or_shapes():
    layer = GroupNormalization(groups=2)
    layer.build((2, 4))
    with pytest.raises(ValueError, match="expected 2 arrays"):
        layer.set_weights([np.ones(4)] * 3)
    with pytest.raises(ValueError, match=r"'gamma' has shape \(4,\), got .*\(2, 2\)"):
        layer.set_weights([np.ones((2, 2)), np.ones(4)])


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 8), (2, 8)])
def test_built_layer_with_another_rank_or_channel_count(shape):
    layer = GroupNormalization(groups=2)
    layer(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=f"built for inputs of rank 3.*{shape}"):
        layer(np.zeros(shape, np.float32))


@pytest.mark.parametrize("name", ["gamma", "beta"])
def test_functional_parameters_of_the_wrong_shape(name):
    with pytest.raises(ValueError, match=rf"{name} must have the shape .*\(8,\), got .*\(4,\)"):
        group_norm(x4, 2, axis=1, **{name: np.ones(4, np.float32)})
    with pytest.raises(TypeError, match=f"{name} must be a floating point"):
        group_norm(x4, 2, axis=1, **{name: np.ones(8, np.int64)})


def test_bad_arguments_are_caught_before_any_work(monkeypatch):
    calls = []
    monkeypatch.setattr(cugn.kernels, "forward", lambda *args: calls.append(args))
    x = cugn.tensor(x4, requires_grad=True)
    for bad in ({"groups": 3}, {"groups": 2, "epsilon": -1.0}, {"groups": 2, "axis": 0},
                {"groups": 2, "gamma": np.ones(4, np.float32)}):
        kwargs = {"axis": 1, **bad}
        with pytest.raises(ValueError):
            group_norm(x, **kwargs)
    assert calls == []


@pytest.mark.parametrize("dtype", ["mixed_bogus", "int32", np.int64, "float8", 3])
def test_bad_dtype_policy_is_named_and_takes_no_layer_name(dtype):
    GroupNormalization()  # so that the next names carry a count
    before = GroupNormalization().name
    with pytest.raises(ValueError, match=f"dtype must be a floating dtype.*{repr(dtype)[:6]}"):
        GroupNormalization(dtype=dtype)
    after = GroupNormalization().name
    assert int(after.rsplit("_", 1)[1]) == int(before.rsplit("_", 1)[1]) + 1


@pytest.mark.parametrize("shape, axis, groups, hint", [
    ((2, 64, 4, 4), -1, 16, "has 64 channels on axis 1: channels-first inputs need axis=1"),
    ((2, 64, 4, 6), -1, 4, "has 64 channels on axis 1: channels-first inputs need axis=1"),
    ((2, 6, 4, 64), 1, 16, "has 64 channels on axis -1: channels-last inputs need axis=-1"),
])
def test_group_count_errors_name_the_axis_when_the_other_end_fits(shape, axis, groups, hint):
    x = np.zeros(shape, np.float32)
    for call in (lambda: group_norm(x, groups, axis=axis),
                 lambda: GroupNormalization(groups=groups, axis=axis)(x)):
        with pytest.raises(ValueError, match=r"^Number of .*groups.*\. The input of shape "
                                             + re.escape(f"{shape} {hint}.") + "$"):
            call()


@pytest.mark.parametrize("shape, axis, groups", [((2, 8, 4, 4), -1, 16), ((2, 12, 5), -1, 3 * 8),
                                                 ((2, 16), -1, 32), ((2, 4, 4, 6), -1, 5)])
def test_group_count_errors_without_a_fitting_other_end_add_nothing(shape, axis, groups):
    with pytest.raises(ValueError, match=r"groups \(\d+\)\.?$|channels \(\d+\)\.$"):
        group_norm(np.zeros(shape, np.float32), groups, axis=axis)
