// Helpers shared by the .cu files: launch shapes, activation dispatch on the CPU's math, fixed-order block reductions, storage loads.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "check.h"
#include "kernels.h"
#include "nn/cpu/activation_math.h"

namespace gt::cuda::detail {

constexpr int kThreads = 256;
// Grid-stride kernels stop growing the grid here: enough blocks to fill any current GPU many times.
constexpr int64_t kMaxBlocks = 8192;

inline unsigned grid_for(int64_t items, int threads = kThreads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Storage loads and stores: float now; a bf16 storage type adds one overload pair (math stays float).
__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ void store_f32(float* p, float v) { *p = v; }

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
