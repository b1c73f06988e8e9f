// The reduction core (part of group_norm.cu), the one every kernel merges with:
// Welford states forward, sums backward, merged across lanes, warps and blocks
// (and thread-block clusters, cluster.cuh) in an order fixed by the launch shape.

namespace cugn {

__device__ __forceinline__ float divide(float a, float b) { return __fdividef(a, b); }
__device__ __forceinline__ double divide(double a, double b) { return a / b; }

// Count, mean and sum of squared deviations of the values seen (Welford), merged
// across lanes, warps and blocks with Chan's formula. The forward feeds it values
// shifted by a per-group pivot (the group's first element), so the mean it tracks
// is small and exact even when |mean| >> std.
template <typename A>
struct Welford {
  A count, mean, m2;
};

template <typename A>
__device__ __forceinline__ Welford<A> empty_welford() {
  Welford<A> w = {A(0), A(0), A(0)};
  return w;
}

template <typename A>
__device__ __forceinline__ Welford<A> merge(const Welford<A>& a, const Welford<A>& b) {
  if (b.count == A(0)) return a;
  if (a.count == A(0)) return b;
  Welford<A> r;
  r.count = a.count + b.count;
  const A delta = b.mean - a.mean;
  const A weight = divide(b.count, r.count);
  r.mean = a.mean + delta * weight;
  r.m2 = a.m2 + b.m2 + delta * delta * a.count * weight;
  return r;
}

// The backward's running sums of dy, dy * (x - mean) and x - mean.
template <typename A>
struct Sums {
  A dy, dy_centered, centered;
};

template <typename A>
__device__ __forceinline__ Sums<A> merge(const Sums<A>& a, const Sums<A>& b) {
  Sums<A> r = {a.dy + b.dy, a.dy_centered + b.dy_centered, a.centered + b.centered};
  return r;
}

template <typename A>
__device__ __forceinline__ Welford<A> shuffle_xor(const Welford<A>& w, int offset) {
  Welford<A> r;
  r.count = __shfl_xor_sync(0xffffffffu, w.count, offset);
  r.mean = __shfl_xor_sync(0xffffffffu, w.mean, offset);
  r.m2 = __shfl_xor_sync(0xffffffffu, w.m2, offset);
  return r;
}

template <typename A>
__device__ __forceinline__ Sums<A> shuffle_xor(const Sums<A>& s, int offset) {
  Sums<A> r;
  r.dy = __shfl_xor_sync(0xffffffffu, s.dy, offset);
  r.dy_centered = __shfl_xor_sync(0xffffffffu, s.dy_centered, offset);
  r.centered = __shfl_xor_sync(0xffffffffu, s.centered, offset);
  return r;
}

// Segmented warp reduction: merges every aligned run of `width` lanes (a power of
// two <= 32); the first lane of each run holds its result. Every lane of the warp
// must call it.
template <typename S>
__device__ __forceinline__ S warp_merge(S value, int width) {
  for (int offset = width >> 1; offset > 0; offset >>= 1) {
    value = merge(value, shuffle_xor(value, offset));
  }
  return value;
}

// Whole-block reduction: shuffles within warps, shared memory across warps only.
// Thread 0 holds the result. Every thread of the block must call it.
template <typename S>
__device__ __forceinline__ S block_merge(S value, S empty) {
  __shared__ S warp_results[kBlock / 32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  value = warp_merge(value, 32);
  if (lane == 0) warp_results[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < kBlock / 32 ? warp_results[lane] : empty;
    value = warp_merge(value, kBlock / 32);
  }
  return value;
}

// A unit of `unit_threads` threads (a power of two <= 32, or the whole block).
template <typename S>
__device__ __forceinline__ S unit_merge(S value, S empty, int unit_threads) {
  return unit_threads <= 32 ? warp_merge(value, unit_threads) : block_merge(value, empty);
}

// A vector's values less the pivot into a Welford state: the vector's own mean and
// m2 (two passes over its V values in registers), merged in with Chan's formula, so
// one division per vector rather than one per value. From the empty state the merge
// gives the vector's statistics exactly.
template <int V, typename T, typename A>
__device__ __forceinline__ void add_pack(Welford<A>& w, const Pack<T, V>& pack, A pivot) {
  A values[V];
  A sum = A(0);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    values[i] = to_acc(pack.v[i]) - pivot;
    sum += values[i];
  }
  const A mean = sum * (A(1) / A(V));  // V is a power of two: exact
  A m2 = A(0);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const A d = values[i] - mean;
    m2 += d * d;
  }
  const Welford<A> vector = {A(V), mean, m2};
  w = merge(w, vector);
}

// The Welford state of `count` values from their sum and sum of squares about an
// origin close to their mean (the corrected two-pass formula m2 = squares - sum^2/count).
template <typename A>
__device__ __forceinline__ Welford<A> welford_of_sums(A count, A sum, A squares) {
  if (count == A(0)) return empty_welford<A>();
  const A mean = divide(sum, count);
  const Welford<A> w = {count, mean, squares - mean * sum};
  return w;
}

}  // namespace cugn
