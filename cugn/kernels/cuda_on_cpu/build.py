"""Builds CUDA sources for the host: one shared library per (source, kernels, variant).

The generated translation unit includes ``runtime.h``, then the CUDA source
as it is (the loader's one text, inside an anonymous namespace, so that every
static array is the unit's own and instrumentable), then a table of the
requested instantiations, named by the same name expressions the loader gives
NVRTC. Libraries are cached on disk by a hash of everything that goes into them.

Variants:
- ``checked``: the kernels with outline address instrumentation, whose
  callbacks in ``runtime.cpp`` count global traffic per allocation and catch
  accesses to guard zones and past the end of shared arrays (every variant
  fails a misaligned vector access, which the sources check in their host build);
- ``address``: AddressSanitizer and UndefinedBehaviorSanitizer over both units
  (load it in a process started with libasan preloaded);
- ``thread``: ThreadSanitizer (with libtsan preloaded), for the parallel schedule.
"""

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).parent
RUNTIME_FILES = ("runtime.h", "kernel_table.h", "runtime.cpp")
VARIANTS = ("checked", "address", "thread")

_COMMON = ("-std=c++17", "-fPIC", "-g", "-ffp-contract=off", "-fno-strict-aliasing",
           "-pthread", "-Wall", "-Wno-unused-function", "-Wno-unknown-pragmas")
_FLAGS = {
    # (kernel unit, runtime unit)
    "checked": (("-O1", "-DCUDA_ON_CPU_CHECKED", "-fsanitize=kernel-address",
                 "--param", "asan-instrumentation-with-call-threshold=0",
                 "--param", "asan-stack=0", "--param", "asan-globals=1"),
                ("-O2", "-DCUDA_ON_CPU_CHECKED")),
    "address": (("-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                 "-fno-omit-frame-pointer"),) * 2,
    "thread": (("-O1", "-fsanitize=thread"),) * 2,
}
_LINK = {"checked": (), "address": ("-fsanitize=address,undefined",),
         "thread": ("-fsanitize=thread",)}


class BuildError(RuntimeError):
    """The host compiler rejected the source (its messages are the error's text)."""


@functools.cache
def compiler():
    """The C++ compiler: $CXX, else g++, else clang++; None when there is none."""
    for name in (os.environ.get("CXX"), "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@functools.cache
def compiler_version():
    return subprocess.run([compiler(), "--version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]


def sanitizer_preload(variant):
    """What a process must preload to load ``variant``'s libraries (Python itself is
    not instrumented): the sanitizer's runtime, then the C++ runtime, whose
    exceptions the sanitizer intercepts; None for the checked build, or when the
    compiler has no such runtime."""
    names = {"address": ("libasan.so", "libclang_rt.asan-x86_64.so"),
             "thread": ("libtsan.so", "libclang_rt.tsan-x86_64.so")}.get(variant, ())
    for name in names:
        runtime = _library_path(name)
        if runtime:
            return [runtime, _library_path("libstdc++.so") or _library_path("libc++.so")]
    return None


def _library_path(name):
    path = subprocess.run([compiler(), f"-print-file-name={name}"], capture_output=True,
                          text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def translation_unit(source, name_expressions, type_names):
    """The C++ text of the kernels' unit. ``type_names`` maps storage types the source
    defines (e.g. ``cugn::Half``) to the dtype names the launcher checks against."""
    entries = ",\n".join(f'    cuda_on_cpu::make_kernel("{name}", &{name})'
                         for name in name_expressions)
    names = "\n".join(
        f"template <> struct cuda_on_cpu::TypeName<{ctype}> "
        f'{{ static std::string get() {{ return "{dtype}"; }} }};'
        for ctype, dtype in type_names.items())
    return f"""#include "runtime.h"
#include "kernel_table.h"

namespace {{
#line 1 "group_norm.cu"
{source}
}}  // namespace
#line 1 "kernel table"

{names}

static const std::vector<cuda_on_cpu::Kernel>& cuda_on_cpu_table() {{
  static const std::vector<cuda_on_cpu::Kernel> table = {{
{entries}
  }};
  return table;
}}

extern "C" {{
int cuda_on_cpu_kernel_count() {{ return int(cuda_on_cpu_table().size()); }}
const char* cuda_on_cpu_kernel_name(int i) {{ return cuda_on_cpu_table()[i].name; }}
const char* cuda_on_cpu_kernel_signature(int i) {{
  return cuda_on_cpu_table()[i].signature.c_str();
}}
void* cuda_on_cpu_kernel_invoke(int i) {{
  return reinterpret_cast<void*>(cuda_on_cpu_table()[i].invoke);
}}
void* cuda_on_cpu_kernel_function(int i) {{
  return reinterpret_cast<void*>(cuda_on_cpu_table()[i].function);
}}
}}
"""


def cache_directory():
    root = os.environ.get("CUGN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cugn")
    return Path(root) / "cuda_on_cpu"


def _compile(command):
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode:
        raise BuildError(f"{' '.join(command)}\n{process.stdout}{process.stderr}")


def _cached(kind, variant, inputs, make):
    """The cached file for ``inputs``, made by ``make(work, path)`` on first use (in a
    scratch folder ``work``), then renamed into place, so that concurrent builders agree."""
    key = hashlib.sha256("\0".join([compiler_version(), variant, *inputs]).encode())
    path = cache_directory() / f"{kind}-{variant}-{key.hexdigest()[:24]}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as work:
            made = Path(work) / path.name
            make(Path(work), made)
            os.replace(made, path)
    return path


_runtime_lock = threading.Lock()


def runtime_object(variant):
    """runtime.cpp compiled for ``variant`` (shared by every library of the variant)."""
    flags = _FLAGS[variant][1]
    sources = [(HERE / f).read_text() for f in RUNTIME_FILES]

    def make(work, path):
        _compile([compiler(), *_COMMON, *flags, "-I", str(HERE), "-c", str(HERE / "runtime.cpp"),
                  "-o", str(path)])

    with _runtime_lock:  # parallel builders of one variant wait for one compile
        return _cached("runtime", variant, [*flags, *sources], make)


def build(source, name_expressions, type_names, defines, variant="checked"):
    """The path of the shared library of ``name_expressions`` compiled from ``source``
    with ``defines`` (``-D`` options); built on first use, then cached."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if compiler() is None:
        raise BuildError("no C++ compiler: install g++ (>= 12) or clang++, or set CXX")
    unit = translation_unit(source, name_expressions, type_names)
    flags = _FLAGS[variant][0]
    runtime = runtime_object(variant)

    def make(work, path):
        (work / "kernels.cpp").write_text(unit)
        _compile([compiler(), *_COMMON, *flags, "-I", str(HERE), *defines, "-c",
                  str(work / "kernels.cpp"), "-o", str(work / "kernels.o")])
        _compile([compiler(), "-shared", "-pthread", *_LINK[variant], str(work / "kernels.o"),
                  str(runtime), "-o", str(path)])

    return _cached("kernels", variant, [unit, *defines, *flags, str(runtime)], make)
