"""Launch planning for the CUDA GroupNorm kernels: pure functions of the view,
the dtype, the data addresses and the device's size and L2, so they run (and
are tested) without a GPU.

The input is the contiguous (N, M, G, D, S) view of ``layout.py``; C = G*D.
Reductions come in two shapes (see ``cuda/traversal.cuh``):

- segment: a unit (a group (n, g), or a channel (n, c) in the backward) is M rows
  of contiguous values. Tiers by size: a few lanes of a warp per unit when the
  unit is small ("warp"), a block per unit ("block"), or several blocks per unit
  with partials merged in a fixed order ("split") when there are too few units
  to fill the GPU.
- column: channels-last (S == 1) tiles of pixel rows by a chunk of channels, with
  vector loads along C ("column"); split over pixel rows when there are too few tiles.

Before those, the on-chip tier (``on_chip``): when a group's slice fits in one
block's shared memory, or on sm_90 in those of a thread-block cluster of 2, 4 or
8 blocks, and there are blocks enough to fill the GPU, one block (or cluster)
per group reads it once and writes y (one launch) or dx (then the parameters'
sums, two launches) from shared memory: the minimum traffic, with no parts.

Each pass reads its inputs twice (the reduction, then the elementwise pass). So
that the second read comes from L2, a pass whose inputs (x forward; x and dy
backward) exceed half the L2 runs through the input in parts that fit: whole
samples, or groups of one sample: contiguous when M == 1, and in channels-last
inputs (S == 1) a window of the channels of every pixel row, the rows C values
apart (a sample's "pitch"; the kernels take it). A sample that is larger still,
with rows (M > 1), is one part whose reduction runs in pieces of a few rows, in
order, and whose elementwise pass runs the same pieces last first: what the
reduction read last, still in L2, is read again first.
"""

import math
from dataclasses import dataclass, replace

BLOCK = 256                # threads per block of every kernel (the source's kBlock)
VECTOR_BYTES = 16          # widest vector access
SMALL_UNIT_ITEMS = 4       # vectors per thread below which a unit gets part of a warp
MIN_SPLIT_VECTORS = 4 * BLOCK  # least vectors per block when a unit is split
MIN_ROWS_PER_THREAD = 4    # least pixel rows per thread when column tiles are split
TILE_LINE_BYTES = 128      # width of the backward's column tiles: one cache line
ELEMENTWISE_WAVES = 4      # grid-stride kernels launch this many waves of resident blocks
INDEX64_THRESHOLD = 2 ** 31  # tensors from this many elements use 64-bit indices
# The most of L2 the inputs of one part may fill: the elementwise pass adds its
# stores (|y| = |x| forward, |dx| = half of |x| + |dy| backward), so inputs and
# stores together stay within L2, with room to spare for the backward, whose
# partial sums and parameters are small.
L2_SHARE = 0.5
PIECES_PER_SHARE = 4       # a sample larger than that share is cut into pieces of a quarter
# Windows of a channels-last sample's groups start on a line of L2 (128 bytes) where
# they can, so that no line is read by two parts.
L2_LINE_BYTES = 128
# Shared memory a block of the on-chip tier caches its group in (the source's
# kOnChipBytes): x forward, x and dy backward. 32 KiB leaves room for several
# resident blocks per SM (228 KiB of shared memory on an H100, 164 KiB on an A100).
ON_CHIP_BYTES = 32 * 1024
# The most channels a group of the on-chip tier may have: its per-channel table of
# scale and shift, 2 values of the compute type each (8 KiB for float64), takes this
# much shared memory beside the cache, within the 48 KiB of static shared memory.
ON_CHIP_CHANNELS = 512
# Blocks a thread-block cluster of the on-chip tier may have (sm_90; 8 is the
# portable most), each caching its share of the group in ON_CHIP_BYTES.
CLUSTER_SIZES = (2, 4, 8)
MAX_GRID = 2 ** 31 - 1       # blocks a launch may have along x


@dataclass(frozen=True)
class Reduction:
    """The launch of one reduction kernel (statistics or per-channel partials)."""

    kernel: str            # "segment" or "column"
    tier: str              # "warp", "block", "split" or "column"
    grid: int
    split: int             # chunks per unit (segment) or pixel-row chunks per tile (column)
    chunk: int             # vectors per chunk (segment) or pixel rows per chunk (column)
    unit_threads: int = 0  # segment: threads per unit (a power of two <= 32, or BLOCK)
    lanes: int = 0         # column: threads along C in a tile (V channels each)
    rows_per_block: int = 0  # column: threads along the pixel rows
    column_chunks: int = 0   # column: tiles along C
    merge_width: int = 1     # column forward: lanes merged by warp shuffles per group


@dataclass(frozen=True)
class Piece:
    """One launch of a part's reduction and, in reverse order, of its elementwise pass."""

    offset: int             # its first element, from the start of the part
    view: tuple             # its (N, M, G, D, S): rows of the part
    reduction: Reduction    # statistics (forward) or per-channel sums (backward)
    elementwise_grid: int   # apply (forward) or dx (backward)


@dataclass(frozen=True)
class Part:
    """A part of the input that a pass runs through by itself: whole samples, or
    groups of one sample (contiguous, or a window of channels in rows of the
    input's pitch, G*D*S values)."""

    offset: int             # its first element in the input's view
    view: tuple             # its (N, M, G, D, S)
    unit: int               # its first group, n*G + g
    channel: int            # the first channel of its groups, g*D
    pieces: tuple           # of Piece, in address order
    merge_grid: int         # forward finalize (a thread per group), backward coefficients
                            # (a warp per group)

    @property
    def split(self):
        """Partials per group (forward) or channel (backward): every piece's, in order."""
        return sum(piece.reduction.split for piece in self.pieces)


@dataclass(frozen=True)
class OnChip:
    """A pass of the on-chip tier: one block, or a cluster of blocks, per group (n, g)."""

    grid: int               # N*G*cluster blocks
    unit_threads: int = 0   # backward: lanes per channel summing its values (a power of two)
    cluster: int = 1        # blocks a group: 1, or a cluster of CLUSTER_SIZES (sm_90)


@dataclass(frozen=True)
class Plan:
    """Everything the forward and backward launch for one input. A pass of the
    on-chip tier has an OnChip and no parts."""

    vector: int             # values per vector access
    index64: bool           # 64-bit indices (the tensor has 2^31 elements or more)
    channels_last: bool     # S == 1: a vector holds V channels of one group
    forward: tuple          # of Part; units of the statistics are groups
    backward: tuple         # of Part; units of the partial sums are channels
    parameters_grid: int    # backward: one thread per channel, over every part's sums
    forward_on_chip: OnChip | None = None
    backward_on_chip: OnChip | None = None

    @property
    def statistics(self):
        """The forward's first reduction (the only one when the input is one part)."""
        return self.forward[0].pieces[0].reduction

    @property
    def partials(self):
        """The backward's first reduction."""
        return self.backward[0].pieces[0].reduction


def vector_width(view, itemsize, addresses):
    """The widest vector (values, a power of two, <= 16 bytes) every kernel can use:
    one vector must stay inside one channel (S > 1) or one group (S == 1), and
    every address must be aligned to it."""
    _, _, _, group_channels, spatial = view
    run = spatial if spatial > 1 else group_channels
    vector = VECTOR_BYTES // itemsize
    while vector > 1 and (run % vector or any(a % (vector * itemsize) for a in addresses)):
        vector //= 2
    return vector


def needs_index64(elements):
    return elements >= INDEX64_THRESHOLD


def _next_power_of_two(value):
    return 1 << max(0, math.ceil(math.log2(value)))


def segment_reduction(units, unit_vectors, resident_blocks):
    """Tier and grid for ``units`` segment units of ``unit_vectors`` vectors each."""
    if unit_vectors <= 32 * SMALL_UNIT_ITEMS:
        threads = min(32, _next_power_of_two(math.ceil(unit_vectors / SMALL_UNIT_ITEMS)))
        return Reduction("segment", "warp", grid=math.ceil(units / (BLOCK // threads)),
                         split=1, chunk=unit_vectors, unit_threads=threads)
    split = 1
    if units < resident_blocks:  # too few units to fill the GPU: split each one
        split = min(math.ceil(resident_blocks / units),
                    max(1, unit_vectors // MIN_SPLIT_VECTORS))
    chunk = math.ceil(unit_vectors / split)
    split = math.ceil(unit_vectors / chunk)  # no empty chunk
    return Reduction("segment", "split" if split > 1 else "block", grid=units * split,
                     split=split, chunk=chunk, unit_threads=BLOCK)


def column_reduction(batch, rows, channels, vector, resident_blocks, group_vectors=None,
                     itemsize=4):
    """Tiles for a channels-last reduction over ``rows`` pixels of ``channels`` channels.

    With ``group_vectors`` (the forward, D/V <= 32), a tile holds whole groups and
    each group's lanes are merged with segmented warp shuffles when that count is a
    power of two; without it (the backward), sums stay per channel, and a tile is
    one line of ``TILE_LINE_BYTES`` wide (values of ``itemsize`` bytes): each
    block writes a sum per channel of its tile, so the narrowest tiles that read
    whole lines write the fewest.
    """
    columns = channels // vector
    if group_vectors is None:
        lanes, merge_width = min(columns, 32, max(1, TILE_LINE_BYTES // (vector * itemsize))), 1
    else:
        lanes = min(columns, (32 // group_vectors) * group_vectors)
        power_of_two = group_vectors & (group_vectors - 1) == 0
        merge_width = group_vectors if power_of_two else 1
    rows_per_block = BLOCK // lanes
    column_chunks = math.ceil(columns / lanes)
    tiles = batch * column_chunks
    split = 1
    if tiles < resident_blocks:
        split = min(math.ceil(resident_blocks / tiles),
                    max(1, rows // (rows_per_block * MIN_ROWS_PER_THREAD)))
    chunk = math.ceil(rows / split)
    split = math.ceil(rows / chunk)
    return Reduction("column", "column", grid=tiles * split, split=split, chunk=chunk,
                     lanes=lanes, rows_per_block=rows_per_block, column_chunks=column_chunks,
                     merge_width=merge_width)


def _even(total, most):
    """(start, count) of the fewest runs of at most ``most`` covering range(total),
    as even as can be (the longer ones first)."""
    runs = math.ceil(total / max(1, most))
    size, longer = divmod(total, runs)
    starts = [r * size + min(r, longer) for r in range(runs + 1)]
    return [(a, b - a) for a, b in zip(starts, starts[1:])]


def _windows(groups, most, granule):
    """(start, count) of the fewest runs of at most ``most`` groups covering
    range(groups), in whole runs of ``granule`` groups but for the last where
    ``granule`` groups fit in ``most``."""
    if granule > most:
        granule = 1
    units = _even(math.ceil(groups / granule), most // granule)
    return [(start * granule, min(groups, (start + count) * granule) - start * granule)
            for start, count in units]


def slices(view, itemsize, inputs, l2_bytes, resident_blocks):
    """The parts of a pass over ``view`` that re-reads ``inputs`` arrays of
    ``itemsize`` bytes (1 forward, 2 backward), each as (offset, view, first
    group, first channel, pieces as (first row, rows)).

    The inputs of a part fill at most ``L2_SHARE`` of ``l2_bytes``, when whole
    samples or groups can: groups of a sample are contiguous when M == 1 < S,
    and channels-last (S == 1 < M), a window of the channels of each row (its
    rows the input's C apart), starting on an L2 line where whole lines of
    groups fit. Else a part is one sample, its rows cut into pieces of a
    ``PIECES_PER_SHARE``-th of that share, but enough for ``resident_blocks``
    blocks (or one group, when M == 1 < S and a group alone is too large; or
    one sample, when M == S == 1).
    """
    batch, rows, groups, group_channels, spatial = view
    row = groups * group_channels * spatial
    sample = rows * row
    share = l2_bytes * L2_SHARE
    per_sample = sample * itemsize * inputs
    if l2_bytes <= 0 or batch * per_sample <= share:
        return [(0, view, 0, 0, [(0, rows)])]
    if per_sample <= share:  # whole samples
        return [(n * sample, (count, rows, groups, group_channels, spatial), n * groups, 0,
                 [(0, rows)]) for n, count in _even(batch, int(share // per_sample))]
    group = group_channels * spatial
    most = int(share // (rows * group * itemsize * inputs))
    if rows == 1 and spatial > 1 and groups > 1:  # channels-first: each group is contiguous
        return [(n * sample + g * group, (1, 1, count, group_channels, spatial),
                 n * groups + g, g * group_channels, [(0, 1)])
                for n in range(batch) for g, count in _even(groups, most)]
    if spatial == 1 and groups > 1 and most >= 1:  # channels-last: windows of channels
        granule = L2_LINE_BYTES // math.gcd(L2_LINE_BYTES, group_channels * itemsize)
        return [(n * sample + g * group_channels, (1, rows, count, group_channels, 1),
                 n * groups + g, g * group_channels, [(0, rows)])
                for n in range(batch) for g, count in _windows(groups, most, granule)]
    # Every resident block takes MIN_ROWS_PER_THREAD vectors a thread of each input.
    filled = resident_blocks * BLOCK * MIN_ROWS_PER_THREAD * VECTOR_BYTES * inputs
    most = int(max(share / PIECES_PER_SHARE, filled) // (row * itemsize * inputs))
    return [(n * sample, (1, rows, groups, group_channels, spatial), n * groups, 0,
             _even(rows, most)) for n in range(batch)]


def _statistics(view, vector, resident, itemsize):
    batch, rows, groups, group_channels, spatial = view
    if spatial == 1 and group_channels // vector <= 32:
        return column_reduction(batch, rows, groups * group_channels, vector, resident,
                                group_channels // vector)
    return segment_reduction(batch * groups, rows * group_channels * spatial // vector, resident)


def _partials(view, vector, resident, itemsize):
    batch, rows, groups, group_channels, spatial = view
    if spatial == 1:
        return column_reduction(batch, rows, groups * group_channels, vector, resident,
                                itemsize=itemsize)
    return segment_reduction(batch * groups * group_channels, rows * spatial // vector, resident)


def _regrid(reduction, view, vector, units):
    """``reduction``'s launch (tier, split, chunk; lanes and rows of a tile) over
    ``view``, of ``units`` units in all: every piece of a pass shares its first
    piece's, so that every part has as many partials per unit, each reduced in
    the same order."""
    if reduction.kernel == "column":
        batch, _, groups, group_channels, _ = view
        column_chunks = math.ceil(groups * group_channels // vector / reduction.lanes)
        return replace(reduction, grid=batch * column_chunks * reduction.split,
                       column_chunks=column_chunks)
    if reduction.tier == "warp":
        grid = math.ceil(units / (BLOCK // reduction.unit_threads))
    else:
        grid = units * reduction.split
    return replace(reduction, grid=grid)


def pitch(view):
    """Values from one row (index M) of the (N, M, G, D, S) view to the next: G*D*S."""
    return math.prod(view[2:])


def _parts(view, itemsize, inputs, l2_bytes, vector, resident, reduce, units_of, merge_grid):
    parts = slices(view, itemsize, inputs, l2_bytes, resident)
    batch, rows, groups, group_channels, spatial = parts[0][1]
    # The first piece is the largest: its reduction is planned, the others follow it.
    first = reduce((batch, parts[0][4][0][1], groups, group_channels, spatial), vector, resident,
                   itemsize)
    row_pitch = pitch(view)  # the same in every part
    planned = []
    for offset, part_view, unit, channel, ranges in parts:
        batch, rows, groups, group_channels, spatial = part_view
        pieces = tuple(
            Piece(start * row_pitch, piece_view, _regrid(first, piece_view, vector,
                                                   units_of(piece_view)),
                  elementwise_grid(math.prod(piece_view), vector, resident))
            for start, count in ranges
            for piece_view in [(batch, count, groups, group_channels, spatial)])
        planned.append(Part(offset, part_view, unit, channel, pieces,
                            merge_grid(batch * groups)))
    return tuple(planned)


def cluster_share(view, vector, blocks):
    """Vectors of a group the first of ``blocks`` blocks caches (the most any does):
    whole rows (M > 1), else whole channels (S > 1) or vectors, as the source's
    CachedGroup shares them out."""
    _, rows, _, group_channels, spatial = view
    row = group_channels * spatial // vector
    granule = row if rows > 1 else spatial // vector if spatial > 1 else 1
    return math.ceil(rows * row // granule / blocks) * granule


def on_chip(view, itemsize, inputs, sm_count, vector=1, cluster_blocks=1):
    """The on-chip launch of a pass over ``view`` that caches ``inputs`` arrays of
    ``itemsize`` bytes (1 forward, 2 backward) in vectors of ``vector`` values, or
    None when the tier does not apply: a group's slice of the inputs must fit in
    ``ON_CHIP_BYTES`` of one block, or of each block of a cluster of at most
    ``cluster_blocks`` (1 where the device has no clusters), with at most
    ``ON_CHIP_CHANNELS`` channels, and there must be at least ``sm_count``
    blocks: the fewest blocks a group that meet both.

    Why one block per SM is enough: a block issues the loads of its whole share
    before it computes, up to ON_CHIP_BYTES in flight, about what one SM needs in
    flight to cover the latency of DRAM at full bandwidth (an H200: 4.8 TB/s x
    ~0.6 us / 132 SMs, some 22 kB). With fewer blocks than SMs, SMs would idle
    while the split tiers spread each group over several blocks, so those are
    kept there.
    """
    batch, rows, groups, group_channels, spatial = view
    units = batch * groups
    if group_channels > ON_CHIP_CHANNELS:
        return None
    fits = [size for size in (1, *CLUSTER_SIZES) if size <= cluster_blocks
            and cluster_share(view, vector, size) * vector * itemsize * inputs <= ON_CHIP_BYTES
            and sm_count <= units * size <= MAX_GRID]
    if not fits:
        return None
    size = fits[0]
    if inputs == 1:
        return OnChip(grid=units * size, cluster=size)
    # Lanes per channel as the warp tier of segment_reduction: SMALL_UNIT_ITEMS values a
    # lane, of the values of a channel the block caches.
    channel_values = math.ceil(rows / size) * spatial if rows > 1 else spatial
    threads = min(32, _next_power_of_two(math.ceil(channel_values / SMALL_UNIT_ITEMS)))
    return OnChip(grid=units * size, unit_threads=threads, cluster=size)


def elementwise_grid(elements, vector, resident):
    return min(math.ceil(elements // vector / BLOCK), resident * ELEMENTWISE_WAVES)


def plan(view, itemsize, addresses, sm_count, blocks_per_sm, l2_bytes, on_chip_tier=True,
         cluster_blocks=1):
    """The launches for a non-empty contiguous input of ``view`` (N, M, G, D, S).

    ``addresses`` are the device addresses of the inputs read and written with
    vectors; ``blocks_per_sm`` is the kernels' occupancy; ``l2_bytes`` the size of
    the device's L2 (0: unknown, no parts); ``on_chip_tier`` False keeps every
    pass on the tiers that read their inputs twice; ``cluster_blocks`` is the most
    blocks a thread-block cluster may have on the device (8 from sm_90, else 1).
    """
    if l2_bytes < 0:
        raise ValueError(f"l2_bytes must be >= 0, got {l2_bytes}")
    _, _, groups, group_channels, spatial = view
    vector = vector_width(view, itemsize, addresses)
    resident = sm_count * blocks_per_sm
    forward_on_chip, backward_on_chip = (
        on_chip(view, itemsize, inputs, sm_count, vector, cluster_blocks) if on_chip_tier
        else None for inputs in (1, 2))
    return Plan(
        vector=vector,
        index64=needs_index64(math.prod(view)),
        channels_last=spatial == 1,
        forward=() if forward_on_chip else _parts(
            view, itemsize, 1, l2_bytes, vector, resident, _statistics, lambda v: v[0] * v[2],
            lambda units: math.ceil(units / BLOCK)),
        backward=() if backward_on_chip else _parts(
            view, itemsize, 2, l2_bytes, vector, resident, _partials,
            lambda v: v[0] * v[2] * v[3], lambda units: math.ceil(units * 32 / BLOCK)),
        parameters_grid=math.ceil(groups * group_channels / BLOCK),
        forward_on_chip=forward_on_chip,
        backward_on_chip=backward_on_chip,
    )
