"""CPU benchmark: cugn's NumPy group_norm against PyTorch and Keras on JAX.

    python profiling/group_norm_cpu.py [--csv profiling/results/group_norm_cpu.csv] [--threads 1]

Times forward and forward+backward (float32, groups=32) for channels-last
(8, 32, 32, 256) axis=-1 and channels-first (8, 256, 32, 32) axis=1, for both
of cugn's CPU implementations (NumPy, and Numba when it is installed), against
torch.nn.functional.group_norm on the CPU (channels_last memory format for the
channels-last case) and keras.layers.GroupNormalization on its JAX backend
under jit, all in one run. Peers that are not installed are left out. Each
cell is the median of interleaved rounds; the spread columns give the lowest and
highest round.

The float16 rows time the same inputs in float16 against what a user could do by
hand: cast x (and dy) to float32, run float32, and cast y (and dx) back
(``via_float32``; gamma and beta stay float32 in both), with NumPy's two casts
on their own beside them.
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
from cugn import kernels  # noqa: E402
from cugn.functional import group_norm  # noqa: E402
from cugn.profiling.timing import format_table, optional_import, time_cpu  # noqa: E402

CASES = [((8, 32, 32, 256), -1), ((8, 256, 32, 32), 1)]
GROUPS = 32


def cugn_timers(x, dy, gamma, beta, axis, numba, via=None):
    """Through the functional form, on the NumPy (numba False) or Numba kernels. With
    ``via`` (a dtype), x and dy are cast to it first and y and dx back to x's dtype."""
    cast_in = (lambda a: a) if via is None else (lambda a: a.astype(via))
    cast_out = (lambda a: a) if via is None else (lambda a: a.astype(x.dtype))
    gamma_p, beta_p = cugn.Parameter(gamma), cugn.Parameter(beta)

    def forward():
        kernels.numba_enabled = numba
        with cugn.no_grad():
            cast_out(group_norm(cugn.Tensor(cast_in(x)), GROUPS, gamma_p, beta_p,
                                axis=axis).data)

    def forward_backward():
        kernels.numba_enabled = numba
        x_leaf = cugn.Tensor(cast_in(x), requires_grad=True)
        gamma_p.grad = beta_p.grad = None
        y = group_norm(x_leaf, GROUPS, gamma_p, beta_p, axis=axis)
        cast_out(y.data)
        y.backward(cugn.Tensor(cast_in(dy)))
        cast_out(x_leaf.grad.data)

    return forward, forward_backward


def cast_timers(x):
    """NumPy's float16 -> float32 and float32 -> float16 casts of an array like x."""
    x16, x32 = x.astype(np.float16), x.astype(np.float32)
    return (lambda: x16.astype(np.float32)), (lambda: x32.astype(np.float16))


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


def measure(shape, axis, dtype, peers, rounds):
    """A forward row and a forward+backward row: each peer's median round and spread, and
    cugn's ratios to the references."""
    rows = []
    for pass_index, pass_name in enumerate(("forward", "forward+backward")):
        row = {"shape": "x".join(map(str, shape)), "axis": axis, "dtype": dtype,
               "pass": pass_name}
        # The peers take turns, round after round, so that load from elsewhere on a
        # shared machine falls on all of them alike; each reports its median round.
        samples = {name: [] for name in peers}
        for _ in range(rounds):
            for name, timers in peers.items():
                samples[name].append(time_cpu(timers[pass_index], repeats=10,
                                              min_seconds=0.1))
        for name in peers:
            row[f"{name}_us"] = round(statistics.median(samples[name]))
            row[f"{name}_spread"] = f"{min(samples[name]):.0f}-{max(samples[name]):.0f}"
        for mine in ("numpy", "numba"):
            for name, label in (("torch", "torch"), ("keras_jax", "keras_jax"),
                                (f"{mine}_via_float32", "via_float32")):
                if f"cugn_{mine}_us" in row and f"{name}_us" in row:
                    row[f"{mine}/{label}"] = round(row[f"cugn_{mine}_us"] / row[f"{name}_us"], 2)
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description="cugn group_norm CPU benchmark")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--rounds", type=int, default=7,
                        help="rounds of interleaved timings per row (default 7)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch and Numba (default: every core); on a busy "
                             "machine 1 keeps the scheduler's time slices out of the timings")
    args = parser.parse_args()
    torch = optional_import("torch")
    if args.threads is not None:
        if torch is not None:
            torch.set_num_threads(args.threads)
        if kernels.numba_kernels() is not None:
            import numba

            numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for shape, axis in CASES:
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        channels = shape[axis]
        gamma = rng.standard_normal(channels, dtype=np.float32)
        beta = rng.standard_normal(channels, dtype=np.float32)
        peers = {"cugn_numpy": cugn_timers(x, dy, gamma, beta, axis, numba=False)}
        if kernels.numba_kernels() is not None:
            peers["cugn_numba"] = cugn_timers(x, dy, gamma, beta, axis, numba=True)
        if torch is not None:
            peers["torch"] = torch_timers(torch, x, dy, gamma, beta, axis)
        keras = keras_timers(x, dy, gamma, beta, axis)
        if keras is not None:
            peers["keras_jax"] = keras
        rows += measure(shape, axis, "float32", peers, args.rounds)

        x16, dy16 = x.astype(np.float16), dy.astype(np.float16)
        peers = {"cugn_numpy": cugn_timers(x16, dy16, gamma, beta, axis, numba=False),
                 "numpy_via_float32": cugn_timers(x16, dy16, gamma, beta, axis, numba=False,
                                                  via=np.float32)}
        if kernels.numba_kernels() is not None:
            peers["cugn_numba"] = cugn_timers(x16, dy16, gamma, beta, axis, numba=True)
            peers["numba_via_float32"] = cugn_timers(x16, dy16, gamma, beta, axis, numba=True,
                                                     via=np.float32)
        to_float32, to_float16 = cast_timers(x)
        peers["astype_float32"] = (to_float32, to_float32)
        peers["astype_float16"] = (to_float16, to_float16)
        rows += measure(shape, axis, "float16", peers, args.rounds)
    columns = ["shape", "axis", "dtype", "pass"]
    for name in ("cugn_numpy", "cugn_numba", "torch", "keras_jax", "numpy_via_float32",
                 "numba_via_float32", "astype_float32", "astype_float16"):
        columns += [f"{name}_us", f"{name}_spread"]
    columns += ["numpy/torch", "numpy/keras_jax", "numba/torch", "numba/keras_jax",
                "numpy/via_float32", "numba/via_float32"]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch else "")
          + f", threads {args.threads or 'all'}")
    print(format_table(rows, columns))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
