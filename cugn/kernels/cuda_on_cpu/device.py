"""A CUDA device on the CPU: device memory, the kernels of a source built for
the host, launches checked argument by argument, and a record of each
launch's global traffic. ``Device.installed()`` runs cugn's real CUDA host
code (``group_norm_cuda``) on it, with this device standing in for CuPy."""

import contextlib
import ctypes
import functools
import math
import os
import types
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import cuda_loader, cuda_plan, divisor, group_norm_cuda
from . import build, library, memory

BLOCK_ORDERS = ("forward", "reversed", "shuffled")
THREAD_ORDERS = ("forward", "reversed")


@dataclass(frozen=True)
class Schedule:
    """How a launch runs: the order of the blocks (``shuffled`` with ``seed``), and
    within a block either one thread at a time, lowest (``forward``) or highest
    index first, or every thread at once (``parallel``, for ThreadSanitizer)."""

    block_order: str = "forward"
    thread_order: str = "forward"
    parallel: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.block_order not in BLOCK_ORDERS:
            raise ValueError(f"block_order must be one of {BLOCK_ORDERS}, got {self.block_order!r}")
        if self.thread_order not in THREAD_ORDERS:
            raise ValueError(f"thread_order must be one of {THREAD_ORDERS}, "
                             f"got {self.thread_order!r}")

    @property
    def options(self):
        return types.SimpleNamespace(block_order=BLOCK_ORDERS.index(self.block_order),
                                     thread_order=THREAD_ORDERS.index(self.thread_order),
                                     parallel=self.parallel, seed=self.seed)


# Blocks a cluster may have: 8 portably, 16 on sm_90 with the non-portable size allowed.
MAX_CLUSTER_BLOCKS = 16
# The granularity of the byte ranges recorded per launch and allocation, unless a
# Device is given its own (a power of two; 128, an L2 line, to follow windows of rows).
LINE_BYTES = 4096


@dataclass(frozen=True)
class Span:
    """Adjacent lines (of the device's ``line_bytes``) that one launch touched in one allocation:
    ``nbytes`` from ``offset`` bytes past its start (whole lines, but for the
    allocation's end), and the bytes the launch read and wrote in them."""

    offset: int
    nbytes: int
    read: int
    written: int


@dataclass(frozen=True)
class Traffic:
    """The bytes one launch read and wrote in one allocation (at ``address``, of
    ``nbytes``), passed as ``parameters``, and where: ``spans``, in address order
    (None stands for one span over the whole allocation)."""

    parameters: tuple
    address: int
    nbytes: int
    read: int
    written: int
    spans: tuple = None

    @property
    def touched(self):
        """``spans``, or the whole allocation as one span."""
        if self.spans is not None:
            return self.spans
        return (Span(0, self.nbytes, self.read, self.written),)


@dataclass(frozen=True)
class Launch:
    kernel: str            # the kernel's name, e.g. "forward_apply"
    name_expression: str
    grid: tuple
    block: tuple
    traffic: tuple         # of Traffic, one per allocation the launch touched
    cluster: tuple = (1, 1, 1)  # blocks a thread-block cluster

    @property
    def bytes_read(self):
        return sum(t.read for t in self.traffic)

    @property
    def bytes_written(self):
        return sum(t.written for t in self.traffic)


H200_L2_BYTES = 60 * 2 ** 20


class Device:
    """A CUDA device of ``sm_count`` multiprocessors running ``blocks_per_sm``
    resident blocks each, with ``l2_bytes`` of L2 cache (what the launch planner
    sizes grids and slices by); each launch records where it touched memory in
    lines of ``line_bytes``. ``cluster_blocks`` is the most blocks the planner may
    put in a thread-block cluster: 8, sm_90's portable most, or 1 for a device
    without clusters (below sm_90)."""

    id = 0

    def __init__(self, sm_count=4, blocks_per_sm=2, schedule=Schedule(), variant="checked",
                 source=None, l2_bytes=H200_L2_BYTES, line_bytes=LINE_BYTES,
                 cluster_blocks=max(cuda_plan.CLUSTER_SIZES)):
        if variant not in build.VARIANTS:
            raise ValueError(f"variant must be one of {build.VARIANTS}, got {variant!r}")
        if variant == "thread" and not schedule.parallel:
            # ThreadSanitizer follows host threads, not the serial schedule's fibers.
            raise ValueError("the thread variant needs Schedule(parallel=True)")
        self.sm_count = sm_count
        self.blocks_per_sm = blocks_per_sm
        self.l2_bytes = l2_bytes
        if line_bytes < 1 or line_bytes & (line_bytes - 1):
            raise ValueError(f"line_bytes must be a power of two, got {line_bytes}")
        self.line_bytes = line_bytes
        if cluster_blocks not in (1, *cuda_plan.CLUSTER_SIZES):
            raise ValueError(f"cluster_blocks must be one of {(1, *cuda_plan.CLUSTER_SIZES)}, "
                             f"got {cluster_blocks}")
        self._cluster_blocks = cluster_blocks
        self.schedule = schedule
        self.variant = variant
        self.source = cuda_loader.source() if source is None else source
        self.allocations = weakref.WeakSet()
        self.launches = []
        self.cupy = types.SimpleNamespace(
            empty=self.empty, empty_like=self.empty_like, zeros=self.zeros, full=self.full,
            ascontiguousarray=self.ascontiguousarray)

    @property
    def cluster_blocks(self):
        """The most blocks a cluster of the planner's may have: the device's, but 1 in
        the parallel schedule, which runs no clusters."""
        return 1 if self.schedule.parallel else self._cluster_blocks

    # ------------------------------------------------------------ a context, as cupy.cuda.Device

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    # ------------------------------------------------------------ the CuPy functions the host calls

    def empty(self, shape, dtype=np.float64):
        return memory.allocate(self, shape, dtype)

    def empty_like(self, array):
        return self.empty(array.shape, array.dtype)

    def zeros(self, shape, dtype=np.float64):
        array = self.empty(shape, dtype)
        array[...] = 0
        return array

    def full(self, shape, value, dtype=None):
        array = self.empty(shape, np.result_type(value) if dtype is None else dtype)
        array[...] = value
        return array

    def asarray(self, host):
        """A copy of ``host`` in device memory."""
        host = np.asarray(host)
        array = self.empty(host.shape, host.dtype)
        array[...] = host
        return array

    def ascontiguousarray(self, array, dtype=None):
        """``array`` itself when it is a C-contiguous device array of ``dtype``, as in
        CuPy; else a contiguous copy in fresh device memory."""
        dtype = array.dtype if dtype is None else np.dtype(dtype)
        if memory.allocation_of(array) is not None and array.flags.c_contiguous \
                and array.dtype == dtype:
            return array
        copy = self.empty(array.shape, dtype)
        copy[...] = array
        return copy

    # ------------------------------------------------------------ kernels

    def prepare(self, configurations):
        """Builds the kernels of ``configurations`` ahead of use, on every core."""
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(self.kernels, configurations))

    def kernels(self, configuration):
        """{name expression: kernel} of ``configuration``, as ``cuda_loader.kernels``."""
        return self.compile(configuration.name_expressions())

    def compile(self, name_expressions):
        """{name expression: kernel} of the device's source, as ``cupy.RawModule``'s
        ``name_expressions`` (built for the host on first use, then cached)."""
        built = _library(self.source, tuple(name_expressions), self.variant)
        return {name: RawKernel(self, kernel) for name, kernel in built.kernels.items()}

    def launch(self, kernel, grid, block, args, cluster=(1,)):
        """Runs ``kernel`` over ``grid`` blocks of ``block`` threads, as a CuPy
        RawKernel call does, after checking every argument against its parameter;
        in thread-block clusters of ``cluster`` blocks (sm_90; the serial schedule
        only) as cuLaunchKernelEx's cluster attribute does."""
        grid, block = _dimensions("grid", grid), _dimensions("block", block)
        cluster = _dimensions("cluster", cluster)
        if any(g % c for g, c in zip(grid, cluster)) or math.prod(cluster) > MAX_CLUSTER_BLOCKS:
            raise ValueError(f"cluster must divide the grid {grid} and have at most "
                             f"{MAX_CLUSTER_BLOCKS} blocks, got {cluster}")
        if math.prod(cluster) > 1 and self.schedule.parallel:
            raise ValueError("clusters run in the serial schedule only, not in "
                             "Schedule(parallel=True)")
        if len(args) != len(kernel.parameters):
            raise TypeError(f"{kernel.name}: {len(args)} arguments for "
                            f"{len(kernel.parameters)} parameters {kernel.parameters}")
        values, passed = [], {}
        for parameter, value in zip(kernel.parameters, args):
            if parameter.pointer:
                values.append(ctypes.c_void_p(self._address(kernel, parameter, value, passed)))
            else:
                values.append(library.scalar(parameter, value))
        pointers = (ctypes.c_void_p * max(1, len(values)))(
            *[ctypes.addressof(v) for v in values])
        live = list(self.allocations)
        bounds = [b for a in live for b in a.bounds]
        read, written, lines = kernel.library.launch(kernel, grid, block, cluster, pointers,
                                                     self.schedule.options, bounds,
                                                     kernel.library.shared,
                                                     self.line_bytes.bit_length() - 1)
        for allocation in live:
            offset = allocation.damaged_guard()
            if offset is not None:
                names = passed.get(id(allocation), ("not an argument of the launch",))
                raise library.KernelError(
                    f"{kernel.name_expression}: wrote outside an allocation of "
                    f"{allocation.nbytes} bytes ({', '.join(names)}), at byte {offset}")
        traffic = tuple(Traffic(passed.get(id(a), ()), a.begin, a.nbytes, r, w,
                                _spans(*line, a.nbytes, self.line_bytes))
                        for a, r, w, line in zip(live, read, written, lines) if r or w)
        self.launches.append(Launch(kernel.name, kernel.name_expression, grid, block, traffic,
                                    cluster))

    def _address(self, kernel, parameter, value, passed):
        if value is None:
            return None  # a null pointer, as CuPy passes None
        where = f"{kernel.name}: argument {parameter.name!r}"
        allocation = memory.allocation_of(value) if isinstance(value, np.ndarray) else None
        if allocation is None or allocation.device is not self:
            raise TypeError(f"{where} is {type(value).__name__}, not an array in this "
                            f"device's memory ({parameter.type_name})")
        # bfloat16 also travels as 16-bit words, as on a GPU (CuPy has no bfloat16 arrays).
        words = (parameter.dtype.name == "bfloat16"
                 and value.dtype in group_norm_cuda.BFLOAT16_WORDS)
        if value.dtype != parameter.dtype and not words:
            raise TypeError(f"{where} is a {value.dtype} array, the kernel takes "
                            f"{parameter.type_name}")
        if not value.flags.c_contiguous:
            raise TypeError(f"{where} is not C-contiguous (strides {value.strides})")
        if not parameter.const and not value.flags.writeable:
            raise TypeError(f"{where} is read-only, and the kernel writes it "
                            f"({parameter.type_name})")
        passed.setdefault(id(allocation), ())
        passed[id(allocation)] += (parameter.name,)
        return value.data.ptr

    # ------------------------------------------------------------ cugn's host code on this device

    @contextlib.contextmanager
    def installed(self):
        """Runs ``group_norm_cuda`` on this device: CuPy's functions, the loader's
        kernels and the device's size and L2 are this device's inside the block."""
        saved = {name: getattr(group_norm_cuda, name)
                 for name in ("cupy", "_kernels", "_sm_count", "_blocks_per_sm", "_l2_bytes",
                              "_cluster_blocks", "_launch")}
        saved_kernels = cuda_loader.kernels
        group_norm_cuda.cupy = self.cupy
        group_norm_cuda._kernels = group_norm_cuda._Kernels  # uncached: this device's kernels
        group_norm_cuda._sm_count = lambda device_id: self.sm_count
        group_norm_cuda._blocks_per_sm = lambda device_id, configuration: self.blocks_per_sm
        group_norm_cuda._l2_bytes = lambda device_id: self.l2_bytes
        group_norm_cuda._cluster_blocks = lambda device_id: self.cluster_blocks
        # A cluster kernel's size is compiled in on a GPU; here the launch gives it.
        group_norm_cuda._launch = lambda raw, grid, block, args, cluster: raw(
            grid, block, args, cluster=(cluster,))
        cuda_loader.kernels = lambda configuration, device_id: self.kernels(configuration)
        try:
            yield self
        finally:
            cuda_loader.kernels = saved_kernels
            for name, value in saved.items():
                setattr(group_norm_cuda, name, value)


class RawKernel:
    """A kernel of this device, called as a ``cupy.RawKernel``: ``(grid, block, args)``,
    with ``cluster=`` dimensions for a launch in thread-block clusters."""

    def __init__(self, device, kernel):
        self.device = device
        self.kernel = kernel

    def __call__(self, grid, block, args, cluster=(1,)):
        self.device.launch(self.kernel, grid, block, args, cluster)


def _spans(read, written, nbytes, line_bytes):
    """The runs of touched lines of per-line byte counts ``read`` and ``written``."""
    lines = np.flatnonzero((read > 0) | (written > 0))
    if not lines.size:
        return ()
    gaps = np.flatnonzero(np.diff(lines) > 1)
    starts = np.concatenate([lines[:1], lines[gaps + 1]])
    ends = np.concatenate([lines[gaps], lines[-1:]]) + 1
    zero = np.zeros(1, np.uint64)
    read_before = np.concatenate([zero, np.cumsum(read, dtype=np.uint64)])
    written_before = np.concatenate([zero, np.cumsum(written, dtype=np.uint64)])
    return tuple(
        Span(int(a) * line_bytes, min(int(b) * line_bytes, nbytes) - int(a) * line_bytes,
             int(read_before[b] - read_before[a]), int(written_before[b] - written_before[a]))
        for a, b in zip(starts, ends))


def _dimensions(what, value):
    value = tuple(value) if isinstance(value, tuple | list) else (value,)
    if not 1 <= len(value) <= 3 or not all(isinstance(v, int | np.integer) and v >= 1
                                           for v in value):
        raise ValueError(f"{what} must be 1 to 3 positive integers, got {value}")
    return tuple(int(v) for v in value) + (1,) * (3 - len(value))


@functools.cache
def _library(source, name_expressions, variant):
    type_names = {**_TYPE_NAMES, **{ctype: name for ctype, (name, _) in _STRUCTS.items()}}
    path = build.build(source, name_expressions, type_names, _defines(), variant)
    return library.Library(path, source, dict(_STRUCTS.values()))


_TYPE_NAMES = {ctype: dtype.name for dtype, ctype in cuda_loader.STORAGE_TYPES.items()
               if ctype.startswith("cugn::")}
# The structs the kernels take by value: the source's type, and the name and
# NumPy dtype the launcher checks an argument against.
_STRUCTS = {f"cugn::Divisor<{cuda_loader.INDEX_TYPES[index64]}>":
            (f"Divisor<{np.dtype(index).name}>", divisor.dtype(index))
            for index64, index in ((False, np.uint32), (True, np.uint64))}


def _defines():
    """The loader's ``-D`` options for NVRTC, given to the host compiler as they are."""
    return tuple(o for o in cuda_loader.OPTIONS if o.startswith("-D"))
