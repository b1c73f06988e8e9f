"""Properties of group normalization over random shapes, axes and group counts."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cugn.functional import group_norm


@st.composite
def cases(draw):
    """A float64 input with rank 2-4, a feature axis, and a group count dividing it."""
    rank = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    positive = draw(st.integers(1, rank - 1))
    axis = draw(st.sampled_from([positive, positive - rank]))  # as given, or from the end
    channels_axis = axis % rank
    channels = draw(st.sampled_from([2, 4, 6, 8]))
    shape = shape[:channels_axis] + (channels,) + shape[channels_axis + 1:]
    groups = draw(st.sampled_from([g for g in (1, 2, channels // 2, channels, -1)
                                   if channels % abs(g) == 0]))
    seed = draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).standard_normal(shape) * 3 + 2
    return x, axis, groups


def grouped(x, axis, groups):
    """(N, G, everything else of the group) for checking per-group statistics."""
    moved = np.moveaxis(x, axis, -1)
    channels = moved.shape[-1]
    groups = channels if groups == -1 else groups
    split = moved.reshape(moved.shape[0], -1, groups, channels // groups)
    return np.moveaxis(split, 2, 1).reshape(moved.shape[0], groups, -1)


@given(cases())
def test_each_group_has_mean_zero_and_unit_variance(case):
    x, axis, groups = case
    y = grouped(group_norm(x, groups, axis=axis, epsilon=0.0).numpy(), axis, groups)
    spread = grouped(x, axis, groups).var(axis=-1)
    nondegenerate = spread > 1e-12
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1)[nondegenerate], 1.0, rtol=1e-10)


@given(cases(), st.floats(0.01, 100.0), st.floats(-1e3, 1e3), st.integers(0, 2**32 - 1))
def test_invariant_to_shift_and_scale_within_a_group(case, scale, shift, seed):
    x, axis, groups = case
    rng = np.random.default_rng(seed)
    # A different positive scale and shift for every (sample, group).
    blocks = grouped(x, axis, groups)
    factors = scale * rng.uniform(0.5, 2.0, blocks.shape[:2] + (1,))
    offsets = shift * rng.uniform(-1, 1, blocks.shape[:2] + (1,))
    transformed = blocks * factors + offsets
    # Back to x's layout: invert `grouped`.
    moved = np.moveaxis(x, axis, -1)
    channels = moved.shape[-1]
    g = channels if groups == -1 else groups
    back = np.moveaxis(transformed.reshape(moved.shape[0], g, -1, channels // g), 1, 2)
    x2 = np.moveaxis(back.reshape(moved.shape), -1, axis)

    y1 = group_norm(x, groups, axis=axis, epsilon=0.0).numpy()
    y2 = group_norm(x2, groups, axis=axis, epsilon=0.0).numpy()
    np.testing.assert_allclose(y1, y2, atol=1e-7)


@given(cases())
def test_one_group_is_layer_norm_over_every_non_batch_axis(case):
    x, axis, _ = case
    reduce = tuple(range(1, x.ndim))
    mean = x.mean(axis=reduce, keepdims=True)
    expected = (x - mean) / np.sqrt(x.var(axis=reduce, keepdims=True) + 1e-3)
    np.testing.assert_allclose(group_norm(x, 1, axis=axis).numpy(), expected, atol=1e-12)


@given(cases())
def test_one_group_per_channel_is_instance_norm(case):
    x, axis, _ = case
    reduce = tuple(a for a in range(1, x.ndim) if a != axis % x.ndim)
    mean = x.mean(axis=reduce, keepdims=True)
    expected = (x - mean) / np.sqrt(x.var(axis=reduce, keepdims=True) + 1e-3)
    channels = x.shape[axis]
    for groups in (channels, -1):
        np.testing.assert_allclose(group_norm(x, groups, axis=axis).numpy(), expected,
                                   atol=1e-12)
