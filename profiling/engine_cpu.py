"""CPU benchmark of the engine itself: activations on 4M values and the cost of one
small op, against PyTorch in the same run.

    python profiling/engine_cpu.py [--rounds 7] [--threads 1] [--md profiling/results/engine_cpu.md]

- Activations: relu, silu, sigmoid, tanh, exp and log on 4M float32 values,
  forward+backward (``f(x).backward(dy)``, as a layer's output would be).
- Per-op overhead: a chain of 500 ops (alternating ``x * 1.0001`` and ``x + 0.5``)
  on 16 float32 values, forward+backward, divided by 500.

cugn and torch take turns, round after round, so that load from elsewhere on a
shared machine falls on both alike; each reports its median and the spread
(lowest-highest) of its rounds, and the ratio of medians.
"""

import argparse
import os
import platform
import statistics
import sys

import numpy as np

# The source tree this script belongs to.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cugn  # noqa: E402
from cugn.profiling.timing import format_table, time_cpu  # noqa: E402

ACTIVATIONS = ["relu", "silu", "sigmoid", "tanh", "exp", "log"]
VALUES = 1 << 22
CHAIN = 500


def activation_timers(torch, name, x, dy):
    mine = getattr(cugn, name)
    theirs = getattr(torch, name) if hasattr(torch, name) else getattr(torch.nn.functional, name)
    dy_cugn, x_torch, dy_torch = cugn.Tensor(dy), torch.from_numpy(x), torch.from_numpy(dy)

    def cugn_pass():
        leaf = cugn.Tensor(x, requires_grad=True)
        mine(leaf).backward(dy_cugn)

    def torch_pass():
        leaf = x_torch.detach().requires_grad_()
        theirs(leaf).backward(dy_torch)

    return cugn_pass, torch_pass


def chain_timers(torch):
    data = np.linspace(0.5, 1.5, 16, dtype=np.float32)
    x_torch = torch.from_numpy(data)

    def cugn_pass():
        leaf = y = cugn.Tensor(data, requires_grad=True)
        for _ in range(CHAIN // 2):
            y = y * 1.0001 + 0.5
        y.sum().backward()
        return leaf

    def torch_pass():
        leaf = y = x_torch.detach().requires_grad_()
        for _ in range(CHAIN // 2):
            y = y * 1.0001 + 0.5
        y.sum().backward()
        return leaf

    return cugn_pass, torch_pass


def measure(label, timers, rounds, per=1):
    samples = {"cugn": [], "torch": []}
    for _ in range(rounds):
        for name, fn in zip(samples, timers):
            samples[name].append(time_cpu(fn, warmup=2, repeats=5, min_seconds=0.2) / per)
    row = {"case": label}
    for name, values in samples.items():
        row[f"{name}_us"] = statistics.median(values)
        row[f"{name}_spread"] = f"{min(values):.3g}-{max(values):.3g}"
    row["cugn/torch"] = round(row["cugn_us"] / row["torch_us"], 2)
    return row


def main():
    parser = argparse.ArgumentParser(prog="python profiling/engine_cpu.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved rounds per case (default: %(default)s)")
    parser.add_argument("--md", help="also write the table to this Markdown file")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch's threads (default: %(default)s, as NumPy's elementwise "
                             "operations use one core)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(VALUES, dtype=np.float32) * 4
    positive = np.abs(x) + 0.1  # log's domain
    dy = rng.standard_normal(VALUES, dtype=np.float32)
    rows = []
    for name in ACTIVATIONS:
        data = positive if name == "log" else x
        rows.append(measure(f"{name} fwd+bwd 4M", activation_timers(torch, name, data, dy),
                            args.rounds))
    rows.append(measure(f"per op ({CHAIN}-op chain of 16 values)", chain_timers(torch),
                        args.rounds, per=CHAIN))
    columns = ["case", "cugn_us", "cugn_spread", "torch_us", "torch_spread", "cugn/torch"]
    header = (f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"numpy {np.__version__}, torch {torch.__version__} on {args.threads} "
              f"thread(s); microseconds, median of "
              f"{args.rounds} interleaved rounds (spread: lowest-highest round)")
    table = format_table(rows, columns)
    print(header)
    print(table)
    if args.md:
        with open(args.md, "w") as handle:
            handle.write(header + "\n\n```\n" + table + "\n```\n")


if __name__ == "__main__":
    main()
