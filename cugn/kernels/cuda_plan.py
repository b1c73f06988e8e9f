"""Launch planning for the CUDA GroupNorm kernels: pure functions of the view,
the dtype, the data addresses and the device's size, so they run (and are
tested) without a GPU.

The input is the contiguous (N, M, G, D, S) view of ``layout.py``; C = G*D.
Reductions come in two shapes (see ``cuda/group_norm.cu``):

- segment: a unit (a group (n, g), or a channel (n, c) in the backward) is M rows
  of contiguous values. Tiers by size: a few lanes of a warp per unit when the
  unit is small ("warp"), a block per unit ("block"), or several blocks per unit
  with partials merged in a fixed order ("split") when there are too few units
  to fill the GPU.
- column: channels-last (S == 1) tiles of pixel rows by a chunk of channels, with
  vector loads along C ("column"); split over pixel rows when there are too few tiles.
"""

import math
from dataclasses import dataclass

BLOCK = 256                # threads per block of every kernel (the source's kBlock)
VECTOR_BYTES = 16          # widest vector access
SMALL_UNIT_ITEMS = 4       # vectors per thread below which a unit gets part of a warp
MIN_SPLIT_VECTORS = 4 * BLOCK  # least vectors per block when a unit is split
MIN_ROWS_PER_THREAD = 4    # least pixel rows per thread when column tiles are split
ELEMENTWISE_WAVES = 4      # grid-stride kernels launch this many waves of resident blocks
INDEX64_THRESHOLD = 2 ** 31  # tensors from this many elements use 64-bit indices


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
class Plan:
    """Everything the forward and backward launch for one input."""

    vector: int             # values per vector access
    index64: bool           # 64-bit indices (the tensor has 2^31 elements or more)
    channels_last: bool     # S == 1: a vector holds V channels of one group
    statistics: Reduction   # forward statistics, units are the N*G groups
    partials: Reduction     # backward per-channel sums, units are the N*C channels
    elementwise_grid: int   # apply (forward) and dx (backward)
    finalize_grid: int      # forward: one thread per group
    coefficients_grid: int  # backward: one warp per group
    parameters_grid: int    # backward: one thread per channel


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


def column_reduction(batch, rows, channels, vector, resident_blocks, group_vectors=None):
    """Tiles for a channels-last reduction over ``rows`` pixels of ``channels`` channels.

    With ``group_vectors`` (the forward, D/V <= 32), a tile holds whole groups and
    each group's lanes are merged with segmented warp shuffles when that count is a
    power of two; without it (the backward), sums stay per channel.
    """
    columns = channels // vector
    if group_vectors is None:
        lanes, merge_width = min(columns, 32), 1
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


def plan(view, itemsize, addresses, sm_count, blocks_per_sm):
    """The launches for a non-empty contiguous input of ``view`` (N, M, G, D, S).

    ``addresses`` are the device addresses of the inputs read and written with
    vectors; ``blocks_per_sm`` is the kernels' occupancy.
    """
    batch, rows, groups, group_channels, spatial = view
    channels = groups * group_channels
    elements = math.prod(view)
    vector = vector_width(view, itemsize, addresses)
    resident = sm_count * blocks_per_sm
    channels_last = spatial == 1
    group_vectors = group_channels // vector
    if channels_last and group_vectors <= 32:
        statistics = column_reduction(batch, rows, channels, vector, resident, group_vectors)
    else:
        statistics = segment_reduction(batch * groups, rows * group_channels * spatial // vector,
                                       resident)
    if channels_last:
        partials = column_reduction(batch, rows, channels, vector, resident)
    else:
        partials = segment_reduction(batch * channels, rows * spatial // vector, resident)
    return Plan(
        vector=vector,
        index64=needs_index64(elements),
        channels_last=channels_last,
        statistics=statistics,
        partials=partials,
        elementwise_grid=min(math.ceil(elements // vector / BLOCK), resident * ELEMENTWISE_WAVES),
        finalize_grid=math.ceil(batch * groups / BLOCK),
        coefficients_grid=math.ceil(batch * groups * 32 / BLOCK),
        parameters_grid=math.ceil(channels / BLOCK),
    )
