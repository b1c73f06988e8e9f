"""The CUDA launch planner (pure Python): vector widths, tiers, grids, splits."""

import math

import pytest

from cugn.kernels import cuda_plan
from cugn.kernels.cuda_plan import BLOCK, plan

H100_SMS = 132
BLOCKS_PER_SM = 8
RESIDENT = H100_SMS * BLOCKS_PER_SM


def make(view, itemsize=4, addresses=(0,)):
    return plan(view, itemsize, list(addresses), H100_SMS, BLOCKS_PER_SM)


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
    assert stats.grid == 8 * stats.column_chunks * stats.split
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
    p = make((64, 1, 32, 8, 1024))  # (64, 256, 32, 32) NCHW: 2048 groups fill the GPU
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
    p = make((1, 1, 32, 16, 16384))  # B=1, G=32, 128x128 NCHW: 32 groups on 132 SMs
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
    assert make((64, 1, 32, 16, 4096)).statistics.split == 1


def test_grids_of_the_small_kernels():
    p = make((3, 10, 5, 4, 7))
    assert p.finalize_grid == 1 and p.parameters_grid == 1
    assert p.coefficients_grid == math.ceil(3 * 5 * 32 / BLOCK)
    assert 1 <= p.elementwise_grid <= RESIDENT * cuda_plan.ELEMENTWISE_WAVES


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
