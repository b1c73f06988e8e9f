"""GroupNorm forward and backward on CuPy arrays: the CUDA path.

Same function as ``group_norm_numpy.py``. The input is made contiguous once in
its (N, M, G, D, S) view; ``cuda_plan`` picks the kernels, tiers and grids, and
``cuda_loader`` supplies the compiled kernels. Everything runs on CuPy's current
stream without synchronising; no float atomics, so on one GPU model the same
input, at the same alignment, gives bitwise the same results (the split of
large groups depends on the SM count, the vector width on the addresses).

Forward: the statistics of each group (mean, rstd), from the statistics kernel
itself when one unit of threads reduces a whole group, else from partials that
one thread per group merges; then y = act(a*(x - p) + b) in one elementwise
pass, act an optional fused activation. Backward: per-(n, c) sums of g,
g*(x - mean) and x - mean, with g = dy (dy*act'(z) after an activation, z
recomputed from x, mean, rstd, gamma and beta), then per-group coefficients and
dgamma/dbeta from those sums in a fixed order, then dx = c1*g + c2*(x - mean) + c3
in one elementwise pass. The sum of x - mean corrects for the rounding of the
saved mean when |mean| >> std, as the NumPy path does.

When a group's slice fits in one block's shared memory, or on sm_90 in those of
a thread-block cluster, and there are blocks enough to fill the GPU
(``cuda_plan.on_chip``), each pass is instead one kernel that reads its inputs
once into shared memory and writes y, or dx and the per-(n, c) sums, from
there; the backward then sums dgamma and dbeta over the batch in one more launch.

Otherwise each pass reads its inputs twice; when they exceed half the device's L2, it
runs part by part (``cuda_plan.slices``: whole samples, groups of a sample, or
pieces of rows of one sample, the elementwise launches of the pieces last
first), so that the second read comes from L2. Every part of a pass has as
many partials per group or channel, and the backward's parameters kernel sums
every part's at the end in its one order: with the same reductions, parts give
bitwise the results of one pass.
"""

import functools
import math

import cupy
import ml_dtypes
import numpy as np
from cupy_backends.cuda.api import driver

from ..backend import compute_dtype
from ..profiling.nvtx import kernel_range
from . import cuda_loader, cuda_plan
from .divisor import divisor
from .fused_activation import check_activation

# Whether a pass whose re-read inputs exceed half the L2 runs in parts (above); off,
# every pass is one part. The GPU benchmark times both, to weigh the parts' extra
# launches against the DRAM traffic they save.
l2_slicing = True
# Whether a group whose slice fits in one block's shared memory is normalised there,
# read once (cuda_plan's on-chip tier); off, every pass takes the tiers that read
# their inputs twice. The GPU benchmark times both.
on_chip = True

# Kernels whose occupancy sizes the grids (all share the block size and launch bounds).
_REDUCTION_KERNELS = ("forward_stats_segment", "forward_stats_column",
                      "backward_partials_segment", "backward_partials_column")


def forward(x, gamma, beta, layout, epsilon, storage=None, activation=None):
    """Return ``y`` (x's dtype), and ``mean`` and ``rstd`` of shape (N, G) in the compute dtype.

    ``storage="bfloat16"`` reads x as bfloat16 held in 16-bit integer words (CuPy has
    no bfloat16 arrays) and writes y the same way. ``activation`` ("silu" or its
    alias "swish", "relu", "gelu") is applied to y in the same store; mean and rstd
    are those of the normalisation.
    """
    storage = _storage(x, storage)
    activation = check_activation(activation)
    acc = compute_dtype(storage)
    if x.size == 0:
        return _empty_forward(x, layout, acc, epsilon)
    with x.device:  # launches and allocations on x's device, on its current stream
        return _forward(x, gamma, beta, layout, epsilon, acc, storage, activation)


def _forward(x, gamma, beta, layout, epsilon, acc, storage, activation):
    batch, rows, groups, group_channels, spatial = layout.view
    x5 = cupy.ascontiguousarray(layout.to_view(x))
    y5 = cupy.empty_like(x5)
    plan, kernels, index = _prepare(x5, (x5, y5), storage, activation)
    gamma, beta = _parameter(gamma, acc), _parameter(beta, acc)
    mean = cupy.empty((batch, groups), acc)
    rstd = cupy.empty((batch, groups), acc)
    if plan.forward_on_chip is not None:
        kernels.on_chip("forward_on_chip", plan.forward_on_chip.cluster)(
            (plan.forward_on_chip.grid,), (cuda_plan.BLOCK,),
            (x5, y5, gamma, beta, mean, rstd, index(groups), index(rows),
             divisor(group_channels * spatial // plan.vector, index), index(group_channels),
             divisor(spatial, index), acc.type(layout.group_size), acc.type(epsilon)))
        return layout.from_view(y5), mean, rstd
    pivot = cupy.empty(batch * groups, acc)
    shifted_mean = cupy.empty(batch * groups, acc)

    pitch = cuda_plan.pitch(layout.view)
    for part in plan.forward:
        x_part, y_part = _region(x5, part, pitch), _region(y5, part, pitch)
        units, channels = _groups_of(part), _channels_of(part)
        group_stats = [_flat(a)[units] for a in (mean, rstd, pivot, shifted_mean)]

        def statistics(piece, out, x_part=x_part, group_stats=group_stats):
            x_piece = _region(x_part, piece, pitch)
            _statistics(kernels, index, plan.vector, piece.reduction, x_piece, piece.view, pitch,
                        out, group_stats, layout.group_size, epsilon, acc)
            if out is not None:
                _repivot(out, x_piece, x_part, storage, acc)

        if part.split == 1:  # one unsplit piece: the statistics kernel writes them
            statistics(part.pieces[0], None)
        else:
            partials = _first_pass(part, units.stop - units.start, 1, acc, statistics)
            _finalize(kernels, index, part.merge_grid, x_part, part.view, pitch, partials,
                      part.split, *group_stats, layout.group_size, epsilon, acc)
        for piece in reversed(part.pieces):
            _apply(kernels, index, plan.vector, piece.elementwise_grid,
                   _region(x_part, piece, pitch), _region(y_part, piece, pitch), piece.view,
                   pitch, _select(gamma, channels), _select(beta, channels), *group_stats[1:])
    return layout.from_view(y5), mean, rstd


def _statistics(kernels, index, vector, stats, x, view, pitch, partials, group_stats,
                group_size, epsilon, acc):
    """Statistics partials of ``x`` (a region of ``view``, rows ``pitch`` apart), by
    ``stats`` (a Reduction); with ``partials`` None (an unsplit reduction), the groups'
    statistics ``group_stats`` (mean, rstd, pivot, shifted mean) directly."""
    batch, rows, groups, group_channels, spatial = view
    channels = groups * group_channels
    units = batch * groups
    finals = (None,) * 4 if partials is not None else group_stats
    scalars = (acc.type(group_size), acc.type(epsilon))
    if stats.kernel == "segment":
        kernels.forward_stats_segment(
            (stats.grid,), (cuda_plan.BLOCK,),
            (x, partials, *finals, index(units), index(groups), index(rows),
             divisor(group_channels * spatial // vector, index), index(pitch // vector),
             index(stats.split), index(stats.chunk), np.int32(stats.unit_threads), *scalars))
    else:
        kernels.forward_stats_column(
            (stats.grid,), (cuda_plan.BLOCK,),
            (x, partials, *finals, index(rows), index(channels), index(pitch),
             index(group_channels), index(groups), index(stats.column_chunks),
             index(stats.split), index(stats.chunk), np.int32(stats.lanes),
             np.int32(stats.rows_per_block), np.int32(stats.merge_width), *scalars))


def _finalize(kernels, index, grid, x, view, pitch, partials, split, mean, rstd, pivot,
              shifted_mean, group_size, epsilon, acc):
    batch, rows, groups, group_channels, spatial = view
    kernels.forward_finalize(
        (grid,), (cuda_plan.BLOCK,),
        (x, partials, mean, rstd, pivot, shifted_mean, index(batch * groups), index(split),
         index(groups), index(rows * pitch), index(group_channels * spatial),
         acc.type(group_size), acc.type(epsilon)))


def _apply(kernels, index, vector, grid, x, y, view, pitch, gamma, beta, rstd, pivot,
           shifted_mean):
    kernels.forward_apply(
        (grid,), (cuda_plan.BLOCK,),
        (x, y, gamma, beta, rstd, pivot, shifted_mean,
         index(math.prod(view) // vector), *_locator(view, pitch, index)))


def backward(x, dy, gamma, mean, rstd, layout, storage=None, beta=None, activation=None):
    """Return ``dx`` (x's dtype), ``dgamma`` and ``dbeta`` (feature shape, compute dtype).

    ``dy`` is read in x's dtype (it is cast when it differs); with
    ``storage="bfloat16"``, x, dy and dx are bfloat16 in 16-bit words, as in ``forward``.
    With the forward's ``activation``, ``dy`` is the gradient of the activated output,
    and the activation's input is recomputed from x, mean, rstd, gamma and ``beta``.
    """
    storage = _storage(x, storage)
    activation = check_activation(activation)
    if storage != x.dtype and dy.dtype != x.dtype:
        raise TypeError(f"dy must hold {storage} in {x.dtype} words like x, got dtype {dy.dtype}")
    acc = compute_dtype(storage)
    if x.size == 0:
        with x.device:
            return (cupy.empty(x.shape, x.dtype), cupy.zeros(layout.feature_shape, acc),
                    cupy.zeros(layout.feature_shape, acc))
    with x.device:
        return _backward(x, dy, gamma, mean, rstd, layout, acc, storage, beta, activation)


def _backward(x, dy, gamma, mean, rstd, layout, acc, storage, beta, activation):
    batch, rows, groups, group_channels, spatial = layout.view
    x5 = cupy.ascontiguousarray(layout.to_view(x))
    dy5 = cupy.ascontiguousarray(layout.to_view(dy), dtype=x.dtype)
    dx5 = cupy.empty_like(x5)
    plan, kernels, index = _prepare(x5, (x5, dy5, dx5), storage, activation)
    channels = groups * group_channels
    units = batch * groups
    mean = cupy.ascontiguousarray(mean, dtype=acc)
    rstd = cupy.ascontiguousarray(rstd, dtype=acc)
    weight = _parameter(gamma, acc)
    shift = None if activation is None else _parameter(beta, acc)
    residual = cupy.empty(units, acc)
    tier = plan.backward_on_chip
    if tier is not None:
        # The sums of g and g*(x - mean) per (n, c), one per block of a group's
        # cluster, which backward_parameters reads.
        partials = cupy.empty(2 * batch * tier.cluster * channels, acc)
        kernels.on_chip("backward_on_chip", tier.cluster)(
            (tier.grid,), (cuda_plan.BLOCK,),
            (x5, dy5, dx5, weight, shift, mean, rstd, partials, residual, index(groups),
             index(rows), divisor(group_channels * spatial // plan.vector, index),
             index(group_channels), divisor(spatial, index), np.int32(tier.unit_threads),
             acc.type(layout.group_size)))
        return (layout.from_view(dx5), *_parameters(kernels, index, plan, partials, rstd,
                                                    residual, layout, tier.cluster, acc))
    c2 = cupy.empty(units, acc)
    c3 = cupy.empty(units, acc)
    # Every part has as many partial sums per channel: all land in one array, which
    # the parameters kernel sums over the batch in one order whatever the parts.
    split = plan.backward[0].split
    partials = cupy.empty(3 * batch * split * channels, acc)

    pitch = cuda_plan.pitch(layout.view)
    for part in plan.backward:
        x_part, dy_part, dx_part = (_region(a, part, pitch) for a in (x5, dy5, dx5))
        part_batch, _, part_groups, _, _ = part.view
        part_units, part_channels = _groups_of(part), _channels_of(part)
        sums = _first_pass(
            part, part_batch, part_groups * group_channels, acc,
            lambda piece, out: _partial_sums(kernels, index, plan.vector, piece.reduction,
                                             _region(x_part, piece, pitch),
                                             _region(dy_part, piece, pitch), piece.view, pitch,
                                             _flat(mean)[part_units], _flat(rstd)[part_units],
                                             _select(weight, part_channels),
                                             _select(shift, part_channels), out),
            partials if len(plan.backward) == 1 else None)
        if sums is not partials:
            first = part.unit // groups
            partials.reshape(3, batch, split, channels)[
                :, first:first + part_batch, :, part_channels] = sums.reshape(
                    3, part_batch, split, part_groups * group_channels)
        group_terms = [a[part_units] for a in (_flat(rstd), c2, c3, residual)]
        _coefficients(kernels, index, part.merge_grid, sums, _select(weight, part_channels),
                      *group_terms, part_batch * part_groups, part_groups, group_channels,
                      split, layout.group_size, acc)
        for piece in reversed(part.pieces):
            _dx(kernels, index, plan.vector, piece.elementwise_grid,
                *(_region(a, piece, pitch) for a in (x_part, dy_part, dx_part)), piece.view,
                pitch, _select(weight, part_channels), _select(shift, part_channels),
                _flat(mean)[part_units], *group_terms[:3])

    return (layout.from_view(dx5),
            *_parameters(kernels, index, plan, partials, rstd, residual, layout, split, acc))


def _parameters(kernels, index, plan, partials, rstd, residual, layout, split, acc):
    """dgamma and dbeta (feature shape) from the per-(n, c) sums of every part, ``split``
    per channel and sample, summed in one order."""
    batch, _, groups, group_channels, _ = layout.view
    channels = groups * group_channels
    dgamma = cupy.empty(channels, acc)
    dbeta = cupy.empty(channels, acc)
    kernels.backward_parameters(
        (plan.parameters_grid,), (cuda_plan.BLOCK,),
        (partials, rstd, residual, dgamma, dbeta, index(batch), index(channels),
         index(group_channels), index(groups), index(split)))
    return dgamma.reshape(layout.feature_shape), dbeta.reshape(layout.feature_shape)


def _partial_sums(kernels, index, vector, sums, x, dy, view, pitch, mean, rstd, weight, shift,
                  partials):
    """Per-channel partial sums of ``x`` and ``dy`` (regions of ``view``, rows ``pitch``
    apart), by ``sums`` (rstd, weight and shift read only by the kernels of an activation)."""
    batch, rows, groups, group_channels, spatial = view
    channels = groups * group_channels
    if sums.kernel == "segment":
        kernels.backward_partials_segment(
            (sums.grid,), (cuda_plan.BLOCK,),
            (x, dy, mean, rstd, weight, shift, partials, index(batch * channels),
             index(channels), index(rows), divisor(spatial // vector, index), index(sums.split),
             index(sums.chunk), index(group_channels), index(groups),
             np.int32(sums.unit_threads)))
    else:
        kernels.backward_partials_column(
            (sums.grid,), (cuda_plan.BLOCK,),
            (x, dy, mean, rstd, weight, shift, partials, index(rows), index(channels),
             index(pitch), index(group_channels), index(groups), index(sums.column_chunks),
             index(sums.split), index(sums.chunk), np.int32(sums.lanes),
             np.int32(sums.rows_per_block)))


def _coefficients(kernels, index, grid, partials, weight, rstd, c2, c3, residual, units,
                  groups, group_channels, split, group_size, acc):
    kernels.backward_coefficients(
        (grid,), (cuda_plan.BLOCK,),
        (partials, weight, rstd, c2, c3, residual, index(units), index(groups),
         index(group_channels), index(split), acc.type(group_size)))


def _dx(kernels, index, vector, grid, x, dy, dx, view, pitch, weight, shift, mean, rstd, c2, c3):
    kernels.backward_dx(
        (grid,), (cuda_plan.BLOCK,),
        (x, dy, dx, weight, shift, mean, rstd, c2, c3, index(math.prod(view) // vector),
         *_locator(view, pitch, index)))


def _locator(view, pitch, index):
    """The elementwise kernels' arguments that place a vector of ``view`` (rows
    ``pitch`` values apart) in memory and in its group: the divisors of locate()
    and of the group's channels, the pitch and the groups."""
    _, rows, groups, group_channels, spatial = view
    channels = groups * group_channels
    return (divisor(spatial, index), divisor(channels, index), index(pitch),
            divisor(group_channels, index), index(groups),
            divisor(rows * channels * spatial, index))


# ------------------------------------------------------------------ parts of a pass


def _region(array, part, pitch):
    """The memory of ``part`` (a cuda_plan Part or Piece) in ``array`` (the contiguous
    input, or a region of it), its rows ``pitch`` values apart: a contiguous array of
    the part's view, or, for a window of a sample's groups (channels-last), the
    span from its first value to its last, with the other groups' values between
    its rows."""
    batch, rows, groups, group_channels, spatial = part.view
    extent = (batch * rows - 1) * pitch + groups * group_channels * spatial
    span = _flat(array)[part.offset:part.offset + extent]
    return span.reshape(part.view) if extent == math.prod(part.view) else span


def _flat(array):
    return array.reshape(-1)


def _groups_of(part):
    """The slice of the groups (n*G + g) of ``part``."""
    return slice(part.unit, part.unit + part.view[0] * part.view[2])


def _channels_of(part):
    """The slice of the channels of ``part``'s groups."""
    return slice(part.channel, part.channel + part.view[2] * part.view[3])


def _select(param, channels):
    return None if param is None else param[channels]


def _repivot(partials, x_piece, x_part, storage, acc):
    """Partial means of ``x_piece``'s statistics made relative to the pivots of
    ``x_part`` (each group's first value there), as the finalize kernel takes them:
    the statistics kernels shift by the group's first value in their own input.
    The shift is a difference of two values of the group, so the means keep the
    accuracy the pivot gives them when |mean| >> std."""
    if x_piece.data.ptr == x_part.data.ptr:
        return
    means = partials.reshape(3, x_piece.shape[0] * x_piece.shape[2], -1)[1]
    shift = _values(x_piece[:, 0, :, 0, 0], storage, acc) - _values(x_part[:, 0, :, 0, 0],
                                                                     storage, acc)
    means += shift.reshape(-1, 1)


def _values(stored, storage, acc):
    """``stored`` values of ``storage`` in the compute dtype ``acc`` (bfloat16 as words)."""
    if storage != stored.dtype:  # bfloat16 words: the high half of a float32
        return (stored.astype(np.uint32) << 16).view(np.float32)
    return stored.astype(acc)


def _first_pass(part, outer, inner, acc, launch, out=None):
    """The partials of ``part``'s reduction, ``launch(piece, out)`` run on each
    piece in order, as one array of (3, outer, part.split, inner) values: each
    piece's (3, outer, split, inner) side by side along the split, in order.
    ``out``, when given and the part is one piece, receives them directly."""
    if len(part.pieces) == 1:
        if out is None:
            out = cupy.empty(3 * outer * part.split * inner, acc)
        launch(part.pieces[0], out)
        return out
    merged = cupy.empty((3, outer, part.split, inner), acc)
    start = 0
    for piece in part.pieces:
        split = piece.reduction.split
        partials = cupy.empty(3 * outer * split * inner, acc)
        launch(piece, partials)
        merged[:, :, start:start + split] = partials.reshape(3, outer, split, inner)
        start += split
    return merged.reshape(-1)


# ------------------------------------------------------------------ helpers


class _Launch:
    """One kernel, launched inside an NVTX kernel range named after it, e.g.
    ``kernel:group_norm_forward_apply<float16, 8>`` (what ncu_group_norm.py filters on),
    ``kernel:group_norm_forward_apply<float16, 8, silu>`` with an activation, and
    the cluster's blocks last for a cluster kernel."""

    def __init__(self, raw, name, configuration, cluster=1):
        self.raw = raw  # the cupy.RawKernel
        self.cluster = cluster
        self.range_name = f"group_norm_{name}"
        self.template_args = (configuration.dtype.name, configuration.vector)
        if configuration.activation is not None and name in cuda_loader.ACTIVATED_KERNELS:
            self.template_args += (configuration.activation,)
        if name in cuda_loader.CLUSTER_KERNELS:
            self.template_args += (cluster,)

    def __call__(self, grid, block, args):
        with kernel_range(self.range_name, *self.template_args):
            _launch(self.raw, grid, block, args, self.cluster)


def _launch(raw, grid, block, args, cluster):
    """Launches ``raw`` as CuPy does, with cuLaunchKernel: a cluster kernel's size
    (``cluster`` blocks) is its own, compiled in (__cluster_dims__). The CPU
    harness, which ignores that attribute, puts a launch of its own here."""
    raw(grid, block, args)


class _Kernels:
    """The kernels of one compiled configuration on one device, by short name."""

    def __init__(self, configuration, channels_last, device_id):
        # With an activation, the kernels it does not change come from the plain module.
        plain = configuration.without_activation()
        loaded = {**cuda_loader.kernels(plain, device_id),
                  **cuda_loader.kernels(configuration, device_id)}
        for name in (*cuda_loader.VECTOR_KERNELS, *cuda_loader.SCALAR_KERNELS):
            setattr(self, name, _Launch(loaded[plain.kernel(name)], name, configuration))
        for name in cuda_loader.ACTIVATED_VECTOR_KERNELS:
            setattr(self, name, _Launch(loaded[configuration.kernel(name)], name, configuration))
        for name in cuda_loader.LAYOUT_KERNELS:
            setattr(self, name, _Launch(loaded[configuration.kernel(name, channels_last)], name,
                                        configuration))
        self.clusters = {
            (name, size): _Launch(loaded[configuration.kernel(name, channels_last, size)], name,
                                  configuration, size)
            for name in cuda_loader.CLUSTER_KERNELS for size in cuda_plan.CLUSTER_SIZES}

    def on_chip(self, name, cluster):
        """``name`` ("forward_on_chip" or "backward_on_chip") for groups of ``cluster``
        blocks: the one-block kernel, or its cluster twin."""
        if cluster == 1:
            return getattr(self, name)
        return self.clusters[(f"{name}_cluster", cluster)]


@functools.cache
def _kernels(configuration, channels_last, device_id):
    return _Kernels(configuration, channels_last, device_id)


@functools.cache
def _blocks_per_sm(device_id, configuration):
    """The smallest occupancy (resident blocks per SM) of the reduction kernels."""
    kernels = _kernels(configuration, True, device_id)
    return max(1, min(
        driver.occupancyMaxActiveBlocksPerMultiprocessor(
            getattr(kernels, name).raw.kernel.ptr, cuda_plan.BLOCK, 0)
        for name in _REDUCTION_KERNELS))


@functools.cache
def _sm_count(device_id):
    return cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]


@functools.cache
def _l2_bytes(device_id):
    return cupy.cuda.Device(device_id).attributes["L2CacheSize"]


@functools.cache
def _cluster_blocks(device_id):
    """The most blocks the on-chip tier's clusters may have: 8 (the portable most)
    from compute capability 9.0, else 1 (no clusters)."""
    capability = int(cupy.cuda.Device(device_id).compute_capability)  # e.g. "90"
    return max(cuda_plan.CLUSTER_SIZES) if capability >= 90 else 1


# The integer dtypes that carry bfloat16 bits for the kernels (storage="bfloat16").
BFLOAT16_WORDS = (np.dtype(np.uint16), np.dtype(np.int16))


def _storage(x, storage):
    """The dtype the kernels store: x's own, or ``storage`` (bfloat16) for 16-bit words."""
    if storage is None:
        if x.dtype not in cuda_loader.STORAGE_TYPES:
            raise TypeError(f"x must be float16, float32 or float64 for GroupNorm on CUDA "
                            f"(or bfloat16 as 16-bit words, with storage='bfloat16'), "
                            f"got dtype {x.dtype}")
        return x.dtype
    if str(storage) != "bfloat16":
        raise ValueError(f"storage must be None or 'bfloat16', got {storage!r}")
    if x.dtype not in BFLOAT16_WORDS:
        raise TypeError(f"with storage='bfloat16', x must be uint16 or int16 words, "
                        f"got dtype {x.dtype}")
    return np.dtype(ml_dtypes.bfloat16)


def _prepare(x5, vector_arrays, storage, activation):
    """The plan, the kernels and the index scalar type for the contiguous view ``x5``
    of ``storage`` values and the fused ``activation``; ``vector_arrays`` are every
    array read or written with vectors (their addresses bound the vector width)."""
    view = x5.shape
    itemsize = storage.itemsize
    addresses = [a.data.ptr for a in vector_arrays]
    vector = cuda_plan.vector_width(view, itemsize, addresses)
    configuration = cuda_loader.Configuration(storage, vector,
                                              cuda_plan.needs_index64(x5.size), activation)
    device_id = x5.device.id
    plan = cuda_plan.plan(view, itemsize, addresses, _sm_count(device_id),
                          _blocks_per_sm(device_id, configuration.without_activation()),
                          _l2_bytes(device_id) if l2_slicing else 0, on_chip_tier=on_chip,
                          cluster_blocks=_cluster_blocks(device_id))
    index = np.uint64 if plan.index64 else np.uint32
    return plan, _kernels(configuration, plan.channels_last, device_id), index


def _parameter(param, acc):
    """gamma or beta flattened, contiguous, in the compute dtype, 16-byte aligned (the
    kernels read it in vectors); None stays None (a null pointer: the kernels then
    use 1 and 0)."""
    if param is None:
        return None
    flat = cupy.ascontiguousarray(param.reshape(-1), dtype=acc)
    if flat.data.ptr % cuda_plan.VECTOR_BYTES:  # a view into the middle of an allocation
        aligned = cupy.empty(flat.shape, acc)
        aligned[...] = flat
        return aligned
    return flat


def _empty_forward(x, layout, acc, epsilon):
    """An empty batch or empty groups: mean 0 and var 0, as the NumPy path gives."""
    shape = (layout.batch, layout.groups)
    denominator = acc.type(epsilon)
    rstd = acc.type(1) / np.sqrt(denominator) if denominator > 0 else acc.type(0)
    with x.device:
        return cupy.empty(x.shape, x.dtype), cupy.zeros(shape, acc), cupy.full(shape, rstd, acc)
