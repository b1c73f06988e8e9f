"""Compile every CUDA kernel instantiation for explicit architectures, without a GPU.

CuPy's own compile helpers ask the driver for the device; NVRTC does not, so
this calls it directly, with the source, options and name expressions of
``cuda_loader`` (the modules the library loads), and reads registers and
spills from ptxas's verbose log.
"""

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import cuda_loader


@dataclass(frozen=True)
class KernelReport:
    """ptxas's figures for one kernel instantiation on one architecture."""

    arch: str
    name: str
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    stack_bytes: int
    shared_bytes: int

    @property
    def spills(self):
        return self.spill_store_bytes + self.spill_load_bytes > 0

    def __str__(self):
        return (f"{self.arch}  {self.name:<78} registers {self.registers:3d}  "
                f"spill stores {self.spill_store_bytes}  spill loads {self.spill_load_bytes}  "
                f"stack {self.stack_bytes}  smem {self.shared_bytes}")


class CompileError(RuntimeError):
    """NVRTC rejected the source for one configuration and architecture."""


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USAGE = re.compile(r"Used (\d+) registers")
_SHARED = re.compile(r"(\d+) bytes smem")


def nvrtc():
    """NVRTC's Python binding; an ImportError here means NVRTC is not installed."""
    from cupy_backends.cuda.libs import nvrtc as binding

    return binding


def compile_configuration(configuration, arch):
    """Compile one module for ``arch`` (e.g. "sm_90"); one KernelReport per kernel."""
    binding = nvrtc()
    names = configuration.name_expressions()
    program = binding.createProgram(cuda_loader.source(), "group_norm.cu", [], [])
    try:
        for name in names:
            binding.addNameExpression(program, name)
        options = [*cuda_loader.OPTIONS, f"--gpu-architecture={arch}", "--ptxas-options=-v"]
        try:
            binding.compileProgram(program, options)
        except binding.NVRTCError as error:
            log = binding.getProgramLog(program)
            raise CompileError(f"{configuration} for {arch}: {error}\n{log}") from None
        log = binding.getProgramLog(program)
        binding.getCUBIN(program)  # a cubin, not just PTX, came out
        lowered = {binding.getLoweredName(program, name): name for name in names}
    finally:
        binding.destroyProgram(program)
    return parse_ptxas_log(log, lowered, arch)


def parse_ptxas_log(log, lowered_names, arch):
    """KernelReports from ptxas -v output; ``lowered_names`` maps mangled to readable names."""
    reports, current = [], None
    for line in log.splitlines():
        if match := _ENTRY.search(line):
            current = {"name": lowered_names.get(match[1], match[1]), "arch": match[2]}
        elif current is not None and (match := _FRAME.search(line)):
            current["stack_bytes"], current["spill_store_bytes"], current["spill_load_bytes"] = (
                int(g) for g in match.groups())
        elif current is not None and (match := _USAGE.search(line)):
            shared = _SHARED.search(line)
            reports.append(KernelReport(
                arch=current["arch"], name=current["name"], registers=int(match[1]),
                spill_store_bytes=current["spill_store_bytes"],
                spill_load_bytes=current["spill_load_bytes"],
                stack_bytes=current["stack_bytes"],
                shared_bytes=int(shared[1]) if shared else 0))
            current = None
    missing = set(lowered_names.values()) - {r.name for r in reports}
    if missing:
        raise CompileError(f"ptxas reported nothing for {sorted(missing)} on {arch}")
    return reports


def compile_all(architectures=cuda_loader.ARCHITECTURES, workers=2):
    """KernelReports for every configuration and architecture, in a stable order."""
    jobs = [(c, a) for a in architectures for c in cuda_loader.configurations()]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda job: compile_configuration(*job), jobs))
    return [report for reports in results for report in reports]
