"""The index math of the CUDA kernels, replayed thread by thread on the CPU.

Each ``replay_*`` function below transcribes the addressing of one kernel of
``cugn/kernels/cuda/group_norm.cu`` (which thread loads which vector, which
lanes a segmented warp reduction merges, which thread writes which partial)
and runs it for every block and thread of a launch planned by ``cuda_plan``.
The tests check what the kernels rely on: every vector of every unit is read
exactly once, by threads whose results reach that unit's partial, no load
leaves the tensor, and the elementwise kernels find the right (n, channel).
"""

from collections import Counter

import numpy as np
import pytest

from cugn.kernels import cuda_plan
from cugn.kernels.cuda_plan import BLOCK

WARP = 32


def make_plan(view, itemsize, resident_blocks):
    # sm_count * blocks_per_sm = resident_blocks: small values force split launches.
    return cuda_plan.plan(view, itemsize, [0], resident_blocks, 1)


def segment_offset(j, row, stride, segments):
    return j if segments == 1 else (j // row) * stride + j % row


def warp_runs(thread_count, width):
    """The aligned runs of ``width`` lanes a segmented warp reduction merges, as
    (leader thread, member threads); runs never cross a warp."""
    assert width & (width - 1) == 0 and width <= WARP
    return [(start, range(start, start + width)) for start in range(0, thread_count, width)]


def replay_segment(reduction, units, inner, segments, row):
    """forward_stats_segment / backward_partials_segment: {slot: Counter of vectors}.

    ``inner`` is G (forward, units are groups) or C (backward, units are channels).
    """
    threads = reduction.unit_threads
    slots = units * reduction.split
    loads = {}
    for block in range(reduction.grid):
        for tid in range(BLOCK):
            lane = tid & (threads - 1)
            slot = block * (BLOCK // threads) + tid // threads
            if slot >= slots:
                continue
            unit, k = divmod(slot, reduction.split)
            base = (unit // inner) * segments * inner * row + (unit % inner) * row
            stride = inner * row
            end = min(k * reduction.chunk + reduction.chunk, segments * row)
            for j in range(k * reduction.chunk + lane, end, threads):
                # Every lane of the unit is merged into the unit's first lane (its
                # warp run when threads <= 32, else the whole block), which writes slot.
                loads.setdefault(slot, Counter())[base + segment_offset(j, row, stride, segments)] += 1
    return loads


def replay_forward_column(reduction, view, vector):
    """forward_stats_column: {slot: Counter of vectors} after the segmented warp
    merge and the shared-memory merge in the order the kernel reads."""
    batch, rows, groups, group_channels, _ = view
    channels = groups * group_channels
    lanes, rows_per_block = reduction.lanes, reduction.rows_per_block
    group_lanes = group_channels // vector
    loads = {}
    for block in range(reduction.grid):
        k = block % reduction.split
        h = (block // reduction.split) % reduction.column_chunks
        n = block // reduction.split // reduction.column_chunks
        first_channel = h * lanes * vector
        per_thread = []
        for tid in range(BLOCK):
            lane, row = tid % lanes, tid // lanes
            c = first_channel + lane * vector
            seen = Counter()
            if c < channels and row < rows_per_block:
                end = min(rows, k * reduction.chunk + reduction.chunk)
                for m in range(k * reduction.chunk + row, end, rows_per_block):
                    seen[((n * rows + m) * channels + c) // vector] += 1
            per_thread.append(seen)
        merged = [Counter() for _ in range(BLOCK)]
        for leader, members in warp_runs(BLOCK, reduction.merge_width):
            for t in members:
                merged[leader] += per_thread[t]
        for tid in range(lanes // group_lanes):
            g = first_channel // group_channels + tid
            if g >= groups:
                continue
            total = Counter()
            for r in range(rows_per_block):
                for lane in range(tid * group_lanes, (tid + 1) * group_lanes,
                                  reduction.merge_width):
                    total += merged[r * lanes + lane]
            loads[(n * groups + g) * reduction.split + k] = total
    return loads


def replay_backward_column(reduction, view, vector):
    """backward_partials_column: {partial index: Counter of elements} (per channel)."""
    batch, rows, groups, group_channels, _ = view
    channels = groups * group_channels
    lanes, rows_per_block = reduction.lanes, reduction.rows_per_block
    width = lanes * vector
    sums = {}
    for block in range(reduction.grid):
        k = block % reduction.split
        h = (block // reduction.split) % reduction.column_chunks
        n = block // reduction.split // reduction.column_chunks
        first_channel = h * lanes * vector
        row_sums = {}  # shared-memory slot -> elements summed there
        for tid in range(BLOCK):
            lane, row = tid % lanes, tid // lanes
            c = first_channel + lane * vector
            if row >= rows_per_block:
                continue
            for i in range(vector):
                row_sums[tid * vector + i] = Counter()
            if c < channels:
                end = min(rows, k * reduction.chunk + reduction.chunk)
                for m in range(k * reduction.chunk + row, end, rows_per_block):
                    for i in range(vector):
                        row_sums[tid * vector + i][(n * rows + m) * channels + c + i] += 1
        for tid in range(BLOCK):
            for col in range(tid, width, BLOCK):
                if first_channel + col >= channels:
                    break
                total = Counter()
                for r in range(rows_per_block):
                    total += row_sums[r * width + col]
                sums[(n * reduction.split + k) * channels + first_channel + col] = total
    return sums


def view_index(view):
    """(n, m, g, d, s) of every element of a contiguous view, flattened."""
    return np.unravel_index(np.arange(int(np.prod(view))), view)


VIEWS = [
    (2, 8, 4, 8, 1),       # NHWC, whole groups in a warp run of 2 or 4 lanes
    (3, 5, 8, 3, 1),       # D = 3: merged in shared memory
    (2, 4, 16, 3, 1),      # D = 3 and 48 channels: tiles of 30 lanes hold whole groups
    (1, 300, 2, 4, 1),     # B = 1: split over pixel rows
    (2, 4, 1, 160, 1),     # channels-last groups longer than 32 vectors: segments
    (2, 1, 4, 2, 36),      # NCHW: rows of D*S
    (2, 1, 6, 1, 9),       # one channel per group, 9 values: lanes of a warp per group
    (1, 1, 2, 8, 1024),    # B = 1, long rows: split across blocks
    (2, 3, 2, 2, 5),       # a middle axis: M rows of D*S, C*S apart
    (1, 1, 1, 1, 1),
]


def _units_of_vectors(view, vector):
    """The group (n*G + g) and the (n, c) channel of every vector of the view."""
    n, _, g, d, _ = view_index(view)
    first = np.arange(0, int(np.prod(view)), vector)
    groups = view[2]
    return (n * groups + g)[first], (n * groups * view[3] + g * view[3] + d)[first]


@pytest.mark.parametrize("view", VIEWS, ids=str)
@pytest.mark.parametrize("itemsize", [2, 4, 8])
@pytest.mark.parametrize("resident_blocks", [4, 1000])
def test_forward_statistics_read_every_vector_of_each_group_once(view, itemsize, resident_blocks):
    p = make_plan(view, itemsize, resident_blocks)
    batch, rows, groups, group_channels, spatial = view
    stats = p.statistics
    if stats.kernel == "segment":
        loads = replay_segment(stats, batch * groups, groups, rows,
                               group_channels * spatial // p.vector)
    else:
        loads = replay_forward_column(stats, view, p.vector)
    vector_group, _ = _units_of_vectors(view, p.vector)
    total = Counter()
    for slot, seen in loads.items():
        unit = slot // stats.split
        assert all(vector_group[v] == unit for v in seen), (slot, seen)
        total += seen
    assert total == Counter(range(len(vector_group)))  # each vector once, none outside
    assert set(loads) <= set(range(batch * groups * stats.split))


@pytest.mark.parametrize("view", VIEWS, ids=str)
@pytest.mark.parametrize("itemsize", [2, 4, 8])
@pytest.mark.parametrize("resident_blocks", [4, 1000])
def test_backward_partials_read_every_value_of_each_channel_once(view, itemsize, resident_blocks):
    p = make_plan(view, itemsize, resident_blocks)
    batch, rows, groups, group_channels, spatial = view
    channels = groups * group_channels
    sums = p.partials
    n, _, g, d, _ = view_index(view)
    element_channel = n * channels + g * group_channels + d
    total = Counter()
    if sums.kernel == "segment":
        loads = replay_segment(sums, batch * channels, channels, rows, spatial // p.vector)
        _, vector_channel = _units_of_vectors(view, p.vector)
        for slot, seen in loads.items():
            unit, k = divmod(slot, sums.split)
            assert all(vector_channel[v] == unit for v in seen)
            total += Counter({e: count for v, count in seen.items()
                              for e in range(v * p.vector, (v + 1) * p.vector)})
        assert len(loads) == batch * channels * sums.split  # every partial is written
    else:
        partials = replay_backward_column(sums, view, p.vector)
        for index, seen in partials.items():
            nk, c = divmod(index, channels)
            assert all(element_channel[e] == (nk // sums.split) * channels + c for e in seen)
            total += seen
        assert len(partials) == batch * channels * sums.split  # every partial is written
    assert total == Counter(range(element_channel.size))


def locate(e, spatial, channels, batch_stride, channels_last):
    c = e % channels if channels_last else (e // spatial) % channels
    return e // batch_stride, c


@pytest.mark.parametrize("view", VIEWS, ids=str)
@pytest.mark.parametrize("itemsize", [2, 4, 8])
def test_elementwise_kernels_find_the_channel_of_every_value(view, itemsize):
    p = make_plan(view, itemsize, 1000)
    batch, rows, groups, group_channels, spatial = view
    channels = groups * group_channels
    n, _, g, d, _ = view_index(view)
    vectors = n.size // p.vector
    visited = Counter()
    for thread in range(p.elementwise_grid * BLOCK):  # the grid-stride loop
        for j in range(thread, vectors, p.elementwise_grid * BLOCK):
            vn, c = locate(j * p.vector, spatial, channels, rows * channels * spatial,
                           p.channels_last)
            for i in range(p.vector):
                e = j * p.vector + i
                ci = c + i if p.channels_last else c
                assert (vn, ci) == (n[e], g[e] * group_channels + d[e])
                visited[e] += 1
    assert visited == Counter(range(n.size))
