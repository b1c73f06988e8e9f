"""The scripts of profiling/ (scripts, not package modules), loaded for their tests."""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILING = os.path.join(ROOT, "profiling")


def load(name):
    """profiling/``name``.py as a module."""
    if PROFILING not in sys.path:
        sys.path.insert(0, PROFILING)  # the scripts import their neighbours
    spec = importlib.util.spec_from_file_location(name, os.path.join(PROFILING, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
