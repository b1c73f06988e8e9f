"""profiling/group_norm_traffic.py: its DRAM model (an LRU over the lines each launch
touched), and its rows from a real (small) run of the kernels on the CPU."""

import pytest

pytest.importorskip("cupy", reason="group_norm_cuda imports CuPy (no GPU needed)")

from cugn.kernels import group_norm_cuda  # noqa: E402
from cugn.kernels.cuda_on_cpu import Launch, Span, Traffic, compiler  # noqa: E402
from cugn.profiling import benchmark  # noqa: E402

import profiling_scripts  # noqa: E402

pytestmark = pytest.mark.cuda_on_cpu

script = profiling_scripts.load("group_norm_traffic")

MB = 2 ** 20


def launch(*traffic):
    return Launch("k", "k", (1, 1, 1), (256, 1, 1), tuple(traffic))


def lines(name, address, first, count, read=True):
    """``count`` lines of a MB from line ``first`` of an allocation of 64, read or written."""
    nbytes = count * MB
    return Traffic((name,), address, 64 * MB, nbytes if read else 0, 0 if read else nbytes,
                   (Span(first * MB, nbytes, nbytes if read else 0, 0 if read else nbytes),))


def dram_lines(launches, l2_lines):
    """DRAM traffic in lines of a MB, with an L2 of ``l2_lines`` of them."""
    return script.dram_bytes(launches, l2_lines * MB, line_bytes=MB) / MB


X, Y = 1 << 32, 2 << 32  # two allocations' addresses


def test_a_second_read_of_what_fits_in_l2_with_its_stores_is_not_dram_traffic():
    passes = [launch(lines("x", X, 0, 20)),
              launch(lines("x", X, 0, 20), lines("y", Y, 0, 20, read=False))]
    assert dram_lines(passes, 60) == 20 + 20  # x once, y written
    # 32 lines: x0..x19 are in L2; the apply reads x_i and stores y_i in turn, and from
    # y11 each store evicts the least recent line, which is x_(i+1) (x13 first): the
    # rest of x misses, each miss evicting the next. 7 lines read again.
    assert dram_lines(passes, 32) == 20 + 7 + 20


def test_parts_that_fit_reach_the_minimum_where_the_whole_does_not():
    whole = [launch(lines("x", X, 0, 40)),
             launch(lines("x", X, 0, 40), lines("y", Y, 0, 40, read=False))]
    # After 40 lines through 32, x8..x39 are in L2; x0 misses and evicts x8, and so on.
    assert dram_lines(whole, 32) == 40 + 40 + 40
    parts = [launch(*group) for first in range(0, 40, 10) for group in (
        [lines("x", X, first, 10)],
        [lines("x", X, first, 10), lines("y", Y, first, 10, read=False)])]
    assert dram_lines(parts, 32) == 40 + 40  # each part's 20 lines fit


def test_reading_pieces_again_last_first_reuses_what_l2_still_holds():
    first = [launch(lines("x", X, p, 10)) for p in range(0, 40, 10)]
    again = [launch(lines("x", X, p, 10)) for p in range(0, 40, 10)]
    # In order, the second read thrashes: every line was evicted just before.
    assert dram_lines(first + again, 32) == 40 + 40
    # Last first: x8..x39 are still in L2 and read; x0..x7 miss, evicting x8 and x9
    # (the least recent) before they are read.
    assert dram_lines(first + again[::-1], 32) == 40 + 10


def test_what_was_touched_since_evicts_least_recently_used_first():
    passes = [launch(lines("x", X, 0, 40)), launch(lines("a", Y, 0, 30)),
              launch(lines("x", X, 0, 40))]
    # a pushes x0..x9 out; reading x again in order, each miss evicts the next line.
    assert dram_lines(passes, 60) == 40 + 30 + 40
    assert dram_lines(passes, 80) == 40 + 30  # both fit


def test_sparse_reads_cost_what_they_read_and_small_arrays_are_read_from_dram_once():
    rstd = Traffic(("rstd",), X, 1024, 5 * 1024, 0)       # no spans: the whole allocation
    pivots = Traffic(("x",), Y, 64 * MB, 12, 0, tuple(Span(k * MB, MB, 4, 0) for k in (0, 5, 9)))
    assert script.dram_bytes([launch(rstd, pivots)], 60 * MB, line_bytes=MB) == 1024 + 12
    # A span larger than L2 read more than once reads DRAM again past its size.
    big = Traffic(("x",), X, 100 * MB, 101 * MB, 0)
    assert script.dram_bytes([launch(big)], 60 * MB, line_bytes=MB) == 101 * MB


def test_stores_reach_dram_once_per_launch():
    passes = [launch(lines("y", Y, 0, 10, read=False))] * 2
    assert dram_lines(passes, 60) == 20


@pytest.mark.skipif(compiler() is None, reason="needs g++ (>= 12) or clang++")
# Planned for 132 SMs, the channels-last tiles of two samples are split (statistics,
# finalize, apply); the channels-first groups are not (statistics, apply). (The
# on-chip tier, off here, would take both in clusters of 4 blocks.)
@pytest.mark.parametrize("axis, shape, forward_launches",
                         [(-1, (2, 32, 32, 64), 3), (1, (2, 64, 32, 32), 2)])
def test_rows_of_a_small_case(monkeypatch, axis, shape, forward_launches):
    monkeypatch.setattr(group_norm_cuda, "on_chip", False)
    forward, backward = script.measure(benchmark.Case(shape, axis, 32, "float16"))
    nbytes = 2 * 32 * 32 * 64 * 2
    assert (forward["launches"], backward["launches"]) == (forward_launches, 4)
    assert forward["minimum_bytes"] == 2 * nbytes and backward["minimum_bytes"] == 3 * nbytes
    # Small enough to stay in L2: DRAM sees each input read once and each output written
    # once, plus the statistics, the partial sums (3 values per split chunk of each
    # group or channel: 48 kB for the backward split 32 ways) and the parameters.
    for row in (forward, backward):
        assert row["minimum_bytes"] <= row["dram_bytes"] <= row["minimum_bytes"] + 64 * 1024, row
    # The kernels read x twice in each pass (statistics, then the elementwise pass).
    assert forward["global_bytes"] >= 3 * nbytes and backward["global_bytes"] >= 5 * nbytes


@pytest.mark.skipif(compiler() is None, reason="needs g++ (>= 12) or clang++")
@pytest.mark.parametrize("axis, shape", [
    # 256 groups of 512 values on 132 SMs: a block a group.
    (-1, (8, 16, 16, 64)), (1, (8, 64, 16, 16)),
    # 64 groups of 2048 values: a block would hold a group, but 64 blocks leave SMs
    # idle, so clusters of 4 blocks (2 would make 128).
    (-1, (2, 32, 32, 64)), (1, (2, 64, 32, 32)),
])
def test_rows_of_a_case_on_chip(axis, shape):
    # Each pass reads its inputs once, forward in one launch, backward in two; beside x,
    # dy, y and dx, a few values per group and channel (gamma, beta, the statistics,
    # the partial sums).
    forward, backward = script.measure(benchmark.Case(shape, axis, 32, "float16"))
    assert (forward["launches"], backward["launches"]) == (1, 2)
    for row in (forward, backward):
        assert row["minimum_bytes"] < row["global_bytes"] <= 1.1 * row["minimum_bytes"], row
        assert row["minimum_bytes"] < row["dram_bytes"] <= 1.1 * row["minimum_bytes"], row


def test_the_script_writes_its_csv_and_summary(tmp_path):
    rows = [{"shape": "2x8", "axis": -1, "groups": 2, "dtype": "float16", "pass": "forward",
             "launches": 3, "global_bytes": 96, "dram_bytes": 70, "minimum_bytes": 64,
             "dram/minimum": 1.094}]
    script.write(rows, tmp_path)
    assert (tmp_path / "group_norm_traffic.csv").read_text().splitlines()[0] == \
        ",".join(script.COLUMNS)
    summary = (tmp_path / "group_norm_traffic.md").read_text()
    assert "missed on 1 of 1 rows: 2x8 float16 forward (1.094)." in summary
    assert "no GPU was used" in summary
