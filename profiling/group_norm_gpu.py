"""GPU benchmark: cugn's CUDA GroupNorm against a copy of the same bytes, torch,
Keras on JAX and a naive CuPy composition, over a set of typical shapes.

    python profiling/group_norm_gpu.py [--out profiling/results] [--repeats 100]

Runs on a GPU host (CuPy and a CUDA device; torch with CUDA and JAX with CUDA
for those peers). Channels-last shapes (axis=-1) and their channels-first twins
(axis=1), float16 and float32, groups=32. Writes, under --out:
group_norm_gpu.csv (one row per case and pass), group_norm_gpu.md (the summary:
device, date, commit, command, the goals checked row by row) and
group_norm_gpu.png (effective bandwidth per case beside the copy's). Each
case's references are measured in the same run as the case, cugn among them
with its L2 slicing off (cugn_unsliced_us: every pass in one part), which
weighs the parts' extra launches against the DRAM traffic they save, and with
its on-chip tier off (cugn_on_chip_off_us: the tiers that read their inputs
twice), which weighs the one-pass kernels against them where groups fit.
"""

import argparse
import csv
import importlib.util
import os
import sys
from pathlib import Path

# The source tree this script belongs to, so that the results name its commit.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cugn.profiling import benchmark  # noqa: E402
from cugn.profiling.timing import format_table, format_value  # noqa: E402

CHANNELS_LAST = [(8, 64, 64, 512), (1, 128, 128, 512), (32, 32, 32, 256), (2, 4096, 320)]
DTYPES = ("float16", "float32")
GROUPS = 32
# The goals: forward and backward effective bandwidth as a share of the copy's.
GOALS = {"forward": 80.0, "backward": 75.0}
PEERS = ("torch_us", "keras_jax_us")


def cases():
    """Each channels-last shape and its channels-first twin, in each dtype."""
    result = []
    for shape in CHANNELS_LAST:
        twin = (shape[0], shape[-1], *shape[1:-1])
        for dtype in DTYPES:
            result.append(benchmark.Case(shape, -1, GROUPS, dtype))
            result.append(benchmark.Case(twin, 1, GROUPS, dtype))
    return result


def write_csv(rows, path, device="cuda"):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=benchmark.columns(device))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})


def _csv_value(value):
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else value


def goal_checks(row):
    """Which goals the row meets: share of copy bandwidth, and faster than each peer."""
    checks = {"bandwidth": row["pct_of_copy"] >= GOALS[row["pass"]]}
    for peer in PEERS:
        if row.get(peer) is not None:
            checks[peer] = row["cugn_us"] < row[peer]
    return checks


def write_summary(rows, path, command):
    first = rows[0]
    missed = [r for r in rows if not all(goal_checks(r).values())]
    absent = sorted({peer for r in rows for peer in PEERS if r.get(peer) is None})
    lines = [
        "# GroupNorm on the GPU: cugn against the copy bandwidth and its peers",
        "",
        f"Device: {first['device']}; date: {first['date']}; commit: {first['commit'] or 'unknown'}.",
        f"Command: `{command}`",
        "",
        "Times are medians in microseconds of GPU time (CUDA events, each sample queued behind",
        "a spin kernel so that Python's launch overhead is not counted; Keras on JAX by wall",
        "clock around `block_until_ready`, ten calls a sample). cugn_gbps counts 2x the tensor's bytes",
        "forward and 3x backward; pct_of_copy is the time of a device-to-device copy of that",
        f"traffic over cugn's. Goals: forward >= {GOALS['forward']:.0f} % and backward >= "
        f"{GOALS['backward']:.0f} % of the copy, and faster than torch and Keras-on-JAX on every row.",
        "",
        f"{len(rows) - len(missed)} of {len(rows)} rows meet every goal."
        + (f" Peers not measured on some rows: {', '.join(absent)}." if absent else ""),
        "",
    ]
    shown = ["shape", "axis", "dtype", "pass", "cugn_us", "cugn_unsliced_us",
             "cugn_on_chip_off_us", "copy_us", "torch_us", "keras_jax_us", "cupy_naive_us",
             "cugn_gbps", "pct_of_copy"]
    lines.append("| " + " | ".join(shown) + " | goals missed |")
    lines.append("|" + "---|" * (len(shown) + 1))
    for row in rows:
        misses = [name for name, met in goal_checks(row).items() if not met]
        cells = [format_value(row.get(c)) for c in shown]
        lines.append("| " + " | ".join(cells) + f" | {', '.join(misses) or '-'} |")
    Path(path).write_text("\n".join(lines) + "\n")


def write_plot(rows, path):
    """Effective bandwidth per case, forward and backward: cugn, each peer that was
    measured, and the copy of the same traffic (the ceiling)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    naive = next(c for c in rows[0] if c.endswith("_naive_us"))
    series = [("cugn", "cugn_us"), ("torch", "torch_us"), ("Keras on JAX", "keras_jax_us"),
              (naive[:-3].replace("_", " "), naive), ("copy of the same traffic", "copy_us")]
    figure, axes = plt.subplots(2, 1, figsize=(13, 8), sharex=True)
    for ax, pass_name in zip(axes, benchmark.PASSES):
        chosen = [r for r in rows if r["pass"] == pass_name]
        labels = [f"{r['shape']}\naxis {r['axis']} {r['dtype']}" for r in chosen]
        # Every peer moves the same least traffic: its bandwidth is cugn's scaled by the
        # ratio of the times.
        present = [(label, key) for label, key in series
                   if any(r.get(key) is not None for r in chosen)]
        width = 0.8 / len(present)
        for k, (label, key) in enumerate(present):
            offsets = [i - 0.4 + (k + 0.5) * width for i in range(len(chosen))]
            values = [0 if r.get(key) is None else r["cugn_gbps"] * r["cugn_us"] / r[key]
                      for r in chosen]
            ax.bar(offsets, values, width, label=label)
        ax.set_ylabel("GB/s")
        ax.set_title(f"{pass_name} ({benchmark.TRAFFIC[pass_name]}x the tensor's bytes)")
        ax.legend(fontsize=8)
    axes[-1].set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    figure.suptitle(f"GroupNorm effective bandwidth, {rows[0]['device']}, commit "
                    f"{rows[0]['commit'] or 'unknown'}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description="cugn GroupNorm GPU benchmark")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"),
                        help="directory for the CSV, the summary and the plot")
    parser.add_argument("--repeats", type=int, help="timed samples per measurement")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu runs the same sweep on the NumPy path (a dry run of the "
                             "script, written as group_norm_cpu_sweep.*)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not benchmark.cuda_available():
        print("group_norm_gpu.py needs CuPy and a CUDA device; nothing was measured",
              file=sys.stderr)
        return 1
    rows = []
    for case in cases():
        case_rows = benchmark.run_case(case, args.device, repeats=args.repeats)
        print(format_table(case_rows, ["shape", "axis", "dtype", "pass", "cugn_us",
                                       "cugn_unsliced_us", "cugn_on_chip_off_us", "copy_us",
                                       "torch_us", "keras_jax_us",
                                       benchmark.naive_column(args.device), "pct_of_copy"]),
              flush=True)
        rows += case_rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / ("group_norm_gpu" if args.device == "cuda" else "group_norm_cpu_sweep")
    command = "python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])])
    write_csv(rows, stem.with_suffix(".csv"), args.device)
    written = ".csv"
    if args.device == "cuda":  # the summary checks the GPU goals
        write_summary(rows, stem.with_suffix(".md"), command)
        written = ".csv and .md"
    if importlib.util.find_spec("matplotlib") is None:
        print("no plot: matplotlib is missing (pip install 'cugn[profiling]')", file=sys.stderr)
    else:
        write_plot(rows, stem.with_suffix(".png"))
        written += " and .png"
    print(f"wrote {stem}{written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
