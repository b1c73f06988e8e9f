"""CPU benchmark of the PyTorch adapter: cugn.interop.torch.GroupNorm against
torch.nn.GroupNorm, in eager mode and under torch.compile.

    python profiling/torch_adapter_cpu.py [--rounds 7] [--csv FILE]

Times forward+backward of one GroupNorm(32 groups) module for a small input
(where the per-call cost of Python and dispatch dominates) and two larger ones,
contiguous and channels_last, float32 and bfloat16. The peers, all in one run:
torch.nn.GroupNorm (the reference of the ratios), cugn's adapter in eager mode
(an autograd.Function over the kernels), the same kernels called through the
torch.library op in eager mode (what eager mode would cost through the op's
dispatch), and the adapter under torch.compile with the aot_eager backend.
"""

import argparse
import csv
import os
import platform
import statistics
import sys

# The source tree this script belongs to.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

from cugn.interop.torch import GroupNorm  # noqa: E402
from cugn.profiling.timing import format_table, time_cpu  # noqa: E402

GROUPS = 32  # weights stay float32, also for bfloat16 inputs (as under autocast)
CASES = [((2, 32, 8, 8), torch.contiguous_format, torch.float32),
         ((8, 256, 32, 32), torch.contiguous_format, torch.float32),
         ((8, 256, 32, 32), torch.channels_last, torch.float32),
         ((8, 256, 32, 32), torch.channels_last, torch.bfloat16)]


class _OpGroupNorm(GroupNorm):
    """The adapter with its eager fast path replaced by the torch.library op."""

    def forward(self, input):  # noqa: A002
        return torch.ops.cugn.group_norm(input, self.weight, self.bias, self.num_groups,
                                         self.eps)[0]


def _step(module, x, dy):
    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(dy)

    return run


def main():
    parser = argparse.ArgumentParser(description="cugn PyTorch adapter CPU benchmark")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--rounds", type=int, default=7,
                        help="rounds of interleaved timings per row (default 7)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for shape, memory_format, dtype in CASES:
        x = torch.randn(shape, generator=generator).to(dtype).to(
            memory_format=memory_format).requires_grad_()
        dy = torch.randn(shape, generator=generator).to(dtype).to(memory_format=memory_format)
        channels = shape[1]
        adapter = GroupNorm(GROUPS, channels)
        peers = {
            "torch": torch.nn.GroupNorm(GROUPS, channels),
            "cugn": adapter,
            "cugn_op": _OpGroupNorm(GROUPS, channels),
            "cugn_compiled": torch.compile(adapter, backend="aot_eager", fullgraph=True),
        }
        steps = {name: _step(module, x, dy) for name, module in peers.items()}
        # The peers take turns, round after round, so that load from elsewhere on a shared
        # machine falls on all of them alike; each reports its median round.
        samples = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                samples[name].append(time_cpu(step, repeats=10, min_seconds=0.1))
        row = {"shape": "x".join(map(str, shape)),
               "format": "channels_last" if memory_format == torch.channels_last else "nchw",
               "dtype": str(dtype).removeprefix("torch.")}
        for name in steps:
            row[f"{name}_us"] = round(statistics.median(samples[name]))
        for name in ("cugn", "cugn_op", "cugn_compiled"):
            row[f"{name}/torch"] = round(row[f"{name}_us"] / row["torch_us"], 2)
        rows.append(row)
    columns = ["shape", "format", "dtype", "torch_us", "cugn_us", "cugn_op_us",
               "cugn_compiled_us", "cugn/torch", "cugn_op/torch", "cugn_compiled/torch"]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, forward+backward of GroupNorm({GROUPS}, C)")
    print(format_table(rows, columns))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
