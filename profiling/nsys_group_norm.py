"""Nsight Systems on the GroupNorm workload: cugn's NVTX ranges and the kernels in them.

    python profiling/nsys_group_norm.py --shape 8,64,64,320 --groups 32 --dtype float32
    python profiling/nsys_group_norm.py --stats-dir DIR   # summarise saved nsys stats CSVs

Runs profiling/nsight_workload.py under ``nsys profile -t cuda,nvtx`` on a GPU
host, then ``nsys stats`` with three reports, saved as CSV:

    nvtx_sum           time per NVTX range (cugn's ranges, named domain:range)
    cuda_gpu_kern_sum  GPU time per kernel
    nvtx_kern_sum      GPU time per kernel per enclosing NVTX range (a kernel counts
                       in each range around it: layer, op and kernel range)

and prints the cugn part of each: the ranges by total time, the kernels, and
which range each kernel ran in.
"""

import argparse
import csv
import glob
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REPORTS = ("nvtx_sum", "cuda_gpu_kern_sum", "nvtx_kern_sum")
DOMAIN = "cugn"


def profile_command(nsys, output, workload_args):
    return [nsys, "profile", "-t", "cuda,nvtx", "--force-overwrite", "true", "-o", output,
            sys.executable, os.path.join(HERE, "nsight_workload.py"), *workload_args]


def stats_command(nsys, report_file, prefix):
    command = [nsys, "stats", "--format", "csv", "--output", prefix, "--force-export", "true"]
    for report in REPORTS:
        command += ["--report", report]
    return command + [report_file]


def read_report(text):
    """An ``nsys stats`` CSV as a list of dicts (leading notes before the header skipped)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.lstrip('"').startswith(("Time", "NVTX Range"))), None)
    if start is None:
        return []
    return list(csv.DictReader(lines[start:]))


def in_domain(name, domain=DOMAIN):
    """The range name without its ``domain:`` prefix if it is in ``domain``, else None."""
    prefix = f"{domain}:"
    return name[len(prefix):] if name.startswith(prefix) else None


def _ns_to_us(text):
    return float(text.replace(",", "")) / 1e3


def nvtx_table(rows):
    table = []
    for row in rows:
        name = in_domain(row["Range"])
        if name is not None:
            table.append({"range": name, "instances": int(row["Instances"]),
                          "total_us": _ns_to_us(row["Total Time (ns)"]),
                          "median_us": _ns_to_us(row["Med (ns)"])})
    return sorted(table, key=lambda r: -r["total_us"])


def kernel_table(rows):
    return [{"kernel": row["Name"], "instances": int(row["Instances"]),
             "total_us": _ns_to_us(row["Total Time (ns)"]),
             "median_us": _ns_to_us(row["Med (ns)"])} for row in rows]


def range_kernel_table(rows):
    """Kernel time per cugn range that enclosed the launches."""
    table = []
    for row in rows:
        name = in_domain(row["NVTX Range"])
        if name is not None:
            table.append({"range": name, "kernel": row["Kernel Name"],
                          "instances": int(row["Kern Inst"]),
                          "total_us": _ns_to_us(row["Total Time (ns)"]),
                          "median_us": _ns_to_us(row["Med (ns)"])})
    return table


def print_tables(reports):
    sys.path.insert(0, ROOT)
    from cugn.profiling.timing import format_table

    def show(title, table, columns):
        print(f"\n{title}")
        if not table:
            print("(none)")
            return
        print(format_table([{c: f"{r[c]:.1f}" if isinstance(r[c], float) else r[c]
                             for c in columns} for r in table], columns))

    show("cugn NVTX ranges", nvtx_table(reports.get("nvtx_sum", [])),
         ["range", "instances", "total_us", "median_us"])
    show("GPU kernels", kernel_table(reports.get("cuda_gpu_kern_sum", [])),
         ["kernel", "instances", "total_us", "median_us"])
    show("kernels per cugn range", range_kernel_table(reports.get("nvtx_kern_sum", [])),
         ["range", "kernel", "instances", "total_us", "median_us"])


def load_stats(directory):
    """The saved ``<prefix>_<report>.csv`` files of a directory, by report name."""
    reports = {}
    for report in REPORTS:
        found = glob.glob(os.path.join(directory, f"*_{report}.csv"))
        if found:
            with open(found[0]) as saved:
                reports[report] = read_report(saved.read())
    return reports


def main(argv=None):
    sys.path.insert(0, HERE)
    import nsight_workload
    from ncu_group_norm import ToolMissing, require_tool

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    nsight_workload.add_arguments(parser)
    parser.add_argument("--stats-dir", help="summarise the nsys stats CSVs saved in this folder")
    parser.add_argument("--keep", help="a folder to keep the .nsys-rep and the CSVs in")
    args = parser.parse_args(argv)
    nsight_workload.check_arguments(parser, args)

    if args.stats_dir:
        print_tables(load_stats(args.stats_dir))
        return
    try:
        nsys = require_tool("nsys")
    except ToolMissing as error:
        sys.exit(f"nsys_group_norm: {error}")
    env = nsight_workload.profiled_environment()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or scratch
        os.makedirs(directory, exist_ok=True)
        output = os.path.join(directory, "group_norm")
        command = profile_command(nsys, output, nsight_workload.workload_arguments(args))
        print("$", " ".join(command), flush=True)
        subprocess.run(command, env=env, cwd=ROOT, check=True)
        subprocess.run(stats_command(nsys, output + ".nsys-rep", os.path.join(directory, "stats")),
                       check=True, capture_output=True, text=True)
        print_tables(load_stats(directory))


if __name__ == "__main__":
    main()
