"""The package imports with NumPy alone: no CuPy, no GPU, no optional library."""

import subprocess
import sys
import textwrap


def run_python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=True).stdout


def test_import_pulls_in_no_optional_library():
    out = run_python("""
        import sys
        import cugn
        print(sorted(m for m in ("cupy", "torch", "jax", "keras", "scipy") if m in sys.modules))
    """)
    assert out.strip() == "[]"


def test_works_when_cupy_cannot_be_imported():
    out = run_python("""
        import sys
        sys.modules["cupy"] = None  # makes `import cupy` raise ImportError
        import numpy as np
        import cugn
        x = cugn.tensor(np.arange(8.0).reshape(2, 4), requires_grad=True)
        cugn.functional.group_norm(x, 2).sum().backward()
        print(x.grad.shape, cugn.tensor([1.0]).device)
    """)
    assert out.strip() == "(2, 4) cpu"
