// The Progressive GAN layers' kernels: pixel norm, nearest upsampling, 2x2 average pooling, minibatch standard deviation and the fade mix, each as the CPU's nn/cpu/progan_kernels.cpp (and nn/cpu/fade.cpp) computes it.
#include <cmath>
#include <type_traits>

#include "core/progan_math.h"
#include "cuda/kernel_util.cuh"
#include "cuda/kernels.h"
#include "cuda/kernels_typed.h"

namespace gt::cuda {
namespace {

using detail::block_sum;
using detail::grid_for;
using detail::kThreads;
using detail::load_f32;
using detail::store_f32;

// The per-position and per-value math is the CPU kernels' own (core/progan_math.h, compiled with -fmad=false, so
// nothing is contracted), each call inside one thread in the CPU's order, so
// PixelNorm, the resamplings, the fade and the minibatch statistics' mean and sigma are bit-identical. The
// minibatch statistic's sums over a whole group (of sigma, of the tangent's terms, of an output gradient's
// added channel) are added in double by a block, in a fixed order of their own: the same value every run,
// equal to the CPU's up to the rounding of a double sum.

// ---- PixelNorm: one thread per (sample, position), the channels in order -------------------------------------

__global__ void pixelnorm_forward_kernel(float* out, float* rnorm, const float* in, int64_t positions, int C, int HW,
                                         float eps) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < positions;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = i / HW, p = i % HW;
    rnorm[i] = progan_math::pixelnorm_forward_at(out + n * M + p, in + n * M + p, C, HW, eps);
  }
}

__global__ void pixelnorm_jacobian_kernel(float* out, const float* t, const float* in, const float* rnorm,
                                          int64_t positions, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < positions;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = i / HW, p = i % HW;
    progan_math::pixelnorm_jacobian_at(out + n * M + p, t + n * M + p, in + n * M + p, rnorm[i], C, HW);
  }
}

__global__ void pixelnorm_second_kernel(float* dinp, const float* delta, const float* t, const float* in,
                                        const float* rnorm, int64_t positions, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < positions;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = i / HW, p = i % HW;
    progan_math::pixelnorm_second_at(dinp + n * M + p, delta + n * M + p, t + n * M + p, in + n * M + p, rnorm[i], C,
                                     HW);
  }
}

// ---- nearest upsampling by 2 and 2x2 average pooling: one thread per value written -------------------------

// One thread per output value: a copy of its source.
__global__ void upsample2x_forward_kernel(float* out, const float* in, int64_t total, int H, int W) {
  const int OW = 2 * W, OH = 2 * H;
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < total; o += int64_t{gridDim.x} * blockDim.x) {
    const int ow = static_cast<int>(o % OW);
    const int64_t rest = o / OW;
    const int oh = static_cast<int>(rest % OH);
    const int64_t i = rest / OH;
    out[o] = in[(i * H + oh / 2) * W + ow / 2];
  }
}

// One thread per input value: its 2x2 block of dout, added as the CPU adds it.
__global__ void upsample2x_backward_kernel(float* dinp, const float* dout, int64_t total, int H, int W) {
  const int OW = 2 * W;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total; k += int64_t{gridDim.x} * blockDim.x) {
    const int w = static_cast<int>(k % W);
    const int64_t rest = k / W;
    const int h = static_cast<int>(rest % H);
    const int64_t i = rest / H;
    const float* d0 = dout + (i * 2 * H + 2 * h) * OW;
    const float* d1 = d0 + OW;
    dinp[k] = (d0[2 * w] + d0[2 * w + 1]) + (d1[2 * w] + d1[2 * w + 1]);
  }
}

// One thread per output value (H, W even).
__global__ void avgpool2x_forward_kernel(float* out, const float* in, int64_t total, int H, int W) {
  const int OH = H / 2, OW = W / 2;
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < total; o += int64_t{gridDim.x} * blockDim.x) {
    const int w = static_cast<int>(o % OW);
    const int64_t rest = o / OW;
    const int h = static_cast<int>(rest % OH);
    const int64_t i = rest / OH;
    const float* x0 = in + (i * H + 2 * h) * W;
    const float* x1 = x0 + W;
    out[o] = ((x0[2 * w] + x0[2 * w + 1]) + (x1[2 * w] + x1[2 * w + 1])) * 0.25f;
  }
}

// One thread per input value: a quarter of its block's output gradient.
__global__ void avgpool2x_backward_kernel(float* dinp, const float* dout, int64_t total, int H, int W) {
  const int OH = H / 2, OW = W / 2;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total; k += int64_t{gridDim.x} * blockDim.x) {
    const int w = static_cast<int>(k % W);
    const int64_t rest = k / W;
    const int h = static_cast<int>(rest % H);
    const int64_t i = rest / H;
    dinp[k] = dout[(i * OH + h / 2) * OW + w / 2] * 0.25f;
  }
}

// ---- minibatch standard deviation ------------------------------------------------------------------------
// Groups of G consecutive samples; per sample M = C*HW input values and MO = M + HW output values.

// The value of a block-wide sum in every thread (every thread of the block calls it).
__device__ double block_sum_all(double v) {
  __shared__ double total;
  v = block_sum(v);
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  const double r = total;
  __syncthreads();
  return r;
}

// The CPU's group_channel_sum over the block: the sum of channel C (the added one) of a [N, C+1, HW] tensor
// over group g's samples and positions.
__device__ double group_channel_sum(const float* a, int g, int group, int64_t M, int HW) {
  const int64_t MO = M + HW, count = static_cast<int64_t>(group) * HW;
  double s = 0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const int64_t i = k / HW, q = k % HW;
    s += a[(static_cast<int64_t>(g) * group + i) * MO + M + q];
  }
  return block_sum_all(s);
}

// One thread per (group, value j): mu_j and sigma_j as the CPU computes them (the samples in order), and the
// group's samples' value j copied to the output.
__global__ void mbstd_stats_kernel(float* out, float* mean, float* sigma, const float* in, int64_t total, int64_t M,
                                   int HW, int group, float eps) {
  const int64_t MO = M + HW;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total; k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t g = k / M, j = k % M;
    progan_math::mbstd_stats_at(&mean[k], &sigma[k], in + g * group * M + j, group, M, eps);
    for (int i = 0; i < group; ++i) out[(g * group + i) * MO + j] = in[(g * group + i) * M + j];
  }
}

// One block per group: the statistic s_g = mean over j of sigma_j (summed in double), written to channel C of
// the group's samples.
__global__ void mbstd_fill_stat_kernel(float* out, const float* sigma, int64_t M, int HW, int group) {
  const int g = blockIdx.x;
  const int64_t MO = M + HW;
  double total = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) total += sigma[g * M + j];
  const float stat = static_cast<float>(block_sum_all(total) / static_cast<double>(M));
  const int64_t count = static_cast<int64_t>(group) * HW;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const int64_t i = k / HW, p = k % HW;
    out[(static_cast<int64_t>(g) * group + i) * MO + M + p] = stat;
  }
}

// Grid (chunks, groups): every block of group g sums the group's part of dout's added channel (the same
// value in each), then writes its chunk of the group's input gradient.
__global__ void mbstd_backward_kernel(float* dinp, const float* dout, const float* in, const float* mean,
                                      const float* sigma, int64_t M, int HW, int group) {
  const int g = blockIdx.y;
  const int64_t MO = M + HW, count = static_cast<int64_t>(group) * M;
  const double k = group_channel_sum(dout, g, group, M, HW) / static_cast<double>(M) / group;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < count; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = static_cast<int64_t>(g) * group + e / M, j = e % M;
    const float* x = in + n * M;
    const float* d = dout + n * MO;
    dinp[n * M + j] = progan_math::mbstd_backward_value(d[j], x[j], mean[g * M + j], sigma[g * M + j], k);
  }
}

// One block per group: the tangent's statistic ts_g = sum_ij (x_ij - mu_j) t_ij / sigma_j / (M G), written to
// channel C of the group's samples.
__global__ void mbstd_tangent_stat_kernel(float* out, const float* t, const float* in, const float* mean,
                                          const float* sigma, int64_t M, int HW, int group) {
  const int g = blockIdx.x;
  const int64_t MO = M + HW, count = static_cast<int64_t>(group) * M;
  double s = 0;
  for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
    const int64_t n = static_cast<int64_t>(g) * group + e / M, j = e % M;
    s += progan_math::mbstd_tangent_term(in[n * M + j], mean[g * M + j], t[n * M + j], sigma[g * M + j]);
  }
  const float ts = static_cast<float>(block_sum_all(s) / static_cast<double>(M) / group);
  const int64_t cells = static_cast<int64_t>(group) * HW;
  for (int64_t k = threadIdx.x; k < cells; k += blockDim.x) {
    const int64_t i = k / HW, p = k % HW;
    out[(static_cast<int64_t>(g) * group + i) * MO + M + p] = ts;
  }
}

// out[n, j] = t[n, j] for the first M values of every sample's M + HW.
__global__ void mbstd_copy_kernel(float* out, const float* t, int64_t total, int64_t M, int HW) {
  const int64_t MO = M + HW;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total; k += int64_t{gridDim.x} * blockDim.x)
    out[(k / M) * MO + k % M] = t[k];
}

// Grid (chunks of j, groups): K_g from delta's added channel (each block of the group the same sum), then one
// thread per value j: P_j and mean_i t_ij over the group's samples in order, and its G input values.
__global__ void mbstd_second_kernel(float* dinp, const float* delta, const float* t, const float* in,
                                    const float* mean, const float* sigma, int64_t M, int HW, int group) {
  const int g = blockIdx.y;
  const double K = group_channel_sum(delta, g, group, M, HW) / static_cast<double>(M) / group;
  const int64_t first = static_cast<int64_t>(g) * group * M;
  for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < M; j += int64_t{gridDim.x} * blockDim.x)
    progan_math::mbstd_second_at(dinp + first + j, t + first + j, in + first + j, mean[g * M + j], sigma[g * M + j], K,
                                 group, M);
}

// ---- fade --------------------------------------------------------------------------------------------------

// The weight reads a device float (alpha[0]), so a step captured into a CUDA graph takes the value the
// float holds when it is replayed.
template <class T>
__global__ void lerp_kernel(T* out, const T* a, const T* b, const float* alpha, int64_t n) {
  const float w = alpha[0];
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float av = load_f32(a + i);
    store_f32(out + i, av + w * (load_f32(b + i) - av));
  }
}

// out = k * in with k = 1 - alpha (branch 0, the old path) or alpha (branch 1): the CPU Fade's scaled().
template <class T>
__global__ void fade_scale_kernel(T* out, const T* in, const float* alpha, int branch, int64_t n) {
  const float k = branch == 0 ? 1.f - alpha[0] : alpha[0];
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_f32(out + i, k * load_f32(in + i));
}

// Blocks per group for the chunked minibatch kernels: enough to spread a group's values over the GPU, each
// block's repeated sum of the added channel (G * HW values) small beside its share.
unsigned chunks_for(int64_t values) {
  const int64_t per_block = 4 * static_cast<int64_t>(kThreads);
  const int64_t chunks = (values + per_block - 1) / per_block;
  return static_cast<unsigned>(chunks < 1 ? 1 : (chunks > 1024 ? 1024 : chunks));
}

constexpr int kGroupThreads = 512;  // one block per group: the group's sums

}  // namespace

void pixelnorm_forward(float* out, float* rnorm, const float* in, int N, int C, int HW, float eps,
                       cudaStream_t stream) {
  const int64_t positions = static_cast<int64_t>(N) * HW;
  if (positions <= 0 || C <= 0) return;
  pixelnorm_forward_kernel<<<grid_for(positions), kThreads, 0, stream>>>(out, rnorm, in, positions, C, HW, eps);
  CUDA_CHECK_LAUNCH();
}

void pixelnorm_jacobian(float* out, const float* t, const float* in, const float* rnorm, int N, int C, int HW,
                        cudaStream_t stream) {
  const int64_t positions = static_cast<int64_t>(N) * HW;
  if (positions <= 0 || C <= 0) return;
  pixelnorm_jacobian_kernel<<<grid_for(positions), kThreads, 0, stream>>>(out, t, in, rnorm, positions, C, HW);
  CUDA_CHECK_LAUNCH();
}

void pixelnorm_second(float* dinp, const float* delta, const float* t, const float* in, const float* rnorm, int N,
                      int C, int HW, cudaStream_t stream) {
  const int64_t positions = static_cast<int64_t>(N) * HW;
  if (positions <= 0 || C <= 0) return;
  pixelnorm_second_kernel<<<grid_for(positions), kThreads, 0, stream>>>(dinp, delta, t, in, rnorm, positions, C, HW);
  CUDA_CHECK_LAUNCH();
}

void upsample2x_forward(float* out, const float* in, int NC, int H, int W, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(NC) * 4 * H * W;
  if (total <= 0) return;
  upsample2x_forward_kernel<<<grid_for(total), kThreads, 0, stream>>>(out, in, total, H, W);
  CUDA_CHECK_LAUNCH();
}

void upsample2x_backward(float* dinp, const float* dout, int NC, int H, int W, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(NC) * H * W;
  if (total <= 0) return;
  upsample2x_backward_kernel<<<grid_for(total), kThreads, 0, stream>>>(dinp, dout, total, H, W);
  CUDA_CHECK_LAUNCH();
}

void avgpool2x_forward(float* out, const float* in, int NC, int H, int W, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(NC) * (H / 2) * (W / 2);
  if (total <= 0) return;
  avgpool2x_forward_kernel<<<grid_for(total), kThreads, 0, stream>>>(out, in, total, H, W);
  CUDA_CHECK_LAUNCH();
}

void avgpool2x_backward(float* dinp, const float* dout, int NC, int H, int W, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(NC) * H * W;
  if (total <= 0) return;
  avgpool2x_backward_kernel<<<grid_for(total), kThreads, 0, stream>>>(dinp, dout, total, H, W);
  CUDA_CHECK_LAUNCH();
}

void mbstd_forward(float* out, float* mean, float* sigma, const float* in, int N, int C, int HW, int group, float eps,
                   cudaStream_t stream) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  const int groups = group > 0 ? N / group : 0;
  if (groups <= 0 || M <= 0) return;
  const int64_t total = groups * M;
  mbstd_stats_kernel<<<grid_for(total), kThreads, 0, stream>>>(out, mean, sigma, in, total, M, HW, group, eps);
  CUDA_CHECK_LAUNCH();
  mbstd_fill_stat_kernel<<<static_cast<unsigned>(groups), kGroupThreads, 0, stream>>>(out, sigma, M, HW, group);
  CUDA_CHECK_LAUNCH();
}

void mbstd_backward(float* dinp, const float* dout, const float* in, const float* mean, const float* sigma, int N,
                    int C, int HW, int group, cudaStream_t stream) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  const int groups = group > 0 ? N / group : 0;
  if (groups <= 0 || M <= 0) return;
  const dim3 grid(chunks_for(static_cast<int64_t>(group) * M), static_cast<unsigned>(groups));
  mbstd_backward_kernel<<<grid, kThreads, 0, stream>>>(dinp, dout, in, mean, sigma, M, HW, group);
  CUDA_CHECK_LAUNCH();
}

void mbstd_tangent(float* out, const float* t, const float* in, const float* mean, const float* sigma, int N, int C,
                   int HW, int group, cudaStream_t stream) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  const int groups = group > 0 ? N / group : 0;
  if (groups <= 0 || M <= 0) return;
  const int64_t total = static_cast<int64_t>(groups) * group * M;
  mbstd_copy_kernel<<<grid_for(total), kThreads, 0, stream>>>(out, t, total, M, HW);
  CUDA_CHECK_LAUNCH();
  mbstd_tangent_stat_kernel<<<static_cast<unsigned>(groups), kGroupThreads, 0, stream>>>(out, t, in, mean, sigma, M,
                                                                                         HW, group);
  CUDA_CHECK_LAUNCH();
}

void mbstd_second(float* dinp, const float* delta, const float* t, const float* in, const float* mean,
                  const float* sigma, int N, int C, int HW, int group, cudaStream_t stream) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  const int groups = group > 0 ? N / group : 0;
  if (groups <= 0 || M <= 0) return;
  const dim3 grid(chunks_for(M), static_cast<unsigned>(groups));
  mbstd_second_kernel<<<grid, kThreads, 0, stream>>>(dinp, delta, t, in, mean, sigma, M, HW, group);
  CUDA_CHECK_LAUNCH();
}

void lerp_forward(float* out, const float* a, const float* b, const float* alpha, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  lerp_kernel<float><<<grid_for(n), kThreads, 0, stream>>>(out, a, b, alpha, n);
  CUDA_CHECK_LAUNCH();
}

void fade_scale(float* out, const float* in, const float* alpha, int branch, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  fade_scale_kernel<float><<<grid_for(n), kThreads, 0, stream>>>(out, in, alpha, branch, n);
  CUDA_CHECK_LAUNCH();
}

// ---- any storage type (kernels_typed.h) -------------------------------------------------------------

void lerp_forward(void* out, const void* a, const void* b, const float* alpha, int64_t n, DataType type,
                  cudaStream_t stream) {
  if (n <= 0) return;
  detail::with_type(type, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    lerp_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(a),
                                                         static_cast<const T*>(b), alpha, n);
  });
  CUDA_CHECK_LAUNCH();
}

void fade_scale(void* out, const void* in, const float* alpha, int branch, int64_t n, DataType type,
                cudaStream_t stream) {
  if (n <= 0) return;
  detail::with_type(type, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fade_scale_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(in), alpha,
                                                               branch, n);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace gt::cuda
