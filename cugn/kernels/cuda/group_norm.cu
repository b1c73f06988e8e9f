// GroupNorm kernels of cugn, compiled at run time by NVRTC (see cuda_loader.py).
// This file includes the others of its folder, one concern each, in the order
// they build on each other; the loader inlines them (cuda_loader.source), so that
// NVRTC, CuPy's kernel cache and the CPU harness all see the one text.
//
// Every kernel sees its input through the (N, M, G, D, S) view of layout.py, made
// contiguous: element (n, m, g, d, s) lies at (((n*M + m)*G + g)*D + d)*S + s, and
// C = G*D. Template parameters:
//   T  storage type: Half, BFloat16, float or double;
//   A  accumulation type, AccOf<T>: double for double, float for the others;
//   V  values of T per vector access (V*sizeof(T) <= 16 bytes);
//   I  index type: unsigned int below 2^31 elements, unsigned long long above;
//   ACT  the activation fused into the forward's store (kLinear: none).
//
// Forward:  statistics (partials -> finalize when groups are split) -> apply
//           y = act(a*(x - p) + b).
// Backward: per-channel partial sums -> group coefficients, dgamma and dbeta -> dx.
// On chip, for a group that fits in one block's shared memory (or, on sm_90, in
// those of a cluster of K blocks: the *_cluster kernels, K a template parameter):
// forward_on_chip alone; backward_on_chip (the sums, the coefficients and dx) ->
// backward_parameters.
// With an activation, the backward recomputes its input z from x, mean and rstd
// and takes dy*act'(z) for dy throughout (no extra tensor saved by the forward).
// The backward also sums x - mean: the saved mean is rounded to the accumulation
// type, which matters when |mean| >> std, and the mean of x - mean over the group
// (the residual) corrects for it, as the NumPy path does.
// Every reduction runs in an order fixed by the launch shape alone (no float
// atomics), so the same input gives bitwise the same results for the same launch
// shape: on one GPU model, with the same alignment of the arrays.

namespace cugn {

// Threads per block of every kernel: the launch planner's cuda_plan.BLOCK, passed
// by the loader as -DCUGN_BLOCK so that the two cannot disagree.
constexpr int kBlock = CUGN_BLOCK;
// Resident blocks per SM asked of ptxas (<= 64 registers a thread). Without an
// explicit minimum, ptxas 13 picks a tighter register target for some
// instantiations and spills; with it none spills (python -m cugn.kernels).
constexpr int kMinBlocks = 4;
// The backward kernels with an activation recompute it from x (erf and exp, in
// double for double): held to kMinBlocks, or unrolled as the plain ones, they
// would spill, so they ask for fewer blocks and unroll less.
constexpr int kMinBlocksActivated = 3;

}  // namespace cugn

#include "storage.cuh"     // storage types, vector loads and stores
#include "reduction.cuh"   // the reduction core: Welford states, sums, their merges
#include "activation.cuh"  // the fused activations
#include "traversal.cuh"   // how threads walk the view: segment units, tiles, (n, c)
#include "forward.cuh"     // statistics, finalize, apply
#include "backward.cuh"    // partial sums, coefficients, parameters, dx
#include "cluster.cuh"     // merges across a thread-block cluster (sm_90)
#include "on_chip.cuh"     // the on-chip tier: a group read once
