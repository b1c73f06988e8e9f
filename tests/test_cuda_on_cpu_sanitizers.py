"""The CUDA kernels on the CPU again, under AddressSanitizer with UBSan and
under ThreadSanitizer: a representative subset of test_cuda_on_cpu.py (and of
the cluster tests, under AddressSanitizer), each in
a process of its own with the sanitizer's runtime preloaded (Python is not
instrumented), and a planted race that ThreadSanitizer must report."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("cupy", reason="group_norm_cuda imports CuPy (no GPU needed)")

from cugn.kernels.cuda_on_cpu import build  # noqa: E402

pytestmark = pytest.mark.cuda_on_cpu

ROOT = Path(__file__).resolve().parent.parent
# One configuration (each is a sanitized build of its own), every kernel and tier (the
# on-chip tier too, on each side of its boundaries), and the passes run in parts and
# in pieces.
SUBSET = ("tier_boundaries or without_gamma or (parts_give_bitwise and float32 and True-True)"
          " or (mean_dwarfs and float32) or on_chip_boundaries")
# Thread-block clusters under AddressSanitizer (they run in the serial schedule only,
# which ThreadSanitizer does not follow): the harness's, and the on-chip tier's.
CLUSTER_SUBSET = ("each_others or built_ins or reads_nan or skips or misuses"
                  " or clusters_match_numpy")
TIMEOUT = 900

# The missing barrier of test_cuda_on_cpu's planted bug, with every thread at once.
PLANTED_RACE = textwrap.dedent("""
    import sys
    sys.path.insert(0, "tests")
    from test_cuda_on_cpu import planted, run_planted, BLOCK_TIER
    source = planted("  if (lane == 0) warp_results[warp] = value;\\n  __syncthreads();",
                     "  if (lane == 0) warp_results[warp] = value;")
    run_planted(source, *BLOCK_TIER)
""")


def start(variant, command):
    """``command`` in a process with ``variant``'s sanitizer preloaded, started now."""
    preload = build.sanitizer_preload(variant) if build.compiler() else None
    if preload is None:
        return None
    env = dict(os.environ, CUGN_CUDA_ON_CPU_VARIANT=variant,
               LD_PRELOAD=" ".join(filter(None, preload)),
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
               TSAN_OPTIONS="halt_on_error=0:report_signal_unsafe=0",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if variant == "thread" and shutil.which("setarch"):
        # TSan's shadow mapping needs the fixed layout that ASLR may break.
        command = ["setarch", os.uname().machine, "-R", *command]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs():
    """Every sanitized run, started together (one per core, roughly), by name."""
    # -s: a sanitizer's report goes to the real stderr even if it ends the process.
    subset = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
              "tests/test_cuda_on_cpu.py", "-k", SUBSET]
    clusters = [*subset[:-3], "tests/test_cuda_on_cpu_clusters.py", "tests/test_cuda_on_cpu.py",
                "-k", CLUSTER_SUBSET]
    started = {"address": start("address", subset), "thread": start("thread", subset),
               "race": start("thread", [sys.executable, "-c", PLANTED_RACE]),
               "clusters": start("address", clusters)}
    finished = {}
    for name, process in started.items():
        if process is not None:
            try:
                out, err = process.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            finished[name] = subprocess.CompletedProcess(process.args, process.returncode,
                                                         out, err)
    return finished


def result(runs, name):
    if name not in runs:
        pytest.skip("the compiler has no sanitizer runtime for this run")
    return runs[name]


@pytest.mark.parametrize("variant", ["address", "thread", "clusters"])
def test_a_representative_subset_runs_clean(runs, variant):
    process = result(runs, variant)
    output = process.stdout[-6000:] + process.stderr[-6000:]
    assert process.returncode == 0, output
    assert "Sanitizer" not in process.stderr, output
    assert " passed" in process.stdout and " failed" not in process.stdout, output


def test_thread_sanitizer_reports_a_planted_race(runs):
    process = result(runs, "race")
    assert "WARNING: ThreadSanitizer: data race" in process.stderr, process.stderr[-6000:]
    assert "block_merge" in process.stderr and "warp_results" in process.stderr, \
        process.stderr[-6000:]
