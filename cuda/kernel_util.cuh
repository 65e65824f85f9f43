// Helpers shared by the .cu files: launch shapes, activation dispatch on the CPU's math, fixed-order block reductions, storage loads and layouts.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/check.h"
#include "cuda/formats.h"
#include "cuda/kernels.h"
#include "core/activation_math.h"

namespace gt::cuda::detail {

constexpr int kThreads = 256;
// Grid-stride kernels stop growing the grid here: enough blocks to fill any current GPU many times.
constexpr int64_t kMaxBlocks = 8192;

inline unsigned grid_for(int64_t items, int threads = kThreads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Storage loads and stores: the math is float whatever the storage; bf16 rounds to nearest even on store.
__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ void store_f32(float* p, float v) { *p = v; }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f32(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// The channel of flat element i of an activation [N, C, HW] (NCHW: (n*C + c)*HW + hw; NHWC: (n*HW + hw)*C + c).
template <Layout L, class Index>
__device__ __forceinline__ int channel_of(Index i, int C, int HW) {
  if constexpr (L == Layout::nchw) return static_cast<int>((i / HW) % C);
  else return static_cast<int>(i % C);
}
// The flat offset of element (n, c, hw).
template <Layout L>
__device__ __forceinline__ int64_t offset_of(int64_t n, int c, int64_t hw, int C, int HW) {
  if constexpr (L == Layout::nchw) return (n * C + c) * HW + hw;
  else return (n * HW + hw) * C + c;
}

// Host-side dispatch from a runtime format to the kernel templates: f(T{}, LayoutTag<L>{}) with T the
// storage type (a null pointer of it: only its type is used).
template <Layout L>
struct LayoutTag {
  static constexpr Layout value = L;
};
template <class F>
void with_type(DataType t, F&& f) {
  if (t == DataType::bf16) f(static_cast<__nv_bfloat16*>(nullptr));
  else f(static_cast<float*>(nullptr));
}
template <class F>
void with_format(const ActFormat& fmt, F&& f) {
  with_type(fmt.type, [&](auto type_tag) {
    if (fmt.layout == Layout::nhwc) f(type_tag, LayoutTag<Layout::nhwc>{});
    else f(type_tag, LayoutTag<Layout::nchw>{});
  });
}

__device__ __forceinline__ float activate(Activation act, float x, float slope) {
  switch (act) {
    case Activation::relu: return relu_value(x);
    case Activation::leaky_relu: return leaky_relu_value(x, slope);
    case Activation::tanh: return tanh_value(x);
    case Activation::sigmoid: return sigmoid_value(x);
    default: return x;
  }
}

// The gradient as the CPU computes it from what its backward keeps: the output y for relu, tanh and
// sigmoid, the input x for leaky_relu.
__device__ __forceinline__ float activation_grad_saved(Activation act, float dy, float saved, float slope) {
  switch (act) {
    case Activation::relu: return relu_grad(dy, saved);
    case Activation::leaky_relu: return leaky_relu_grad(dy, saved, slope);
    case Activation::tanh: return tanh_grad(dy, saved);
    case Activation::sigmoid: return sigmoid_grad(dy, saved);
    default: return dy;
  }
}

// The same gradient from the pre-activation value (fused batch norm recomputes it).
__device__ __forceinline__ float activation_grad_pre(Activation act, float dy, float pre, float slope) {
  switch (act) {
    case Activation::none: return dy;
    case Activation::leaky_relu: return leaky_relu_grad(dy, pre, slope);
    default: return activation_grad_saved(act, dy, activate(act, pre, slope), slope);
  }
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block, valid in thread 0; the order depends only on blockDim, so results repeat.
// Every thread of the block must call it (it synchronizes); blockDim.x a multiple of 32, at most 1024.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x >> 5);
  v = 0.0;
  if (warp == 0) {
    v = lane < warps ? warp_sums[lane] : 0.0;
    v = warp_sum(v);
  }
  return v;
}

}  // namespace gt::cuda::detail
