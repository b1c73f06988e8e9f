"""Every CUDA kernel instantiation compiles through NVRTC for sm_80 and sm_90
without a GPU, with no register spills (the same path as python -m cugn.kernels).

CuPy and NVRTC come with the ``cuda13`` extra, which the README's test command
installs, so CI runs these; with only the ``test`` extra (no CuPy) they skip.
"""

import subprocess
import sys

import numpy as np
import pytest

from cugn.kernels import compile_check, cuda_loader, cuda_plan
from cugn.kernels.__main__ import main

pytest.importorskip("cupy", reason="the NVRTC compile check needs CuPy (the cuda13 extra)")

ARCHITECTURES = ("sm_80", "sm_90")


@pytest.fixture(scope="module")
def reports():
    return compile_check.compile_all(ARCHITECTURES)


def test_nvrtc_is_installed():
    # The cuda13 extra installs cuda-toolkit[nvrtc] beside CuPy: CuPy without NVRTC
    # cannot compile cugn's kernels, so a missing NVRTC is a failure, not a skip.
    assert compile_check.nvrtc().getVersion() >= (12, 0)


def test_every_instantiation_is_reported_for_every_architecture(reports):
    for arch in ARCHITECTURES:
        for configuration in cuda_loader.configurations():
            got = {r.name for r in reports if r.arch == arch}
            assert set(configuration.name_expressions()) <= got, (arch, configuration)


def test_no_kernel_spills(reports):
    spilled = [str(r) for r in reports if r.spills or r.stack_bytes]
    assert not spilled, "\n".join(spilled)


def test_registers_allow_the_launch_bounds(reports):
    # __launch_bounds__(256, 4): four resident blocks need <= 64 registers a thread; the
    # backward kernels with a fused activation, and the backward of clusters, ask for
    # three (<= 85, in steps of 8: 80).
    activated = ("backward_partials_segment", "backward_partials_column", "backward_dx",
                 "backward_on_chip")

    def bound(name):
        with_activation = "kLinear" not in name and any(k in name for k in activated)
        return 80 if with_activation or "backward_on_chip_cluster<" in name else 64

    over = [str(r) for r in reports if r.registers > bound(r.name)]
    assert not over, "\n".join(over)
    assert any(r.registers > 64 for r in reports if "kGelu" in r.name)  # the bound is live


def test_the_on_chip_kernels_hold_their_budget_of_shared_memory(reports):
    # The cache (ON_CHIP_BYTES) and the per-channel table (a scale per channel, and a
    # shift but in the plain backward), within the 48 KiB a kernel may declare statically.
    on_chip = [r for r in reports if "_on_chip<" in r.name or "_on_chip_cluster<" in r.name]
    assert {r.name.split("<")[0] for r in on_chip} == {
        "cugn::forward_on_chip", "cugn::backward_on_chip", "cugn::forward_on_chip_cluster",
        "cugn::backward_on_chip_cluster"}
    for r in on_chip:
        if "_cluster<" in r.name and r.arch < "sm_90":
            assert r.shared_bytes == 0, str(r)  # no clusters there: no body
            continue
        column = cuda_plan.ON_CHIP_CHANNELS * (8 if "<double" in r.name else 4)
        shifts = "backward" not in r.name or "kLinear" not in r.name
        table = column * (2 if shifts else 1)
        assert cuda_plan.ON_CHIP_BYTES + table <= r.shared_bytes <= 48 * 1024, str(r)


def test_configurations_cover_every_dtype_vector_and_index_width():
    seen = {(c.dtype.name, c.vector, c.index64) for c in cuda_loader.configurations()}
    assert ("float16", 8, True) in seen and ("float32", 4, False) in seen
    assert ("float64", 2, True) in seen and ("float64", 4, False) not in seen
    assert ("bfloat16", 8, False) in seen and ("bfloat16", 16, False) not in seen
    assert len(seen) == 2 * (4 + 4 + 3 + 2)  # float16, bfloat16, float32, float64


def test_every_activation_has_its_own_modules_of_the_kernels_it_changes():
    by_activation = {}
    for c in cuda_loader.configurations():
        by_activation.setdefault(c.activation, set()).add((c.dtype.name, c.vector, c.index64))
    assert set(by_activation) == {None, "silu", "relu", "gelu"}
    assert all(seen == by_activation[None] for seen in by_activation.values())
    plain = cuda_loader.Configuration(np.dtype(np.float32), 4, False)
    silu = cuda_loader.Configuration(np.dtype(np.float32), 4, False, "silu")
    assert silu.without_activation() == plain
    assert set(silu.name_expressions()).isdisjoint(plain.name_expressions())
    changed = {name.split("<")[0] for name in silu.name_expressions()}
    assert changed == {f"cugn::{k}" for k in cuda_loader.ACTIVATED_KERNELS}
    # <..., ACT> or, for clusters, <..., ACT, K>
    assert all(name.endswith("cugn::kSilu>") or name.split(", ")[-2] == "cugn::kSilu"
               for name in silu.name_expressions())


def test_parse_ptxas_log_reads_registers_and_spills():
    log = """ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'
ptxas info    : Function properties for _Z1kv
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 70 registers, used 1 barriers, 3072 bytes smem, 400 bytes cmem[0]
"""
    (report,) = compile_check.parse_ptxas_log(log, {"_Z1kv": "k"}, "sm_90")
    assert (report.name, report.arch, report.registers) == ("k", "sm_90", 70)
    assert (report.spill_store_bytes, report.spill_load_bytes, report.stack_bytes) == (8, 12, 16)
    assert report.shared_bytes == 3072 and report.spills


def test_a_compile_error_is_raised_with_the_log(monkeypatch):
    monkeypatch.setattr(cuda_loader, "source", lambda: "__global__ void broken( {}")
    configuration = cuda_loader.configurations()[0]
    with pytest.raises(compile_check.CompileError, match="sm_90"):
        compile_check.compile_configuration(configuration, "sm_90")


def test_cli_exits_zero_and_prints_one_line_per_instantiation(capsys, monkeypatch, reports):
    # The compile itself is the fixture's (the same compile_all); not compiling twice
    # keeps the suite fast.
    monkeypatch.setattr(compile_check, "compile_all", lambda architectures: [
        r for r in reports if r.arch in architectures])
    assert main(["--arch", "sm_80", "--arch", "sm_90"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = sum(len(c.name_expressions()) for c in cuda_loader.configurations())
    for arch in ARCHITECTURES:
        assert len([line for line in lines if line.startswith(f"{arch} ")]) == expected
    assert "0 with spills" in lines[-1]


def test_cli_exits_non_zero_on_a_spill_or_a_compile_error(capsys, monkeypatch, reports):
    spilled = compile_check.KernelReport("sm_90", "k", 64, 8, 8, 16, 0)
    monkeypatch.setattr(compile_check, "compile_all", lambda architectures: [*reports, spilled])
    assert main(["--arch", "sm_90"]) == 1

    def broken(architectures):
        raise compile_check.CompileError("sm_90: error")

    monkeypatch.setattr(compile_check, "compile_all", broken)
    assert main(["--arch", "sm_90"]) == 1
    assert "compile error" in capsys.readouterr().err


def test_cli_says_how_to_install_nvrtc_when_it_is_missing(capsys, monkeypatch):
    def missing():
        raise ImportError("No module named 'cupy_backends'")

    monkeypatch.setattr(compile_check, "nvrtc", missing)
    assert main(["--arch", "sm_90"]) == 1
    assert "pip install 'cugn[cuda13]'" in capsys.readouterr().err


def test_importing_cugn_does_not_import_cupy():
    code = "import sys, cugn, cugn.kernels; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
