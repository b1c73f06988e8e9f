"""Shapes that reach every kernel, tier and layout of the CUDA path, shared by the
kernels on the CPU (test_cuda_on_cpu.py) and on a GPU (test_group_norm_gpu.py)."""

CASES = [  # shape, axis, groups
    ((2, 8, 8, 32), -1, 4),        # NHWC, column tiles, whole groups per warp run
    ((2, 32, 8, 8), 1, 4),         # NCHW, rows of D*S
    ((2, 6, 12, 5), 2, 3),         # a middle axis: M = 6, S = 5
    ((2, 4, 6, 10), [1, 3], 2),    # non-adjacent axes (moved together)
    ((2, 6, 10, 4), (-1, -3), 4),  # negative axes in a list
    ((3, 5, 5, 24), -1, 8),        # D = 3: shared-memory merge, no vector
    ((2, 4, 16, 48), -1, 16),      # D = 3 over 48 channels: tiles of 30 lanes
    ((3, 33, 7, 7), 1, 3),         # S = 49, D = 11
    ((2, 9, 9, 48), -1, -1),       # one channel per group, channels-last
    ((2, 48, 9, 9), 1, -1),        # one channel per group, S = 81: lanes of a warp per group
    ((2, 16, 4, 4), 1, 1),         # one group
    ((4, 64), -1, 8),              # spatial size 1, M = 1
    ((4, 64, 1, 1), 1, 8),         # spatial size 1 channels-first
    ((1, 40, 8), -1, 2),           # B = 1 channels-last: split over pixel rows
    ((1, 16, 32, 64), -1, 32),     # B = 1: split column tiles
    ((1, 32, 16, 16), 1, 32),      # B = 1 channels-first
    ((1, 4, 1024), 1, 2),          # B = 1, long rows: split across blocks
    ((1, 2, 8192), 1, 2),          # B = 1, longer rows: every reduction split
    ((2, 3, 300), -1, 2),          # long channels-last groups: segment units
    ((5, 30, 7), -1, 7),           # odd everything
    ((1, 1), -1, 1),               # one value
]
