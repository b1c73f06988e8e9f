// The activations fused into the forward's store and the backward's sums (part of
// group_norm.cu).

namespace cugn {

// Keras's definitions: silu(z) = z*sigmoid(z) (also called swish), relu, and gelu
// exact (with erf). Compile-time, so that the plain kernels stay as they are.
enum Activation { kLinear = 0, kSilu = 1, kRelu = 2, kGelu = 3 };

// e^x, in float the GPU's fast exponential: ex2.approx of x*log2(e), within
// 2 + 1.173|x| ulp (the CUDA guide's bound), 2 instructions where expf takes about
// 10. The error grows with |x| only where e^-|x| makes the activation's value or
// slope negligible beside its other term (silu(z) ~ z*e^z for z << 0). In double,
// the IEEE exp.
__device__ __forceinline__ float exponential(float x) { return __expf(x); }
__device__ __forceinline__ double exponential(double x) { return exp(x); }

// 1/(1 + e^-z), with the reduction core's division (in float the fast one, 2 ulp;
// 0 where e^-z is infinite, or above 2^126, where the sigmoid is below 2^-126).
template <typename A>
__device__ __forceinline__ A sigmoid(A z) {
  return divide(A(1), A(1) + exponential(-z));
}

template <Activation ACT, typename A>
__device__ __forceinline__ A activate(A z) {
  if constexpr (ACT == kSilu) {
    return z * sigmoid(z);
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
    const A s = sigmoid(z);
    return dy * (s * (A(1) + z * (A(1) - s)));
  } else if constexpr (ACT == kRelu) {
    return z > A(0) ? dy : A(0);
  } else if constexpr (ACT == kGelu) {
    return dy * (A(0.5) * (A(1) + erf(z * A(0.70710678118654752440))) +
                 z * exponential(A(-0.5) * z * z) * A(0.39894228040143267794));
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

}  // namespace cugn
