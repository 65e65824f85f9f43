// Element-wise kernels: activations, dense-layer bias, BCE with logits, uint8 image conversion, flips and Philox noise.
#include <cmath>
#include <type_traits>

#include "core/rng.h"
#include "cuda/kernel_util.cuh"
#include "cuda/kernels_typed.h"

namespace gt::cuda {
namespace {

using detail::aligned16;
using detail::grid_for;
using detail::kThreads;
using detail::load_f32;
using detail::store_f32;

// ---- activations ------------------------------------------------------------------------------------

__global__ void activation_forward_kernel(float* out, const float* in, int64_t n, Activation act, float slope) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = detail::activate(act, in[i], slope);
}

// Four values per thread with 16-byte loads and stores; n4 counts float4s.
__global__ void activation_forward_vec4(float4* out, const float4* in, int64_t n4, Activation act, float slope) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4; i += int64_t{gridDim.x} * blockDim.x) {
    float4 v = in[i];
    v.x = detail::activate(act, v.x, slope);
    v.y = detail::activate(act, v.y, slope);
    v.z = detail::activate(act, v.z, slope);
    v.w = detail::activate(act, v.w, slope);
    out[i] = v;
  }
}

__global__ void activation_backward_kernel(float* dinp, const float* dout, const float* saved, int64_t n,
                                           Activation act, float slope) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dinp[i] = detail::activation_grad_saved(act, dout[i], saved[i], slope);
}

__global__ void activation_backward_vec4(float4* dinp, const float4* dout, const float4* saved, int64_t n4,
                                         Activation act, float slope) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4; i += int64_t{gridDim.x} * blockDim.x) {
    const float4 g = dout[i], s = saved[i];
    float4 d;
    d.x = detail::activation_grad_saved(act, g.x, s.x, slope);
    d.y = detail::activation_grad_saved(act, g.y, s.y, slope);
    d.z = detail::activation_grad_saved(act, g.z, s.z, slope);
    d.w = detail::activation_grad_saved(act, g.w, s.w, slope);
    dinp[i] = d;
  }
}

// Any storage type, one value per step (f32 takes the 16-byte kernels above instead).
template <class T>
__global__ void activation_forward_typed(T* out, const T* in, int64_t n, Activation act, float slope) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_f32(out + i, detail::activate(act, load_f32(in + i), slope));
}

template <class T>
__global__ void activation_backward_typed(T* dinp, const T* dout, const T* saved, int64_t n, Activation act,
                                          float slope) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_f32(dinp + i, detail::activation_grad_saved(act, load_f32(dout + i), load_f32(saved + i), slope));
}

// ---- dense-layer bias ---------------------------------------------------------------------------------

__global__ void add_bias_rows_kernel(float* out, const float* bias, int64_t total, int cols) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x)
    out[i] += bias[i % cols];
}

// One thread per column walks the rows in order: the CPU's double sum, and coalesced across the warp.
__global__ void column_sums_kernel(float* dbias, const float* x, int64_t rows, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  double s = 0.0;
  for (int64_t r = 0; r < rows; ++r) s += x[r * cols + c];
  dbias[c] += static_cast<float>(s);
}

// ---- BCE with logits ------------------------------------------------------------------------------------

constexpr int kBceThreads = 1024;

// out[0] = the mean over n of f(x_i), in double, added in index order as the CPU adds it: each round the
// block's values go to shared memory and thread 0 adds them in order. Every thread of the block calls it.
// A step scalar written as `store` says (kernels_typed.h ScalarStore).
__device__ __forceinline__ void store_scalar(float* out, float v, ScalarStore store) {
  out[0] = store.accumulate ? out[0] + v * store.weight : v * store.weight;
}

template <class T, class F>
__device__ void ordered_mean(float* out, const T* logits, int64_t n, F f, ScalarStore store = {}) {
  __shared__ double values[kBceThreads];
  double total = 0.0;  // thread 0's
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    if (i < n) values[threadIdx.x] = f(static_cast<double>(load_f32(logits + i)));
    __syncthreads();
    if (threadIdx.x == 0) {
      const int64_t m = n - base < blockDim.x ? n - base : blockDim.x;
      for (int64_t j = 0; j < m; ++j) total += values[j];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) store_scalar(out, static_cast<float>(total / static_cast<double>(n)), store);
}

// One block: the mean loss summed in double over the block, the gradient per logit (core/loss_math.h,
// the CPU's expressions), and mean_prob (may be null) as the CPU's mean sigmoid.
template <class T>
__global__ void __launch_bounds__(kBceThreads) bce_kernel(float* loss, float* mean_prob, T* dlogits, const T* logits,
                                                          int64_t n, float target, float scale) {
  double sum = 0.0;
  const float count = static_cast<float>(n);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double x = load_f32(logits + i);
    sum += loss_math::bce_value(x, target);
    if (dlogits) store_f32(dlogits + i, static_cast<float>(loss_math::bce_grad(x, target)) * scale / count);
  }
  sum = detail::block_sum(sum);
  if (threadIdx.x == 0) loss[0] = static_cast<float>(sum / static_cast<double>(n));
  if (!mean_prob) return;  // the same for every thread: no divergent barrier below
  ordered_mean(mean_prob, logits, n, [](double x) { return loss_math::reported(x, LossKind::bce); });
}

// One block, as bce_kernel, for one term of any objective: the mean term, the gradient per logit and the
// reported mean (loss_math::reported).
template <class T>
__global__ void __launch_bounds__(kBceThreads) gan_loss_kernel(float* loss, float* reported, T* dlogits,
                                                               const T* logits, int64_t n, LossTerm term, float scale,
                                                               ScalarStore store) {
  double sum = 0.0;
  const float count = static_cast<float>(n);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double x = load_f32(logits + i);
    sum += loss_math::value(x, term);
    if (dlogits) store_f32(dlogits + i, loss_math::dlogit(x, term, scale, count));
  }
  sum = detail::block_sum(sum);
  if (threadIdx.x == 0) store_scalar(loss, static_cast<float>(sum / static_cast<double>(n)), store);
  if (!reported) return;  // the same for every thread: no divergent barrier below
  const LossKind kind = term.kind;
  ordered_mean(reported, logits, n, [kind](double x) { return loss_math::reported(x, kind); }, store);
}

// ---- data --------------------------------------------------------------------------------------------

// One thread per output value, in the output's layout; consecutive threads write consecutive values.
template <class T, Layout L>
__global__ void u8_to_image_kernel(T* out, const uint8_t* in, const uint8_t* flips, int64_t total, int H, int W,
                                   int in_channels, int out_channels, float divisor, float offset) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    int x, y, c;
    int64_t n;
    if constexpr (L == Layout::nchw) {
      x = static_cast<int>(i % W);
      int64_t rest = i / W;
      y = static_cast<int>(rest % H);
      rest /= H;
      c = static_cast<int>(rest % out_channels);
      n = rest / out_channels;
    } else {
      c = static_cast<int>(i % out_channels);
      int64_t rest = i / out_channels;
      x = static_cast<int>(rest % W);
      rest /= W;
      y = static_cast<int>(rest % H);
      n = rest / H;
    }
    const int source_x = (flips && flips[n]) ? W - 1 - x : x;
    const int source_c = in_channels == 1 ? 0 : c;
    const uint8_t v = in[((n * H + y) * W + source_x) * in_channels + source_c];
    // The loader's table entry, static_cast<float>(v) / 127.5f - 1.f, with the same two roundings.
    store_f32(out + i, __fadd_rn(__fdiv_rn(static_cast<float>(v), divisor), offset));
  }
}

// flip_drawn: fill_uniform(&u, 1, 0, 1, seed, RngStream::flip, step * 2^32 + position), u >= 0.5.
__global__ void draw_flips_kernel(uint8_t* flips, int64_t count, uint32_t k0, uint32_t k1, uint64_t first_sample) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t draw = first_sample + static_cast<uint64_t>(i);
    const Philox4 w = philox4x32_10(flat_counter(draw / 4), k0, k1);
    const float largest = 0.99999994f;  // the float below 1: fill_uniform's half-open bound
    const float u = fminf(fmaf(1.f, uniform_closed0(w.v[draw % 4]), 0.f), largest);
    flips[i] = u >= 0.5f ? 1 : 0;
  }
}

// One thread per Philox block of one sample: four normals, written where they fall inside nz.
__global__ void noise_kernel(float* z, int64_t count, int nz, uint32_t k0, uint32_t k1, uint64_t step,
                             int64_t first_index) {
  const int blocks_per_sample = (nz + 3) / 4;
  const int64_t total = count * blocks_per_sample;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = t / blocks_per_sample;
    const int b = static_cast<int>(t % blocks_per_sample);
    const auto sample = static_cast<uint32_t>(first_index + r);
    float normals[4];
    normals_of_block(philox4x32_10(noise_counter(static_cast<uint32_t>(b), sample, step), k0, k1), normals);
    float* row = z + r * nz;
#pragma unroll
    for (int lane = 0; lane < 4; ++lane)
      if (b * 4 + lane < nz) row[b * 4 + lane] = normals[lane];
  }
}

}  // namespace

void activation_forward(float* out, const float* in, int64_t n, Activation act, float slope, cudaStream_t stream) {
  if (n <= 0) return;
  int64_t done = 0;
  if (aligned16(out) && aligned16(in) && n >= 4) {
    const int64_t n4 = n / 4;
    activation_forward_vec4<<<grid_for(n4), kThreads, 0, stream>>>(reinterpret_cast<float4*>(out),
                                                                    reinterpret_cast<const float4*>(in), n4, act, slope);
    CUDA_CHECK_LAUNCH();
    done = n4 * 4;
  }
  if (done < n) {
    activation_forward_kernel<<<grid_for(n - done), kThreads, 0, stream>>>(out + done, in + done, n - done, act, slope);
    CUDA_CHECK_LAUNCH();
  }
}

void activation_backward(float* dinp, const float* dout, const float* saved, int64_t n, Activation act, float slope,
                         cudaStream_t stream) {
  if (n <= 0) return;
  int64_t done = 0;
  if (aligned16(dinp) && aligned16(dout) && aligned16(saved) && n >= 4) {
    const int64_t n4 = n / 4;
    activation_backward_vec4<<<grid_for(n4), kThreads, 0, stream>>>(
        reinterpret_cast<float4*>(dinp), reinterpret_cast<const float4*>(dout), reinterpret_cast<const float4*>(saved),
        n4, act, slope);
    CUDA_CHECK_LAUNCH();
    done = n4 * 4;
  }
  if (done < n) {
    activation_backward_kernel<<<grid_for(n - done), kThreads, 0, stream>>>(dinp + done, dout + done, saved + done,
                                                                           n - done, act, slope);
    CUDA_CHECK_LAUNCH();
  }
}

void add_bias_rows(float* out, const float* bias, int64_t rows, int cols, cudaStream_t stream) {
  const int64_t total = rows * cols;
  if (total <= 0) return;
  add_bias_rows_kernel<<<grid_for(total), kThreads, 0, stream>>>(out, bias, total, cols);
  CUDA_CHECK_LAUNCH();
}

void accumulate_column_sums(float* dbias, const float* x, int64_t rows, int cols, cudaStream_t stream) {
  if (cols <= 0) return;
  column_sums_kernel<<<(cols + kThreads - 1) / kThreads, kThreads, 0, stream>>>(dbias, x, rows, cols);
  CUDA_CHECK_LAUNCH();
}

__global__ void l2_norm_kernel(float* out, const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += static_cast<double>(x[i]) * x[i];
  s = detail::block_sum(s);
  if (threadIdx.x == 0) out[0] = static_cast<float>(sqrt(s));
}

void l2_norm(float* out, const float* x, int64_t n, cudaStream_t stream) {
  l2_norm_kernel<<<1, kBceThreads, 0, stream>>>(out, x, n);
  CUDA_CHECK_LAUNCH();
}

void bce_with_logits(float* loss, float* dlogits, const float* logits, int64_t n, float target, float scale,
                     cudaStream_t stream) {
  if (n <= 0) return;
  bce_kernel<float><<<1, kBceThreads, 0, stream>>>(loss, nullptr, dlogits, logits, n, target, scale);
  CUDA_CHECK_LAUNCH();
}

void u8_nhwc_to_f32_nchw(float* out, const uint8_t* in, const uint8_t* flips, int N, int H, int W, int in_channels,
                         int out_channels, float divisor, float offset, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(N) * out_channels * H * W;
  if (total <= 0) return;
  u8_to_image_kernel<float, Layout::nchw><<<grid_for(total), kThreads, 0, stream>>>(
      out, in, flips, total, H, W, in_channels, out_channels, divisor, offset);
  CUDA_CHECK_LAUNCH();
}

void draw_flips(uint8_t* flips, int64_t count, uint64_t seed, int64_t step, int64_t first_position,
                cudaStream_t stream) {
  if (count <= 0) return;
  uint32_t k0, k1;
  rng_key(seed, RngStream::flip, &k0, &k1);
  const uint64_t first_sample = static_cast<uint64_t>(step) * 4294967296ull + static_cast<uint64_t>(first_position);
  draw_flips_kernel<<<grid_for(count), kThreads, 0, stream>>>(flips, count, k0, k1, first_sample);
  CUDA_CHECK_LAUNCH();
}

void fill_noise(float* z, int64_t count, int nz, uint64_t seed, uint64_t step, int64_t first_index,
                cudaStream_t stream) {
  if (count <= 0 || nz <= 0) return;
  uint32_t k0, k1;
  rng_key(seed, RngStream::noise, &k0, &k1);
  const int64_t total = count * ((nz + 3) / 4);
  noise_kernel<<<grid_for(total), kThreads, 0, stream>>>(z, count, nz, k0, k1, step, first_index);
  CUDA_CHECK_LAUNCH();
}

// ---- any storage type (kernels_typed.h) -------------------------------------------------------------

void activation_forward(void* out, const void* in, int64_t n, Activation act, float slope, DataType type,
                        cudaStream_t stream) {
  if (type == DataType::f32)
    return activation_forward(static_cast<float*>(out), static_cast<const float*>(in), n, act, slope, stream);
  if (n <= 0) return;
  detail::with_type(type, [&](auto t) {
    using T = std::remove_pointer_t<decltype(t)>;
    activation_forward_typed<<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(in),
                                                                   n, act, slope);
  });
  CUDA_CHECK_LAUNCH();
}

void activation_backward(void* dinp, const void* dout, const void* saved, int64_t n, Activation act, float slope,
                         DataType type, cudaStream_t stream) {
  if (type == DataType::f32)
    return activation_backward(static_cast<float*>(dinp), static_cast<const float*>(dout),
                               static_cast<const float*>(saved), n, act, slope, stream);
  if (n <= 0) return;
  detail::with_type(type, [&](auto t) {
    using T = std::remove_pointer_t<decltype(t)>;
    activation_backward_typed<<<grid_for(n), kThreads, 0, stream>>>(
        static_cast<T*>(dinp), static_cast<const T*>(dout), static_cast<const T*>(saved), n, act, slope);
  });
  CUDA_CHECK_LAUNCH();
}

void bce_with_logits(float* loss, float* mean_prob, void* dlogits, const void* logits, int64_t n, float target,
                     float scale, DataType type, cudaStream_t stream) {
  if (n <= 0) return;
  detail::with_type(type, [&](auto t) {
    using T = std::remove_pointer_t<decltype(t)>;
    bce_kernel<T><<<1, kBceThreads, 0, stream>>>(loss, mean_prob, static_cast<T*>(dlogits),
                                                 static_cast<const T*>(logits), n, target, scale);
  });
  CUDA_CHECK_LAUNCH();
}

void gan_loss(float* loss, float* reported, void* dlogits, const void* logits, int64_t n, const LossTerm& term,
              float scale, DataType type, cudaStream_t stream, ScalarStore store) {
  if (n <= 0) return;
  detail::with_type(type, [&](auto t) {
    using T = std::remove_pointer_t<decltype(t)>;
    gan_loss_kernel<T><<<1, kBceThreads, 0, stream>>>(loss, reported, static_cast<T*>(dlogits),
                                                      static_cast<const T*>(logits), n, term, scale, store);
  });
  CUDA_CHECK_LAUNCH();
}

void u8_nhwc_to_image(void* out, const ActFormat& fmt, const uint8_t* in, const uint8_t* flips, int N, int H, int W,
                      int in_channels, int out_channels, float divisor, float offset, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(N) * out_channels * H * W;
  if (total <= 0) return;
  detail::with_format(fmt, [&](auto t, auto l) {
    using T = std::remove_pointer_t<decltype(t)>;
    u8_to_image_kernel<T, decltype(l)::value><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<T*>(out), in, flips, total, H, W, in_channels, out_channels, divisor, offset);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace gt::cuda
