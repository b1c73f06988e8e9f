"""The CUDA launch planner (pure Python): vector widths, tiers, grids, splits."""

import math

import pytest

from cugn.kernels import cuda_plan
from cugn.kernels.cuda_plan import BLOCK, plan

H100_SMS = 132
BLOCKS_PER_SM = 8
RESIDENT = H100_SMS * BLOCKS_PER_SM


H200_L2 = 60 * 2 ** 20
WHOLE = 2 ** 40  # an L2 that holds any input here: one part


def make(view, itemsize=4, addresses=(0,), l2_bytes=H200_L2, on_chip_tier=False):
    """The plan on an H100; the tiers that read their inputs twice unless ``on_chip_tier``."""
    return plan(view, itemsize, list(addresses), H100_SMS, BLOCKS_PER_SM, l2_bytes,
                on_chip_tier)


@pytest.mark.parametrize("view, itemsize, expected", [
    ((2, 64, 32, 16, 1), 2, 8),     # NHWC float16: 16 bytes along C
    ((2, 64, 32, 16, 1), 4, 4),
    ((2, 64, 32, 16, 1), 8, 2),
    ((2, 1, 32, 16, 49), 4, 1),     # NCHW 7x7: a vector may not cross a channel
    ((2, 1, 32, 16, 50), 4, 2),
    ((2, 64, 32, 3, 1), 4, 1),      # D = 3 channels per group
    ((2, 64, 32, 6, 1), 2, 2),
])
def test_vector_width_stays_in_a_channel_or_group(view, itemsize, expected):
    assert cuda_plan.vector_width(view, itemsize, [0]) == expected


def test_vector_width_follows_alignment():
    view = (2, 64, 32, 16, 1)
    assert cuda_plan.vector_width(view, 4, [0, 8]) == 2
    assert cuda_plan.vector_width(view, 4, [4]) == 1


def test_int64_indices_from_two_to_the_31_elements():
    assert not cuda_plan.needs_index64(2 ** 31 - 1)
    assert cuda_plan.needs_index64(2 ** 31)
    assert make((2 ** 16, 1, 1, 2 ** 15, 1)).index64
    assert not make((2 ** 15, 1, 1, 2 ** 15, 1)).index64


def test_channels_last_small_groups_use_column_tiles_holding_whole_groups():
    p = make((8, 4096, 32, 16, 1))  # (8, 64, 64, 512) NHWC float32
    stats = p.statistics
    assert p.channels_last and p.vector == 4
    assert (stats.kernel, stats.lanes, stats.merge_width) == ("column", 32, 4)
    assert (stats.lanes * p.vector) % 16 == 0  # a tile holds whole groups
    assert stats.column_chunks == 512 // (32 * 4)
    samples = p.forward[0].view[0]  # 64 MB: run in parts of a few samples
    assert samples < 8 and stats.grid == samples * stats.column_chunks * stats.split
    assert p.partials.kernel == "column" and p.partials.merge_width == 1


def test_channels_last_groups_not_a_power_of_two_merge_in_shared_memory():
    stats = make((4, 100, 10, 3, 1)).statistics
    assert stats.kernel == "column" and stats.merge_width == 1
    assert stats.lanes == 30 and stats.lanes % 3 == 0


def test_channels_last_long_groups_use_segments():
    p = make((4, 1024, 1, 4096, 1))  # groups=1 over 4096 channels
    assert p.statistics.kernel == "segment"
    assert p.partials.kernel == "column"


def test_channels_first_is_rows_of_d_times_s():
    p = make((64, 1, 32, 8, 1024), l2_bytes=WHOLE)  # (64, 256, 32, 32) NCHW: 2048 groups
    assert not p.channels_last
    assert p.statistics.kernel == "segment" and p.statistics.tier == "block"
    assert p.statistics.grid == 64 * 32 and p.statistics.chunk == 8 * 1024 // 4
    assert p.partials.kernel == "segment"


def test_small_groups_share_a_warp():
    p = make((64, 1, 64, 1, 9))  # groups=-1, 3x3 spatial: 9 values a group
    stats = p.statistics
    assert stats.tier == "warp" and stats.unit_threads == 4
    assert stats.grid == math.ceil(64 * 64 / (BLOCK // 4))


def test_few_groups_are_split_across_blocks():
    p = make((1, 1, 32, 16, 16384), l2_bytes=WHOLE)  # B=1, G=32, 128x128 NCHW on 132 SMs
    stats = p.statistics
    assert stats.tier == "split" and stats.split > 1
    assert stats.grid == 32 * stats.split >= RESIDENT // 2
    assert stats.chunk * stats.split >= 16 * 16384 // 4 > stats.chunk * (stats.split - 1)


def test_channels_last_few_tiles_are_split_over_rows():
    p = make((1, 16384, 32, 16, 1), itemsize=2)  # (1, 128, 128, 512) NHWC float16
    stats = p.statistics
    assert stats.split > 1 and stats.grid >= RESIDENT // 2
    assert stats.chunk * stats.split >= 16384 > stats.chunk * (stats.split - 1)
    assert stats.chunk >= stats.rows_per_block * cuda_plan.MIN_ROWS_PER_THREAD


def test_enough_groups_are_not_split():
    assert make((64, 1, 32, 16, 4096), l2_bytes=WHOLE).statistics.split == 1


def test_grids_of_the_small_kernels():
    p = make((3, 10, 5, 4, 7))
    (forward,), (backward,) = p.forward, p.backward
    assert forward.merge_grid == 1 and p.parameters_grid == 1
    assert backward.merge_grid == math.ceil(3 * 5 * 32 / BLOCK)
    for part in (forward, backward):
        (piece,) = part.pieces
        assert 1 <= piece.elementwise_grid <= RESIDENT * cuda_plan.ELEMENTWISE_WAVES


@pytest.mark.parametrize("view", [
    (1, 1, 1, 1, 1), (2, 3, 1, 1, 1), (5, 7, 3, 5, 11), (2, 1, 4, 2, 1), (1, 999, 7, 3, 1),
    (3, 2, 2, 64, 1), (1, 1, 1, 1, 10 ** 6), (1, 10 ** 6, 1, 1, 1),
])
@pytest.mark.parametrize("itemsize", [2, 4, 8])
def test_every_chunk_is_non_empty_and_the_chunks_cover_the_unit(view, itemsize):
    p = make(view, itemsize)
    rows = view[1]
    for reduction in (p.statistics, p.partials):
        assert reduction.grid >= 1 and reduction.split >= 1
        if reduction.kernel == "column":
            assert reduction.chunk * (reduction.split - 1) < rows <= reduction.chunk * reduction.split
            assert reduction.lanes * reduction.rows_per_block <= BLOCK
            assert reduction.lanes % reduction.merge_width == 0
        elif reduction.tier != "warp":
            assert reduction.unit_threads == BLOCK


# ------------------------------------------------------------------ parts sized from the L2

MB = 2 ** 20


def covers(parts, view):
    """The parts tile the view in order: each takes every row of the groups that
    follow the last part's (whole samples, or a run of groups of one sample), from
    the offset, group and channel of its first group, and its pieces tile its rows
    in order, the input's pitch apart."""
    batch, rows, groups, group_channels, spatial = view
    pitch = groups * group_channels * spatial
    unit = 0
    for part in parts:
        n, part_rows, part_groups, d, s = part.view
        assert (part_rows, d, s) == (rows, group_channels, spatial)
        sample, g = divmod(unit, groups)
        assert part.unit == unit and g + part_groups <= groups
        assert n == 1 or (g == 0 and part_groups == groups)
        assert part.channel == g * group_channels
        assert part.offset == sample * rows * pitch + g * group_channels * spatial
        unit += n * part_groups
        row = 0
        for piece in part.pieces:
            assert piece.offset == row * pitch
            assert piece.view[0] == n and piece.view[2:] == (part_groups, d, s)
            row += piece.view[1]
        assert row == rows
    assert unit == batch * groups


@pytest.mark.parametrize("view", [
    (8, 4096, 32, 16, 1),   # channels-last (8, 64, 64, 512)
    (8, 1, 32, 16, 4096),   # channels-first (8, 512, 64, 64)
    (8, 64, 32, 16, 64),    # a middle axis: M = 64, S = 64
    (8, 1, 32, 16, 1),      # (N, C) with C = 512... made large by the batch below
])
def test_parts_start_just_above_half_the_l2_in_every_layout(view):
    itemsize = 4
    nbytes = math.prod(view) * itemsize
    for inputs, name in ((1, "forward"), (2, "backward")):
        at = make(view, itemsize, l2_bytes=2 * inputs * nbytes)   # inputs fill exactly half
        above = make(view, itemsize, l2_bytes=2 * inputs * nbytes - 2)
        assert len(getattr(at, name)) == 1 and len(getattr(at, name)[0].pieces) == 1
        parts = getattr(above, name)
        assert len(parts) == 2 and [p.view[0] for p in parts] == [4, 4]  # whole samples
        covers(parts, view)


def test_parts_hold_what_half_the_l2_holds_and_split_alike():
    view = (8, 4096, 32, 16, 1)  # 8 MB a sample in float32
    p = make(view, 4)
    assert [part.view[0] for part in p.forward] == [3, 3, 2]   # 24 MB <= 30 MB of x
    assert [part.view[0] for part in p.backward] == [1] * 8    # 16 MB of x and dy
    for parts in (p.forward, p.backward):
        covers(parts, view)
        # Every part as many partials per unit, the grid following its samples.
        reductions = [part.pieces[0].reduction for part in parts]
        assert len({r.split for r in reductions}) == 1 and len({r.chunk for r in reductions}) == 1
        assert [r.grid for r in reductions] == [
            part.view[0] * r.column_chunks * r.split for part, r in zip(parts, reductions)]
        # Still filling the GPU, or every thread at its least work.
        r = reductions[0]
        assert r.grid >= RESIDENT // 2 or r.chunk == r.rows_per_block * cuda_plan.MIN_ROWS_PER_THREAD
    # 7 MB a sample: 4 samples in the H200's 30 MB, 3 in the H100's 25.
    smaller = (8, 3584, 32, 16, 1)
    assert [part.view[0] for part in make(smaller, 4).forward] == [4, 4]
    assert [part.view[0] for part in make(smaller, 4, l2_bytes=50 * MB).forward] == [3, 3, 2]


def test_channels_first_samples_larger_than_half_the_l2_are_cut_into_groups():
    view = (2, 1, 32, 16, 16384)  # (2, 512, 128, 128) float32: 32 MB a sample
    p = make(view, 4)
    assert [(part.unit, part.view[2]) for part in p.forward] == [
        (0, 16), (16, 16), (32, 16), (48, 16)]
    assert [part.view[2] for part in p.backward] == [11, 11, 10] * 2
    for parts in (p.forward, p.backward):
        covers(parts, view)
        assert all(len(part.pieces) == 1 for part in parts)
        assert len({part.split for part in parts}) == 1


def test_channels_last_samples_larger_than_half_the_l2_are_cut_into_windows_of_groups():
    view = (2, 16384, 32, 16, 1)  # (2, 128, 128, 512) float32: 32 MB a sample, 1 MB a group
    p = make(view, 4)
    # Forward 30 MB of x: 30 groups; in runs of 2 groups, a line of 128 bytes a row.
    assert [(part.unit, part.view[2]) for part in p.forward] == [
        (0, 16), (16, 16), (32, 16), (48, 16)]
    # Backward 30 MB of x and dy: 15 groups, 7 runs of 2: 3 parts of 6, 5 and 5 runs.
    assert [part.view[2] for part in p.backward] == [12, 10, 10] * 2
    for parts in (p.forward, p.backward):
        covers(parts, view)
        assert all(len(part.pieces) == 1 for part in parts)
        assert len({part.split for part in parts}) == 1
        # Each window's tiles cover its own channels, with the first window's lanes and
        # rows: every group reduced in the same order, whichever window it is in.
        reductions = [part.pieces[0].reduction for part in parts]
        assert len({(r.lanes, r.rows_per_block, r.chunk) for r in reductions}) == 1
        for part, r in zip(parts, reductions):
            columns = part.view[2] * 16 // 4
            assert r.column_chunks == math.ceil(columns / r.lanes)
            assert r.grid == r.column_chunks * r.split
    # float16, D = 16: a group is 32 bytes of a row, so runs of 4 groups.
    assert [part.view[2] for part in make(view, 2, l2_bytes=20 * MB).backward] == [8] * 8


@pytest.mark.parametrize("groups, most, granule, expected", [
    (32, 15, 2, [12, 10, 10]),
    (32, 30, 2, [16, 16]),
    (7, 4, 2, [4, 3]),          # the last run takes what is left
    (10, 3, 4, [3, 3, 2, 2]),   # a run of the granule does not fit: runs of single groups
])
def test_windows_are_whole_runs_of_the_granule(groups, most, granule, expected):
    windows = cuda_plan._windows(groups, most, granule)
    assert [count for _, count in windows] == expected
    assert [start for start, _ in windows] == [sum(expected[:i]) for i in range(len(expected))]


def test_samples_with_rows_larger_than_half_the_l2_are_cut_into_pieces():
    # (2, 64, 128, 64, 64) with the groups along axis 2: rows of S = 4096 values, and
    # 32 MB a sample in float32. A channels-last group of 32 MB cannot be windowed.
    for view in ((2, 64, 32, 16, 256), (2, 16384, 1, 512, 1)):
        p = make(view, 4, l2_bytes=60 * MB)
        row = math.prod(view[2:])
        for parts, inputs in ((p.forward, 1), (p.backward, 2)):
            assert [part.view[0] for part in parts] == [1, 1]
            covers(parts, view)
            for part in parts:
                rows = [piece.view[1] for piece in part.pieces]
                assert len(rows) > 1 and max(rows) - min(rows) <= 1
                # A piece holds a quarter of the share, or enough rows for every resident block.
                filled = RESIDENT * BLOCK * cuda_plan.MIN_ROWS_PER_THREAD * 16 * inputs
                most = max(30 * MB / 4, filled) // (row * 4 * inputs)
                assert max(rows) <= most < max(rows) + 1 + most // len(rows)
                assert part.split == sum(piece.reduction.split for piece in part.pieces)
    # (N, C) rows of one value each cannot be cut: one sample a part, one piece.
    wide = make((2, 1, 1, 2 ** 24, 1), 4)
    assert [len(part.pieces) for part in wide.forward] == [1, 1]


def test_a_group_larger_than_half_the_l2_is_a_part_of_its_own():
    p = make((1, 1, 2, 4, 2 ** 22), 4)  # two groups of 64 MB
    assert [part.view for part in p.forward] == [(1, 1, 1, 4, 2 ** 22)] * 2


def test_the_index_width_and_vectors_follow_the_whole_input():
    view = (2 ** 16, 1, 1, 2 ** 15, 1)
    sliced, whole = make(view, 2), make(view, 2, l2_bytes=WHOLE)
    assert len(sliced.forward) > 1 and len(whole.forward) == 1
    assert sliced.index64 and whole.index64 and sliced.vector == whole.vector == 8
    assert not make((2 ** 15, 1, 1, 2 ** 15, 1), 2).index64


def test_an_unknown_l2_is_one_part_and_a_negative_one_an_error():
    assert len(make((64, 1, 32, 16, 4096), l2_bytes=0).forward) == 1
    with pytest.raises(ValueError, match="l2_bytes must be >= 0, got -1"):
        make((2, 1, 1, 1, 1), l2_bytes=-1)


# ------------------------------------------------------------------ the on-chip tier

ON_CHIP_VALUES = cuda_plan.ON_CHIP_BYTES // 4  # float32 values of x a group may have


@pytest.mark.parametrize("view, forward, backward", [
    ((H100_SMS, 1, 1, 8, ON_CHIP_VALUES // 8), True, False),          # x fits exactly
    ((H100_SMS, 1, 1, 8, ON_CHIP_VALUES // 8 + 1), False, False),     # one value per channel over
    ((H100_SMS, 1, 1, 8, ON_CHIP_VALUES // 16), True, True),          # x and dy fit exactly
    ((H100_SMS, 1, 1, 8, ON_CHIP_VALUES // 16 + 1), True, False),     # x and dy just do not
    ((H100_SMS - 1, 1, 1, 8, 64), False, False),                      # too few groups
    ((1, 1, H100_SMS, 8, 64), True, True),                            # groups of one sample count
    ((H100_SMS, ON_CHIP_VALUES // 512, 1, 512, 1), True, False),      # 512 channels: the most
    ((H100_SMS, 2, 1, 513, 1), False, False),                         # 513 channels
])
def test_on_chip_tier_where_the_group_fits_and_fills_the_gpu(view, forward, backward):
    p = make(view, on_chip_tier=True)
    assert (p.forward_on_chip is not None, p.backward_on_chip is not None) == (forward, backward)
    groups = view[0] * view[2]
    for on_chip, parts in ((p.forward_on_chip, p.forward), (p.backward_on_chip, p.backward)):
        if on_chip is None:
            assert parts  # the tiers that read twice, as without the on-chip tier
        else:
            assert on_chip.grid == groups and parts == ()


def test_on_chip_tier_budget_is_in_the_storage_type():
    view = (H100_SMS, 1, 1, 8, ON_CHIP_VALUES // 8)  # 32 KiB of float32
    assert make(view, itemsize=2, on_chip_tier=True).backward_on_chip is not None
    assert make(view, itemsize=8, on_chip_tier=True).forward_on_chip is None


def test_without_the_on_chip_tier_the_plan_is_the_tiers_that_read_twice():
    view = (64, 1, 32, 8, 64)
    on, off = make(view, on_chip_tier=True), make(view)
    assert on.forward_on_chip is not None and on.backward_on_chip is not None
    assert off.forward_on_chip is None and off.backward_on_chip is None
    assert on.forward == on.backward == () and off.forward and off.backward
    assert (on.vector, on.index64, on.channels_last) == (off.vector, off.index64,
                                                         off.channels_last)


@pytest.mark.parametrize("channel_values, unit_threads", [(1, 1), (4, 1), (5, 2), (64, 16),
                                                          (128, 32), (1024, 32)])
def test_on_chip_backward_gives_each_channel_lanes_by_its_values(channel_values, unit_threads):
    p = make((H100_SMS, 1, 1, 4, channel_values), on_chip_tier=True)
    assert p.backward_on_chip.unit_threads == unit_threads
    assert p.forward_on_chip.unit_threads == 0  # the forward sums whole groups per block


def test_the_loader_passes_the_on_chip_budget_to_the_source():
    from cugn.kernels import cuda_loader

    assert f"-DCUGN_ON_CHIP_BYTES={cuda_plan.ON_CHIP_BYTES}" in cuda_loader.OPTIONS
    assert f"-DCUGN_ON_CHIP_CHANNELS={cuda_plan.ON_CHIP_CHANNELS}" in cuda_loader.OPTIONS


# ------------------------------------------------------------------ clusters of the on-chip tier


def clustered(view, itemsize=4, cluster_blocks=8, sms=H100_SMS):
    return plan(view, itemsize, [0], sms, BLOCKS_PER_SM, H200_L2, True, cluster_blocks)


@pytest.mark.parametrize("view, itemsize, forward, backward", [
    ((8, 4096, 32, 16, 1), 2, 4, 8),     # (8, 64, 64, 512) float16: 128 kB of x a group
    ((8, 1, 32, 16, 4096), 2, 4, 8),     # (8, 512, 64, 64)
    ((2, 4096, 32, 10, 1), 2, 4, 8),     # (2, 4096, 320): 80 kB, 3 blocks' worth, so 4
    ((32, 1024, 32, 8, 1), 4, 1, 2),     # (32, 32, 32, 256) float32: one block forward
    ((8, 4096, 32, 16, 1), 4, 8, None),  # float32: 256 kB forward; 512 kB backward, too large
    ((1, 16384, 32, 16, 1), 2, None, None),  # 1 MB of float16 a group
])
def test_groups_larger_than_a_block_take_the_fewest_blocks_of_a_cluster_that_hold_them(
        view, itemsize, forward, backward):
    p = clustered(view, itemsize)
    groups = view[0] * view[2]
    for on_chip, blocks in ((p.forward_on_chip, forward), (p.backward_on_chip, backward)):
        assert (on_chip and on_chip.cluster) == blocks
        if on_chip is not None:
            assert on_chip.grid == groups * blocks
    # Without clusters (below sm_90) only a group that one block holds is on chip.
    single = clustered(view, itemsize, cluster_blocks=1)
    assert (single.forward_on_chip is not None) == (forward == 1)
    assert (single.backward_on_chip is not None) == (backward == 1)


def test_a_cluster_also_fills_the_gpu_where_there_are_too_few_groups():
    view = (1, 1024, 32, 8, 1)  # 32 groups of 32 kB of float32 x: 4 blocks a group fill 128
    assert make(view, on_chip_tier=True).forward_on_chip is None
    assert clustered(view, sms=128).forward_on_chip.cluster == 4
    assert clustered(view, sms=129).forward_on_chip.cluster == 8
    assert clustered(view, sms=257).forward_on_chip is None


@pytest.mark.parametrize("view, blocks, share", [
    ((1, 10, 1, 4, 1), 4, 3),          # rows of one vector: 10 rows in 3, 3, 3, 1
    ((1, 10, 1, 8, 1), 4, 6),          # rows of two vectors: whole rows
    ((1, 1, 1, 10, 8), 4, 6),          # one row, channels of 2 vectors: 3 channels a block
    ((1, 1, 1, 10, 8), 8, 4),          # 10 channels in 8 blocks: 2 in each of 5, 3 empty
    ((1, 1, 1, 40, 1), 4, 3),          # one row of channels-last vectors: 10 in 3, 3, 3, 1
])
def test_blocks_of_a_cluster_share_a_group_in_whole_rows_or_channels(view, blocks, share):
    assert cuda_plan.cluster_share(view, 4, blocks) == share


def test_the_backward_of_a_cluster_gives_each_channel_lanes_by_the_rows_a_block_holds():
    # 64 rows of 256 channels of float32 x and dy: 128 kB, 4 blocks of 16 rows each.
    p = clustered((H100_SMS, 64, 1, 256, 1))
    assert p.backward_on_chip.cluster == 4 and p.backward_on_chip.unit_threads == 4
