"""cugn's NVTX ranges: the switch, and the ranges as a profiler receives them.

The second half injects a small NVTX tool (profiling/nvtx_recorder.c, built
here with the system C compiler against the NVTX headers) into a subprocess
through NVTX_INJECTION64_PATH, exactly as Nsight tools inject themselves, and
checks the ranges it recorded.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from cugn.functions.arithmetic import MatMul
from cugn.functions.elementwise import ReLU
from cugn.functions.normalization import GroupNorm
from cugn.functions.reduction import LogSoftmax
from cugn.profiling import nvtx

import profiling_scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

recorder = profiling_scripts.load("nvtx_recorder")


# ---------------------------------------------------------------- the switch


@pytest.mark.parametrize("environ, expected", [
    ({}, False),
    ({"NVTX_INJECTION64_PATH": "/opt/nsight/libToolsInjection64.so"}, True),
    ({"NVTX_INJECTION64_PATH": "/x.so", "CUGN_NVTX": "0"}, False),
    ({"CUGN_NVTX": "1"}, True),
    ({"CUGN_NVTX": "off", "NVTX_INJECTION64_PATH": "/x.so"}, False),
    ({"CUGN_NVTX": "  ", "NVTX_INJECTION64_PATH": "/x.so"}, True),
])
def test_default_follows_injection_and_cugn_nvtx(environ, expected):
    assert nvtx.default_enabled(environ) is expected


def test_bad_cugn_nvtx_names_the_variable():
    with pytest.raises(ValueError, match="CUGN_NVTX.*'maybe'"):
        nvtx.default_enabled({"CUGN_NVTX": "maybe"})


def test_switch_is_a_call_and_a_context_manager():
    before = nvtx.is_enabled()
    try:
        nvtx(True)
        assert nvtx.flag.on and nvtx.is_enabled()
        with nvtx(False):
            assert not nvtx.flag.on
            with nvtx(True):
                assert nvtx.flag.on
            assert not nvtx.flag.on
        assert nvtx.flag.on
        with pytest.raises(RuntimeError):
            with nvtx(False):
                raise RuntimeError("inside")
        assert nvtx.flag.on  # restored on an exception too
    finally:
        nvtx(before)
    assert nvtx.is_enabled() is before


@pytest.mark.parametrize("value", [1, 0, "on", None])
def test_switch_rejects_non_bools_without_changing_state(value):
    before = nvtx.is_enabled()
    with pytest.raises(TypeError, match="enabled must be True or False"):
        nvtx(value)
    assert nvtx.is_enabled() is before


def test_range_checks_its_arguments():
    with pytest.raises(ValueError, match="category must be one of .*'optimiser'"):
        nvtx.range("Adam.step", category="optimiser")
    with pytest.raises(TypeError, match="message must be a non-empty string"):
        nvtx.range("", category="optimizer")


def test_op_and_kernel_names():
    assert nvtx.op_name(GroupNorm) == "group_norm"
    assert nvtx.op_name(LogSoftmax) == "log_softmax"
    assert nvtx.op_name(ReLU) == "relu"  # op_name set on the class
    assert nvtx.op_name(MatMul) == "matmul"
    assert nvtx.kernel_message("group_norm_fwd_nhwc", "float") == \
        "kernel:group_norm_fwd_nhwc<float>"
    assert nvtx.kernel_message("reduce", "float", 256) == "kernel:reduce<float, 256>"
    assert nvtx.kernel_message("copy") == "kernel:copy"


def _python(code, env_update, drop=("NVTX_INJECTION64_PATH", "CUGN_NVTX")):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_update)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def test_ranges_off_never_import_nvtx():
    # Off (no profiler, no CUGN_NVTX): importing cugn and running ops, a layer and a
    # backward pass never touch the nvtx package.
    out = _python("""
        import sys
        import numpy as np
        import cugn
        x = cugn.tensor(np.ones((2, 3, 4), np.float32), requires_grad=True)
        cugn.layers.GroupNormalization(groups=2)(x).sum().backward()
        print(cugn.profiling.nvtx.flag.on, "nvtx" in sys.modules)
    """, {})
    assert out.split() == ["False", "False"]


# ---------------------------------------------------------------- through NVTX injection

WORKLOAD = """
import numpy as np
import cugn
from cugn.profiling import nvtx

@nvtx.range("SGD.step", category="optimizer")
def step(weights):
    for weight in weights:
        weight.data -= 0.1 * weight.grad.data

layer = cugn.layers.GroupNormalization(groups=2, name="group_norm")
x = cugn.tensor(np.random.default_rng(0).random((2, 4, 4, 4), np.float32), requires_grad=True)
y = layer(x)
loss = (y * y).sum()
loss.backward()
step(layer.weights)
cugn.grad(cugn.exp(x).sum(), [x])
with nvtx(False):
    cugn.tanh(x)                      # switched off: no range
cugn.sigmoid(x)                       # back on
try:
    layer(cugn.tensor(np.ones((2, 3), np.float32)))  # fails inside the layer's range
except ValueError:
    pass

import nvtx
with nvtx.annotate("control", domain="control"):  # proves the tool is injected
    pass
"""


@pytest.fixture(scope="module")
def recorder_library(tmp_path_factory):
    try:
        return recorder.build(str(tmp_path_factory.mktemp("nvtx")))
    except recorder.RecorderUnavailable as error:
        pytest.skip(f"cannot build the NVTX recorder: {error}")


def _record(library, tmp_path, env_update):
    env = {k: v for k, v in os.environ.items() if k not in ("CUGN_NVTX",)}
    env.update(env_update)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    path = str(tmp_path / "ranges.tsv")
    recorder.run([sys.executable, "-c", WORKLOAD], library, path, env=env, cwd=ROOT)
    return recorder.parse(path)


def _find(ranges, name):
    found = [r for r in ranges if r.name == name]
    assert found, f"no range {name!r} among {sorted({r.name for r in ranges})}"
    return found


@pytest.mark.parametrize("cpu_kernels", ["numpy", "numba"])
def test_profiler_sees_named_nested_ranges(recorder_library, tmp_path, cpu_kernels):
    # On by default: a tool is injected. CUGN_NUMBA picks the CPU kernels, named in ranges.
    recording = _record(recorder_library, tmp_path,
                        {"CUGN_NUMBA": "1" if cpu_kernels == "numba" else "0"})
    assert recording.domains == ["cugn", "control"]
    assert recording.unbalanced == []
    top = [r for r in recording.roots if r.domain == "cugn"]
    names = [r.name for r in top]
    # Forward, in program order, at the top level of the main thread.
    assert names[:3] == ["GroupNormalization(group_norm).forward", "mul.forward", "sum.forward"]

    layer = top[0]
    assert layer.category == "layer"
    [op] = [c for c in layer.children if c.name == "group_norm.forward"]
    assert op.category == "op"
    assert [(k.name, k.category) for k in op.children] == \
        [(f"kernel:group_norm_fwd_{cpu_kernels}<float32>", "kernel")]

    [walk] = _find(top, "autograd.backward")
    assert walk.category == "backward"
    nodes = [c.name for c in walk.children if c.category == "backward"]
    assert nodes == ["sum.backward", "mul.backward", "group_norm.backward"]
    [gn_backward] = _find(walk.children, "group_norm.backward")
    assert [k.name for k in gn_backward.children] == \
        [f"kernel:group_norm_bwd_{cpu_kernels}<float32>"]
    # A backward written with Tensor ops shows them as ops inside the node's range.
    [mul_backward] = _find(walk.children, "mul.backward")
    assert [c.name for c in mul_backward.children] == ["mul.forward", "mul.forward"]

    [step] = _find(top, "SGD.step")
    assert step.category == "optimizer"
    [grad_walk] = _find(top, "autograd.grad")
    assert [c.name for c in grad_walk.children] == ["sum.backward", "exp.backward"]

    assert "tanh.forward" not in {r.name for r in recording.ranges()}
    assert _find(top, "sigmoid.forward")
    # The failing call's range was pushed and popped (the recording is balanced).
    assert names[-1] == "GroupNormalization(group_norm).forward"
    assert top[-1].children == []


def test_cugn_nvtx_0_emits_nothing_under_a_profiler(recorder_library, tmp_path):
    recording = _record(recorder_library, tmp_path, {"CUGN_NVTX": "0"})
    assert recording.domains == ["control"]
    assert [r.name for r in recording.ranges()] == ["control"]


def test_recorder_sees_the_nvtx_package_directly(recorder_library, tmp_path):
    # The recorder itself, on known input: the nvtx package's own API.
    path = str(tmp_path / "ranges.tsv")
    code = ("import nvtx\n"
            "with nvtx.annotate('outer', domain='d'):\n"
            "    with nvtx.annotate('inner', domain='d', category='c'):\n"
            "        pass\n")
    recorder.run([sys.executable, "-c", code], recorder_library, path)
    recording = recorder.parse(path)
    assert recording.domains == ["d"]
    [outer] = recording.roots
    assert outer.name == "outer" and [c.name for c in outer.children] == ["inner"]
    assert outer.children[0].category == "c"
    assert recording.unbalanced == []


def test_ranges_on_without_the_nvtx_package_warn_and_run():
    out = _python("""
        import sys
        import warnings
        sys.modules["nvtx"] = None  # as if the package were not installed
        import numpy as np
        import cugn
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = cugn.exp(cugn.tensor(np.zeros(3, np.float32)))
        print(cugn.profiling.nvtx.flag.on, y.numpy().tolist())
        print(str(caught[0].message))
    """, {"CUGN_NVTX": "1"})
    first, second = out.splitlines()
    assert first == "True [1.0, 1.0, 1.0]"
    assert "nvtx package is not installed" in second
