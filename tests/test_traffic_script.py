"""profiling/group_norm_traffic.py: its DRAM model, and its rows from a real (small) run
of the kernels on the CPU."""

import pytest

pytest.importorskip("cupy", reason="group_norm_cuda imports CuPy (no GPU needed)")

from cugn.kernels.cuda_on_cpu import Launch, Traffic, compiler  # noqa: E402
from cugn.profiling import benchmark  # noqa: E402

import profiling_scripts  # noqa: E402

pytestmark = pytest.mark.cuda_on_cpu

script = profiling_scripts.load("group_norm_traffic")

MB = 2 ** 20


def launch(*traffic):
    return Launch("k", "k", (1, 1, 1), (256, 1, 1), tuple(traffic))


def test_a_second_read_of_what_fits_in_l2_is_not_dram_traffic():
    x, y = 0x1000, 0x9000
    passes = [launch(Traffic(("x",), x, 40 * MB, 40 * MB, 0)),
              launch(Traffic(("x",), x, 40 * MB, 40 * MB, 0), Traffic(("y",), y, 40 * MB, 0, 40 * MB))]
    # x from DRAM once; in the second launch it is still in 60 MB of L2; y is written.
    assert script.dram_bytes(passes, 60 * MB) == 80 * MB
    # With 32 MB of L2, x does not fit: read twice.
    assert script.dram_bytes(passes, 32 * MB) == 120 * MB


def test_what_was_touched_since_evicts_least_recently_used_first():
    x, a = 0x1000, 0x2000
    passes = [launch(Traffic(("x",), x, 40 * MB, 40 * MB, 0)),
              launch(Traffic(("a",), a, 30 * MB, 30 * MB, 0)),
              launch(Traffic(("x",), x, 40 * MB, 40 * MB, 0))]
    assert script.dram_bytes(passes, 60 * MB) == 110 * MB  # a pushed x out: 40 + 30 + 40
    assert script.dram_bytes(passes, 80 * MB) == 70 * MB   # both fit


def test_re_reads_within_a_launch_hit_l2_for_small_arrays_only():
    small, big = 0x1000, 0x2000
    passes = [launch(Traffic(("gamma",), small, 1 * MB, 5 * MB, 0),
                     Traffic(("x",), big, 100 * MB, 101 * MB, 0))]
    assert script.dram_bytes(passes, 60 * MB) == 1 * MB + 101 * MB


@pytest.mark.skipif(compiler() is None, reason="needs g++ (>= 12) or clang++")
# Planned for 132 SMs, the channels-last tiles of two samples are split (statistics,
# finalize, apply); the channels-first groups are not (statistics, apply).
@pytest.mark.parametrize("axis, shape, forward_launches",
                         [(-1, (2, 32, 32, 64), 3), (1, (2, 64, 32, 32), 2)])
def test_rows_of_a_small_case(axis, shape, forward_launches):
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


def test_the_script_writes_its_csv_and_summary(tmp_path):
    rows = [{"shape": "2x8", "axis": -1, "groups": 2, "dtype": "float16", "pass": "forward",
             "launches": 3, "global_bytes": 96, "dram_bytes": 70, "minimum_bytes": 64,
             "dram/minimum": 1.094}]
    script.write(rows, tmp_path)
    assert (tmp_path / "group_norm_traffic.csv").read_text().splitlines()[0] == \
        ",".join(script.COLUMNS)
    summary = (tmp_path / "group_norm_traffic.md").read_text()
    assert "missed on 1 of 1 rows" in summary and "no GPU was used" in summary
