// GroupNorm kernels of cugn, compiled at run time by NVRTC (see cuda_loader.py).
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

// float16 as raw bits, converted with PTX: no header needed under NVRTC (NVRTC
// always defines __CUDA_ARCH__; the host build converts through _Float16).
struct Half {
  unsigned short bits;
};

// bfloat16 as raw bits: the high half of a float32, rounded to nearest even.
struct BFloat16 {
  unsigned short bits;
};

template <typename T>
struct AccOf {
  typedef float type;
};
template <>
struct AccOf<double> {
  typedef double type;
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(Half v) {
#ifdef __CUDA_ARCH__
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
#else  // the host build of the kernels (cuda_on_cpu): the compiler's IEEE half
  _Float16 h;
  __builtin_memcpy(&h, &v.bits, sizeof h);
  return float(h);
#endif
}

__device__ __forceinline__ float to_acc(BFloat16 v) {
  return __uint_as_float(static_cast<unsigned>(v.bits) << 16);
}

__device__ __forceinline__ void from_acc(float v, float& out) { out = v; }
__device__ __forceinline__ void from_acc(double v, double& out) { out = v; }
__device__ __forceinline__ void from_acc(float v, Half& out) {
#ifdef __CUDA_ARCH__
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(out.bits) : "f"(v));
#else  // round to nearest even, as cvt.rn
  const _Float16 h = _Float16(v);
  __builtin_memcpy(&out.bits, &h, sizeof h);
#endif
}
__device__ __forceinline__ void from_acc(float v, BFloat16& out) {
  const unsigned u = __float_as_uint(v);
  // NaN stays NaN (quieted); otherwise round the low 16 bits to nearest even.
  out.bits = (u & 0x7fffffffu) > 0x7f800000u
                 ? static_cast<unsigned short>((u >> 16) | 0x40u)
                 : static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// ------------------------------------------------------------------ vector access

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// The host build (cuda_on_cpu) reports a vector access a GPU would fault on: one at
// an address that is not a multiple of the vector's size.
template <int V, typename T, typename I>
__device__ __forceinline__ Pack<T, V> load_pack(const T* __restrict__ p, I vector_index) {
  const Pack<T, V>* address = reinterpret_cast<const Pack<T, V>*>(p) + vector_index;
#ifndef __CUDA_ARCH__
  cuda_on_cpu::check_vector_access(address, sizeof(Pack<T, V>), false);
#endif
  return *address;
}

template <int V, typename T, typename I>
__device__ __forceinline__ void store_pack(T* __restrict__ p, I vector_index,
                                           const Pack<T, V>& pack) {
  Pack<T, V>* address = reinterpret_cast<Pack<T, V>*>(p) + vector_index;
#ifndef __CUDA_ARCH__
  cuda_on_cpu::check_vector_access(address, sizeof(Pack<T, V>), true);
#endif
  *address = pack;
}

// A per-channel parameter (gamma or beta, in the accumulation type) at the V channels
// of a vector: channels c..c+V-1 with S == 1 (c % V == 0; the host passes the arrays
// 16-byte aligned, a window of them V values aligned), else channel c for all V;
// `absent` where the pointer is null.
// Loaded as vectors: a warp's lanes, V channels apart, then touch each cache line of
// the array once per vector rather than once per value.
template <bool CHANNELS_LAST, int V, typename A, typename I>
__device__ __forceinline__ Pack<A, V> channel_values(const A* __restrict__ p, I c, A absent) {
  Pack<A, V> values;
  if (CHANNELS_LAST && p != nullptr) {
    constexpr int W = V * sizeof(A) <= 16 ? V : 16 / int(sizeof(A));
#pragma unroll
    for (int k = 0; k < V; k += W) {
      const Pack<A, W> part = load_pack<W>(p, (c + I(k)) / I(W));
#pragma unroll
      for (int i = 0; i < W; ++i) values.v[k + i] = part.v[i];
    }
  } else {
    const A value = p == nullptr ? absent : p[c];
#pragma unroll
    for (int i = 0; i < V; ++i) values.v[i] = value;
  }
  return values;
}

// ------------------------------------------------------------------ reduction core

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

// ------------------------------------------------------------------ fused activations
//
// Keras's definitions: silu(z) = z*sigmoid(z) (also called swish), relu, and gelu
// exact (with erf). Compile-time, so that the plain kernels stay as they are.
enum Activation { kLinear = 0, kSilu = 1, kRelu = 2, kGelu = 3 };

template <Activation ACT, typename A>
__device__ __forceinline__ A activate(A z) {
  if constexpr (ACT == kSilu) {
    return z / (A(1) + exp(-z));
  } else if constexpr (ACT == kRelu) {
    return z < A(0) ? A(0) : z;  // NaN stays NaN
  } else if constexpr (ACT == kGelu) {
    return A(0.5) * z * (A(1) + erf(z * A(0.70710678118654752440)));
  } else {
    return z;
  }
}

// dy * act'(z); relu's slope at 0 is 0, as Keras's and PyTorch's.
template <Activation ACT, typename A>
__device__ __forceinline__ A through_activation(A dy, A z) {
  if constexpr (ACT == kSilu) {
    const A sigmoid = A(1) / (A(1) + exp(-z));
    return dy * (sigmoid * (A(1) + z * (A(1) - sigmoid)));
  } else if constexpr (ACT == kRelu) {
    return z > A(0) ? dy : A(0);
  } else if constexpr (ACT == kGelu) {
    return dy * (A(0.5) * (A(1) + erf(z * A(0.70710678118654752440))) +
                 z * exp(A(-0.5) * z * z) * A(0.39894228040143267794));
  } else {
    return dy;
  }
}

// The backward's view of one channel: z = scale*(x - mean) + shift, with
// scale = rstd*gamma[c] and shift = beta[c]; nothing is loaded without an activation.
template <Activation ACT, typename A>
struct Preactivation {
  A scale, shift;

  template <typename I>
  __device__ __forceinline__ Preactivation(const A* gamma, const A* beta, A rstd, I c)
      : scale(A(0)), shift(A(0)) {
    if constexpr (ACT != kLinear) {
      scale = gamma == nullptr ? rstd : rstd * gamma[c];
      shift = beta == nullptr ? A(0) : beta[c];
    }
  }

  // From rstd*gamma[c] and beta[c] themselves.
  __device__ __forceinline__ Preactivation(A channel_scale, A channel_shift)
      : scale(channel_scale), shift(channel_shift) {}

  // From the on-chip tier's per-channel table of rstd*gamma[c] and beta[c].
  template <typename I>
  __device__ __forceinline__ Preactivation(const A* scales, const A* shifts, I d)
      : scale(A(0)), shift(A(0)) {
    if constexpr (ACT != kLinear) {
      scale = scales[d];
      shift = shifts[d];
    }
  }

  // dy*act'(z) from dy and x - mean.
  __device__ __forceinline__ A gradient(A dy, A centered) const {
    return through_activation<ACT>(dy, scale * centered + shift);
  }
};

template <Activation ACT, int V, typename T, typename A>
__device__ __forceinline__ void add_pack(Sums<A>& s, const Pack<T, V>& x, const Pack<T, V>& dy,
                                         A mean, const Preactivation<ACT, A>& z) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const A centered = to_acc(x.v[i]) - mean;
    const A g = z.gradient(to_acc(dy.v[i]), centered);
    s.dy += g;
    s.dy_centered += g * centered;
    s.centered += centered;
  }
}

// ------------------------------------------------------------------ group statistics

// 1/sqrt(var + epsilon) of a group of `count` values from their Welford state.
template <typename A>
__device__ __forceinline__ A rstd_of(const Welford<A>& w, A count, A epsilon) {
  // Clamped at zero with a comparison, not max(), which would turn NaN (a group
  // holding NaN or infinity) into 0.
  A var = w.m2 / count;
  if (var < A(0)) var = A(0);
  const A denominator = var + epsilon;
  // rstd = 0 where var + epsilon == 0: a constant group with epsilon 0 maps to beta.
  return denominator == A(0) ? A(0) : A(1) / sqrt(denominator);
}

// The statistics of group q from the Welford state of its values less the pivot p
// (the group's first value): mean and rstd, and the pivot and pivot-relative mean
// the apply kernel uses. Written by the statistics kernels themselves when one
// unit of threads reduces a whole group, else by forward_finalize.
template <typename A, typename I>
__device__ __forceinline__ void write_statistics(const Welford<A>& w, A p, A count, A epsilon,
                                                 I q, A* __restrict__ mean, A* __restrict__ rstd,
                                                 A* __restrict__ pivot,
                                                 A* __restrict__ shifted_mean) {
  rstd[q] = rstd_of(w, count, epsilon);
  mean[q] = p + w.mean;
  pivot[q] = p;
  shifted_mean[q] = w.mean;
}

// ------------------------------------------------------------------ segment traversal
//
// A "segment unit" is `segments` rows of `row` vectors each, `stride` vectors apart:
// a group (n, g) is M rows of D*S values, C*S apart (the pitch of the whole input,
// also when a launch takes a window of its groups); a channel (n, c) with S > 1 is
// M rows of S values, C*S apart. A unit is split into `split` chunks of `chunk`
// vectors of its flattened (segment, position) index; `unit_threads` threads
// (a power of two <= 32 for small units, else the block) reduce one chunk.

template <typename I>
struct SegmentUnit {
  I base, row, stride, segments;

  // Unit `unit` of an input with `inner` units to a sample (its groups, or its
  // channels), side by side in each row.
  __device__ __forceinline__ static SegmentUnit of(I unit, I inner, I segments, I row, I stride) {
    return {(unit / inner) * segments * stride + (unit % inner) * row, row, stride, segments};
  }

  __device__ __forceinline__ I vectors() const { return segments * row; }

  // The offset, in vectors, of vector j of the unit's flattened (segment, position) index.
  __device__ __forceinline__ I offset(I j) const {
    return base + (segments == 1 ? j : (j / row) * stride + j % row);
  }
};

// Forward statistics over segment units (channels-first, general layouts, and
// channels-last with long groups). Without partials (split == 1: each unit is a
// whole group) the statistics are written here; else partials are (count, mean,
// m2), each an array of units*split values, indexed by unit*split + chunk, and
// forward_finalize merges them.
template <typename T, int V, typename I>
__global__ void __launch_bounds__(kBlock, kMinBlocks)
    forward_stats_segment(const T* __restrict__ x, typename AccOf<T>::type* __restrict__ partials,
                          typename AccOf<T>::type* __restrict__ mean,
                          typename AccOf<T>::type* __restrict__ rstd,
                          typename AccOf<T>::type* __restrict__ pivot,
                          typename AccOf<T>::type* __restrict__ shifted_mean, I units, I inner,
                          I segments, I row, I stride, I split, I chunk, int unit_threads,
                          typename AccOf<T>::type count, typename AccOf<T>::type epsilon) {
  typedef typename AccOf<T>::type A;
  const int lane = threadIdx.x & (unit_threads - 1);
  const I slot = I(blockIdx.x) * I(kBlock / unit_threads) + I(threadIdx.x / unit_threads);
  const I slots = units * split;
  Welford<A> w = empty_welford<A>();
  A p = A(0);
  if (slot < slots) {
    const I unit = slot / split;
    const I k = slot % split;
    const SegmentUnit<I> segment = SegmentUnit<I>::of(unit, inner, segments, row, stride);
    p = to_acc(x[segment.base * V]);
    const I end = min(k * chunk + chunk, segment.vectors());
#pragma unroll 4
    for (I j = k * chunk + I(lane); j < end; j += I(unit_threads)) {
      add_pack<V>(w, load_pack<V>(x, segment.offset(j)), p);
    }
  }
  w = unit_merge(w, empty_welford<A>(), unit_threads);
  if (lane == 0 && slot < slots) {
    if (partials == nullptr) {
      write_statistics(w, p, count, epsilon, slot, mean, rstd, pivot, shifted_mean);
    } else {
      partials[slot] = w.count;
      partials[slots + slot] = w.mean;
      partials[2 * slots + slot] = w.m2;
    }
  }
}

// ------------------------------------------------------------------ channels-last tiles
//
// With S == 1 a block covers a tile of `rows_per_block` pixel rows (strided over
// a chunk of `chunk_rows` pixels) by lanes*V channels (16-byte vectors along C).
// Block b is (n, column chunk h, row chunk k) with b = (n*column_chunks + h)*split + k.
// The launch sees `channels` channels per pixel row, rows `pitch` values apart: the
// whole input (pitch == channels), or a window of its groups (pitch: the input's C).

// Forward statistics for channels-last groups of D <= 32*V channels: the lanes of
// one group are merged by a segmented warp reduction of `merge_width` lanes (the
// lanes per group when that is a power of two, else 1), then rows and the rest of
// the group's lanes in shared memory in a fixed order. Without partials (split == 1)
// the groups' statistics are written here, as forward_stats_segment does.
template <typename T, int V, typename I>
__global__ void __launch_bounds__(kBlock, kMinBlocks)
    forward_stats_column(const T* __restrict__ x, typename AccOf<T>::type* __restrict__ partials,
                         typename AccOf<T>::type* __restrict__ mean,
                         typename AccOf<T>::type* __restrict__ rstd,
                         typename AccOf<T>::type* __restrict__ pivot,
                         typename AccOf<T>::type* __restrict__ shifted_mean, I rows, I channels,
                         I pitch, I group_channels, I groups, I column_chunks, I split,
                         I chunk_rows, int lanes, int rows_per_block, int merge_width,
                         typename AccOf<T>::type count, typename AccOf<T>::type epsilon) {
  typedef typename AccOf<T>::type A;
  __shared__ Welford<A> thread_results[kBlock];
  const int lane = threadIdx.x % lanes;
  const int row = threadIdx.x / lanes;
  const I k = I(blockIdx.x) % split;
  const I h = (I(blockIdx.x) / split) % column_chunks;
  const I n = I(blockIdx.x) / split / column_chunks;
  const I first_channel = h * I(lanes * V);
  const I c = first_channel + I(lane * V);
  Welford<A> w = empty_welford<A>();
  if (c < channels && row < rows_per_block) {
    const I g = c / group_channels;
    const A pivot = to_acc(x[n * rows * pitch + g * group_channels]);
    const I end = min(rows, k * chunk_rows + chunk_rows);
#pragma unroll 4
    for (I m = k * chunk_rows + I(row); m < end; m += I(rows_per_block)) {
      add_pack<V>(w, load_pack<V>(x, ((n * rows + m) * pitch + c) / V), pivot);
    }
  }
  w = warp_merge(w, merge_width);
  thread_results[threadIdx.x] = w;
  __syncthreads();
  const int group_lanes = int(group_channels) / V;
  if (threadIdx.x < lanes / group_lanes) {
    const I g = first_channel / group_channels + I(threadIdx.x);
    if (g < groups) {
      Welford<A> total = empty_welford<A>();
      for (int r = 0; r < rows_per_block; ++r) {
        for (int l = threadIdx.x * group_lanes; l < (threadIdx.x + 1) * group_lanes;
             l += merge_width) {
          total = merge(total, thread_results[r * lanes + l]);
        }
      }
      const I slots = I(gridDim.x) / column_chunks / split * groups * split;
      const I slot = (n * groups + g) * split + k;
      if (partials == nullptr) {  // split == 1: the block saw the whole group
        const A p = to_acc(x[n * rows * pitch + g * group_channels]);
        write_statistics(total, p, count, epsilon, slot, mean, rstd, pivot, shifted_mean);
      } else {
        partials[slot] = total.count;
        partials[slots + slot] = total.mean;
        partials[2 * slots + slot] = total.m2;
      }
    }
  }
}

// ------------------------------------------------------------------ forward

// One thread per group (n, g), after a split statistics pass: merges its `split`
// partials in order and writes the group's statistics.
template <typename T, typename I>
__global__ void __launch_bounds__(kBlock, kMinBlocks)
    forward_finalize(const T* __restrict__ x, const typename AccOf<T>::type* __restrict__ partials,
                     typename AccOf<T>::type* __restrict__ mean,
                     typename AccOf<T>::type* __restrict__ rstd,
                     typename AccOf<T>::type* __restrict__ pivot,
                     typename AccOf<T>::type* __restrict__ shifted_mean, I units, I split,
                     I groups, I batch_stride, I group_stride, typename AccOf<T>::type count,
                     typename AccOf<T>::type epsilon) {
  typedef typename AccOf<T>::type A;
  const I q = I(blockIdx.x) * I(kBlock) + I(threadIdx.x);
  if (q >= units) return;
  const I slots = units * split;
  Welford<A> w = empty_welford<A>();
  for (I k = 0; k < split; ++k) {
    const I slot = q * split + k;
    const Welford<A> part = {partials[slot], partials[slots + slot], partials[2 * slots + slot]};
    w = merge(w, part);
  }
  const A p = to_acc(x[(q / groups) * batch_stride + (q % groups) * group_stride]);
  write_statistics(w, p, count, epsilon, q, mean, rstd, pivot, shifted_mean);
}

// The (n, c) of the vector starting at element e of the launch's view, and its
// vector index in memory; with S == 1 (channels-last) the V values are channels
// c..c+V-1 of one group, in pixel rows `pitch` values apart (a window of the
// input's groups, or all of them: pitch == channels), else V positions of
// channel c, the view contiguous.
template <bool CHANNELS_LAST, int V, typename I>
__device__ __forceinline__ I locate(I e, I spatial, I channels, I pitch, I batch_stride, I& n,
                                    I& c) {
  n = e / batch_stride;
  if (!CHANNELS_LAST) {
    c = (e / spatial) % channels;
    return e / V;
  }
  const I pixel = e / channels;
  c = e - pixel * channels;
  return (pixel * pitch + c) / V;
}

// y = act(a*(x - p) + b) with a = rstd*gamma[c] and b = beta[c] - a*(mean - p): the
// affine folded per (n, c), the shift by the pivot p keeping it exact for large means.
template <typename T, int V, typename I, bool CHANNELS_LAST, Activation ACT>
__global__ void __launch_bounds__(kBlock, kMinBlocks)
    forward_apply(const T* __restrict__ x, T* __restrict__ y,
                  const typename AccOf<T>::type* __restrict__ gamma,
                  const typename AccOf<T>::type* __restrict__ beta,
                  const typename AccOf<T>::type* __restrict__ rstd,
                  const typename AccOf<T>::type* __restrict__ pivot,
                  const typename AccOf<T>::type* __restrict__ shifted_mean, I vectors, I spatial,
                  I channels, I pitch, I group_channels, I groups, I batch_stride) {
  typedef typename AccOf<T>::type A;
  for (I j = I(blockIdx.x) * I(kBlock) + I(threadIdx.x); j < vectors;
       j += I(gridDim.x) * I(kBlock)) {
    I n, c;
    const I address = locate<CHANNELS_LAST, V>(j * V, spatial, channels, pitch, batch_stride, n,
                                               c);
    const I q = n * groups + c / group_channels;
    const A r = rstd[q];
    const A p = pivot[q];
    const A m = shifted_mean[q];
    const Pack<A, V> weights = channel_values<CHANNELS_LAST, V>(gamma, c, A(1));
    const Pack<A, V> biases = channel_values<CHANNELS_LAST, V>(beta, c, A(0));
    const Pack<T, V> in = load_pack<V>(x, address);
    Pack<T, V> out;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const A a = r * weights.v[i];
      const A b = biases.v[i] - a * m;
      from_acc(activate<ACT>(a * (to_acc(in.v[i]) - p) + b), out.v[i]);
    }
    store_pack<V>(y, address, out);
  }
}

// ------------------------------------------------------------------ backward
//
// Partial sums of g, g*(x - mean) and x - mean per (n, chunk k, c), with g = dy
// (dy*act'(z) after an activation): three arrays of N*split*C values, indexed
// (n*split + k)*C + c. rstd, gamma and beta are read only with an activation.

// Channels with S > 1: segment units (n, c) of M rows of S values.
template <typename T, int V, typename I, Activation ACT>
__global__ void __launch_bounds__(kBlock, ACT == kLinear ? kMinBlocks : kMinBlocksActivated)
    backward_partials_segment(const T* __restrict__ x, const T* __restrict__ dy,
                              const typename AccOf<T>::type* __restrict__ mean,
                              const typename AccOf<T>::type* __restrict__ rstd,
                              const typename AccOf<T>::type* __restrict__ gamma,
                              const typename AccOf<T>::type* __restrict__ beta,
                              typename AccOf<T>::type* __restrict__ partials, I units,
                              I channels, I segments, I row, I split, I chunk, I group_channels,
                              I groups, int unit_threads) {
  typedef typename AccOf<T>::type A;
  const int lane = threadIdx.x & (unit_threads - 1);
  const I slot = I(blockIdx.x) * I(kBlock / unit_threads) + I(threadIdx.x / unit_threads);
  const I slots = units * split;
  const Sums<A> empty = {A(0), A(0), A(0)};
  Sums<A> s = empty;
  I n = 0, c = 0, k = 0;
  if (slot < slots) {
    const I unit = slot / split;
    k = slot % split;
    n = unit / channels;
    c = unit % channels;
    const SegmentUnit<I> segment =
        SegmentUnit<I>::of(unit, channels, segments, row, channels * row);
    const I q = n * groups + c / group_channels;
    const A mu = mean[q];
    const Preactivation<ACT, A> z(gamma, beta, ACT == kLinear ? A(0) : rstd[q], c);
    const I end = min(k * chunk + chunk, segment.vectors());
#pragma unroll(ACT == kLinear ? 4 : 1)
    for (I j = k * chunk + I(lane); j < end; j += I(unit_threads)) {
      const I offset = segment.offset(j);
      add_pack<ACT, V>(s, load_pack<V>(x, offset), load_pack<V>(dy, offset), mu, z);
    }
  }
  s = unit_merge(s, empty, unit_threads);
  if (lane == 0 && slot < slots) {
    const I index = (n * split + k) * channels + c;
    partials[index] = s.dy;
    partials[slots + index] = s.dy_centered;
    partials[2 * slots + index] = s.centered;
  }
}

// Channels-last (S == 1): each thread sums its V channels over its rows, then
// one thread per channel adds the block's rows in order.
template <typename T, int V, typename I, Activation ACT>
__global__ void __launch_bounds__(kBlock, ACT == kLinear ? kMinBlocks : kMinBlocksActivated)
    backward_partials_column(const T* __restrict__ x, const T* __restrict__ dy,
                             const typename AccOf<T>::type* __restrict__ mean,
                             const typename AccOf<T>::type* __restrict__ rstd,
                             const typename AccOf<T>::type* __restrict__ gamma,
                             const typename AccOf<T>::type* __restrict__ beta,
                             typename AccOf<T>::type* __restrict__ partials, I rows, I channels,
                             I pitch, I group_channels, I groups, I column_chunks, I split,
                             I chunk_rows, int lanes, int rows_per_block) {
  typedef typename AccOf<T>::type A;
  __shared__ A row_sums[3][kBlock * V];
  const int lane = threadIdx.x % lanes;
  const int row = threadIdx.x / lanes;
  const I k = I(blockIdx.x) % split;
  const I h = (I(blockIdx.x) / split) % column_chunks;
  const I n = I(blockIdx.x) / split / column_chunks;
  const I first_channel = h * I(lanes * V);
  const I c = first_channel + I(lane * V);
  A sum_dy[V], sum_dy_centered[V], sum_centered[V];
#pragma unroll
  for (int i = 0; i < V; ++i) sum_dy[i] = sum_dy_centered[i] = sum_centered[i] = A(0);
  if (c < channels && row < rows_per_block) {
    const I q = n * groups + c / group_channels;
    const A mu = mean[q];
    const A r = ACT == kLinear ? A(0) : rstd[q];
    const I end = min(rows, k * chunk_rows + chunk_rows);
#pragma unroll(ACT == kLinear ? 2 : 1)
    for (I m = k * chunk_rows + I(row); m < end; m += I(rows_per_block)) {
      const I offset = ((n * rows + m) * pitch + c) / V;
      const Pack<T, V> xs = load_pack<V>(x, offset);
      const Pack<T, V> gs = load_pack<V>(dy, offset);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const A centered = to_acc(xs.v[i]) - mu;
        // gamma and beta re-read per row (from L1) rather than held: the 3*V sums
        // already take most of the registers.
        const A g = Preactivation<ACT, A>(gamma, beta, r, c + I(i)).gradient(to_acc(gs.v[i]),
                                                                          centered);
        sum_dy[i] += g;
        sum_dy_centered[i] += g * centered;
        sum_centered[i] += centered;
      }
    }
  }
  if (row < rows_per_block) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      row_sums[0][threadIdx.x * V + i] = sum_dy[i];
      row_sums[1][threadIdx.x * V + i] = sum_dy_centered[i];
      row_sums[2][threadIdx.x * V + i] = sum_centered[i];
    }
  }
  __syncthreads();
  // Channels in this tile; thread (row, lane) wrote row*width + lane*V.
  const int width = lanes * V;
  const I slots = I(gridDim.x) / column_chunks * channels;
  for (int col = threadIdx.x; col < width; col += kBlock) {
    if (first_channel + I(col) >= channels) break;
    A total_dy = A(0), total_dy_centered = A(0), total_centered = A(0);
    for (int r = 0; r < rows_per_block; ++r) {
      total_dy += row_sums[0][r * width + col];
      total_dy_centered += row_sums[1][r * width + col];
      total_centered += row_sums[2][r * width + col];
    }
    const I index = (n * split + k) * channels + first_channel + I(col);
    partials[index] = total_dy;
    partials[slots + index] = total_dy_centered;
    partials[2 * slots + index] = total_centered;
  }
}

// The coefficients of dx = c1*dy + c2*(x - mean) + c3 of a group from its sums
// `s` of gamma*dy, gamma*dy*(x - mean) and x - mean. With the residual
// e = sum(x - mean) / count (x - mean - e is centred on the exact mean) and
// s = sum(gamma*dy*(x - mean)) - e*sum(gamma*dy) = sum(gamma*dy*(x - mean - e)):
// c2 = -rstd^3 * s / count and c3 = -rstd * sum(gamma*dy) / count - c2*e.
template <typename A>
__device__ __forceinline__ void group_coefficients(const Sums<A>& s, A r, A count, A& c2, A& c3,
                                                   A& residual) {
  const A e = s.centered / count;
  const A k2 = -r * r * ((s.dy_centered - e * s.dy) * r / count);
  c2 = k2;
  c3 = -r * (s.dy / count) - k2 * e;
  residual = e;
}

// One warp per group (n, g): the group sums of gamma*dy, gamma*dy*(x - mean) and
// x - mean over its D channels and split chunks, folded into the coefficients of dx.
template <typename T, typename I>
__global__ void __launch_bounds__(kBlock, kMinBlocks)
    backward_coefficients(const typename AccOf<T>::type* __restrict__ partials,
                          const typename AccOf<T>::type* __restrict__ gamma,
                          const typename AccOf<T>::type* __restrict__ rstd,
                          typename AccOf<T>::type* __restrict__ c2,
                          typename AccOf<T>::type* __restrict__ c3,
                          typename AccOf<T>::type* __restrict__ residual, I units, I groups,
                          I group_channels, I split, typename AccOf<T>::type count) {
  typedef typename AccOf<T>::type A;
  // Warp index computed without blockIdx.x * kBlock, which wraps in 32 bits from 2^27 groups.
  const I q = I(blockIdx.x) * I(kBlock / 32) + I(threadIdx.x / 32);
  const int lane = threadIdx.x & 31;
  if (q >= units) return;  // whole warps leave together
  const I n = q / groups;
  const I channels = groups * group_channels;
  const I slots = units / groups * split * channels;
  Sums<A> s = {A(0), A(0), A(0)};
  for (I t = I(lane); t < group_channels * split; t += 32) {
    const I c = (q % groups) * group_channels + t / split;
    const I index = (n * split + t % split) * channels + c;
    const A w = gamma == nullptr ? A(1) : gamma[c];
    s.dy += w * partials[index];
    s.dy_centered += w * partials[slots + index];
    s.centered += partials[2 * slots + index];
  }
  s = warp_merge(s, 32);
  if (lane == 0) group_coefficients(s, rstd[q], count, c2[q], c3[q], residual[q]);
}

// One thread per channel: dbeta = sum of dy, dgamma = sum of rstd * dy*(x - mean - e)
// with e the group's residual, over the batch and the chunks in order.
template <typename T, typename I>
__global__ void __launch_bounds__(kBlock, kMinBlocks)
    backward_parameters(const typename AccOf<T>::type* __restrict__ partials,
                        const typename AccOf<T>::type* __restrict__ rstd,
                        const typename AccOf<T>::type* __restrict__ residual,
                        typename AccOf<T>::type* __restrict__ dgamma,
                        typename AccOf<T>::type* __restrict__ dbeta, I batch, I channels,
                        I group_channels, I groups, I split) {
  typedef typename AccOf<T>::type A;
  const I c = I(blockIdx.x) * I(kBlock) + I(threadIdx.x);
  if (c >= channels) return;
  const I slots = batch * split * channels;
  A total_dy = A(0), total_dgamma = A(0);
  for (I n = 0; n < batch; ++n) {
    A dy = A(0), dy_centered = A(0);
    for (I k = 0; k < split; ++k) {
      const I index = (n * split + k) * channels + c;
      dy += partials[index];
      dy_centered += partials[slots + index];
    }
    const I q = n * groups + c / group_channels;
    total_dy += dy;
    total_dgamma += (dy_centered - residual[q] * dy) * rstd[q];
  }
  dbeta[c] = total_dy;
  dgamma[c] = total_dgamma;
}

// dx = rstd*gamma[c]*g + c2*(x - mean) + c3, with g = dy (dy*act'(z) after an activation).
template <typename T, int V, typename I, bool CHANNELS_LAST, Activation ACT>
__global__ void __launch_bounds__(kBlock, ACT == kLinear ? kMinBlocks : kMinBlocksActivated)
    backward_dx(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx,
                const typename AccOf<T>::type* __restrict__ gamma,
                const typename AccOf<T>::type* __restrict__ beta,
                const typename AccOf<T>::type* __restrict__ mean,
                const typename AccOf<T>::type* __restrict__ rstd,
                const typename AccOf<T>::type* __restrict__ c2,
                const typename AccOf<T>::type* __restrict__ c3, I vectors, I spatial,
                I channels, I pitch, I group_channels, I groups, I batch_stride) {
  typedef typename AccOf<T>::type A;
  for (I j = I(blockIdx.x) * I(kBlock) + I(threadIdx.x); j < vectors;
       j += I(gridDim.x) * I(kBlock)) {
    I n, c;
    const I address = locate<CHANNELS_LAST, V>(j * V, spatial, channels, pitch, batch_stride, n,
                                               c);
    const I q = n * groups + c / group_channels;
    const A mu = mean[q];
    const A r = rstd[q];
    const A k2 = c2[q];
    const A k3 = c3[q];
    Pack<A, V> weights = {};
    if constexpr (ACT == kLinear) weights = channel_values<CHANNELS_LAST, V>(gamma, c, A(1));
    const Pack<T, V> xs = load_pack<V>(x, address);
    const Pack<T, V> gs = load_pack<V>(dy, address);
    Pack<T, V> out;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      // With an activation, gamma and beta are read per value (from L1): held for the
      // whole vector, they would take registers its derivative needs (double spills).
      const I ci = CHANNELS_LAST ? c + I(i) : c;
      const A weight = ACT == kLinear ? weights.v[i] : gamma == nullptr ? A(1) : gamma[ci];
      const A shift = ACT == kLinear || beta == nullptr ? A(0) : beta[ci];
      const A k1 = r * weight;
      const A centered = to_acc(xs.v[i]) - mu;
      const A g = Preactivation<ACT, A>(k1, shift).gradient(to_acc(gs.v[i]), centered);
      from_acc(k1 * g + k2 * centered + k3, out.v[i]);
    }
    store_pack<V>(dx, address, out);
  }
}

// ------------------------------------------------------------------ on-chip tier
//
// A group whose slice fits in kOnChipBytes (its x forward; x and dy backward) and
// that has at most kOnChipChannels channels is normalised by one block that reads
// it from global memory once, into shared memory: 2|X| of traffic forward in one
// launch, 3|X| backward in two (the second, backward_parameters, sums dgamma and
// dbeta over the batch). The budget is static shared memory, small enough that
// several blocks stay resident per SM. The group's per-channel scale and shift
// (rstd*gamma[c] and beta[c], forward less the mean's share) go to a table in
// shared memory, so that gamma and beta are read once per group, not per value.
//
// A larger group (up to K times the budget) is normalised by a thread-block
// cluster of K blocks (sm_90: forward_on_chip_cluster, backward_on_chip_cluster,
// of a compile-time size): block rank r caches slice r of the group, and the
// blocks' partial sums meet through distributed shared memory, each block
// merging all of them in rank order, so every block holds the same statistics.
// The single-block kernels are the same code with K = 1.
//
// A group (n, g) is `segments` rows of `row` vectors, G*row vectors apart (the
// segment units above); the cache holds a block's slice of them in the order of
// their flattened (row, position) index j. Thread t loads and stores the vectors
// j = begin + t, begin + t + kBlock, ..., so the elementwise steps touch only its
// own cached vectors (no barrier).

// Bytes of shared memory a block caches its group in, and the most channels a
// group may have: cuda_plan.ON_CHIP_BYTES and ON_CHIP_CHANNELS, passed by the
// loader as -DCUGN_ON_CHIP_BYTES and -DCUGN_ON_CHIP_CHANNELS.
constexpr int kOnChipBytes = CUGN_ON_CHIP_BYTES;
constexpr int kOnChipChannels = CUGN_ON_CHIP_CHANNELS;

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

// The Welford state of `count` values from their sum and sum of squares about an
// origin close to their mean (the corrected two-pass formula m2 = squares - sum^2/count).
template <typename A>
__device__ __forceinline__ Welford<A> welford_of_sums(A count, A sum, A squares) {
  if (count == A(0)) return empty_welford<A>();
  const A mean = divide(sum, count);
  const Welford<A> w = {count, mean, squares - mean * sum};
  return w;
}

// The channel, within its group, of value i of the vector at `position` in its row:
// with S == 1 the V values are V channels, else V positions of one channel.
template <bool CHANNELS_LAST, int V, typename I>
__device__ __forceinline__ I channel_in_group(I position, int i, I spatial) {
  return CHANNELS_LAST ? position * I(V) + I(i) : position * I(V) / spatial;
}

// Group q as a segment unit (vector j at offset(j) of the input); block `rank` of K
// caches vectors begin..end-1 (vector j at j - begin of its cache): whole rows when
// the group has several, else whole channels.
template <typename I>
struct CachedGroup {
  SegmentUnit<I> group;
  I begin, end;

  template <bool CHANNELS_LAST, int V, int K>
  __device__ __forceinline__ static CachedGroup of(I q, I groups, I segments, I row, I spatial,
                                                   unsigned rank) {
    CachedGroup cached;
    cached.group = SegmentUnit<I>::of(q, groups, segments, row, groups * row);
    const I vectors = cached.group.vectors();
    cached.begin = 0;
    cached.end = vectors;
    if constexpr (K > 1) {
      const I granule = segments > 1 ? row : CHANNELS_LAST ? I(1) : spatial / I(V);
      const I share = (vectors / granule + I(K) - 1) / I(K) * granule;
      cached.begin = min(I(rank) * share, vectors);
      cached.end = min(cached.begin + share, vectors);
    }
    return cached;
  }

  __device__ __forceinline__ I offset(I j) const { return group.offset(j); }
};

// The exact two-pass statistics of a group held in shared memory, then
// y = act(a*(x - mu) + b) from the cache. The first pass sums x - p as the group is
// read (p, each thread's first value, keeps the sums small when |mean| >> std),
// for the mean mu; the second sums x - mu and its squares from the cache, for m2
// and the residual e = mean(x - mu), which the saved mean mu + e and the shift
// b = beta[c] - a*e take in, as forward_apply's pivot and shifted mean. With K > 1
// blocks a group, each pass's sums are merged across the cluster.
template <typename T, int V, typename I, bool CHANNELS_LAST, Activation ACT, int K>
__device__ __forceinline__ void normalize_on_chip(
    const T* __restrict__ x, T* __restrict__ y, const typename AccOf<T>::type* __restrict__ gamma,
    const typename AccOf<T>::type* __restrict__ beta, typename AccOf<T>::type* __restrict__ mean,
    typename AccOf<T>::type* __restrict__ rstd, I groups, I segments, I row, I group_channels,
    I spatial, typename AccOf<T>::type count, typename AccOf<T>::type epsilon) {
  typedef typename AccOf<T>::type A;
  __shared__ Pack<T, V> cache[kOnChipBytes / sizeof(Pack<T, V>)];
  __shared__ A scale[kOnChipChannels];
  __shared__ A shift[kOnChipChannels];
  __shared__ A broadcast[3];
  __shared__ Welford<A> exchanged[2];
  const I q = I(blockIdx.x) / I(K);
  const unsigned rank = cluster_rank<K>();
  const CachedGroup<I> cached =
      CachedGroup<I>::template of<CHANNELS_LAST, V, K>(q, groups, segments, row, spatial, rank);
  A p = A(0), sum = A(0);
  I held = 0;  // vectors this thread holds
#pragma unroll 4
  for (I j = cached.begin + I(threadIdx.x); j < cached.end; j += I(kBlock)) {
    const Pack<T, V> pack = load_pack<V>(x, cached.offset(j));
    cache[j - cached.begin] = pack;
    if (held == 0) p = to_acc(pack.v[0]);
#pragma unroll
    for (int i = 0; i < V; ++i) sum += to_acc(pack.v[i]) - p;
    ++held;
  }
  const A values = A(held * I(V));
  // The first pass wants the mean alone: its m2 is not used.
  Welford<A> w = welford_of_sums(values, sum, A(0));
  w.mean += p;
  w = block_merge(w, empty_welford<A>());
  w = cluster_merge<K>(w, empty_welford<A>(), &exchanged[0]);
  if (threadIdx.x == 0) broadcast[0] = w.mean;
  __syncthreads();
  const A mu = broadcast[0];
  A centered = A(0), squares = A(0);
#pragma unroll 4
  for (I j = cached.begin + I(threadIdx.x); j < cached.end; j += I(kBlock)) {
    const Pack<T, V> pack = cache[j - cached.begin];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const A d = to_acc(pack.v[i]) - mu;
      centered += d;
      squares += d * d;
    }
  }
  w = block_merge(welford_of_sums(values, centered, squares), empty_welford<A>());
  w = cluster_merge<K>(w, empty_welford<A>(), &exchanged[1]);
  cluster_done_reading<K>();
  if (threadIdx.x == 0) {
    const A r = rstd_of(w, count, epsilon);
    if (rank == 0) {
      rstd[q] = r;
      mean[q] = mu + w.mean;
    }
    broadcast[1] = r;
    broadcast[2] = w.mean;
  }
  __syncthreads();
  const I first_channel = (q % groups) * group_channels;
  for (I d = I(threadIdx.x); d < group_channels; d += I(kBlock)) {
    const A a = gamma == nullptr ? broadcast[1] : broadcast[1] * gamma[first_channel + d];
    scale[d] = a;
    shift[d] = (beta == nullptr ? A(0) : beta[first_channel + d]) - a * broadcast[2];
  }
  __syncthreads();
  for (I j = cached.begin + I(threadIdx.x); j < cached.end; j += I(kBlock)) {
    const Pack<T, V> in = cache[j - cached.begin];
    const I position = j % row;
    Pack<T, V> out;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const I d = channel_in_group<CHANNELS_LAST, V>(position, i, spatial);
      from_acc(activate<ACT>(scale[d] * (to_acc(in.v[i]) - mu) + shift[d]), out.v[i]);
    }
    store_pack<V>(y, cached.offset(j), out);
  }
  cluster_leave<K>();
}

// One block per group.
template <typename T, int V, typename I, bool CHANNELS_LAST, Activation ACT>
__global__ void __launch_bounds__(kBlock, kMinBlocks)
    forward_on_chip(const T* __restrict__ x, T* __restrict__ y,
                    const typename AccOf<T>::type* __restrict__ gamma,
                    const typename AccOf<T>::type* __restrict__ beta,
                    typename AccOf<T>::type* __restrict__ mean,
                    typename AccOf<T>::type* __restrict__ rstd, I groups, I segments, I row,
                    I group_channels, I spatial, typename AccOf<T>::type count,
                    typename AccOf<T>::type epsilon) {
  normalize_on_chip<T, V, I, CHANNELS_LAST, ACT, 1>(x, y, gamma, beta, mean, rstd, groups,
                                                    segments, row, group_channels, spatial, count,
                                                    epsilon);
}

// A cluster of K blocks per group (sm_90).
template <typename T, int V, typename I, bool CHANNELS_LAST, Activation ACT, int K>
__global__ void CUGN_CLUSTER_DIMS(K) __launch_bounds__(kBlock, kMinBlocks)
    forward_on_chip_cluster(const T* __restrict__ x, T* __restrict__ y,
                            const typename AccOf<T>::type* __restrict__ gamma,
                            const typename AccOf<T>::type* __restrict__ beta,
                            typename AccOf<T>::type* __restrict__ mean,
                            typename AccOf<T>::type* __restrict__ rstd, I groups, I segments,
                            I row, I group_channels, I spatial, typename AccOf<T>::type count,
                            typename AccOf<T>::type epsilon) {
#if CUGN_CLUSTERS
  normalize_on_chip<T, V, I, CHANNELS_LAST, ACT, K>(x, y, gamma, beta, mean, rstd, groups,
                                                    segments, row, group_channels, spatial, count,
                                                    epsilon);
#endif
}

// The element of value t (of segments*S) of channel d in a cached group of
// `segments` rows of D*S values.
template <bool CHANNELS_LAST, typename I>
__device__ __forceinline__ I cached_index(I t, I d, I segments, I group_channels, I spatial) {
  if (CHANNELS_LAST) return t * group_channels + d;
  return segments == 1 ? d * spatial + t
                       : ((t / spatial) * group_channels + d) * spatial + t % spatial;
}

// The backward of a group held in shared memory: x and dy read once; per channel,
// `unit_threads` lanes (a power of two <= 32) sum g, g*(x - mean) and x - mean
// from the cache (g = dy, or dy*act'(z) with an activation) and write the first
// two as the (n, c) partials backward_parameters takes (split K: two arrays of
// N*K*C values, indexed (n*K + rank)*C + c; a block's slice of whole channels
// leaves zeros for the others); the channels' sums, gamma-weighted and merged
// across the cluster, give the group's coefficients and residual, and dx is
// written from the cache. The table holds c1 = rstd*gamma[c] (also z's scale)
// and beta[c] (z's shift).
template <typename T, int V, typename I, bool CHANNELS_LAST, Activation ACT, int K>
__device__ __forceinline__ void differentiate_on_chip(
    const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx,
    const typename AccOf<T>::type* __restrict__ gamma,
    const typename AccOf<T>::type* __restrict__ beta,
    const typename AccOf<T>::type* __restrict__ mean,
    const typename AccOf<T>::type* __restrict__ rstd,
    typename AccOf<T>::type* __restrict__ partials, typename AccOf<T>::type* __restrict__ residual,
    I groups, I segments, I row, I group_channels, I spatial, int unit_threads,
    typename AccOf<T>::type count) {
  typedef typename AccOf<T>::type A;
  __shared__ Pack<T, V> x_cache[kOnChipBytes / 2 / sizeof(Pack<T, V>)];
  __shared__ Pack<T, V> dy_cache[kOnChipBytes / 2 / sizeof(Pack<T, V>)];
  __shared__ A scale[kOnChipChannels];
  __shared__ A shift[kOnChipChannels];
  __shared__ A broadcast[4];
  __shared__ Sums<A> exchanged[1];
  const I q = I(blockIdx.x) / I(K);
  const unsigned rank = cluster_rank<K>();
  const CachedGroup<I> cached =
      CachedGroup<I>::template of<CHANNELS_LAST, V, K>(q, groups, segments, row, spatial, rank);
  const I first_channel = (q % groups) * group_channels;
  if (threadIdx.x == 0) {
    broadcast[0] = mean[q];
    broadcast[1] = rstd[q];
  }
  for (I d = I(threadIdx.x); d < group_channels; d += I(kBlock)) {
    scale[d] = gamma == nullptr ? rstd[q] : rstd[q] * gamma[first_channel + d];
    if constexpr (ACT != kLinear) shift[d] = beta == nullptr ? A(0) : beta[first_channel + d];
  }
#pragma unroll(ACT == kLinear ? 4 : 2)
  for (I j = cached.begin + I(threadIdx.x); j < cached.end; j += I(kBlock)) {
    const I offset = cached.offset(j);
    x_cache[j - cached.begin] = load_pack<V>(x, offset);
    dy_cache[j - cached.begin] = load_pack<V>(dy, offset);
  }
  __syncthreads();  // the channels' sums read every thread's vectors and the table
  const A mu = broadcast[0];
  const A r = broadcast[1];
  const T* xs = reinterpret_cast<const T*>(x_cache);
  const T* gs = reinterpret_cast<const T*>(dy_cache);
  const I channels = groups * group_channels;
  const I index = ((q / groups) * I(K) + I(rank)) * channels + first_channel;  // channel 0's
  const I slots = I(gridDim.x) / groups * channels;
  // The block's slice: rows (all channels), or channels d0..d1-1 of a one-row group.
  const I cached_segments = segments > 1 ? (cached.end - cached.begin) / row : I(1);
  const I d0 = segments > 1 ? I(0) : channel_in_group<CHANNELS_LAST, V>(cached.begin, 0, spatial);
  const I d1 = segments > 1 ? group_channels
                            : channel_in_group<CHANNELS_LAST, V>(cached.end, 0, spatial);
  const I channel_values = cached_segments * spatial;
  const int lane = threadIdx.x & (unit_threads - 1);
  const int units = kBlock / unit_threads;
  const Sums<A> empty = {A(0), A(0), A(0)};
  Sums<A> group = empty;  // gamma-weighted, on the first lane of each unit
  // Rounds over the channels, the same count for every thread: the lanes of a unit
  // merge with shuffles, which every lane of the warp must reach.
  for (I first = 0; first < group_channels; first += I(units)) {
    const I d = first + I(threadIdx.x / unit_threads);
    Sums<A> s = empty;
    if (d0 <= d && d < d1) {
      const Preactivation<ACT, A> z(scale, shift, d);
#pragma unroll(ACT == kLinear ? 4 : 1)
      for (I t = I(lane); t < channel_values; t += I(unit_threads)) {
        const I k = cached_index<CHANNELS_LAST>(t, d - d0, cached_segments, group_channels,
                                                spatial);
        const A c = to_acc(xs[k]) - mu;
        const A g = z.gradient(to_acc(gs[k]), c);
        s.dy += g;
        s.dy_centered += g * c;
        s.centered += c;
      }
    }
    s = warp_merge(s, unit_threads);
    if (lane == 0 && d < group_channels) {
      partials[index + d] = s.dy;
      partials[slots + index + d] = s.dy_centered;
      const A w = gamma == nullptr ? A(1) : gamma[first_channel + d];
      group.dy += w * s.dy;
      group.dy_centered += w * s.dy_centered;
      group.centered += s.centered;
    }
  }
  group = block_merge(group, empty);
  group = cluster_merge<K>(group, empty, &exchanged[0]);
  cluster_done_reading<K>();
  if (threadIdx.x == 0) {
    A e;
    group_coefficients(group, r, count, broadcast[2], broadcast[3], e);
    if (rank == 0) residual[q] = e;
  }
  __syncthreads();
  const A k2 = broadcast[2];
  const A k3 = broadcast[3];
#pragma unroll(ACT == kLinear ? 4 : 1)
  for (I j = cached.begin + I(threadIdx.x); j < cached.end; j += I(kBlock)) {
    const I position = j % row;
    // dx replaces dy in the thread's own cached vector, value by value: with an
    // activation (erf and exp, in double for double) the values go one at a time,
    // where V of them at once would spill.
    T* out = dy_cache[j - cached.begin].v;
#pragma unroll(ACT == kLinear ? V : 1)
    for (int i = 0; i < V; ++i) {
      const I d = channel_in_group<CHANNELS_LAST, V>(position, i, spatial);
      const A centered = to_acc(x_cache[j - cached.begin].v[i]) - mu;
      const A g = Preactivation<ACT, A>(scale, shift, d).gradient(to_acc(out[i]), centered);
      from_acc(scale[d] * g + k2 * centered + k3, out[i]);
    }
    store_pack<V>(dx, cached.offset(j), dy_cache[j - cached.begin]);
  }
  cluster_leave<K>();
}

// One block per group.
template <typename T, int V, typename I, bool CHANNELS_LAST, Activation ACT>
__global__ void __launch_bounds__(kBlock, ACT == kLinear ? kMinBlocks : kMinBlocksActivated)
    backward_on_chip(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx,
                     const typename AccOf<T>::type* __restrict__ gamma,
                     const typename AccOf<T>::type* __restrict__ beta,
                     const typename AccOf<T>::type* __restrict__ mean,
                     const typename AccOf<T>::type* __restrict__ rstd,
                     typename AccOf<T>::type* __restrict__ partials,
                     typename AccOf<T>::type* __restrict__ residual, I groups, I segments,
                     I row, I group_channels, I spatial, int unit_threads,
                     typename AccOf<T>::type count) {
  differentiate_on_chip<T, V, I, CHANNELS_LAST, ACT, 1>(x, dy, dx, gamma, beta, mean, rstd,
                                                        partials, residual, groups, segments, row,
                                                        group_channels, spatial, unit_threads,
                                                        count);
}

// A cluster of K blocks per group (sm_90). It keeps more indices than the one-block
// kernel (its share of the rows or channels): held to kMinBlocks, the float64 ones
// with 64-bit indices would spill.
template <typename T, int V, typename I, bool CHANNELS_LAST, Activation ACT, int K>
__global__ void CUGN_CLUSTER_DIMS(K) __launch_bounds__(kBlock, kMinBlocksActivated)
    backward_on_chip_cluster(const T* __restrict__ x, const T* __restrict__ dy,
                                 T* __restrict__ dx,
                                 const typename AccOf<T>::type* __restrict__ gamma,
                                 const typename AccOf<T>::type* __restrict__ beta,
                                 const typename AccOf<T>::type* __restrict__ mean,
                                 const typename AccOf<T>::type* __restrict__ rstd,
                                 typename AccOf<T>::type* __restrict__ partials,
                                 typename AccOf<T>::type* __restrict__ residual, I groups,
                                 I segments, I row, I group_channels, I spatial,
                                 int unit_threads, typename AccOf<T>::type count) {
#if CUGN_CLUSTERS
  differentiate_on_chip<T, V, I, CHANNELS_LAST, ACT, K>(x, dy, dx, gamma, beta, mean, rstd,
                                                        partials, residual, groups, segments, row,
                                                        group_channels, spatial, unit_threads,
                                                        count);
#endif
}

}  // namespace cugn
