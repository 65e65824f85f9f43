// Multi-tensor kernels: Adam, RMSprop and SGD with train/optim.cpp's exact float operations, global-norm clipping, weight clipping, EMA.
#include <cmath>

#include "cuda/kernel_util.cuh"

// The element updates are core/optim_math.h's, shared with the CPU: on the device they use rounding
// intrinsics (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn never fuse) and explicit fmaf where the
// CPU fuses, so they are bit-identical to the CPU's whatever the contraction flags.

namespace gt::cuda {
namespace {

constexpr int kChunkThreads = 256;

// The slot whose chunks include this block's: the last with first_chunk <= blockIdx.x.
__device__ const MultiTensorSlot& slot_of_block(const MultiTensorView& tensors) {
  int lo = 0, hi = tensors.count - 1;
  const int64_t chunk = blockIdx.x;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tensors.slots[mid].first_chunk <= chunk) lo = mid;
    else hi = mid - 1;
  }
  return tensors.slots[lo];
}

struct ChunkRange {
  int64_t begin, end;
};
__device__ ChunkRange chunk_range(const MultiTensorSlot& s) {
  const int64_t begin = (blockIdx.x - s.first_chunk) * kMultiTensorChunk;
  const int64_t end = begin + kMultiTensorChunk < s.numel ? begin + kMultiTensorChunk : s.numel;
  return {begin, end};
}

// The gradient the update sees: clipped by grad_scale where that is below 1.
__device__ __forceinline__ float clipped_grad(float g, const float* grad_scale) {
  if (grad_scale) {
    const float s = *grad_scale;
    if (s < 1.f) g = __fmul_rn(g, s);
  }
  return g;
}

__global__ void adam_kernel(MultiTensorView tensors, AdamCoefficients k, const float* grad_scale) {
  const MultiTensorSlot& s = slot_of_block(tensors);
  const ChunkRange r = chunk_range(s);
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    float p = s.param[i], m = s.state0[i], v = s.state1[i];
    adam_element(p, clipped_grad(s.grad[i], grad_scale), m, v, k);
    s.param[i] = p;
    s.state0[i] = m;
    s.state1[i] = v;
  }
}

__global__ void rmsprop_kernel(MultiTensorView tensors, RmspropCoefficients k, const float* grad_scale) {
  const MultiTensorSlot& s = slot_of_block(tensors);
  const ChunkRange r = chunk_range(s);
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    float p = s.param[i], square_avg = s.state0[i];
    rmsprop_element(p, clipped_grad(s.grad[i], grad_scale), square_avg, s.state1 ? s.state1 + i : nullptr, k);
    s.param[i] = p;
    s.state0[i] = square_avg;
  }
}

__global__ void sgd_kernel(MultiTensorView tensors, SgdCoefficients k, const float* grad_scale) {
  const MultiTensorSlot& s = slot_of_block(tensors);
  const ChunkRange r = chunk_range(s);
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    float p = s.param[i];
    sgd_element(p, clipped_grad(s.grad[i], grad_scale), s.state0 ? s.state0 + i : nullptr, k);
    s.param[i] = p;
  }
}

// Sum of squares of one chunk of gradients, in double.
__global__ void grad_squares_kernel(double* partial, MultiTensorView tensors) {
  const MultiTensorSlot& s = slot_of_block(tensors);
  const ChunkRange r = chunk_range(s);
  double sum = 0.0;
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    const double g = s.grad[i];
    sum += g * g;
  }
  sum = detail::block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// One block adds the chunks' sums in a fixed order, then torch's coefficient in float:
// clip_coef = (1 / (total_norm + 1e-6)) * max_norm (a scalar over a tensor is reciprocal() * scalar).
__global__ void __launch_bounds__(1024)
    norm_finish_kernel(float* norm, float* coef, const double* partial, int64_t chunks, float max_norm) {
  double sum = 0.0;
  for (int64_t k = threadIdx.x; k < chunks; k += blockDim.x) sum += partial[k];
  sum = detail::block_sum(sum);
  if (threadIdx.x == 0) {
    const float total = static_cast<float>(sqrt(sum));
    norm[0] = total;
    coef[0] = __fmul_rn(__fdiv_rn(1.f, __fadd_rn(total, 1e-6f)), max_norm);
  }
}

__global__ void scale_grads_kernel(MultiTensorView tensors, const float* coef) {
  const float c = *coef;
  if (!(c < 1.f)) return;
  const MultiTensorSlot& s = slot_of_block(tensors);
  const ChunkRange r = chunk_range(s);
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) s.grad[i] = __fmul_rn(s.grad[i], c);
}

__global__ void clip_weights_kernel(MultiTensorView tensors, float limit) {
  const MultiTensorSlot& s = slot_of_block(tensors);
  const ChunkRange r = chunk_range(s);
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) s.param[i] = optim_math::clip_weight(s.param[i], limit);
}

__global__ void ema_kernel(MultiTensorView tensors, float one_minus_beta) {
  const MultiTensorSlot& s = slot_of_block(tensors);
  const ChunkRange r = chunk_range(s);
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x)
    s.state0[i] = optim_math::ema_value(s.state0[i], s.param[i], one_minus_beta);
}

bool empty(const MultiTensorView& t) { return t.count <= 0 || t.chunks <= 0; }
unsigned grid_of(const MultiTensorView& t) { return static_cast<unsigned>(t.chunks); }

}  // namespace

void adam_update(const MultiTensorView& tensors, const AdamCoefficients& k, const float* grad_scale,
                 cudaStream_t stream) {
  if (empty(tensors)) return;
  adam_kernel<<<grid_of(tensors), kChunkThreads, 0, stream>>>(tensors, k, grad_scale);
  CUDA_CHECK_LAUNCH();
}

void rmsprop_update(const MultiTensorView& tensors, const RmspropCoefficients& k, const float* grad_scale,
                    cudaStream_t stream) {
  if (empty(tensors)) return;
  rmsprop_kernel<<<grid_of(tensors), kChunkThreads, 0, stream>>>(tensors, k, grad_scale);
  CUDA_CHECK_LAUNCH();
}

void sgd_update(const MultiTensorView& tensors, const SgdCoefficients& k, const float* grad_scale,
                cudaStream_t stream) {
  if (empty(tensors)) return;
  sgd_kernel<<<grid_of(tensors), kChunkThreads, 0, stream>>>(tensors, k, grad_scale);
  CUDA_CHECK_LAUNCH();
}

void grad_global_norm(float* norm, float* coef, const MultiTensorView& tensors, float max_norm, double* partial,
                      cudaStream_t stream) {
  if (!empty(tensors)) {
    grad_squares_kernel<<<grid_of(tensors), kChunkThreads, 0, stream>>>(partial, tensors);
    CUDA_CHECK_LAUNCH();
  }
  // With no gradients the finish still writes norm 0 and torch's coefficient for it.
  norm_finish_kernel<<<1, 1024, 0, stream>>>(norm, coef, partial, empty(tensors) ? 0 : tensors.chunks, max_norm);
  CUDA_CHECK_LAUNCH();
}

void scale_grads_below_one(const MultiTensorView& tensors, const float* coef, cudaStream_t stream) {
  if (empty(tensors)) return;
  scale_grads_kernel<<<grid_of(tensors), kChunkThreads, 0, stream>>>(tensors, coef);
  CUDA_CHECK_LAUNCH();
}

void clip_weights(const MultiTensorView& tensors, float limit, cudaStream_t stream) {
  if (empty(tensors)) return;
  clip_weights_kernel<<<grid_of(tensors), kChunkThreads, 0, stream>>>(tensors, limit);
  CUDA_CHECK_LAUNCH();
}

void ema_update(const MultiTensorView& tensors, float one_minus_beta, cudaStream_t stream) {
  if (empty(tensors)) return;
  ema_kernel<<<grid_of(tensors), kChunkThreads, 0, stream>>>(tensors, one_minus_beta);
  CUDA_CHECK_LAUNCH();
}

}  // namespace gt::cuda
