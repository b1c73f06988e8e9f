"""Where the CUDA GroupNorm kernels come from: source, compile options,
instantiations, and the cached CuPy modules.

Kernels are compiled at run time, one ``cupy.RawModule`` per ``Configuration``
(storage dtype, vector width, 64-bit indexing, fused activation) and device. A
configuration without an activation holds every kernel it can launch; one with
an activation holds only the kernels the activation changes (the apply, the
backward's partial sums and dx), and borrows the rest from its plain twin.
``compile_check.py`` compiles exactly these modules through NVRTC for explicit
architectures, so CI proves what ships.
"""

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from .cuda_plan import BLOCK, CLUSTER_SIZES, ON_CHIP_BYTES, ON_CHIP_CHANNELS

SOURCE_DIRECTORY = Path(__file__).with_name("cuda")
# The kernels' source: this file, which includes the others of its folder.
SOURCE_NAME = "group_norm.cu"

# Compile options shared by the loader and the compile check. Full-precision
# division and sqrt stay on (NVRTC's default): rstd must match the NumPy path.
OPTIONS = ("--std=c++17", f"-DCUGN_BLOCK={BLOCK}", f"-DCUGN_ON_CHIP_BYTES={ON_CHIP_BYTES}",
           f"-DCUGN_ON_CHIP_CHANNELS={ON_CHIP_CHANNELS}")

# The architectures the compile check targets by default (A100 and H100 class).
ARCHITECTURES = ("sm_80", "sm_90")

VECTOR_BYTES = 16
# bfloat16 has no CuPy dtype: on a GPU its arrays are 16-bit words (group_norm_cuda's
# ``storage``); ml_dtypes names it.
STORAGE_TYPES = {
    np.dtype(np.float16): "cugn::Half",
    np.dtype(ml_dtypes.bfloat16): "cugn::BFloat16",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}
INDEX_TYPES = {False: "unsigned int", True: "unsigned long long"}
# The activations the kernels fuse (fused_activation.FUSED_ACTIVATIONS), as the
# source's Activation values; None is no activation.
ACTIVATIONS = {None: "cugn::kLinear", "silu": "cugn::kSilu", "relu": "cugn::kRelu",
               "gelu": "cugn::kGelu"}

# Kernels templated on <T, V, I>, on <T, V, I, ACT>, on <T, V, I, CHANNELS_LAST, ACT>,
# on <T, V, I, CHANNELS_LAST, ACT, K> (K blocks a thread-block cluster), and on <T, I>.
VECTOR_KERNELS = ("forward_stats_segment", "forward_stats_column")
ACTIVATED_VECTOR_KERNELS = ("backward_partials_segment", "backward_partials_column")
LAYOUT_KERNELS = ("forward_apply", "backward_dx", "forward_on_chip", "backward_on_chip")
CLUSTER_KERNELS = ("forward_on_chip_cluster", "backward_on_chip_cluster")
SCALAR_KERNELS = ("forward_finalize", "backward_coefficients", "backward_parameters")
# The kernels an activation changes.
ACTIVATED_KERNELS = (*ACTIVATED_VECTOR_KERNELS, *LAYOUT_KERNELS, *CLUSTER_KERNELS)


@dataclass(frozen=True)
class Configuration:
    """One compiled module: storage dtype, values per vector access, 64-bit indices,
    and the fused activation (a key of ACTIVATIONS)."""

    dtype: np.dtype
    vector: int
    index64: bool
    activation: str | None = None

    def kernel(self, name, channels_last=None, cluster=None):
        """The name expression of one kernel instantiation in this module."""
        types = STORAGE_TYPES[self.dtype]
        index = INDEX_TYPES[self.index64]
        activation = ACTIVATIONS[self.activation]
        if name in SCALAR_KERNELS:
            return f"cugn::{name}<{types}, {index}>"
        flag = "true" if channels_last else "false"
        if name in CLUSTER_KERNELS:
            return (f"cugn::{name}<{types}, {self.vector}, {index}, {flag}, {activation}, "
                    f"{cluster}>")
        if name in LAYOUT_KERNELS:
            return f"cugn::{name}<{types}, {self.vector}, {index}, {flag}, {activation}>"
        if name in ACTIVATED_VECTOR_KERNELS:
            return f"cugn::{name}<{types}, {self.vector}, {index}, {activation}>"
        return f"cugn::{name}<{types}, {self.vector}, {index}>"

    def name_expressions(self):
        """Every kernel instantiation this module holds: all a launch needs, or with an
        activation only those it changes."""
        if self.activation is None:
            names = [self.kernel(k) for k in (*VECTOR_KERNELS, *ACTIVATED_VECTOR_KERNELS)]
        else:
            names = [self.kernel(k) for k in ACTIVATED_VECTOR_KERNELS]
        names += [self.kernel(k, flag) for k in LAYOUT_KERNELS for flag in (True, False)]
        names += [self.kernel(k, flag, size) for k in CLUSTER_KERNELS for flag in (True, False)
                  for size in CLUSTER_SIZES]
        if self.activation is None:
            names += [self.kernel(k) for k in SCALAR_KERNELS]
        return names

    def without_activation(self):
        """The plain configuration that holds the kernels this one borrows."""
        return dataclasses.replace(self, activation=None)

    def __str__(self):
        index = "64" if self.index64 else "32"
        text = f"{self.dtype.name}, vector {self.vector}, {index}-bit index"
        return text if self.activation is None else f"{text}, {self.activation}"


def vector_widths(dtype):
    """The vector widths compiled for ``dtype``: powers of two up to 16 bytes."""
    widest = VECTOR_BYTES // np.dtype(dtype).itemsize
    return tuple(1 << i for i in range(widest.bit_length()))


def configurations():
    """Every configuration the library can load."""
    return [Configuration(dtype, vector, index64, activation)
            for activation in ACTIVATIONS
            for dtype in STORAGE_TYPES
            for vector in vector_widths(dtype)
            for index64 in (False, True)]


_LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+)".*$', re.MULTILINE)


@functools.cache
def source():
    """The kernels' source as one text: group_norm.cu with each of its local
    ``#include "file"`` lines replaced by that file of its folder, between
    ``#line`` markers so that compiler messages name the file and line.

    One text, because CuPy's on-disk kernel cache keys on the code it is given
    and not on the headers NVRTC would find through ``-I``: an edited header
    would be served from a stale cache."""
    text = (SOURCE_DIRECTORY / SOURCE_NAME).read_text()

    def included(match):
        name = match.group(1)
        following = text.count("\n", 0, match.end()) + 2  # the line after the #include
        return (f'#line 1 "{name}"\n{(SOURCE_DIRECTORY / name).read_text()}'
                f'#line {following} "{SOURCE_NAME}"')

    return _LOCAL_INCLUDE.sub(included, text)


@functools.cache
def kernels(configuration, device_id):
    """The kernels of ``configuration`` loaded on device ``device_id``, by name
    expression; compiled on first use (then cached in memory and in CuPy's on-disk
    kernel cache).

    A loaded module belongs to one device, so the cache is per device, and the
    kernels are looked up under that device so that the module is loaded there."""
    import cupy

    with cupy.cuda.Device(device_id):
        compiled = cupy.RawModule(code=source(), options=OPTIONS,
                                  name_expressions=configuration.name_expressions())
        return {name: compiled.get_function(name) for name in configuration.name_expressions()}
