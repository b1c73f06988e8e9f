"""float32 group normalization on groups of a million values and more, forward and
gradients, against the float64 reference, on both CPU implementations: the sums
must not lose digits as they grow (NumPy adds along a strided axis one value after
the other)."""

import numpy as np
import pytest

import cugn
from cugn.functional import group_norm
from reference import group_norm_backward_reference, group_norm_reference

# (shape, axis, groups) with 2**20 and 2**24 (16.8M) values per group, both layouts.
CASES = [
    ((2, 2**17, 16), -1, 2),
    ((2, 16, 2**17), 1, 2),
    ((1, 2**21, 8), -1, 1),
    ((1, 8, 2**21), 1, 1),
]
IDS = [f"{s}-axis{a}-g{g}" for s, a, g in CASES]


def relative_error(actual, expected):
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("shape, axis, groups", CASES, ids=IDS)
def test_float32_statistics_of_large_groups_keep_their_digits(shape, axis, groups, rng,
                                                              cpu_kernels):
    channels = shape[axis]
    # The mean is 30 standard deviations from zero: the two-pass variance must hold too.
    x = (30 + rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    gamma = (1 + 0.1 * rng.standard_normal(channels)).astype(np.float32)
    beta = rng.standard_normal(channels).astype(np.float32)

    xt = cugn.tensor(x, requires_grad=True)
    gt, bt = cugn.tensor(gamma, requires_grad=True), cugn.tensor(beta, requires_grad=True)
    y = group_norm(xt, groups, gt, bt, axis=axis)
    y.backward(cugn.tensor(dy))

    assert relative_error(y.numpy(), group_norm_reference(x, groups, gamma, beta, axis)) <= 1e-5
    del y
    dx, dgamma, dbeta = group_norm_backward_reference(x, dy, groups, gamma, axis)
    assert relative_error(xt.grad.numpy(), dx) <= 1e-5
    assert relative_error(gt.grad.numpy(), dgamma) <= 1e-5
    assert relative_error(bt.grad.numpy(), dbeta) <= 1e-5
