"""The parsing half of profiling/ncu_group_norm.py and profiling/nsys_group_norm.py.

Nsight tools need a GPU host, so these tests feed the parsers small CSV
samples written here in the tools' export formats (ncu's raw page with
``--csv --print-units base``; ``nsys stats --format csv``). The numbers in
them are made up to check the arithmetic: they are format samples, not
measurements.
"""

import pytest

import profiling_scripts


ncu = profiling_scripts.load("ncu_group_norm")
nsys = profiling_scripts.load("nsys_group_norm")

# Format sample of `ncu --import R --page raw --csv --print-units base --metrics ...`:
# ncu's own log line, the header, the units row, one row per launch.
NCU_RAW_SAMPLE = '''==PROF== Connected to process 4242 (/usr/bin/python3.11)
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","dram__bytes.sum.per_second","dram__throughput.avg.pct_of_peak_sustained_elapsed","gpu__time_duration.sum","launch__registers_per_thread","sm__warps_active.avg.pct_of_peak_sustained_active"
"","","","","","","","","","","","byte/second","%","nsecond","register/thread","%"
"0","4242","python3.11","host","void group_norm_fwd_nhwc<float>(const float *, float *, int)","1","7","(256, 1, 1)","(512, 1, 1)","0","9.0","2,500,000,000,000","75.5","20,000","32","80.1"
"1","4242","python3.11","host","void group_norm_bwd_nhwc<float>(const float *, const float *, float *)","1","7","(256, 1, 1)","(512, 1, 1)","0","9.0","2,000,000,000,000","60.4","30,000","40","70"
"2","4242","python3.11","host","void group_norm_fwd_nhwc<float>(const float *, float *, int)","1","7","(256, 1, 1)","(512, 1, 1)","0","9.0","2,700,000,000,000","81.5","22,000","32","82.1"
"3","4242","python3.11","host","void group_norm_fwd_nhwc<float>(const float *, float *, int)","1","7","(256, 1, 1)","(512, 1, 1)","0","9.0","2,600,000,000,000","78.5","21,000","32","81.1"
'''


def test_ncu_raw_csv_is_summarised_per_kernel():
    rows = ncu.parse_raw_csv(NCU_RAW_SAMPLE)
    assert len(rows) == 4  # the log line and the units row are not launches
    summary = ncu.summarize(rows)
    assert [row["kernel"] for row in summary] == ["group_norm_fwd_nhwc<float>",
                                                  "group_norm_bwd_nhwc<float>"]
    forward, backward = summary
    # Medians of the three forward launches, by hand: 21,000 ns; 2.6e12 B/s; 78.5 %; 81.1 %.
    assert forward["launches"] == 3
    assert forward["duration_us"] == pytest.approx(21.0)
    assert forward["dram_GB/s"] == pytest.approx(2600.0)
    assert forward["dram_%_of_peak"] == pytest.approx(78.5)
    assert forward["occupancy_%"] == pytest.approx(81.1)
    assert forward["registers"] == 32
    assert backward["launches"] == 1
    assert backward["duration_us"] == pytest.approx(30.0)
    assert backward["dram_GB/s"] == pytest.approx(2000.0)
    assert backward["registers"] == 40


def test_ncu_summary_table_and_saved_csv(tmp_path, capsys):
    saved = tmp_path / "raw.csv"
    saved.write_text(NCU_RAW_SAMPLE)
    ncu.main(["--csv", str(saved)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["kernel", "launches", "duration_us", "dram_GB/s",
                                "dram_%_of_peak", "occupancy_%", "registers"]
    assert lines[1].split() == ["group_norm_fwd_nhwc<float>", "3", "21.0", "2600.0", "78.5",
                                "81.1", "32.0"]


def test_ncu_kernel_names_keep_template_arguments():
    assert ncu.kernel_base_name("void reduce<float, (int)256>(const float *)") == \
        "reduce<float, (int)256>"
    assert ncu.kernel_base_name("copy_kernel") == "copy_kernel"


def test_ncu_csv_errors_are_clear():
    with pytest.raises(ValueError, match="no ncu CSV header"):
        ncu.parse_raw_csv("==PROF== nothing profiled\n")
    without_registers = NCU_RAW_SAMPLE.replace("launch__registers_per_thread", "launch__x")
    with pytest.raises(ValueError, match="launch__registers_per_thread"):
        ncu.parse_raw_csv(without_registers)


def test_ncu_command_filters_on_cugn_kernel_ranges():
    command = ncu.profile_command("ncu", "/tmp/r", ["--iters", "1"])
    assert command[:5] == ["ncu", "--nvtx", "--nvtx-include", "regex:cugn@kernel:.*/",
                           "--clock-control"]
    assert command[command.index("--metrics") + 1].split(",") == list(ncu.METRICS)


@pytest.mark.parametrize("module, tool", [(ncu, "ncu"), (nsys, "nsys")])
def test_missing_tool_is_a_clear_exit(module, tool, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(SystemExit) as exited:
        module.main(["--device", "cuda", "--iters", "1"])
    assert f"{tool} was not found on PATH" in str(exited.value)


# Format samples of `nsys stats --format csv --output stats --report ...`, one file each.
NSYS_SAMPLES = {
    "nvtx_sum": '''"Time (%)","Total Time (ns)","Instances","Avg (ns)","Med (ns)","Min (ns)","Max (ns)","StdDev (ns)","Style","Range"
"60.0","600000","3","200000.0","190000.0","150000","260000","55677.6","PushPop","cugn:GroupNormalization(group_norm).forward"
"30.0","300000","3","100000.0","100000.0","90000","110000","10000.0","PushPop","cugn:group_norm.forward"
"10.0","100000","1","100000.0","100000.0","100000","100000","0.0","PushPop",":setup"
''',
    "cuda_gpu_kern_sum": '''"Time (%)","Total Time (ns)","Instances","Avg (ns)","Med (ns)","Min (ns)","Max (ns)","StdDev (ns)","Name"
"100.0","63000","3","21000.0","21000.0","20000","22000","1000.0","group_norm_fwd_nhwc<float>"
''',
    "nvtx_kern_sum": '''"NVTX Range","Style","PID","TID","NVTX Inst","Kern Inst","Total Time (ns)","Avg (ns)","Med (ns)","Min (ns)","Max (ns)","StdDev (ns)","Kernel Name"
"cugn:kernel:group_norm_fwd_nhwc<float>","PushPop","4242","4242","3","3","63000","21000.0","21000.0","20000","22000","1000.0","group_norm_fwd_nhwc<float>"
''',
}


def test_nsys_stats_are_filtered_to_cugn(tmp_path, capsys):
    for report, text in NSYS_SAMPLES.items():
        (tmp_path / f"stats_{report}.csv").write_text(text)
    reports = nsys.load_stats(str(tmp_path))
    ranges = nsys.nvtx_table(reports["nvtx_sum"])
    assert [(r["range"], r["instances"]) for r in ranges] == [
        ("GroupNormalization(group_norm).forward", 3), ("group_norm.forward", 3)]
    assert ranges[0]["total_us"] == pytest.approx(600.0)
    assert ranges[0]["median_us"] == pytest.approx(190.0)
    [per_range] = nsys.range_kernel_table(reports["nvtx_kern_sum"])
    assert per_range["range"] == "kernel:group_norm_fwd_nhwc<float>"
    assert per_range["instances"] == 3 and per_range["total_us"] == pytest.approx(63.0)

    nsys.main(["--stats-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "cugn NVTX ranges" in out and ":setup" not in out
    rows = [line.split() for line in out.splitlines()]
    assert ["group_norm_fwd_nhwc<float>", "3", "63.0", "21.0"] in rows  # GPU kernels
    assert ["kernel:group_norm_fwd_nhwc<float>", "group_norm_fwd_nhwc<float>", "3", "63.0",
            "21.0"] in rows  # kernels per cugn range
