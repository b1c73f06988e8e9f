"""A built library of host-compiled kernels, through ctypes: its kernels, each
with the parameter types the compiler saw and the parameter names the source
gives, its shared arrays, and the launcher."""

import ctypes
import re
import shutil
import subprocess

import numpy as np

_SCALARS = {"int32": ctypes.c_int32, "uint32": ctypes.c_uint32, "uint64": ctypes.c_uint64,
            "float32": ctypes.c_float, "float64": ctypes.c_double}
# A kernel's name and parameters, after attributes such as __launch_bounds__(...).
_KERNEL = re.compile(r"__global__\s+void\s+(?:\w+\([^)]*\)\s+)*(\w+)\s*\(([^)]*)\)")


def parameter_names(source):
    """{kernel name: [parameter name]} of every ``__global__`` function in ``source``."""
    return {name: [p.split()[-1] for p in params.split(",")]
            for name, params in _KERNEL.findall(source)}


def kernel_name(name_expression):
    """``forward_apply`` of ``cugn::forward_apply<float, 4, unsigned int, true>``."""
    return name_expression.split("<")[0].split("::")[-1]


class Parameter:
    """One kernel parameter: ``name``, and its type as the compiler saw it; ``structs``
    maps the names of the structs the kernels take by value to their dtypes."""

    def __init__(self, name, type_name, structs):
        self.name = name
        self.pointer = type_name.endswith("*")
        self.const = type_name.startswith("const ")
        base = type_name.removeprefix("const ").rstrip("*")
        self.dtype = structs[base] if base in structs else np.dtype(base)
        self.type_name = type_name

    def __repr__(self):
        return f"{self.type_name} {self.name}"


class Kernel:
    """One instantiation in a library."""

    def __init__(self, library, index, name_expression, parameters):
        self.library = library
        self.name_expression = name_expression
        self.name = kernel_name(name_expression)
        self.parameters = parameters
        self.invoke = library.cdll.cuda_on_cpu_kernel_invoke(index)
        self.function = library.cdll.cuda_on_cpu_kernel_function(index)


class Library:
    def __init__(self, path, source, structs):
        self.path = path
        self.cdll = ctypes.CDLL(str(path))
        for name in ("cuda_on_cpu_kernel_invoke", "cuda_on_cpu_kernel_function"):
            getattr(self.cdll, name).restype = ctypes.c_void_p
        for name in ("cuda_on_cpu_kernel_name", "cuda_on_cpu_kernel_signature"):
            getattr(self.cdll, name).restype = ctypes.c_char_p
        launch = self.cdll.cuda_on_cpu_launch
        launch.restype = ctypes.c_int
        launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                           ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                           ctypes.POINTER(ctypes.c_uint), ctypes.c_int, ctypes.c_int,
                           ctypes.c_int, ctypes.c_uint64,
                           ctypes.POINTER(ctypes.c_uint64), ctypes.c_int,
                           ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
                           ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.POINTER(ctypes.c_uint64), ctypes.c_int,
                           ctypes.c_char_p, ctypes.c_size_t]
        names = parameter_names(source)
        self.kernels = {}
        for i in range(self.cdll.cuda_on_cpu_kernel_count()):
            expression = self.cdll.cuda_on_cpu_kernel_name(i).decode()
            types = self.cdll.cuda_on_cpu_kernel_signature(i).decode().split(",")
            parameters = [Parameter(n, t, structs)
                          for n, t in zip(names[kernel_name(expression)], types, strict=True)]
            self.kernels[expression] = Kernel(self, i, expression, parameters)
        self.shared = self._shared_arrays()

    def _shared_arrays(self):
        """(address, size) of every function-static array of the kernels: their
        ``__shared__`` memory, read from the library's symbol table."""
        nm = shutil.which("nm") or shutil.which("llvm-nm")
        listing = subprocess.run([nm, "-C", "-S", "--defined-only", str(self.path)],
                                 capture_output=True, text=True, check=True).stdout
        anchor = ctypes.cast(self.cdll.cuda_on_cpu_kernel_count, ctypes.c_void_p).value
        base, symbols = None, []
        for line in listing.splitlines():
            fields = line.split(maxsplit=3)
            if len(fields) == 4 and fields[3] == "cuda_on_cpu_kernel_count":
                base = anchor - int(fields[0], 16)
            elif len(fields) == 4 and fields[2] in "bBdD" and "cugn::" in fields[3] \
                    and ")::" in fields[3]:
                symbols.append((int(fields[0], 16), int(fields[1], 16)))
        return [(base + offset, size) for offset, size in symbols]

    def launch(self, kernel, grid, block, cluster, args, options, memory, shared, line_shift):
        """Runs ``kernel`` over ``grid`` blocks of ``block`` threads in clusters of
        ``cluster`` blocks; returns (bytes read, bytes written) per allocation of
        ``memory`` (4 bounds each), and the same per line of ``2**line_shift`` bytes
        (two arrays per allocation), or raises KernelError."""
        count = len(memory) // 4
        bounds = (ctypes.c_uint64 * max(1, len(memory)))(*memory)
        read = (ctypes.c_uint64 * max(1, count))()
        written = (ctypes.c_uint64 * max(1, count))()
        line_counts = [-(-max(1, memory[4 * i + 1] - memory[4 * i]) >> line_shift)
                       for i in range(count)]
        line_offsets = np.zeros(max(1, count), np.uint64)
        line_offsets[1:count] = np.cumsum(line_counts[:-1], dtype=np.uint64)
        lines_read = np.zeros(max(1, sum(line_counts)), np.uint64)
        lines_written = np.zeros_like(lines_read)
        flat = [v for pair in shared for v in pair]
        shared_array = (ctypes.c_uint64 * max(1, len(flat)))(*flat)
        error = ctypes.create_string_buffer(4096)
        status = self.cdll.cuda_on_cpu_launch(
            kernel.invoke, kernel.function, args, (ctypes.c_uint * 3)(*grid),
            (ctypes.c_uint * 3)(*block), (ctypes.c_uint * 3)(*cluster), options.block_order,
            options.thread_order, int(options.parallel), options.seed, bounds, count, read,
            written, line_shift, line_offsets.ctypes.data, lines_read.ctypes.data,
            lines_written.ctypes.data, shared_array, len(shared), error, len(error))
        if status:
            raise KernelError(f"{kernel.name_expression}: {error.value.decode()}")
        lines = [(lines_read[int(o):int(o) + n], lines_written[int(o):int(o) + n])
                 for o, n in zip(line_offsets, line_counts)]
        return list(read)[:count], list(written)[:count], lines


class KernelError(RuntimeError):
    """A launch broke a rule of CUDA (or the harness's checks of memory)."""


def scalar(parameter, value):
    """The ctypes value of a scalar argument, as CuPy passes it: a NumPy scalar of the
    parameter's exact dtype (the width a GPU launch would pass), or for a struct, a
    NumPy array of one element of its structured dtype (passed as its bytes)."""
    if parameter.dtype.names:
        if not (isinstance(value, np.ndarray) and value.size == 1
                and value.dtype == parameter.dtype):
            got = type(value).__name__ + (f" ({value.dtype}, size {value.size})"
                                          if isinstance(value, np.ndarray) else "")
            raise TypeError(f"argument {parameter.name!r}: {got}, the kernel takes "
                            f"{parameter.type_name} (pass a numpy.ndarray of one "
                            f"{parameter.dtype})")
        words = (ctypes.c_uint64 * -(-parameter.dtype.itemsize // 8))()  # 8-byte aligned
        ctypes.memmove(words, value.tobytes(), parameter.dtype.itemsize)
        return words
    if not isinstance(value, np.generic) or value.dtype != parameter.dtype:
        got = f"{type(value).__name__}" + (f" ({value.dtype})" if isinstance(value, np.generic)
                                           else "")
        raise TypeError(f"argument {parameter.name!r}: {got}, the kernel takes "
                        f"{parameter.type_name} (pass numpy.{parameter.dtype.name})")
    return _SCALARS[parameter.dtype.name](value.item())
