// CUDA for the host compiler: what cugn's .cu sources need of the CUDA language
// and runtime, so that g++ or clang++ builds them unchanged and the launcher of
// runtime.cpp runs them with one host thread per CUDA thread.
//
// Blocks run one after another, so `__shared__` is function-static storage that
// one block at a time owns (the launcher fills it with NaN before each block).
// Barriers and warp shuffles are real synchronisation points between the
// block's threads, checked against the rules of PTX's bar.sync and shfl.sync.
// sm_90's thread-block clusters are there as CUDA's built-ins (the cluster
// barrier, distributed shared memory): the launcher's `cluster` dimensions stand
// for cuLaunchKernelEx's cluster attribute, and for a kernel's compile-time
// __cluster_dims__, which the host build ignores: the host code launching such a
// kernel here passes its size), and runtime.cpp keeps each block's shared memory
// its own.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned x, y, z;
};
typedef uint3 dim3;

namespace cuda_on_cpu {

// Set by the launcher: per host thread for the thread and block index, per
// launch for the dimensions.
extern thread_local uint3 thread_index;
extern thread_local uint3 block_index;
extern uint3 block_dimensions;
extern uint3 grid_dimensions;
extern uint3 cluster_dimensions;

// Calls a kernel with its arguments unpacked from an array of pointers to them.
typedef void (*Invoke)(void (*kernel)(), void** args);

enum ShuffleKind { kShuffleXor = 0, kShuffleDown = 1 };

void syncthreads(const char* file, int line);
// One lane's part of a shuffle: returns the `size` low bytes of the source lane's `bits`.
uint64_t shuffle(unsigned mask, uint64_t bits, int size, ShuffleKind kind, int operand, int width,
                 const char* file, int line);

// Fails the launch where `address` is not a multiple of `bytes`: a GPU faults on a
// vector access so placed (the .cu sources call it in their host build).
void check_vector_access(const void* address, size_t bytes, bool store);

void cluster_arrive(const char* file, int line);
void cluster_wait(const char* file, int line);
void* cluster_map_shared_rank(const void* address, unsigned rank, const char* file, int line);

template <typename T>
T shuffle_value(unsigned mask, T value, ShuffleKind kind, int operand, int width,
                const char* file, int line) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                "shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = shuffle(mask, bits, int(sizeof(T)), kind, operand, width, file, line);
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

}  // namespace cuda_on_cpu

#define threadIdx (::cuda_on_cpu::thread_index)
#define blockIdx (::cuda_on_cpu::block_index)
#define blockDim (::cuda_on_cpu::block_dimensions)
#define gridDim (::cuda_on_cpu::grid_dimensions)

// The call site travels with every synchronisation, so that a divergent barrier
// or shuffle is reported with the lines that disagree.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  cuda_on_cpu::syncthreads(file, line);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32,
                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return cuda_on_cpu::shuffle_value(mask, value, cuda_on_cpu::kShuffleXor, lane_mask, width, file,
                                    line);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32,
                   const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return cuda_on_cpu::shuffle_value(mask, value, cuda_on_cpu::kShuffleDown, int(delta), width,
                                    file, line);
}

// Thread-block clusters: the built-ins of CUDA 12 for sm_90 (NVRTC knows them
// without a header). A kernel's __cluster_dims__ is the launch's `cluster` here.
#define __cluster_dims__(...)
inline dim3 __clusterDim() { return cuda_on_cpu::cluster_dimensions; }

inline unsigned __clusterSizeInBlocks() {
  const uint3 c = cuda_on_cpu::cluster_dimensions;
  return c.x * c.y * c.z;
}

inline dim3 __clusterRelativeBlockIdx() {
  const uint3 c = cuda_on_cpu::cluster_dimensions;
  return {blockIdx.x % c.x, blockIdx.y % c.y, blockIdx.z % c.z};
}

inline unsigned __clusterRelativeBlockRank() {
  const uint3 c = cuda_on_cpu::cluster_dimensions, r = __clusterRelativeBlockIdx();
  return r.x + c.x * (r.y + c.y * r.z);
}

inline dim3 __clusterIdx() {
  const uint3 c = cuda_on_cpu::cluster_dimensions;
  return {blockIdx.x / c.x, blockIdx.y / c.y, blockIdx.z / c.z};
}

inline void __cluster_barrier_arrive(const char* file = __builtin_FILE(),
                                     int line = __builtin_LINE()) {
  cuda_on_cpu::cluster_arrive(file, line);
}

inline void __cluster_barrier_wait(const char* file = __builtin_FILE(),
                                   int line = __builtin_LINE()) {
  cuda_on_cpu::cluster_wait(file, line);
}

inline void* __cluster_map_shared_rank(const void* address, unsigned rank,
                                       const char* file = __builtin_FILE(),
                                       int line = __builtin_LINE()) {
  return cuda_on_cpu::cluster_map_shared_rank(address, rank, file, line);
}

// The math the kernels use. The GPU's fast division is approximate; here it is IEEE.
inline float __fdividef(float a, float b) { return a / b; }
// The GPU's fast exponential is ex2.approx.ftz of the rounded x*log2(e): that
// rounding (the part of its error that grows with |x|) and the flush of subnormal
// results to zero are kept here; ex2's own 2 ulp are not.
inline float __expf(float x) {
  const float e = exp2f(x * 1.44269504f);
  return e < 1.17549435e-38f ? 0.0f : e;  // below FLT_MIN
}

// The high half of an integer product, exact as on the GPU.
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}

inline unsigned __float_as_uint(float value) {
  unsigned bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

inline float __uint_as_float(unsigned bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}

template <typename T>
inline T max(T a, T b) {
  return a < b ? b : a;
}
