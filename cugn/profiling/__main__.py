"""python -m cugn.profiling --shape 8,64,64,512 --axis -1 --dtype float16 --groups 32

Times cugn's GroupNorm forward and backward for one case against a copy of the
same bytes and the peers that are installed (torch, Keras on JAX, a naive
CuPy/NumPy composition), and prints the table: on the GPU when CuPy sees one,
else on the CPU (the NumPy path). See cugn/profiling/benchmark.py.
"""

import argparse
import sys

from . import benchmark
from .timing import format_table

SHOWN = ["shape", "axis", "groups", "dtype", "pass", "cugn_us", "copy_us", "torch_us",
         "keras_jax_us", "cupy_naive_us", "numpy_naive_us", "cugn_gbps", "pct_of_copy"]


def _integers(text):
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _axis(text):
    values = _integers(text)
    return values[0] if len(values) == 1 else values


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m cugn.profiling",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("--shape", type=_integers, required=True, help="e.g. 8,64,64,512")
    parser.add_argument("--axis", type=_axis, default=-1, help="feature axis or axes (default -1)")
    parser.add_argument("--groups", type=int, default=32, help="group count, -1 per channel")
    parser.add_argument("--dtype", default="float32", choices=benchmark.DTYPES)
    parser.add_argument("--epsilon", type=float, default=1e-3)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--warmup", type=int, help="untimed calls first")
    parser.add_argument("--repeats", type=int, help="timed samples (the median is reported)")
    args = parser.parse_args(argv)
    try:
        args.case = benchmark.Case(args.shape, args.axis, args.groups, args.dtype, args.epsilon)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    if args.device == "auto":
        args.device = "cuda" if benchmark.cuda_available() else "cpu"
    elif args.device == "cuda" and not benchmark.cuda_available():
        parser.error("--device cuda needs CuPy and a CUDA device")
    return args


def main(argv=None):
    args = parse_args(argv)
    rows = benchmark.run_case(args.case, args.device, args.warmup, args.repeats)
    first = rows[0]
    print(f"# {first['device']}, {first['date']}, commit {first['commit'] or 'unknown'}; "
          f"times in microseconds (medians), cugn_gbps counts 2x (forward) / 3x (backward) "
          f"the tensor's bytes, pct_of_copy is a copy of that traffic's time over cugn's")
    shown = [c for c in SHOWN if c in benchmark.columns(args.device)]
    print(format_table(rows, shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
