"""The GroupNorm workload the Nsight scripts profile: a GroupNormalization layer's
forward and backward, a few times, on one shape, layout and dtype.

    python profiling/nsight_workload.py --shape 8,64,64,320 --groups 32 --dtype float32 \
        --layout nhwc --device cuda --iters 3

``nhwc`` puts the channels last (axis -1), ``nchw`` first after the batch
(axis 1). cugn's NVTX ranges name each call, so ``ncu``/``nsys`` can filter on
them; the scripts set CUGN_NVTX=1 so they are on whatever the tool announces.
"""

import argparse
import os

import numpy as np

AXES = {"nhwc": -1, "nchw": 1}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the source tree


def profiled_environment():
    """The environment the profiled workload runs in: cugn's ranges on, and this
    source tree's cugn first on the path."""
    return dict(os.environ, CUGN_NVTX="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def parse_shape(text):
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be comma-separated ints, got {text!r}")
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape needs >= 2 positive sizes, got {text!r}")
    return shape


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def check_arguments(parser, args):
    """What argparse cannot check alone: CuPy has no bfloat16 arrays."""
    if args.dtype == "bfloat16" and args.device != "cpu":
        parser.error("--dtype bfloat16 runs on the CPU only (CuPy has no bfloat16 arrays): "
                     "add --device cpu")


def add_arguments(parser):
    parser.add_argument("--shape", type=parse_shape, default=(8, 64, 64, 320))
    parser.add_argument("--groups", type=positive_int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float16", "bfloat16",
                                                               "float32", "float64"])
    parser.add_argument("--layout", default="nhwc", choices=sorted(AXES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iters", type=positive_int, default=3)


def workload_arguments(args):
    """The command-line arguments that reproduce ``args`` for this script."""
    return ["--shape", ",".join(map(str, args.shape)), "--groups", str(args.groups),
            "--dtype", args.dtype, "--layout", args.layout, "--device", args.device,
            "--iters", str(args.iters)]


def run(shape, groups, dtype, layout, device, iters):
    import cugn

    if dtype == "bfloat16":
        import ml_dtypes
        dtype = ml_dtypes.bfloat16
    rng = np.random.default_rng(0)
    x = cugn.tensor(rng.standard_normal(shape).astype(dtype), device=device, requires_grad=True)
    dy = cugn.tensor(rng.standard_normal(shape).astype(dtype), device=device)
    layer = cugn.layers.GroupNormalization(groups=groups, axis=AXES[layout], name="group_norm")
    for _ in range(iters):
        y = layer(x)
        y.backward(dy)
    if device != "cpu":
        import cupy
        cupy.cuda.Device().synchronize()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    run(args.shape, args.groups, args.dtype, args.layout, args.device, args.iters)


if __name__ == "__main__":
    main()
