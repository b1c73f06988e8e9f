// The backward's kernels off chip (part of group_norm.cu): per-channel partial
// sums, the group coefficients, dgamma and dbeta, then dx in one elementwise pass.
//
// Partial sums of g, g*(x - mean) and x - mean per (n, chunk k, c), with g = dy
// (dy*act'(z) after an activation): three arrays of N*split*C values, indexed
// (n*split + k)*C + c. rstd, gamma and beta are read only with an activation.

namespace cugn {

template <Activation ACT, typename A>
__device__ __forceinline__ void add_value(Sums<A>& s, A x, A dy, A mean,
                                          const Preactivation<ACT, A>& z) {
  const A centered = x - mean;
  const A g = z.gradient(dy, centered);
  s.dy += g;
  s.dy_centered += g * centered;
  s.centered += centered;
}

template <Activation ACT, int V, typename T, typename A>
__device__ __forceinline__ void add_pack(Sums<A>& s, const Pack<T, V>& x, const Pack<T, V>& dy,
                                         A mean, const Preactivation<ACT, A>& z) {
#pragma unroll
  for (int i = 0; i < V; ++i) add_value(s, to_acc(x.v[i]), to_acc(dy.v[i]), mean, z);
}

// With an activation, float64 sums a vector value by value, from scalar loads: its
// erf and exp in double for the V values at once would take more registers than
// the kernel has (it spilled), and such a loop is bound by that arithmetic, not
// by its loads.
template <Activation ACT, typename A>
constexpr bool kValueByValue = ACT != kLinear && sizeof(A) == 8;

// Channels with S > 1: segment units (n, c) of M rows of S values.
template <typename T, int V, typename I, Activation ACT>
__global__ void __launch_bounds__(kBlock, ACT == kLinear ? kMinBlocks : kMinBlocksActivated)
    backward_partials_segment(const T* __restrict__ x, const T* __restrict__ dy,
                              const typename AccOf<T>::type* __restrict__ mean,
                              const typename AccOf<T>::type* __restrict__ rstd,
                              const typename AccOf<T>::type* __restrict__ gamma,
                              const typename AccOf<T>::type* __restrict__ beta,
                              typename AccOf<T>::type* __restrict__ partials, I units, I channels,
                              I segments, Divisor<I> row, I split, I chunk, I group_channels,
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
        SegmentUnit<I>::of(unit, channels, segments, row, channels * row.value);
    const I q = n * groups + c / group_channels;
    const A mu = mean[q];
    const Preactivation<ACT, A> z(gamma, beta, ACT == kLinear ? A(0) : rstd[q], c);
    const I end = min(k * chunk + chunk, segment.vectors);
#pragma unroll(ACT == kLinear ? 4 : 1)
    for (I j = k * chunk + I(lane); j < end; j += I(unit_threads)) {
      const I offset = segment.offset(j);
      if constexpr (kValueByValue<ACT, A>) {
#pragma unroll 1
        for (int i = 0; i < V; ++i) {
          add_value(s, to_acc(x[offset * V + i]), to_acc(dy[offset * V + i]), mu, z);
        }
      } else {
        add_pack<ACT, V>(s, load_pack<V>(x, offset), load_pack<V>(dy, offset), mu, z);
      }
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
      // z's scale and shift for the thread's V channels, the same on every row: read
      // in the loop, the compiler keeps them in registers where they fit.
      Pack<A, V> weights = {}, shifts = {};
      if constexpr (ACT != kLinear) {
        weights = channel_values<true, V>(gamma, c, A(1));
        shifts = channel_values<true, V>(beta, c, A(0));
      }
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const A centered = to_acc(xs.v[i]) - mu;
        const A g = Preactivation<ACT, A>(r * weights.v[i], shifts.v[i]).gradient(
            to_acc(gs.v[i]), centered);
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
                const typename AccOf<T>::type* __restrict__ c3, I vectors, Divisor<I> spatial,
                Divisor<I> channels, I pitch, Divisor<I> group_channels, I groups,
                Divisor<I> batch_stride) {
  typedef typename AccOf<T>::type A;
  for (I j = I(blockIdx.x) * I(kBlock) + I(threadIdx.x); j < vectors;
       j += I(gridDim.x) * I(kBlock)) {
    I n, c;
    const I address = locate<CHANNELS_LAST, V>(j * V, spatial, channels, pitch, batch_stride, n,
                                               c);
    const I q = n * groups + group_channels.divide(c);
    const A mu = mean[q];
    const A r = rstd[q];
    const A k2 = c2[q];
    const A k3 = c3[q];
    const Pack<A, V> weights = channel_values<CHANNELS_LAST, V>(gamma, c, A(1));
    Pack<A, V> shifts = {};
    if constexpr (ACT != kLinear) shifts = channel_values<CHANNELS_LAST, V>(beta, c, A(0));
    const Pack<T, V> xs = load_pack<V>(x, address);
    const Pack<T, V> gs = load_pack<V>(dy, address);
    Pack<T, V> out;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const A k1 = r * weights.v[i];
      const A centered = to_acc(xs.v[i]) - mu;
      const A g = Preactivation<ACT, A>(k1, shifts.v[i]).gradient(to_acc(gs.v[i]), centered);
      // Two fused multiply-adds, written out: the compiler would contract the sum
      // anyway, in an order of its own; in this one the float64 gelu instantiation
      // fits its registers, and the host build rounds as the GPU does.
      from_acc(fma(k1, g, fma(k2, centered, k3)), out.v[i]);
    }
    store_pack<V>(dx, address, out);
  }
}

}  // namespace cugn
