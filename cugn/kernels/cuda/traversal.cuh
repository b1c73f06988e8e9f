// How kernels walk the (N, M, G, D, S) view (part of group_norm.cu): segment units,
// channels-last tiles, and the (n, c) of a vector of an elementwise pass.

namespace cugn {

// ------------------------------------------------------------------ division by a launch constant
//
// The element loops divide indices by constants of the launch (a row's vectors, the
// spatial size, the channels, a group's channels, a sample's values). A GPU has no
// integer divide instruction: the compiler's sequence costs about 9 instructions in
// 32 bits, and in 64 bits about 20 with a branch, and a call past 2^32, per division
// and vector, which the 64-bit loops cannot afford at the memory's pace. The host
// computes instead, once per launch, a shift and a multiplier for the divisor d
// (divisor.py): with s = ceil(log2(d)) and B the bits of I,
// multiplier = floor(2^B*(2^s - d)/d) + 1, and then
// n / d == (high_product(n, multiplier) + n) >> s for every n < 2^(B-1)
// (Granlund and Montgomery's round-up method), which the indices of the view are:
// a multiply-high, an add and a shift.

__device__ __forceinline__ unsigned high_product(unsigned a, unsigned b) { return __umulhi(a, b); }
__device__ __forceinline__ unsigned long long high_product(unsigned long long a,
                                                           unsigned long long b) {
  return __umul64hi(a, b);
}

// A kernel parameter, passed by value (the host's divisor.divisor). The shift comes
// with it: derived here, it would take a register in every loop.
template <typename I>
struct Divisor {
  I value, multiplier;
  unsigned shift;

  __device__ __forceinline__ I divide(I n) const {
    return (high_product(n, multiplier) + n) >> shift;
  }
  __device__ __forceinline__ I remainder(I n) const { return n - divide(n) * value; }
};

// ------------------------------------------------------------------ segment units
//
// A "segment unit" is `segments` rows of `row` vectors each, `stride` vectors apart:
// a group (n, g) is M rows of D*S values, C*S apart (the pitch of the whole input,
// also when a launch takes a window of its groups); a channel (n, c) with S > 1 is
// M rows of S values, C*S apart. A unit is split into `split` chunks of `chunk`
// vectors of its flattened (segment, position) index; `unit_threads` threads
// (a power of two <= 32 for small units, else the block) reduce one chunk.

template <typename I>
struct SegmentUnit {
  I base, gap, vectors;  // gap: from the end of one segment to the start of the next
  Divisor<I> row;

  // Unit `unit` of an input with `inner` units to a sample (its groups, or its
  // channels), side by side in each row.
  __device__ __forceinline__ static SegmentUnit of(I unit, I inner, I segments, Divisor<I> row,
                                                   I stride) {
    return {(unit / inner) * segments * stride + (unit % inner) * row.value, stride - row.value,
            segments * row.value, row};
  }

  // The offset, in vectors, of vector j of the unit's flattened (segment, position)
  // index: j itself, plus a gap for each segment before j's. Without a branch for
  // one segment (the quotient is then 0): a branch in the loop makes the float64
  // kernels with an activation spill.
  __device__ __forceinline__ I offset(I j) const { return base + j + row.divide(j) * gap; }
};

// ------------------------------------------------------------------ channels-last tiles
//
// With S == 1 a block covers a tile of `rows_per_block` pixel rows (strided over
// a chunk of `chunk_rows` pixels) by lanes*V channels (16-byte vectors along C).
// Block b is (n, column chunk h, row chunk k) with b = (n*column_chunks + h)*split + k.
// The launch sees `channels` channels per pixel row, rows `pitch` values apart: the
// whole input (pitch == channels), or a window of its groups (pitch: the input's C).

// ------------------------------------------------------------------ elementwise passes

// The (n, c) of the vector starting at element e of the launch's view, and its
// vector index in memory; with S == 1 (channels-last) the V values are channels
// c..c+V-1 of one group, in pixel rows `pitch` values apart (a window of the
// input's groups, or all of them: pitch == channels), else V positions of
// channel c, the view contiguous.
template <bool CHANNELS_LAST, int V, typename I>
__device__ __forceinline__ I locate(I e, const Divisor<I>& spatial, const Divisor<I>& channels,
                                    I pitch, const Divisor<I>& batch_stride, I& n, I& c) {
  n = batch_stride.divide(e);
  if (!CHANNELS_LAST) {
    c = channels.remainder(spatial.divide(e));
    return e / V;
  }
  const I pixel = channels.divide(e);
  c = e - pixel * channels.value;
  return (pixel * pitch + c) / V;
}

}  // namespace cugn
