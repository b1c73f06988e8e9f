// Thread-block clusters (part of group_norm.cu): merges across the blocks of a
// cluster through distributed shared memory, for the on-chip tier.

namespace cugn {

// Clusters are sm_90's: below it the cluster kernels compile without their size
// or body (the planner launches them only on devices of compute capability 9.0
// and up). The CPU harness defines no __CUDA_ARCH__ and runs them, its launch
// giving the cluster's size.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define CUGN_CLUSTERS 1
#define CUGN_CLUSTER_DIMS(blocks) __cluster_dims__(blocks, 1, 1)
#else
#define CUGN_CLUSTERS 0
#define CUGN_CLUSTER_DIMS(blocks)
#endif

// This block's rank in its cluster of K blocks.
template <int K>
__device__ __forceinline__ unsigned cluster_rank() {
#if CUGN_CLUSTERS
  if constexpr (K > 1) return __clusterRelativeBlockRank();
#endif
  return 0;
}

// The merge, in rank order, of every block's `value` (thread 0's) in a cluster of
// K blocks, each left in `slot` of its own shared memory; thread 0 of every block
// gets the same result. Every thread of every block calls it (the cluster barrier);
// each exchange takes a slot of its own, and a block leaves only after
// cluster_leave, so that no slot is overwritten or freed while another block reads it.
template <int K, typename S>
__device__ __forceinline__ S cluster_merge(S value, S empty, S* slot) {
#if CUGN_CLUSTERS
  if constexpr (K > 1) {
    if (threadIdx.x == 0) *slot = value;
    __cluster_barrier_arrive();
    __cluster_barrier_wait();
    value = empty;
    if (threadIdx.x == 0) {
      for (unsigned rank = 0; rank < unsigned(K); ++rank) {
        value = merge(value, *static_cast<const S*>(__cluster_map_shared_rank(slot, rank)));
      }
    }
  }
#endif
  return value;
}

// After this block's last read of another's shared memory, and before it leaves:
// the cluster barrier in two halves, so that the stores in between wait for no one.
template <int K>
__device__ __forceinline__ void cluster_done_reading() {
#if CUGN_CLUSTERS
  if constexpr (K > 1) __cluster_barrier_arrive();
#endif
}

template <int K>
__device__ __forceinline__ void cluster_leave() {
#if CUGN_CLUSTERS
  if constexpr (K > 1) __cluster_barrier_wait();
#endif
}

}  // namespace cugn
