"""The Numba kernels against the NumPy implementation and the float64 reference,
and which CPU implementation runs when."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cugn
from cugn import kernels
from cugn.kernels import group_norm_numba, group_norm_numpy
from cugn.kernels.layout import GroupLayout
from reference import group_norm_backward_reference, group_norm_reference

# (shape, feature axes, groups): channels-last and channels-first views the Numba
# kernels take, with odd sizes (rows and lanes that do not divide evenly).
LAYOUTS = [((3, 5, 7, 12), (3,), 4), ((3, 12, 7, 5), (1,), 3), ((2, 300, 16), (2,), 16),
           ((2, 16, 1000), (1,), 2), ((1, 1, 1, 1), (3,), 1), ((4, 6), (1,), 3),
           ((2, 32, 33), (1,), 4)]
IDS = [f"{s}-axes{a}-g{g}" for s, a, g in LAYOUTS]
TOLERANCE = {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-12}


def case(rng, shape, axes, dtype, offset=2.0):
    channels = int(np.prod([shape[a] for a in axes]))
    x = (offset + 3 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = rng.standard_normal(channels).astype(dtype).reshape([shape[a] for a in axes])
    beta = rng.standard_normal(gamma.shape).astype(dtype)
    return x, dy, gamma, beta


@pytest.mark.parametrize("shape, axes, groups", LAYOUTS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_numba_matches_numpy_and_the_reference(shape, axes, groups, dtype, rng):
    x, dy, gamma, beta = case(rng, shape, axes, dtype)
    layout = GroupLayout(shape, axes, groups)
    assert group_norm_numba.supports(x, layout)
    y, mean, rstd = group_norm_numba.forward(x, gamma, beta, layout, 1e-3)
    y_np, mean_np, rstd_np = group_norm_numpy.forward(x, gamma, beta, layout, 1e-3)
    assert (y.dtype, mean.dtype, rstd.dtype) == (y_np.dtype, mean_np.dtype, rstd_np.dtype)
    tolerance = TOLERANCE[dtype]
    expected = group_norm_reference(x, groups, gamma, beta, axes[0])
    np.testing.assert_allclose(y.astype(np.float64), expected, rtol=0,
                               atol=tolerance * 10 * np.abs(expected).max())
    np.testing.assert_allclose(mean, mean_np, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(rstd, rstd_np, rtol=tolerance)

    grads = group_norm_numba.backward(x, dy, gamma, mean, rstd, layout)
    grads_np = group_norm_numpy.backward(x, dy, gamma, mean, rstd, layout)
    references = group_norm_backward_reference(x, dy, groups, gamma, axes[0])
    for mine, theirs, reference in zip(grads, grads_np, references):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        scale = max(np.abs(reference).max(), 1.0)  # a one-value group: dx is 0 up to rounding
        np.testing.assert_allclose(mine.astype(np.float64), reference, rtol=0,
                                   atol=tolerance * 10 * scale)
        np.testing.assert_allclose(mine.astype(np.float64), theirs.astype(np.float64), rtol=0,
                                   atol=tolerance * 10 * scale)


@pytest.mark.parametrize("axis", [-1, 1])
def test_numba_statistics_far_from_zero_and_deterministic(axis, rng):
    shape = (2, 16, 40, 8) if axis == -1 else (2, 8, 40, 16)
    x = (1e4 + 1e-2 * rng.standard_normal(shape)).astype(np.float32)
    layout = GroupLayout(shape, (axis % 4,), 4)
    y, mean, rstd = group_norm_numba.forward(x, None, None, layout, 1e-9)
    expected = group_norm_reference(x, 4, axis=axis, epsilon=1e-9)
    np.testing.assert_allclose(y, expected, rtol=0, atol=2e-3)
    again = group_norm_numba.forward(x, None, None, layout, 1e-9)
    for a, b in zip((y, mean, rstd), again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("data", ["far from zero", "outlier first", "centred"])
def test_numba_channels_first_rows_across_blocks(data, rng):
    # Rows of 4133 values: a full block of CONTIGUOUS_BLOCK (4096) and a partial one.
    shape = (2, 8, 4133)
    x = rng.standard_normal(shape)
    if data == "far from zero":
        x = 1e4 + 1e-2 * x  # the centre of the second pass is the mean rounded to float32
    if data == "outlier first":
        x[0, 0, 0] = 3e4  # the pivot of the first pass, far from the rest
    x = x.astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma = (1 + rng.standard_normal(8)).astype(np.float32)
    layout = GroupLayout(shape, (1,), 2)
    assert shape[2] > group_norm_numba.CONTIGUOUS_BLOCK
    y, mean, rstd = group_norm_numba.forward(x, gamma, None, layout, 1e-9)
    expected = group_norm_reference(x, 2, gamma, axis=1, epsilon=1e-9)
    np.testing.assert_allclose(y, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
    grads = group_norm_numba.backward(x, dy, gamma, mean, rstd, layout)
    references = group_norm_backward_reference(x, dy, 2, gamma, axis=1, epsilon=1e-9)
    for mine, reference in zip(grads, references):
        np.testing.assert_allclose(mine, reference, rtol=0, atol=2e-6 * np.abs(reference).max())


def test_numba_constant_groups_infinity_and_nan():
    x = np.full((2, 6, 4), 5.0, np.float32)
    x[1, :, 2:] = np.arange(12, dtype=np.float32).reshape(6, 2)
    beta = np.arange(4, dtype=np.float32)
    layout = GroupLayout(x.shape, (2,), 2)
    y, _, rstd = group_norm_numba.forward(x, None, beta, layout, 0.0)
    np.testing.assert_array_equal(y[0], np.broadcast_to(beta, (6, 4)))  # constant: beta
    assert rstd[0, 0] == 0 and np.isfinite(y).all()
    x[0, 3, 1] = np.inf
    y, _, _ = group_norm_numba.forward(x, None, beta, layout, 1e-3)
    assert np.isnan(y[0, :, :2]).all() and np.isfinite(y[0, :, 2:]).all()
    assert np.isfinite(y[1]).all()


def test_which_cpu_implementation_runs(monkeypatch):
    rows = GroupLayout((2, 4, 8), (2,), 2)
    middle = GroupLayout((2, 3, 8, 5), (2,), 2)  # axes before and after the features
    x = np.zeros((2, 4, 8), np.float32)
    assert kernels._implementation(x, rows) is group_norm_numba
    assert kernels._implementation(np.zeros((2, 3, 8, 5), np.float32), middle) is \
        group_norm_numpy
    import ml_dtypes

    assert kernels._implementation(x.astype(ml_dtypes.bfloat16), rows) is group_norm_numpy
    monkeypatch.setattr(kernels, "numba_enabled", False)
    assert kernels._implementation(x, rows) is group_norm_numpy


def run_python(code, **env):
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=True, env={**os.environ, **env}).stdout.strip()


def test_numba_is_imported_on_first_use_and_can_be_switched_off():
    code = """
        import sys
        import numpy as np
        import cugn
        print("numba" in sys.modules, end=" ")
        cugn.functional.group_norm(np.ones((2, 4, 8), np.float32), 2)
        print("numba" in sys.modules)
    """
    assert run_python(code) == "False True"
    assert run_python(code, CUGN_NUMBA="0") == "False False"


def test_without_numba_the_numpy_path_runs():
    out = run_python("""
        import sys
        sys.modules["numba"] = None  # makes `import numba` raise ImportError
        import numpy as np
        import cugn
        from cugn import kernels
        x = cugn.tensor(np.arange(16.0).reshape(2, 8), requires_grad=True)
        cugn.functional.group_norm(x, 2).sum().backward()
        print(kernels.numba_kernels(), x.grad.shape)
    """)
    assert out == "None (2, 8)"


@pytest.mark.parametrize("axis", [-1, 1])
def test_both_paths_train_the_same_through_the_layer(axis, rng):
    shape = (4, 8, 6, 6) if axis == 1 else (4, 6, 6, 8)
    x = rng.standard_normal(shape).astype(np.float32)
    results = []
    for enabled in (False, True):
        kernels.numba_enabled = enabled
        try:
            xt = cugn.tensor(x, requires_grad=True)
            layer = cugn.layers.GroupNormalization(groups=4, axis=axis)
            (layer(xt) ** 2 * cugn.tensor(np.linspace(0, 1, shape[-1], dtype=np.float32))
             ).sum().backward()
            results.append([xt.grad.numpy(), layer.gamma.grad.numpy(), layer.beta.grad.numpy()])
        finally:
            kernels.numba_enabled = True
    for numpy_grad, numba_grad in zip(*results):
        np.testing.assert_allclose(numba_grad, numpy_grad, rtol=1e-4,
                                   atol=1e-5 * np.abs(numpy_grad).max())
