// The on-chip tier (part of group_norm.cu): a group read once into shared memory.
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
// A group (n, g) is `segments` rows of `row` vectors, G*row vectors apart (a
// segment unit, traversal.cuh); the cache holds a block's slice of them in the
// order of their flattened (row, position) index j. Thread t loads and stores the
// vectors j = begin + t, begin + t + kBlock, ..., so the elementwise steps touch
// only its own cached vectors (no barrier).

namespace cugn {

// Bytes of shared memory a block caches its group in, and the most channels a
// group may have: cuda_plan.ON_CHIP_BYTES and ON_CHIP_CHANNELS, passed by the
// loader as -DCUGN_ON_CHIP_BYTES and -DCUGN_ON_CHIP_CHANNELS.
constexpr int kOnChipBytes = CUGN_ON_CHIP_BYTES;
constexpr int kOnChipChannels = CUGN_ON_CHIP_CHANNELS;

// The channel, within its group, of value i of the vector at `position` in its row:
// with S == 1 the V values are V channels, else V positions of one channel.
template <bool CHANNELS_LAST, int V, typename I>
__device__ __forceinline__ I channel_in_group(I position, int i, const Divisor<I>& spatial) {
  return CHANNELS_LAST ? position * I(V) + I(i) : spatial.divide(position * I(V));
}

// Group q as a segment unit (vector j at offset(j) of the input); block `rank` of K
// caches vectors begin..end-1 (vector j at j - begin of its cache): whole rows when
// the group has several, else whole channels.
template <typename I>
struct CachedGroup {
  SegmentUnit<I> group;
  I begin, end;

  template <bool CHANNELS_LAST, int V, int K>
  __device__ __forceinline__ static CachedGroup of(I q, I groups, I segments, Divisor<I> row,
                                                   Divisor<I> spatial, unsigned rank) {
    CachedGroup cached;
    cached.group = SegmentUnit<I>::of(q, groups, segments, row, groups * row.value);
    const I vectors = cached.group.vectors;
    cached.begin = 0;
    cached.end = vectors;
    if constexpr (K > 1) {
      const I granule = segments > 1 ? row.value : CHANNELS_LAST ? I(1) : spatial.value / I(V);
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
    typename AccOf<T>::type* __restrict__ rstd, I groups, I segments, Divisor<I> row,
    I group_channels, Divisor<I> spatial, typename AccOf<T>::type count,
    typename AccOf<T>::type epsilon) {
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
    const I position = row.remainder(j);
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
                    typename AccOf<T>::type* __restrict__ rstd, I groups, I segments,
                    Divisor<I> row, I group_channels, Divisor<I> spatial,
                    typename AccOf<T>::type count, typename AccOf<T>::type epsilon) {
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
                            Divisor<I> row, I group_channels, Divisor<I> spatial,
                            typename AccOf<T>::type count, typename AccOf<T>::type epsilon) {
#if CUGN_CLUSTERS
  normalize_on_chip<T, V, I, CHANNELS_LAST, ACT, K>(x, y, gamma, beta, mean, rstd, groups,
                                                    segments, row, group_channels, spatial, count,
                                                    epsilon);
#endif
}

// The element of value t (of segments*S) of channel d in a cached group of
// `segments` rows of D*S values.
template <bool CHANNELS_LAST, typename I>
__device__ __forceinline__ I cached_index(I t, I d, I segments, I group_channels,
                                          const Divisor<I>& spatial) {
  if (CHANNELS_LAST) return t * group_channels + d;
  if (segments == 1) return d * spatial.value + t;
  const I segment = spatial.divide(t);
  return (segment * group_channels + d) * spatial.value + (t - segment * spatial.value);
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
    I groups, I segments, Divisor<I> row, I group_channels, Divisor<I> spatial, int unit_threads,
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
  const I cached_segments = segments > 1 ? row.divide(cached.end - cached.begin) : I(1);
  const I d0 = segments > 1 ? I(0) : channel_in_group<CHANNELS_LAST, V>(cached.begin, 0, spatial);
  const I d1 = segments > 1 ? group_channels
                            : channel_in_group<CHANNELS_LAST, V>(cached.end, 0, spatial);
  const I values_per_channel = cached_segments * spatial.value;
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
      for (I t = I(lane); t < values_per_channel; t += I(unit_threads)) {
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
    const I position = row.remainder(j);
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
                     Divisor<I> row, I group_channels, Divisor<I> spatial, int unit_threads,
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
    backward_on_chip_cluster(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx,
                             const typename AccOf<T>::type* __restrict__ gamma,
                             const typename AccOf<T>::type* __restrict__ beta,
                             const typename AccOf<T>::type* __restrict__ mean,
                             const typename AccOf<T>::type* __restrict__ rstd,
                             typename AccOf<T>::type* __restrict__ partials,
                             typename AccOf<T>::type* __restrict__ residual, I groups, I segments,
                             Divisor<I> row, I group_channels, Divisor<I> spatial, int unit_threads,
                             typename AccOf<T>::type count) {
#if CUGN_CLUSTERS
  differentiate_on_chip<T, V, I, CHANNELS_LAST, ACT, K>(x, dy, dx, gamma, beta, mean, rstd,
                                                        partials, residual, groups, segments, row,
                                                        group_channels, spatial, unit_threads,
                                                        count);
#endif
}

}  // namespace cugn
