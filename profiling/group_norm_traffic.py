"""Global memory traffic of the CUDA GroupNorm kernels, counted on the CPU.

    python profiling/group_norm_traffic.py [--out profiling/results]

Runs the real kernels on the CPU (cugn.kernels.cuda_on_cpu), planned for an
H200 (132 SMs; 4 resident blocks each, the kernels' launch bounds; 60 MB of L2,
which sizes the parts a large input is run through), on the
shapes and dtypes of the GPU benchmark (profiling/group_norm_gpu.py), and
counts the bytes of every global load and store they make. Writes, under
--out, group_norm_traffic.csv (one row per case and pass) and
group_norm_traffic.md (the table and the goal). Columns:

- launches: kernels launched by the pass;
- global_bytes: every byte the kernels loaded from and stored to global memory;
- dram_bytes: what reaches DRAM with the H200's 60 MB of L2, by a model of an
  LRU cache over the lines each launch touched (``dram_bytes``): re-reads of
  data still in L2 are not counted;
- minimum_bytes: 2 |X| forward (read x, write y), 3 |X| backward (read x and
  dy, write dx).

Host-side copies between launches (the partial sums of the parts of a pass
gathered into one array, the pieces' statistics moved onto one pivot: a few
values per group or channel, done by CuPy on a GPU) are not kernels of the
harness and are not counted.

The goal is dram_bytes <= 1.05 minimum_bytes on every row. No GPU is needed;
a full run takes some minutes (every thread of every block runs).
"""

import argparse
import collections
import csv
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import group_norm_gpu  # noqa: E402  (the GPU benchmark's cases)

from cugn.functions.normalization import check_axis, feature_axes  # noqa: E402
from cugn.kernels import GroupLayout, group_norm_cuda  # noqa: E402
from cugn.kernels.cuda_on_cpu import Device  # noqa: E402
from cugn.profiling import benchmark  # noqa: E402
from cugn.profiling.timing import format_table  # noqa: E402

SM_COUNT = 132
BLOCKS_PER_SM = 4
L2_BYTES = 60 * 2 ** 20
L2_LINE_BYTES = 128  # the lines of L2, and those the harness records each launch touched
GOAL = 1.05
COLUMNS = ["shape", "axis", "groups", "dtype", "pass", "launches", "global_bytes", "dram_bytes",
           "minimum_bytes", "dram/minimum"]


def dram_bytes(launches, l2_bytes=L2_BYTES, line_bytes=L2_LINE_BYTES):
    """The bytes ``launches`` move to and from DRAM, in order, with an L2 of ``l2_bytes``.

    The model: L2 holds lines of ``line_bytes`` (those the harness recorded), the
    least recently used out first, reads and stores alike (write-allocate). Each
    launch touches the lines of its spans (``Traffic.touched``), taken in the
    order a grid sweeping its data reaches them: by their place among the
    touched lines of their allocation, the allocations' lines interleaved (x and
    y of an elementwise pass, line by line). A line not in L2 when touched costs
    the bytes its span read, spread evenly over the span, up to the line's size;
    bytes a launch reads past a span's size (a small array read once per
    element) hit L2 unless the span is larger than L2. Stores reach DRAM once per
    launch, up to the span's size."""
    resident = collections.OrderedDict()  # (address, line): bytes, least recent first
    held = 0
    total = 0.0
    for launch in launches:
        touches = []
        for traffic in launch.traffic:
            lines = [(span, line) for span in traffic.touched
                     for line in range(span.offset // line_bytes,
                                       -(-(span.offset + span.nbytes) // line_bytes))]
            for place, (span, line) in enumerate(lines):
                touches.append((place / len(lines), traffic.address, line, span))
            for span in traffic.touched:
                total += min(span.written, span.nbytes)
                if span.nbytes > l2_bytes:
                    total += max(0, span.read - span.nbytes)
        for _, address, line, span in sorted(touches, key=lambda t: t[0]):
            key = (address, line)
            if key in resident:
                resident.move_to_end(key)
                continue
            size = (min((line + 1) * line_bytes, span.offset + span.nbytes)
                    - max(line * line_bytes, span.offset))
            total += min(span.read * size / span.nbytes, size)
            resident[key] = size
            held += size
            while held > l2_bytes:
                held -= resident.popitem(last=False)[1]
    return round(total)


def measure(case, seed=0):
    """One row per pass of ``case`` (a benchmark.Case): its launches and their bytes."""
    axes = feature_axes(check_axis(case.axis), case.shape)
    layout = GroupLayout(case.shape, axes, case.groups)
    rng = np.random.default_rng(seed)
    dtype = np.dtype(case.dtype)
    device = Device(sm_count=SM_COUNT, blocks_per_sm=BLOCKS_PER_SM, l2_bytes=L2_BYTES,
                    line_bytes=L2_LINE_BYTES)
    x = device.asarray(rng.standard_normal(case.shape, np.float32).astype(dtype))
    dy = device.asarray(rng.standard_normal(case.shape, np.float32).astype(dtype))
    gamma = device.asarray(np.ones(layout.feature_shape, np.float32))
    beta = device.asarray(np.zeros(layout.feature_shape, np.float32))
    with device.installed():
        _, mean, rstd = group_norm_cuda.forward(x, gamma, beta, layout, 1e-5)
        forward = list(device.launches)
        group_norm_cuda.backward(x, dy, gamma, mean, rstd, layout)
        backward = device.launches[len(forward):]
    rows = []
    for name, launches, minimum in (("forward", forward, 2), ("backward", backward, 3)):
        row = {"shape": "x".join(map(str, case.shape)), "axis": case.axis, "groups": case.groups,
               "dtype": dtype.name, "pass": name, "launches": len(launches),
               "global_bytes": sum(l.bytes_read + l.bytes_written for l in launches),
               "dram_bytes": dram_bytes(launches), "minimum_bytes": minimum * x.nbytes}
        row["dram/minimum"] = round(row["dram_bytes"] / row["minimum_bytes"], 3)
        rows.append(row)
    return rows


def write(rows, out):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "group_norm_traffic.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    missed = [r for r in rows if r["dram/minimum"] > GOAL]
    lines = [
        "# GroupNorm kernels: global memory traffic, counted on the CPU",
        "",
        f"Commit: {benchmark.commit() or 'unknown'}. Command: `python profiling/group_norm_traffic.py`.",
        f"Planned for {SM_COUNT} SMs x {BLOCKS_PER_SM} blocks; DRAM bytes modelled with "
        f"{L2_BYTES // 2 ** 20} MB of L2 (an H200).",
        "Bytes are counted by the CPU harness from the kernels' own loads and stores; no GPU "
        "was used.",
        "",
        "```",
        format_table(rows, COLUMNS),
        "```",
        "",
        f"Goal: dram_bytes <= {GOAL} x minimum_bytes on every row: "
        + ("met." if not missed else f"missed on {len(missed)} of {len(rows)} rows: "
           + "; ".join(f"{r['shape']} {r['dtype']} {r['pass']} ({r['dram/minimum']})"
                       for r in missed) + "."),
        "",
    ]
    (out / "group_norm_traffic.md").write_text("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python profiling/group_norm_traffic.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results",
                        help="folder for the .csv and .md (default: %(default)s)")
    args = parser.parse_args(argv)
    rows = []
    for case in group_norm_gpu.cases():
        rows += measure(case)
        print(format_table(rows[-2:], COLUMNS), flush=True)
    write(rows, args.out)
    print(f"wrote {args.out / 'group_norm_traffic.csv'} and .md")


if __name__ == "__main__":
    main()
