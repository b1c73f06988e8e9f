import os
import zlib

import numpy as np
import pytest
from hypothesis import settings

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


def _cuda_available():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver or no device
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
