"""The timing harness every cugn benchmark shares.

- ``time_cpu``: wall time with ``time.perf_counter`` after warm-up, median of
  many samples; for code that is finished when it returns (NumPy, or a GPU
  call followed by its own wait, such as JAX's ``block_until_ready``).
- ``time_cuda``: CUDA events recorded around each call on the current stream
  of CuPy or of PyTorch, after warm-up, median of many samples: the time the
  GPU spent. Each sample starts behind a kernel that spins for a millisecond,
  so the host has queued the call's launches before the GPU reaches them and
  Python's launch overhead is not counted (as nvbench's blocking kernel does).

Both return microseconds. Benchmarks time their references (a copy of the
same bytes, the peers) in the same run, and report ratios.
"""

import statistics
import time


def time_cpu(fn, warmup=3, repeats=20, min_seconds=0.5, finish=None, calls=1):
    """Median wall time of one ``fn()`` in microseconds, over at least ``repeats``
    samples and ``min_seconds`` of timing.

    A sample is ``calls`` calls of ``fn`` followed by ``finish()`` (when given),
    divided by ``calls``: for asynchronous work, the wait is paid once per sample.
    """
    _check_counts(warmup, repeats, calls)
    for _ in range(warmup):
        fn()
    if warmup and finish is not None:
        finish()
    samples = []
    started = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        for _ in range(calls):
            fn()
        if finish is not None:
            finish()
        samples.append((time.perf_counter() - begin) / calls)
    return statistics.median(samples) * 1e6


SPIN_SECONDS = 1e-3  # how long the GPU waits ahead of each sample while the host queues it

# A kernel that keeps the GPU busy for a number of clock cycles.
SPIN_SOURCE = r"""
extern "C" __global__ void cugn_spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}
"""


def time_cuda(fn, warmup=10, repeats=50, library="cupy"):
    """Median GPU time of one ``fn()`` in microseconds, from CUDA events recorded
    before and after each call on the current stream of ``library`` ("cupy" or
    "torch"; ``fn`` must launch its work there). One synchronisation at the end."""
    _check_counts(warmup, repeats, 1)
    new_event, elapsed_ms, spin = _event_api(library)
    for _ in range(warmup):
        fn()
    pairs = []
    for _ in range(repeats):
        start, end = new_event(), new_event()
        spin()
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    pairs[-1][1].synchronize()
    return statistics.median(elapsed_ms(start, end) for start, end in pairs) * 1e3


def _event_api(library):
    """(new event, elapsed milliseconds between two events, spin the current stream)."""
    if library == "cupy":
        import cupy

        kernel = _spin_kernel()
        cycles = _spin_cycles()
        return (cupy.cuda.Event, cupy.cuda.get_elapsed_time,
                lambda: kernel((1,), (1,), (cupy.int64(cycles),)))
    if library == "torch":
        import torch

        cycles = _spin_cycles()
        return (lambda: torch.cuda.Event(enable_timing=True), lambda a, b: a.elapsed_time(b),
                lambda: torch.cuda._sleep(cycles))
    raise ValueError(f"library must be 'cupy' or 'torch', got {library!r}")


def _spin_kernel():
    import cupy

    return cupy.RawKernel(SPIN_SOURCE, "cugn_spin")


def _spin_cycles():
    """Clock cycles of SPIN_SECONDS on the current device (its clock rate is in kHz)."""
    import cupy

    return int(cupy.cuda.Device().attributes["ClockRate"] * 1e3 * SPIN_SECONDS)


def _check_counts(warmup, repeats, calls):
    if warmup < 0 or repeats < 1 or calls < 1:
        raise ValueError(f"need warmup >= 0, repeats >= 1 and calls >= 1, got warmup={warmup}, "
                         f"repeats={repeats}, calls={calls}")


def optional_import(name):
    """The module, or None when it is not installed (a peer that is absent is left out)."""
    try:
        return __import__(name)
    except ImportError:
        return None


def format_table(rows, columns):
    """A plain-text table of dict rows; absent values are "-"."""
    widths = {c: max(len(c), *(len(format_value(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(format_value(r.get(c)).rjust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def format_value(value):
    """A table cell: "-" for None, one decimal from 10 up, else three digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)
