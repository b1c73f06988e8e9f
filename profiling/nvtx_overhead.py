"""What cugn's NVTX ranges cost per op: off, on with no profiler, on with a tool attached.

    python profiling/nvtx_overhead.py [--batches 40] [--number 2000]

Two processes, each switching the ranges off and on between alternating
batches (``cugn.profiling.nvtx(False/True)``), so that both states see the
same machine load:

    no tool  no profiler: on means nvtx's no-op dummy domain (CUGN_NVTX=1 alone)
    tool     NVTX_INJECTION64_PATH set to nvtx_recorder.c built as a null tool,
             which receives every range and writes nothing: the floor of what a
             range costs under Nsight, whose own handling comes on top

Off is the shipping default without a profiler: one flag read per op.
Workloads, per call: ``-x`` on a one-element tensor (one op range), a
GroupNormalization layer on a (1, 4) input (layer, op and kernel ranges) and
``(x * x).sum().backward()`` on a one-element leaf. Figures are the fastest
batch's mean per call (the least disturbed by other load), and the median of
the on-minus-off differences of paired batches. ``flag check`` times the
off-path test alone (``if flag.on: pass`` minus an empty loop).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _paired(fn, batches, number, nvtx):
    """Per-call microseconds: fastest off batch, fastest on batch, median paired difference."""
    off, on = [], []
    for batch in range(batches):
        order = (False, True) if batch % 2 == 0 else (True, False)
        for state in order:
            with nvtx(state):
                elapsed = timeit.timeit(fn, number=number) / number * 1e6
            (on if state else off).append(elapsed)
    differences = sorted(b - a for a, b in zip(off, on))
    return min(off), min(on), differences[len(differences) // 2]


def worker(batches, number):
    import numpy as np

    import cugn
    from cugn.profiling import nvtx

    x = cugn.tensor(np.ones((1,), np.float32))
    leaf = cugn.tensor(np.ones((1,), np.float32), requires_grad=True)
    layer = cugn.layers.GroupNormalization(groups=1, name="group_norm")
    features = cugn.tensor(np.ones((1, 4), np.float32))

    def backward():
        (leaf * leaf).sum().backward()

    workloads = {"-x (1 op range)": (lambda: -x, number),
                 "GroupNormalization layer (3 ranges)": (lambda: layer(features), number // 4),
                 "(x*x).sum().backward()": (backward, number // 4)}
    results = {name: _paired(fn, batches, n, nvtx) for name, (fn, n) in workloads.items()}
    loops = number * 50
    check = min(timeit.repeat("if flag.on: pass", globals={"flag": nvtx.flag}, number=loops,
                              repeat=max(batches // 4, 1)))
    empty = min(timeit.repeat("pass", number=loops, repeat=max(batches // 4, 1)))
    results["flag check"] = (max(check - empty, 0.0) / loops * 1e6, None, None)
    print(json.dumps(results))


def _run(env_update, batches, number):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUGN_NVTX", "NVTX_INJECTION64_PATH", "CUGN_NVTX_RECORD")}
    env.update(env_update)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "--worker", "--batches", str(batches),
                          "--number", str(number)], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--number", type=int, default=2000, help="calls per batch")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.batches, args.number)

    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    import nvtx_recorder
    from cugn.profiling.timing import format_table

    results = {"no tool": _run({}, args.batches, args.number)}
    with tempfile.TemporaryDirectory() as directory:
        try:
            library = nvtx_recorder.build(directory)
            results["tool"] = _run({"NVTX_INJECTION64_PATH": library, "CUGN_NVTX_RECORD": "-"},
                                   args.batches, args.number)
        except nvtx_recorder.RecorderUnavailable as error:
            print(f"tool mode skipped: {error}")

    rows = []
    for workload in results["no tool"]:
        for mode, result in results.items():
            off, on, added = result[workload]
            if on is None:  # the flag check: one figure
                rows.append({"workload": workload, "process": mode, "off us": f"{off:.4f}"})
                continue
            rows.append({"workload": workload, "process": mode, "off us": f"{off:.3f}",
                         "on us": f"{on:.3f}", "on - off us": f"{added:+.3f}"})
    print(f"python {sys.version.split()[0]}, {args.batches} batches x {args.number} calls "
          f"(a quarter of that for the layer and backward)")
    print(format_table(rows, ["workload", "process", "off us", "on us", "on - off us"]))


if __name__ == "__main__":
    main()
