import os
import zlib

import numpy as np
import pytest
from hypothesis import settings

from cugn.backend import cuda_available

# The tests compare with Keras on its JAX backend; set before any test imports Keras.
os.environ.setdefault("KERAS_BACKEND", "jax")

# The same examples on every run, so that a failure can be reproduced.
settings.register_profile("cugn", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("cugn")


@pytest.fixture
def rng(request):
    """A generator seeded by the test's own id: its data do not depend on which tests
    ran before it."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["numpy", "numba"])
def cpu_kernels(request, monkeypatch):
    """Runs a test on each CPU implementation of group normalization and of the
    activations: the NumPy one and the Numba one (the test extra installs Numba, so
    neither is skipped)."""
    from cugn import kernels

    monkeypatch.setattr(kernels, "numba_enabled", request.param == "numba")
    if request.param == "numba":
        assert kernels.numba_kernels() is not None, "Numba is not installed"
        assert kernels.numba_elementwise() is not None
    return request.param
