"""profiling/nvtx_recorder.py (a script, not a package module), loaded for the tests
that record NVTX ranges with it."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load():
    spec = importlib.util.spec_from_file_location(
        "nvtx_recorder", os.path.join(ROOT, "profiling", "nvtx_recorder.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
