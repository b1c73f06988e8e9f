"""GPU benchmark: GroupNorm with SiLU fused, against GroupNorm then a separate SiLU.

    python profiling/group_norm_silu_gpu.py [--out profiling/results] [--repeats 50]

On the shapes and dtypes of group_norm_gpu.py, per pass, all in one run:

- fused_us: cugn's kernels with ``activation="silu"``;
- plain_us: cugn's kernels without an activation;
- silu_us: the best separate SiLU, one CuPy elementwise kernel (forward: read the
  normalised tensor, write its SiLU; backward: read the saved input and dy, write
  the gradient), which a composition runs beside plain GroupNorm;
- silu_copy_us: a device-to-device copy of that SiLU's traffic (2x the tensor's
  bytes forward, 3x backward), the time its memory traffic costs at the copy's
  bandwidth.

saved_us = plain_us + silu_us - fused_us, what fusing saves. The goal: saved_us
>= silu_copy_us on every row, i.e. the fused kernels cost no more than plain
GroupNorm, and fusing saves at least the SiLU's own traffic. Writes
group_norm_silu_gpu.csv and .md under --out. Needs CuPy and a CUDA device.
"""

import argparse
import csv
import datetime
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import group_norm_gpu  # noqa: E402  (the GPU benchmark's cases)

from cugn import kernels  # noqa: E402
from cugn.profiling import benchmark  # noqa: E402
from cugn.profiling.timing import format_table, format_value, time_cuda  # noqa: E402

COLUMNS = ["shape", "axis", "dtype", "pass", "fused_us", "plain_us", "silu_us", "silu_copy_us",
           "saved_us"]


def saved(row):
    """What fusing saves, and whether it meets the goal (at least the SiLU's traffic)."""
    value = row["plain_us"] + row["silu_us"] - row["fused_us"]
    return value, value >= row["silu_copy_us"]


def _silu_kernels(cp, dtype):
    """One-kernel SiLU forward and backward, computed in float32 (float64 for float64)."""
    acc = "double" if dtype == "float64" else "float"
    sigmoid = f"{acc} s = 1 / (1 + exp(-({acc})z));"
    forward = cp.ElementwiseKernel("T z", "T y", f"{sigmoid} y = (T)(({acc})z * s)",
                                   f"cugn_bench_silu_{acc}")
    backward = cp.ElementwiseKernel(
        "T z, T dy", "T dz", f"{sigmoid} dz = (T)(({acc})dy * s * (1 + ({acc})z * (1 - s)))",
        f"cugn_bench_silu_backward_{acc}")
    return forward, backward


def run_case(case, repeats):
    import cupy as cp

    x, dy, gamma, beta = benchmark._inputs(case, cp)
    layout, epsilon = case.layout, case.epsilon
    z, mean, rstd = kernels.forward(x, gamma, beta, layout, epsilon)
    silu_forward, silu_backward = _silu_kernels(cp, case.dtype)
    out = cp.empty_like(x)
    functions = {
        "forward": {
            "fused": lambda: kernels.forward(x, gamma, beta, layout, epsilon, "silu"),
            "plain": lambda: kernels.forward(x, gamma, beta, layout, epsilon),
            "silu": lambda: silu_forward(z, out),
            "silu_copy": benchmark._device_copy(cp, 2 * case.nbytes // 2),
        },
        "backward": {
            "fused": lambda: kernels.backward(x, dy, gamma, mean, rstd, layout, beta, "silu"),
            "plain": lambda: kernels.backward(x, dy, gamma, mean, rstd, layout),
            "silu": lambda: silu_backward(z, dy, out),
            "silu_copy": benchmark._device_copy(cp, 3 * case.nbytes // 2),
        },
    }
    rows = []
    for pass_name, by_name in functions.items():
        row = {"device": benchmark.device_name("cuda"), "date": datetime.date.today().isoformat(),
               "commit": benchmark.commit(), "shape": "x".join(map(str, case.shape)),
               "axis": case.axis, "dtype": case.dtype, "pass": pass_name}
        for name, fn in by_name.items():
            row[f"{name}_us"] = time_cuda(fn, repeats=repeats)
        row["saved_us"], row["goal_met"] = saved(row)
        rows.append(row)
    return rows


def write_results(rows, out, command):
    out.mkdir(parents=True, exist_ok=True)
    fields = ["device", "date", "commit", *COLUMNS, "goal_met"]
    with open(out / "group_norm_silu_gpu.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    met = sum(row["goal_met"] for row in rows)
    first = rows[0]
    lines = [
        "# GroupNorm + SiLU on the GPU: fused against GroupNorm then a separate SiLU",
        "",
        f"Device: {first['device']}; date: {first['date']}; "
        f"commit: {first['commit'] or 'unknown'}.",
        f"Command: `{command}`",
        "",
        "Medians in microseconds (CUDA events). saved_us = plain_us + silu_us - fused_us; the",
        "goal is saved_us >= silu_copy_us (fusing saves at least the SiLU's own traffic).",
        "",
        f"{met} of {len(rows)} rows meet the goal.",
        "",
        "| " + " | ".join(COLUMNS) + " | goal |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for row in rows:
        cells = [format_value(row[c]) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + f" | {'met' if row['goal_met'] else 'missed'} |")
    (out / "group_norm_silu_gpu.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="cugn GroupNorm+SiLU fusion GPU benchmark")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"),
                        help="directory for the CSV and the summary")
    parser.add_argument("--repeats", type=int, default=50, help="timed samples per measurement")
    args = parser.parse_args(argv)
    if not benchmark.cuda_available():
        print("group_norm_silu_gpu.py needs CuPy and a CUDA device; nothing was measured",
              file=sys.stderr)
        return 1
    rows = []
    for case in group_norm_gpu.cases():
        case_rows = run_case(case, args.repeats)
        print(format_table(case_rows, COLUMNS), flush=True)
        rows += case_rows
    command = "python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])])
    write_results(rows, Path(args.out), command)
    print(f"wrote {args.out}/group_norm_silu_gpu.csv and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
