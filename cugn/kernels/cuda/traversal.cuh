// How kernels walk the (N, M, G, D, S) view (part of group_norm.cu): segment units,
// channels-last tiles, and the (n, c) of a vector of an elementwise pass.

namespace cugn {

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

}  // namespace cugn
