"""CPU benchmark: cugn's NumPy group_norm against PyTorch and Keras on JAX.

    python profiling/group_norm_cpu.py [--csv profiling/results/group_norm_cpu.csv]

Times forward and forward+backward (float32, groups=32) for channels-last
(8, 32, 32, 256) axis=-1 and channels-first (8, 256, 32, 32) axis=1, against
torch.nn.functional.group_norm on the CPU (channels_last memory format for the
channels-last case) and keras.layers.GroupNormalization on its JAX backend
under jit, all in one run. Peers that are not installed are left out.
"""

import argparse
import csv
import os
import platform
import statistics
import sys

import numpy as np

# The source tree this script belongs to.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cugn  # noqa: E402
from cugn.functional import group_norm  # noqa: E402
from cugn.profiling.timing import format_table, optional_import, time_cpu  # noqa: E402

CASES = [((8, 32, 32, 256), -1), ((8, 256, 32, 32), 1)]
GROUPS = 32


def cugn_timers(x, dy, gamma, beta, axis):
    x_t = cugn.Tensor(x)
    gamma_p, beta_p = cugn.Parameter(gamma), cugn.Parameter(beta)

    def forward():
        with cugn.no_grad():
            group_norm(x_t, GROUPS, gamma_p, beta_p, axis=axis)

    def forward_backward():
        x_leaf = cugn.Tensor(x, requires_grad=True)
        gamma_p.grad = beta_p.grad = None
        group_norm(x_leaf, GROUPS, gamma_p, beta_p, axis=axis).backward(dy)

    return forward, forward_backward


def torch_timers(torch, x, dy, gamma, beta, axis):
    channels_last = axis == -1
    as_nchw = (lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))) if channels_last else (
        lambda a: a)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xt = torch.from_numpy(as_nchw(x)).contiguous(memory_format=fmt)
    dyt = torch.from_numpy(as_nchw(dy)).contiguous(memory_format=fmt)
    g, b = torch.from_numpy(gamma), torch.from_numpy(beta)
    eps = 1e-3

    def forward():
        with torch.no_grad():
            torch.nn.functional.group_norm(xt, GROUPS, g, b, eps)

    def forward_backward():
        xl = xt.detach().requires_grad_()
        gl, bl = g.detach().requires_grad_(), b.detach().requires_grad_()
        torch.nn.functional.group_norm(xl, GROUPS, gl, bl, eps).backward(dyt)

    return forward, forward_backward


def keras_timers(x, dy, gamma, beta, axis):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = optional_import("keras")
    jax = optional_import("jax")
    if keras is None or jax is None or keras.backend.backend() != "jax":
        return None
    layer = keras.layers.GroupNormalization(groups=GROUPS, axis=axis)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    weights = [v.value for v in layer.trainable_variables]
    xj, dyj = jax.numpy.asarray(x), jax.numpy.asarray(dy)

    def apply(weights, inputs):
        return layer.stateless_call(weights, [], inputs)[0]

    forward_jit = jax.jit(apply)

    @jax.jit
    def vjp(weights, inputs, cotangent):
        _, pullback = jax.vjp(apply, weights, inputs)
        return pullback(cotangent)

    def forward():
        forward_jit(weights, xj).block_until_ready()

    def forward_backward():
        jax.block_until_ready(vjp(weights, xj, dyj))

    return forward, forward_backward


def main():
    parser = argparse.ArgumentParser(description="cugn group_norm CPU benchmark")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--rounds", type=int, default=7,
                        help="rounds of interleaved timings per row (default 7)")
    args = parser.parse_args()
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    rows = []
    for shape, axis in CASES:
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        channels = shape[axis]
        gamma = rng.standard_normal(channels, dtype=np.float32)
        beta = rng.standard_normal(channels, dtype=np.float32)
        peers = {"cugn": cugn_timers(x, dy, gamma, beta, axis)}
        if torch is not None:
            peers["torch"] = torch_timers(torch, x, dy, gamma, beta, axis)
        keras = keras_timers(x, dy, gamma, beta, axis)
        if keras is not None:
            peers["keras_jax"] = keras
        for pass_index, pass_name in enumerate(("forward", "forward+backward")):
            row = {"shape": "x".join(map(str, shape)), "axis": axis, "pass": pass_name}
            # The peers take turns, round after round, so that load from elsewhere on a
            # shared machine falls on all of them alike; each reports its median round.
            samples = {name: [] for name in peers}
            for _ in range(args.rounds):
                for name, timers in peers.items():
                    samples[name].append(time_cpu(timers[pass_index], repeats=10,
                                                  min_seconds=0.1))
            for name in peers:
                row[f"{name}_us"] = round(statistics.median(samples[name]))
            for name in ("torch", "keras_jax"):
                if f"{name}_us" in row:
                    row[f"cugn/{name}"] = round(row["cugn_us"] / row[f"{name}_us"], 2)
            rows.append(row)
    columns = ["shape", "axis", "pass", "cugn_us", "torch_us", "keras_jax_us", "cugn/torch",
               "cugn/keras_jax"]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch else ""))
    print(format_table(rows, columns))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
