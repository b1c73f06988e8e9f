// Storage types and vector access (part of group_norm.cu): float16 and bfloat16
// as raw bits, the accumulation type of each storage type, and the vector loads
// and stores every kernel makes.

namespace cugn {

// ------------------------------------------------------------------ storage types

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

}  // namespace cugn
