"""The timing harness every cugn benchmark shares.

``time_cpu`` times a callable with ``time.perf_counter`` after warm-up and
returns the median in microseconds. Each benchmark measures its references
(copy bandwidth, PyTorch, Keras) in the same run and reports ratios.
"""

import statistics
import time


def time_cpu(fn, warmup=3, repeats=20, min_seconds=0.5):
    """Median wall time of ``fn()`` in microseconds, over at least ``repeats`` runs
    and ``min_seconds`` of timing."""
    for _ in range(warmup):
        fn()
    samples = []
    started = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - begin)
    return statistics.median(samples) * 1e6


def optional_import(name):
    """The module, or None when it is not installed (a peer that is absent is skipped)."""
    try:
        return __import__(name)
    except ImportError:
        return None


def format_table(rows, columns):
    """A plain-text table of dict rows."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).rjust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
