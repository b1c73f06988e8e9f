"""The benchmark machinery on the CPU: the timing harness's bookkeeping, the
entry point's table, the peers' correctness, and the GPU script's outputs from
given rows. No timing is asserted (speed is measured in profiling/, not here)."""

import csv
import importlib.util

import numpy as np
import pytest

from cugn import kernels
from cugn.profiling import benchmark, timing
from cugn.profiling.__main__ import main

import profiling_scripts


def load_gpu_script():
    return profiling_scripts.load("group_norm_gpu")


# ------------------------------------------------------------------ timing


def test_time_cpu_counts_warmup_samples_and_waits():
    calls, waits = [], []
    result = timing.time_cpu(lambda: calls.append(1), warmup=2, repeats=5, min_seconds=0,
                             finish=lambda: waits.append(1), calls=3)
    assert len(calls) == 2 + 5 * 3
    assert len(waits) == 1 + 5  # once after the warm-up, once per sample
    assert result >= 0


@pytest.mark.parametrize("kwargs", [{"warmup": -1}, {"repeats": 0}, {"calls": 0}])
def test_time_cpu_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="warmup >= 0"):
        timing.time_cpu(lambda: None, **kwargs)


def test_time_cuda_names_the_libraries_it_knows():
    with pytest.raises(ValueError, match="'cupy' or 'torch'"):
        timing.time_cuda(lambda: None, library="jax")


def test_the_spin_kernel_compiles_without_a_gpu():
    pytest.importorskip("cupy")
    from cugn.kernels import compile_check

    nvrtc = compile_check.nvrtc()
    program = nvrtc.createProgram(timing.SPIN_SOURCE, "spin.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["--gpu-architecture=sm_90"])
        assert nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)


def test_format_table_marks_absent_values():
    table = timing.format_table([{"a": 1.23456, "b": None}, {"a": 1234.5, "b": "x"}], ["a", "b"])
    assert table.splitlines() == ["     a  b", "  1.23  -", "1234.5  x"]


# ------------------------------------------------------------------ one case


@pytest.mark.parametrize("kwargs, match", [
    ({"shape": (2, 0, 4)}, "shape must be positive"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"groups": 3}, "multiple of the number of groups"),
    ({"axis": 0}, "batch axis"),
])
def test_case_checks_its_arguments(kwargs, match):
    arguments = {"shape": (2, 4, 8), "axis": -1, "groups": 4, "dtype": "float32", **kwargs}
    with pytest.raises(ValueError, match=match):
        benchmark.Case(**arguments)


@pytest.mark.parametrize("shape, axis", [((2, 5, 6, 8), -1), ((2, 8, 5, 6), 1), ((2, 5, 8, 3), 2)])
def test_naive_composition_computes_group_norm(shape, axis):
    case = benchmark.Case(shape, axis, 4, "float64")
    data = benchmark._inputs(case, np)
    x, dy, gamma, beta = data
    y, mean, rstd = kernels.forward(x, gamma, beta, case.layout, case.epsilon)
    want = (y, *kernels.backward(x, dy, gamma, mean, rstd, case.layout))
    forward, backward = benchmark._naive(np, case, data)
    for got, expected in zip((forward(), *backward()), want):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape, axis", [((2, 5, 6, 8), -1), ((2, 8, 5, 6), 1), ((2, 7, 8), -1)])
def test_torch_peer_computes_group_norm_on_the_same_layout(shape, axis):
    torch = pytest.importorskip("torch")
    case = benchmark.Case(shape, axis, 4, "float64")
    data = benchmark._inputs(case, np)
    x, dy, gamma, beta = data
    forward, backward = benchmark._torch(case, data, "cpu")
    y = kernels.forward(x, gamma, beta, case.layout, case.epsilon)[0]
    order = benchmark._channels_first(case)
    got = forward()
    if order:  # torch's (N, C, ...) view of the channels-last array: no copy was made
        assert got.permute(tuple(order.index(a) for a in range(len(shape)))).shape == shape
        got = got.permute(tuple(order.index(a) for a in range(len(shape))))
    np.testing.assert_allclose(got.numpy(), y, rtol=1e-10, atol=1e-10)
    assert len(backward()) == 3 and all(isinstance(g, torch.Tensor) for g in backward())


def test_a_peer_that_fails_is_left_out_with_a_warning(capsys):
    def broken(*args):
        raise RuntimeError("no such kernel")

    assert benchmark._peer("torch", broken) == (None, None)
    assert "torch left out: RuntimeError: no such kernel" in capsys.readouterr().err


def test_entry_point_prints_the_cpu_table(capsys):
    assert main(["--shape", "2,4,4,16", "--axis", "-1", "--dtype", "float32", "--groups", "4",
                 "--device", "cpu", "--warmup", "0", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# ") and "commit" in lines[0]
    header = lines[1].split()
    assert header[:6] == ["shape", "axis", "groups", "dtype", "pass", "cugn_us"]
    assert "numpy_naive_us" in header and "cupy_naive_us" not in header
    rows = [dict(zip(header, line.split())) for line in lines[2:]]
    assert [(r["shape"], r["pass"]) for r in rows] == [("2x4x4x16", "forward"),
                                                       ("2x4x4x16", "backward")]
    assert all(float(r["cugn_us"]) > 0 and float(r["pct_of_copy"]) > 0 for r in rows)


def test_entry_point_rejects_a_bad_case(capsys):
    with pytest.raises(SystemExit):
        main(["--shape", "2,4,4,15", "--groups", "4", "--device", "cpu"])
    assert "multiple of the number of groups" in capsys.readouterr().err


# ------------------------------------------------------------------ the GPU script's outputs


def fake_rows():
    """Rows shaped like the benchmark's, with made-up times: only the writers are tested."""
    rows = []
    for shape, axis, pass_name, cugn_us, torch_us in [("8x64x64x512", -1, "forward", 50.0, 80.0),
                                                       ("8x64x64x512", -1, "backward", 90.0, 70.0)]:
        copy_us = 40.0 if pass_name == "forward" else 60.0
        rows.append({"device": "a GPU", "date": "2026-01-01", "commit": "abc1234", "shape": shape,
                     "axis": str(axis), "groups": 32, "dtype": "float16", "pass": pass_name,
                     "cugn_us": cugn_us, "cugn_unsliced_us": cugn_us,
                     "cugn_on_chip_off_us": cugn_us, "copy_us": copy_us,
                     "torch_us": torch_us,
                     "keras_jax_us": None, "cupy_naive_us": 300.0,
                     "cugn_gbps": 1.0, "pct_of_copy": 100 * copy_us / cugn_us})
    return rows


def test_gpu_script_covers_its_shapes_and_their_twins():
    script = load_gpu_script()
    seen = {(c.shape, c.axis, c.dtype, c.groups) for c in script.cases()}
    assert ((8, 64, 64, 512), -1, "float16", 32) in seen
    assert ((8, 512, 64, 64), 1, "float32", 32) in seen
    assert ((2, 320, 4096), 1, "float16", 32) in seen
    assert len(seen) == 4 * 2 * 2


def test_gpu_script_writes_csv_summary_and_plot(tmp_path):
    script = load_gpu_script()
    rows = fake_rows()
    script.write_csv(rows, tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == ["device", "date", "commit", "shape", "axis", "groups", "dtype",
                                "pass", "cugn_us", "cugn_unsliced_us", "cugn_on_chip_off_us",
                                "copy_us", "torch_us",
                                "keras_jax_us", "cupy_naive_us", "cugn_gbps", "pct_of_copy"]
    assert written[1]["keras_jax_us"] == "" and written[0]["pct_of_copy"] == "80.00"
    script.write_summary(rows, tmp_path / "r.md", "python profiling/group_norm_gpu.py")
    summary = (tmp_path / "r.md").read_text()
    # forward: 80 % of copy meets its goal and beats torch; backward: 66.7 % < 75 %, slower than torch
    assert "1 of 2 rows meet every goal" in summary and "keras_jax_us" in summary
    assert summary.splitlines()[-1].endswith("| bandwidth, torch_us |")
    pytest.importorskip("matplotlib")
    script.write_plot(rows, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_script_refuses_to_run_without_a_gpu(monkeypatch, tmp_path, capsys):
    script = load_gpu_script()
    monkeypatch.setattr(benchmark, "cuda_available", lambda: False)
    assert script.main(["--out", str(tmp_path)]) == 1
    assert "nothing was measured" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_gpu_script_runs_every_case_and_writes_its_three_files(monkeypatch, tmp_path, capsys):
    # The measurement itself needs a GPU; here run_case hands back given rows, so
    # what is checked is the script's flow: every case run, three files written.
    script = load_gpu_script()
    monkeypatch.setattr(benchmark, "cuda_available", lambda: True)
    seen = []

    def run_case(case, device, repeats=None):
        seen.append((case, device, repeats))
        return fake_rows()

    monkeypatch.setattr(benchmark, "run_case", run_case)
    assert script.main(["--out", str(tmp_path / "results"), "--repeats", "3"]) == 0
    assert [c for c, _, _ in seen] == script.cases()
    assert {(d, r) for _, d, r in seen} == {("cuda", 3)}
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    expected = ["group_norm_gpu.csv", "group_norm_gpu.md"]
    if importlib.util.find_spec("matplotlib"):
        expected.append("group_norm_gpu.png")
    assert names == sorted(expected)
    summary = (tmp_path / "results" / "group_norm_gpu.md").read_text()
    assert "--repeats 3" in summary and "abc1234" in summary


# ------------------------------------------------------------------ the fused-SiLU GPU benchmark


def silu_rows():
    common = {"device": "GPU", "date": "2026-12-01", "commit": "abc1234", "shape": "2x8x8",
              "axis": 1, "dtype": "float16"}
    rows = [{**common, "pass": "forward", "fused_us": 10.0, "plain_us": 10.5, "silu_us": 6.0,
             "silu_copy_us": 5.0},
            {**common, "pass": "backward", "fused_us": 18.0, "plain_us": 15.0, "silu_us": 8.0,
             "silu_copy_us": 7.0}]
    for row in rows:
        row["saved_us"], row["goal_met"] = profiling_scripts.load("group_norm_silu_gpu").saved(row)
    return rows


def test_silu_script_counts_what_fusing_saves_against_the_silus_traffic():
    forward, backward = silu_rows()
    assert (forward["saved_us"], forward["goal_met"]) == (6.5, True)    # 10.5 + 6 - 10 >= 5
    assert (backward["saved_us"], backward["goal_met"]) == (5.0, False)  # 15 + 8 - 18 < 7


def test_silu_script_writes_csv_and_summary(tmp_path):
    script = profiling_scripts.load("group_norm_silu_gpu")
    script.write_results(silu_rows(), tmp_path, "python profiling/group_norm_silu_gpu.py")
    with open(tmp_path / "group_norm_silu_gpu.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [r["goal_met"] for r in written] == ["True", "False"]
    summary = (tmp_path / "group_norm_silu_gpu.md").read_text()
    assert "1 of 2 rows meet the goal" in summary and "abc1234" in summary
    assert summary.splitlines()[-1].endswith("| missed |")


def test_silu_script_refuses_to_run_without_a_gpu(monkeypatch, tmp_path, capsys):
    script = profiling_scripts.load("group_norm_silu_gpu")
    monkeypatch.setattr(benchmark, "cuda_available", lambda: False)
    assert script.main(["--out", str(tmp_path)]) == 1
    assert "nothing was measured" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("peer, switch", [("_unsliced", "l2_slicing"),
                                          ("_on_chip_off", "on_chip")])
def test_a_switched_off_peer_turns_its_switch_off_for_its_call_only(peer, switch):
    from cugn.kernels import group_norm_cuda

    seen = []
    forward, backward = getattr(benchmark, peer)(
        (lambda: seen.append(getattr(group_norm_cuda, switch)), lambda: 1 / 0))
    forward()
    with pytest.raises(ZeroDivisionError):
        backward()
    assert seen == [False] and getattr(group_norm_cuda, switch) is True


def test_the_gpu_columns_have_both_switched_off_peers():
    assert benchmark.columns("cuda").index("cugn_on_chip_off_us") == \
        benchmark.columns("cuda").index("cugn_unsliced_us") + 1
