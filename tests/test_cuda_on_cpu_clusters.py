"""Thread-block clusters (sm_90) in the CPU harness: every block of a cluster has
shared memory of its own, distributed shared memory reaches another block's, and
the cluster barrier orders them; the rules are enforced, and proven on planted
bugs (a missing barrier reads NaN or fails, a thread that skips the barrier, a
rank past the cluster, a block gone before another reads its memory).

The kernels here are written with CUDA's own cluster built-ins, which NVRTC
compiles for sm_90 unchanged; the GroupNorm kernels' clusters (the on-chip tier
for large groups) are tested with the others, in test_cuda_on_cpu.py.
"""

import os

import numpy as np
import pytest

pytest.importorskip("cupy", reason="the harness loads the kernels' configurations")

from cugn.kernels import compile_check, cuda_loader  # noqa: E402
from cugn.kernels.cuda_on_cpu import Device, KernelError, Schedule, compiler  # noqa: E402

if compiler() is None:
    pytest.skip("needs g++ (>= 12) or clang++ to build the kernels for the host",
                allow_module_level=True)

pytestmark = pytest.mark.cuda_on_cpu

# test_cuda_on_cpu_sanitizers.py runs some of these under AddressSanitizer; the
# checks of distributed shared memory's bounds and lifetime are the checked build's.
VARIANT = os.environ.get("CUGN_CUDA_ON_CPU_VARIANT", "checked")

CLUSTERS = """
namespace cugn {
// Every thread of block rank r leaves 1000*r + its index in its block's shared
// memory, then reads, in reverse order, what block (r + shift) % blocks left. The
// blocks take r + 1 __syncthreads each on the way: barriers are per block. Either
// cluster barrier can be left out (a planted bug) and `skipper` (a thread of the
// last block) can leave before the first one.
__global__ void exchange(float* __restrict__ out, unsigned shift, int first_barrier,
                         int last_barrier, int skipper, int stride) {
  __shared__ float values[64];
  const unsigned rank = __clusterRelativeBlockRank(), blocks = __clusterSizeInBlocks();
  values[threadIdx.x] = float(1000 * rank + threadIdx.x);
  for (unsigned i = 0; i <= rank; ++i) __syncthreads();
  if (rank == blocks - 1 && int(threadIdx.x) == skipper) return;
  if (first_barrier) {
    __cluster_barrier_arrive();
    __cluster_barrier_wait();
  }
  const float* other =
      static_cast<const float*>(__cluster_map_shared_rank(values, (rank + shift) % blocks));
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  out[block * blockDim.x + threadIdx.x] = other[(blockDim.x - 1 - threadIdx.x) * stride];
  if (last_barrier) {  // no block leaves while another may still read its memory
    __cluster_barrier_arrive();
    __cluster_barrier_wait();
  }
}

// Every block writes its rank into the next block's shared memory; after the
// barrier each reads its own.
__global__ void push(float* __restrict__ out) {
  __shared__ float inbox[64];
  const unsigned rank = __clusterRelativeBlockRank(), blocks = __clusterSizeInBlocks();
  float* next = static_cast<float*>(__cluster_map_shared_rank(inbox, (rank + 1) % blocks));
  next[threadIdx.x] = float(rank);
  __cluster_barrier_arrive();
  __cluster_barrier_wait();
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  out[block * blockDim.x + threadIdx.x] = inbox[threadIdx.x];
}

// The cluster built-ins' values, per block.
__global__ void coordinates(unsigned* __restrict__ out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  if (threadIdx.x == 0) {
    const dim3 dims = __clusterDim(), index = __clusterIdx(), within = __clusterRelativeBlockIdx();
    const unsigned values[8] = {__clusterRelativeBlockRank(), __clusterSizeInBlocks(), dims.x,
                                dims.y, index.x, index.y, within.x, within.y};
    for (int i = 0; i < 8; ++i) out[8 * block + i] = values[i];
  }
}

// Misuses of the cluster barrier and of distributed shared memory.
__global__ void misuse(const float* __restrict__ in, float* __restrict__ out, int how) {
  __shared__ float values[64];
  values[threadIdx.x] = in[threadIdx.x];
  if (how == 0) __cluster_barrier_wait();  // without arriving
  if (how == 1) __cluster_barrier_arrive();  // twice without waiting
  if (how == 2) out[threadIdx.x] = *static_cast<const float*>(
      __cluster_map_shared_rank(values, __clusterSizeInBlocks()));  // a rank past the cluster
  if (how == 3) out[threadIdx.x] = *static_cast<const float*>(
      __cluster_map_shared_rank(in, 0));  // not shared memory
  __cluster_barrier_arrive();
  __cluster_barrier_wait();
}
}  // namespace cugn
"""
THREADS = 64
KERNELS = ["cugn::exchange", "cugn::push", "cugn::coordinates", "cugn::misuse"]


def kernels(schedule=Schedule()):
    device = Device(variant=VARIANT, schedule=schedule, source=cuda_loader.source() + CLUSTERS)
    return device, device.compile(KERNELS)


def ranks(grid, cluster):
    """Each block's rank in its cluster, blocks in launch order (x fastest)."""
    z, y, x = np.meshgrid(*(np.arange(g) for g in reversed(grid)), indexing="ij")
    return ((x % cluster[0]) + cluster[0] * ((y % cluster[1]) + cluster[1] * (z % cluster[2])))\
        .reshape(-1)


def exchange(grid, cluster, schedule=Schedule(), shift=1, first_barrier=1, last_barrier=1,
             skipper=-1, stride=1):
    device, compiled = kernels(schedule)
    out = device.zeros(int(np.prod(grid)) * THREADS, np.float32)
    compiled["cugn::exchange"](grid, (THREADS,), (out, np.uint32(shift), np.int32(first_barrier),
                                                  np.int32(last_barrier), np.int32(skipper),
                                                  np.int32(stride)), cluster=cluster)
    return np.array(out).reshape(-1, THREADS)


SCHEDULES = [Schedule(), Schedule(thread_order="reversed"),
             Schedule(block_order="shuffled", seed=3)]
SHAPES = [((4, 1, 1), (2, 1, 1)), ((8, 1, 1), (4, 1, 1)), ((4, 2, 1), (2, 2, 1)),
          ((2, 4, 1), (1, 2, 1)), ((2, 2, 2), (2, 1, 2)), ((3, 1, 1), (1, 1, 1))]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["forward", "reversed", "shuffled"])
@pytest.mark.parametrize("grid, cluster", SHAPES, ids=lambda v: "x".join(map(str, v)))
def test_blocks_of_a_cluster_read_each_others_shared_memory(grid, cluster, schedule):
    out = exchange(grid, cluster, schedule)
    blocks = int(np.prod(cluster))
    source = (ranks(grid, cluster) + 1) % blocks
    expected = 1000 * source[:, None] + np.arange(THREADS)[::-1]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("schedule", SCHEDULES[:2], ids=["forward", "reversed"])
def test_blocks_write_into_each_others_shared_memory(schedule):
    device, compiled = kernels(schedule)
    grid, cluster = (8, 1, 1), (4, 1, 1)
    out = device.zeros(8 * THREADS, np.float32)
    compiled["cugn::push"](grid, (THREADS,), (out,), cluster=cluster)
    previous = (ranks(grid, cluster) - 1) % 4
    np.testing.assert_array_equal(np.array(out).reshape(8, THREADS),
                                  np.repeat(previous[:, None], THREADS, axis=1))


def test_the_cluster_built_ins():
    device, compiled = kernels()
    grid, cluster = (4, 6, 1), (2, 3, 1)
    out = device.zeros(24 * 8, np.uint32)
    compiled["cugn::coordinates"](grid, (32,), (out,), cluster=cluster)
    y, x = np.divmod(np.arange(24), 4)
    expected = np.stack([x % 2 + 2 * (y % 3), np.full(24, 6), np.full(24, 2), np.full(24, 3),
                         x // 2, y // 3, x % 2, y % 3], axis=1)
    np.testing.assert_array_equal(np.array(out).reshape(24, 8), expected)


def test_a_launch_without_clusters_is_a_cluster_of_one():
    out = exchange((3, 1, 1), (1, 1, 1), shift=0)
    np.testing.assert_array_equal(out, np.tile(np.arange(THREADS)[::-1], (3, 1)))


# ------------------------------------------------------------------ planted bugs


@pytest.mark.parametrize("schedule", SCHEDULES[:2], ids=["forward", "reversed"])
def test_reading_another_block_before_the_barrier_reads_nan(schedule):
    # The first block to run reads a block that has not run yet: the NaN its shared
    # memory was filled with, in either thread order.
    out = exchange((4, 1, 1), (2, 1, 1), schedule, first_barrier=0)
    assert np.isnan(out).any()


def test_a_block_that_leaves_before_another_reads_its_memory_fails():
    # Highest threads first: the last block runs past the first barrier to its end
    # before the first block reads its memory.
    with pytest.raises(KernelError, match="block rank 1, whose threads have all exited"):
        exchange((2, 1, 1), (2, 1, 1), Schedule(thread_order="reversed"), last_barrier=0)


def test_a_thread_that_skips_the_cluster_barrier_fails():
    # Block 0, then threads 64-68 of block 1, arrive before thread 69 (5 of block 1) leaves.
    with pytest.raises(KernelError, match="cluster of blocks \\(0, 0, 0\\) to \\(1, 0, 0\\): "
                                          "thread 69 exited while threads 0-68 wait at the "
                                          "cluster barrier"):
        exchange((2, 1, 1), (2, 1, 1), skipper=5)


def test_reading_past_the_end_of_another_blocks_array_fails():
    with pytest.raises(KernelError, match="distributed shared memory load of 4 bytes .* past "
                                          "the end of a shared array of block rank 1"):
        exchange((2, 1, 1), (2, 1, 1), stride=2)


@pytest.mark.parametrize("how, message", [
    (0, "thread 0 waits at the cluster barrier .* without having arrived at it"),
    (1, "thread 0 arrives at the cluster barrier .* again before waiting at it"),
    (2, "thread 0 maps shared memory of block rank 2 at __cluster_map_shared_rank .*; the "
        "cluster has 2 blocks"),
    (3, "thread 0 maps 0x[0-9a-f]+ at __cluster_map_shared_rank .*, which is not shared memory"),
])
def test_misuses_of_the_cluster_built_ins_fail(how, message):
    device, compiled = kernels()
    values = device.zeros(THREADS, np.float32)
    out = device.zeros(THREADS, np.float32)
    with pytest.raises(KernelError, match=message):
        compiled["cugn::misuse"]((2,), (THREADS,), (values, out, np.int32(how)), cluster=(2,))


def test_launches_the_harness_refuses():
    device, compiled = kernels()
    out = device.zeros(8 * THREADS, np.float32)
    args = (out, np.uint32(1), np.int32(1), np.int32(1), np.int32(-1), np.int32(1))
    with pytest.raises(ValueError, match="cluster must divide the grid"):
        compiled["cugn::exchange"]((3,), (THREADS,), args, cluster=(2,))
    with pytest.raises(ValueError, match="at most 16 blocks"):
        compiled["cugn::exchange"]((32,), (THREADS,), args, cluster=(32,))
    with pytest.raises(KernelError, match="a cluster's blocks must be whole warps"):
        compiled["cugn::exchange"]((2,), (48,), args, cluster=(2,))
    parallel, compiled = kernels(Schedule(parallel=True))
    with pytest.raises(ValueError, match="serial schedule only"):
        compiled["cugn::exchange"]((2,), (THREADS,),
                                   (parallel.zeros(2 * THREADS, np.float32),) + args[1:],
                                   cluster=(2,))


def test_nvrtc_compiles_these_kernels_for_sm_90_unchanged():
    binding = compile_check.nvrtc()
    program = binding.createProgram(CLUSTERS, "clusters.cu", [], [])
    try:
        for name in KERNELS:
            binding.addNameExpression(program, name)
        try:
            binding.compileProgram(program, ["--gpu-architecture=sm_90"])
        except binding.NVRTCError as error:
            raise AssertionError(f"{error}\n{binding.getProgramLog(program)}") from None
        assert binding.getCUBIN(program)
    finally:
        binding.destroyProgram(program)
