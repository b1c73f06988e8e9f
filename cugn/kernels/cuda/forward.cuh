// The forward's kernels off chip (part of group_norm.cu): a group's statistics over
// segment units or channels-last tiles, merged by forward_finalize when groups are
// split, then y in one elementwise pass.

namespace cugn {

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
                          I segments, Divisor<I> row, I stride, I split, I chunk, int unit_threads,
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
    const I end = min(k * chunk + chunk, segment.vectors);
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

// ------------------------------------------------------------------ finalize and apply

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

// y = act(a*(x - p) + b) with a = rstd*gamma[c] and b = beta[c] - a*(mean - p): the
// affine folded per (n, c), the shift by the pivot p keeping it exact for large means.
template <typename T, int V, typename I, bool CHANNELS_LAST, Activation ACT>
__global__ void __launch_bounds__(kBlock, kMinBlocks)
    forward_apply(const T* __restrict__ x, T* __restrict__ y,
                  const typename AccOf<T>::type* __restrict__ gamma,
                  const typename AccOf<T>::type* __restrict__ beta,
                  const typename AccOf<T>::type* __restrict__ rstd,
                  const typename AccOf<T>::type* __restrict__ pivot,
                  const typename AccOf<T>::type* __restrict__ shifted_mean, I vectors,
                  Divisor<I> spatial, Divisor<I> channels, I pitch, Divisor<I> group_channels,
                  I groups, Divisor<I> batch_stride) {
  typedef typename AccOf<T>::type A;
  for (I j = I(blockIdx.x) * I(kBlock) + I(threadIdx.x); j < vectors;
       j += I(gridDim.x) * I(kBlock)) {
    I n, c;
    const I address = locate<CHANNELS_LAST, V>(j * V, spatial, channels, pitch, batch_stride, n,
                                               c);
    const I q = n * groups + group_channels.divide(c);
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

}  // namespace cugn
