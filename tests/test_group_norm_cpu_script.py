"""profiling/group_norm_cpu.py's rows on a small case: every peer of cugn runs, float16
against float32 plus its casts, and the ratios come from the medians."""

import numpy as np

import profiling_scripts
from cugn import kernels

script = profiling_scripts.load("group_norm_cpu")


def test_float16_rows_time_cugn_against_float32_and_its_casts(rng, monkeypatch):
    monkeypatch.setattr(script, "GROUPS", 2)
    monkeypatch.setattr(kernels, "numba_enabled", True)  # the timers set it; restored after
    shape, axis = (2, 4, 3, 3), 1
    x = rng.standard_normal(shape).astype(np.float16)
    dy = rng.standard_normal(shape).astype(np.float16)
    gamma, beta = np.ones(4, np.float32), np.zeros(4, np.float32)
    peers = {"cugn_numba": script.cugn_timers(x, dy, gamma, beta, axis, numba=True),
             "numba_via_float32": script.cugn_timers(x, dy, gamma, beta, axis, numba=True,
                                                     via=np.float32)}
    to_float32, to_float16 = script.cast_timers(x)
    peers["astype_float16"] = (to_float16, to_float16)
    rows = script.measure(shape, axis, "float16", peers, rounds=1)
    assert [row["pass"] for row in rows] == ["forward", "forward+backward"]
    for row in rows:
        assert row["dtype"] == "float16" and row["astype_float16_us"] > 0
        assert row["numba/via_float32"] == round(row["cugn_numba_us"]
                                                 / row["numba_via_float32_us"], 2)
        assert "numba/torch" not in row
