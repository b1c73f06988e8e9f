"""Nsight Compute on cugn's GroupNorm kernels: a per-kernel summary table.

    python profiling/ncu_group_norm.py --shape 8,64,64,320 --groups 32 --dtype float32
    python profiling/ncu_group_norm.py --csv saved_raw_page.csv   # summarise a saved export

Runs profiling/nsight_workload.py under ``ncu`` on a GPU host, profiling only
the kernels launched inside cugn's ``kernel:...`` NVTX ranges (push/pop
ranges of the ``cugn`` domain: ``regex:`` makes the rest a regular expression,
``@`` separates domain and range, and the trailing ``/`` selects push/pop
ranges, as opposed to start/end ones):

    ncu --nvtx --nvtx-include "regex:cugn@kernel:.*/" --clock-control none ...

``--clock-control none`` keeps the GPU's own boost clocks, as in real use. The
report is saved (``--report``, open it in ncu-ui), then exported as the raw
page in CSV, one row per launch, which this script summarises per kernel:
launches, median duration, achieved DRAM bandwidth and its share of the
peak, achieved occupancy and registers per thread.
"""

import argparse
import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NVTX_FILTER = "regex:cugn@kernel:.*/"

# Metric -> summary column. Durations come in nanoseconds and bandwidth in
# bytes/second with --print-units base.
METRICS = {
    "gpu__time_duration.sum": "duration",
    "dram__bytes.sum.per_second": "dram_bandwidth",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram_pct_of_peak",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "achieved_occupancy",
    "launch__registers_per_thread": "registers",
}


class ToolMissing(RuntimeError):
    pass


def require_tool(name):
    """The tool's path, or a clear error saying where it comes from."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(
            f"{name} was not found on PATH. It ships with the CUDA toolkit and Nsight "
            f"(e.g. /usr/local/cuda/bin); this script runs on a GPU host with it installed."
        )
    return path


def profile_command(ncu, report, workload_args, nvtx_filter=NVTX_FILTER):
    return [ncu, "--nvtx", "--nvtx-include", nvtx_filter, "--clock-control", "none",
            "--metrics", ",".join(METRICS), "--force-overwrite", "--export", report,
            sys.executable, os.path.join(HERE, "nsight_workload.py"), *workload_args]


def export_command(ncu, report):
    return [ncu, "--import", report, "--page", "raw", "--csv", "--print-units", "base",
            "--metrics", ",".join(METRICS)]


def _number(text):
    """ncu's numbers, which may carry thousands separators ("1,234.5")."""
    text = text.strip().replace(",", "")
    return float(text) if text not in ("", "n/a") else None


def kernel_base_name(name):
    """``void group_norm_fwd_nhwc<float>(const float *, ...)`` -> ``group_norm_fwd_nhwc<float>``."""
    name = name.strip()
    depth = 0
    for position, char in enumerate(name):  # the argument list: the first '(' outside <...>
        if char == "<":
            depth += 1
        elif char == ">":
            depth -= 1
        elif char == "(" and depth == 0:
            name = name[:position]
            break
    return name[len("void "):] if name.startswith("void ") else name


def parse_raw_csv(text):
    """Rows of ncu's raw page in CSV (a header row, a units row, one row per launch) as
    dicts with ``kernel`` and the METRICS columns; anything before the header is skipped."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        raise ValueError("no ncu CSV header (a line starting with \"ID\") in the input")
    reader = csv.reader(io.StringIO("\n".join(lines[start:])))
    header = next(reader)
    missing = [m for m in ("Kernel Name", *METRICS) if m not in header]
    if missing:
        raise ValueError(f"ncu CSV lacks the columns {missing}")
    index = {name: header.index(name) for name in ("ID", "Kernel Name", *METRICS)}
    rows = []
    for record in reader:
        if not record or not record[index["ID"]].strip():  # the units row, blank lines
            continue
        row = {"kernel": kernel_base_name(record[index["Kernel Name"]])}
        for metric, column in METRICS.items():
            row[column] = _number(record[index[metric]])
        rows.append(row)
    return rows


def summarize(rows):
    """Per kernel, in first-launch order: launches and the median of each metric."""
    by_kernel = {}
    for row in rows:
        by_kernel.setdefault(row["kernel"], []).append(row)
    summary = []
    for kernel, launches in by_kernel.items():
        def median(column):
            values = [r[column] for r in launches if r[column] is not None]
            return statistics.median(values) if values else None

        summary.append({
            "kernel": kernel,
            "launches": len(launches),
            "duration_us": _scaled(median("duration"), 1e-3),
            "dram_GB/s": _scaled(median("dram_bandwidth"), 1e-9),
            "dram_%_of_peak": median("dram_pct_of_peak"),
            "occupancy_%": median("achieved_occupancy"),
            "registers": median("registers"),
        })
    return summary


def _scaled(value, factor):
    return None if value is None else value * factor


COLUMNS = ["kernel", "launches", "duration_us", "dram_GB/s", "dram_%_of_peak", "occupancy_%",
           "registers"]


def format_summary(summary):
    sys.path.insert(0, ROOT)
    from cugn.profiling.timing import format_table

    def shown(value):
        if value is None:
            return "n/a"
        return f"{value:.1f}" if isinstance(value, float) else value

    return format_table([{c: shown(row[c]) for c in COLUMNS} for row in summary], COLUMNS)


def main(argv=None):
    sys.path.insert(0, HERE)
    import nsight_workload

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    nsight_workload.add_arguments(parser)
    parser.add_argument("--nvtx-include", default=NVTX_FILTER,
                        help=f"ncu's NVTX filter (default {NVTX_FILTER!r})")
    parser.add_argument("--report", help="where to keep the .ncu-rep (default: a temp dir)")
    parser.add_argument("--csv", help="summarise this saved raw-page CSV instead of profiling")
    args = parser.parse_args(argv)
    nsight_workload.check_arguments(parser, args)

    if args.csv:
        with open(args.csv) as saved:
            print(format_summary(summarize(parse_raw_csv(saved.read()))))
        return
    try:
        ncu = require_tool("ncu")
    except ToolMissing as error:
        sys.exit(f"ncu_group_norm: {error}")
    env = nsight_workload.profiled_environment()
    with tempfile.TemporaryDirectory() as directory:
        report = args.report or os.path.join(directory, "group_norm")
        command = profile_command(ncu, report, nsight_workload.workload_arguments(args),
                                  args.nvtx_include)
        print("$", " ".join(command), flush=True)
        subprocess.run(command, env=env, cwd=ROOT, check=True)
        if not report.endswith(".ncu-rep"):
            report += ".ncu-rep"
        exported = subprocess.run(export_command(ncu, report), check=True, capture_output=True,
                                  text=True).stdout
    rows = parse_raw_csv(exported)
    if not rows:
        sys.exit("ncu_group_norm: ncu profiled no kernel inside cugn's kernel ranges; check "
                 "that the CUDA kernels ran (--device cuda) and the --nvtx-include filter")
    print(format_summary(summarize(rows)))


if __name__ == "__main__":
    main()
