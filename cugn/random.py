"""cugn's random number generators: one NumPy ``Generator`` for the CPU, CuPy's
for CUDA devices. ``manual_seed`` seeds both, like ``torch.manual_seed``; the
factories ``randn``, ``rand`` and ``randint``, initializers without a seed and
``Dropout`` without a seed draw from them."""

import numbers

import numpy as np

_generator = np.random.default_rng()
_seed = None  # the last manual_seed, given to each CUDA device's generator on first use
_seeded_devices = set()


def manual_seed(seed):
    """Seed cugn's generator for the CPU and CuPy's for every CUDA device."""
    global _generator, _seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not (
            0 <= seed < 2**64):
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    _seed = int(seed)
    _seeded_devices.clear()


def generator():
    """The NumPy generator the CPU draws from."""
    return _generator


def cuda_random(cp, device_index):
    """CuPy's ``random`` module, its current device's generator seeded by the last
    ``manual_seed`` when that device draws for the first time since."""
    if _seed is not None and device_index not in _seeded_devices:
        cp.random.seed(_seed)
        _seeded_devices.add(device_index)
    return cp.random
