"""The expected values of Keras's own GroupNormalization test suite (they need no Keras)."""

import numpy as np
import pytest

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
