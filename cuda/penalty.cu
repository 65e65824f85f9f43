// The gradient penalty's kernels: interpolation weights and interpolates, the penalty and its gradient, LayerNorm2d (forward, backward, tangent, curvature) and the activations' curvature.
#include <cmath>
#include <type_traits>

#include "core/layernorm_math.h"
#include "core/loss_math.h"
#include "core/rng.h"
#include "cuda/kernel_util.cuh"
#include "cuda/kernels_typed.h"

namespace gt::cuda {
namespace {

using detail::block_sum;
using detail::grid_for;
using detail::kThreads;
using detail::load_f32;
using detail::store_f32;

// Every sample is a contiguous block of per = C*H*W values in NCHW and in NHWC alike, so the per-sample
// kernels index inside it; only the per-channel sums need the layout.

__global__ void penalty_mix_kernel(float* e, int64_t count, uint32_t k0, uint32_t k1, uint64_t batch,
                                   int64_t first_index) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    e[i] = penalty_mix_value(k0, k1, static_cast<uint32_t>(first_index + i), batch);
}

template <class T>
__global__ void interpolate_kernel(T* out, const T* real, const T* fake, const float* mix, int64_t n, int64_t per) {
  const int64_t total = n * per;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x)
    store_f32(out + i, penalty_math::mix(load_f32(real + i), load_f32(fake + i), mix[i / per]));
}

template <class T>
__global__ void fill_kernel(T* out, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_f32(out + i, v);
}

template <class T>
__global__ void add_kernel(T* dst, const T* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_f32(dst + i, load_f32(dst + i) + load_f32(src + i));
}

// One block per row: norm[i] = ||g_i|| in double (fixed order), and the row's coefficient.
template <class T>
__global__ void row_norm_kernel(double* norms, float* coefs, const T* g, int64_t per, float weight, float scale,
                                int64_t n) {
  const T* row = g + blockIdx.x * per;
  double s = 0;
  for (int64_t j = threadIdx.x; j < per; j += blockDim.x) {
    const double v = load_f32(row + j);
    s += v * v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) {
    const double norm = sqrt(s);
    norms[blockIdx.x] = norm;
    coefs[blockIdx.x] = penalty_math::coefficient(norm, weight, scale, static_cast<double>(n));
  }
}

// One block: loss[0] = weight * mean of (norm - 1)^2, the rows added in index order by thread 0 (n is a
// batch: a few thousand at most).
__global__ void penalty_value_kernel(float* loss, const double* norms, int64_t n, float weight, ScalarStore store) {
  if (threadIdx.x != 0) return;
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += penalty_math::value(norms[i]);
  const float v = static_cast<float>(static_cast<double>(weight) * s / static_cast<double>(n));
  loss[0] = store.accumulate ? loss[0] + v * store.weight : v * store.weight;
}

template <class T>
__global__ void scale_rows_kernel(T* dg, const T* g, const float* coefs, int64_t n, int64_t per) {
  const int64_t total = n * per;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x)
    store_f32(dg + i, coefs[i / per] * load_f32(g + i));
}

template <class T>
__global__ void activation_second_kernel(T* dinp, const T* delta, const T* t, const T* out, int64_t n, Activation act) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float y = load_f32(out + i);
    const float curvature = act == Activation::tanh ? tanh_curvature(y) : sigmoid_curvature(y);
    store_f32(dinp + i, load_f32(dinp + i) + load_f32(delta + i) * load_f32(t + i) * curvature);
  }
}

// ---- LayerNorm2d ----------------------------------------------------------------------------------------

// The value of a block-wide sum in every thread.
__device__ double block_sum_all(double v) {
  __shared__ double total;
  v = block_sum(v);
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  const double r = total;
  __syncthreads();
  return r;
}

template <class T, Layout L>
__global__ void ln_forward_kernel(T* out, float* mean, float* rstd, const T* x, const float* weight, const float* bias,
                                  int C, int HW, float eps) {
  const int64_t M = static_cast<int64_t>(C) * HW, base = blockIdx.x * M;
  double s = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) s += load_f32(x + base + j);
  const float mu = static_cast<float>(block_sum_all(s) / static_cast<double>(M));
  double q = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const float d = load_f32(x + base + j) - mu;
    q += static_cast<double>(d) * d;
  }
  const float r = static_cast<float>(1.0 / sqrt(block_sum_all(q) / static_cast<double>(M) + eps));
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = mu;
    rstd[blockIdx.x] = r;
  }
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int c = detail::channel_of<L>(j, C, HW);
    store_f32(out + base + j, (load_f32(x + base + j) - mu) * r * weight[c] + bias[c]);
  }
}

// The normalization's (symmetric) Jacobian on one sample, as the CPU's normalize_jacobian: weight_first
// for the backward (t = dy, the weight applied before), else the tangent (the weight applied after).
template <class T, Layout L>
__global__ void ln_jacobian_kernel(T* out, const T* t, const T* x, const float* mean, const float* rstd,
                                   const float* weight, bool weight_first, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW, base = blockIdx.x * M;
  const float mu = mean[blockIdx.x], r = rstd[blockIdx.x];
  double st = 0, stx = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int c = detail::channel_of<L>(j, C, HW);
    const float tv = weight_first ? weight[c] * load_f32(t + base + j) : load_f32(t + base + j);
    st += tv;
    stx += static_cast<double>(tv) * ((load_f32(x + base + j) - mu) * r);
  }
  const float a = static_cast<float>(block_sum_all(st) / static_cast<double>(M));
  const float b = static_cast<float>(block_sum_all(stx) / static_cast<double>(M));
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int c = detail::channel_of<L>(j, C, HW);
    const float tv = weight_first ? weight[c] * load_f32(t + base + j) : load_f32(t + base + j);
    const float v = layernorm_math::jacobian(tv, load_f32(x + base + j), mu, r, a, b);
    store_f32(out + base + j, weight_first ? v : weight[c] * v);
  }
}

// One block per channel: dweight[c] += sum of a * xhat (with tangent stats ea/eb: of a * xhat', the
// normalized tangent), dbias[c] += sum of a; samples then positions in order.
template <class T, Layout L>
__global__ void ln_channel_sums_kernel(float* dweight, float* dbias, const T* a, const T* x, const T* t,
                                      const float* mean, const float* rstd, const float* ea, const float* eb, int N,
                                      int C, int HW) {
  const int c = blockIdx.x;
  double sw = 0, sb = 0;
  const int64_t count = static_cast<int64_t>(N) * HW;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const int64_t n = k / HW, hw = k % HW;
    const int64_t j = detail::offset_of<L>(n, c, hw, C, HW);
    const float xhat = (load_f32(x + j) - mean[n]) * rstd[n];
    const float av = load_f32(a + j);
    if (t) {
      const float xt = layernorm_math::jacobian(load_f32(t + j), load_f32(x + j), mean[n], rstd[n], ea[n], eb[n]);
      sw += static_cast<double>(av) * xt;
    } else {
      sw += static_cast<double>(av) * xhat;
    }
    sb += av;
  }
  sw = block_sum(sw);
  sb = block_sum(sb);
  if (threadIdx.x == 0) {
    if (dweight) dweight[c] += static_cast<float>(sw);
    if (dbias) dbias[c] += static_cast<float>(sb);
  }
}

// The curvature term on one sample (the CPU's layernorm2d_second, whose comment derives it); also the
// sample's mean(t) and mean(t * xhat) for the weight's sums.
template <class T, Layout L>
__global__ void ln_second_kernel(T* dinp, float* ea, float* eb, const T* delta, const T* t, const T* x,
                                 const float* mean, const float* rstd, const float* weight, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW, base = blockIdx.x * M;
  const double m = static_cast<double>(M), mu = mean[blockIdx.x], r = rstd[blockIdx.x];
  double U = 0, V = 0, S = 0, A = 0, E = 0, TX = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int c = detail::channel_of<L>(j, C, HW);
    const double tv = load_f32(t + base + j), xv = load_f32(x + base + j);
    const double a = static_cast<double>(weight[c]) * load_f32(delta + base + j), cj = xv - mu;
    U += cj * tv;
    V += a * cj;
    S += a * tv;
    A += a;
    E += tv;
    TX += tv * static_cast<double>((load_f32(x + base + j) - mean[blockIdx.x]) * rstd[blockIdx.x]);
  }
  U = block_sum_all(U) / m;
  V = block_sum_all(V);
  S = block_sum_all(S);
  A = block_sum_all(A);
  E = block_sum_all(E) / m;
  TX = block_sum_all(TX) / m;
  const double dphi_dr = layernorm_math::dphi_dr(S, E, A, r, U, V);
  double gsum = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int c = detail::channel_of<L>(j, C, HW);
    const double tv = load_f32(t + base + j), cj = static_cast<double>(load_f32(x + base + j)) - mu;
    const double a = static_cast<double>(weight[c]) * load_f32(delta + base + j);
    gsum += layernorm_math::curvature(tv, a, cj, r, m, U, V, dphi_dr);
  }
  const double gmean = block_sum_all(gsum) / m;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int c = detail::channel_of<L>(j, C, HW);
    const double tv = load_f32(t + base + j), cj = static_cast<double>(load_f32(x + base + j)) - mu;
    const double a = static_cast<double>(weight[c]) * load_f32(delta + base + j);
    store_f32(dinp + base + j, static_cast<float>(layernorm_math::curvature(tv, a, cj, r, m, U, V, dphi_dr) - gmean));
  }
  if (threadIdx.x == 0) {
    ea[blockIdx.x] = static_cast<float>(E);
    eb[blockIdx.x] = static_cast<float>(TX);
  }
}

}  // namespace

void fill_penalty_mix(float* e, int64_t count, uint64_t seed, uint64_t batch, int64_t first_index,
                      cudaStream_t stream) {
  if (count <= 0) return;
  uint32_t k0, k1;
  rng_key(seed, RngStream::penalty_mix, &k0, &k1);
  penalty_mix_kernel<<<grid_for(count), kThreads, 0, stream>>>(e, count, k0, k1, batch, first_index);
  CUDA_CHECK_LAUNCH();
}

void penalty_interpolate(void* out, const void* real, const void* fake, const float* mix, int64_t n, int64_t per,
                         DataType type, cudaStream_t stream) {
  if (n <= 0 || per <= 0) return;
  detail::with_type(type, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    interpolate_kernel<<<grid_for(n * per), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(real),
                                                                   static_cast<const T*>(fake), mix, n, per);
  });
  CUDA_CHECK_LAUNCH();
}

void fill_value(void* out, int64_t n, float value, DataType type, cudaStream_t stream) {
  if (n <= 0) return;
  detail::with_type(type, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fill_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(out), n, value);
  });
  CUDA_CHECK_LAUNCH();
}

void add_values(void* dst, const void* src, int64_t n, DataType type, cudaStream_t stream) {
  if (n <= 0) return;
  detail::with_type(type, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    add_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(dst), static_cast<const T*>(src), n);
  });
  CUDA_CHECK_LAUNCH();
}

void gradient_penalty(float* loss, void* dg, const void* g, int64_t n, int64_t per, float weight, float scale,
                      DataType type, void* workspace, cudaStream_t stream, ScalarStore store) {
  if (n <= 0) return;
  double* norms = static_cast<double*>(workspace);
  float* coefs = reinterpret_cast<float*>(norms + n);
  detail::with_type(type, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    row_norm_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(norms, coefs, static_cast<const T*>(g), per,
                                                                       weight, scale, n);
    CUDA_CHECK_LAUNCH();
    penalty_value_kernel<<<1, 32, 0, stream>>>(loss, norms, n, weight, store);
    CUDA_CHECK_LAUNCH();
    scale_rows_kernel<<<grid_for(n * per), kThreads, 0, stream>>>(static_cast<T*>(dg), static_cast<const T*>(g), coefs,
                                                                  n, per);
  });
  CUDA_CHECK_LAUNCH();
}

size_t gradient_penalty_workspace_bytes(int64_t n) {
  return static_cast<size_t>(n) * (sizeof(double) + sizeof(float));
}

void activation_second(void* dinp, const void* delta, const void* t, const void* saved_out, int64_t n, Activation act,
                       DataType type, cudaStream_t stream) {
  if (n <= 0 || (act != Activation::tanh && act != Activation::sigmoid)) return;
  detail::with_type(type, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    activation_second_kernel<<<grid_for(n), kThreads, 0, stream>>>(
        static_cast<T*>(dinp), static_cast<const T*>(delta), static_cast<const T*>(t), static_cast<const T*>(saved_out),
        n, act);
  });
  CUDA_CHECK_LAUNCH();
}

void layernorm_forward(void* out, float* mean, float* rstd, const void* x, const float* weight, const float* bias,
                       int N, int C, int HW, float eps, const ActFormat& fmt, cudaStream_t stream) {
  if (N <= 0) return;
  detail::with_format(fmt, [&](auto tag, auto layout) {
    using T = std::remove_pointer_t<decltype(tag)>;
    ln_forward_kernel<T, decltype(layout)::value><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
        static_cast<T*>(out), mean, rstd, static_cast<const T*>(x), weight, bias, C, HW, eps);
  });
  CUDA_CHECK_LAUNCH();
}

void layernorm_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* x, const float* mean,
                        const float* rstd, const float* weight, int N, int C, int HW, const ActFormat& fmt,
                        cudaStream_t stream) {
  if (N <= 0) return;
  detail::with_format(fmt, [&](auto tag, auto layout) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr Layout L = decltype(layout)::value;
    if (dinp)
      ln_jacobian_kernel<T, L><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
          static_cast<T*>(dinp), static_cast<const T*>(dout), static_cast<const T*>(x), mean, rstd, weight, true, C, HW);
    if (dweight || dbias)
      ln_channel_sums_kernel<T, L><<<static_cast<unsigned>(C), kThreads, 0, stream>>>(
          dweight, dbias, static_cast<const T*>(dout), static_cast<const T*>(x), nullptr, mean, rstd, nullptr, nullptr,
          N, C, HW);
  });
  CUDA_CHECK_LAUNCH();
}

void layernorm_tangent(void* out, const void* t, const void* x, const float* mean, const float* rstd,
                       const float* weight, int N, int C, int HW, const ActFormat& fmt, cudaStream_t stream) {
  if (N <= 0) return;
  detail::with_format(fmt, [&](auto tag, auto layout) {
    using T = std::remove_pointer_t<decltype(tag)>;
    ln_jacobian_kernel<T, decltype(layout)::value><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(t), static_cast<const T*>(x), mean, rstd, weight, false, C, HW);
  });
  CUDA_CHECK_LAUNCH();
}

void layernorm_second(void* dinp, float* dweight, const void* delta, const void* t, const void* x, const float* mean,
                      const float* rstd, const float* weight, int N, int C, int HW, const ActFormat& fmt,
                      float* workspace, cudaStream_t stream) {
  if (N <= 0) return;
  float* ea = workspace;
  float* eb = workspace + N;
  detail::with_format(fmt, [&](auto tag, auto layout) {
    using T = std::remove_pointer_t<decltype(tag)>;
    constexpr Layout L = decltype(layout)::value;
    ln_second_kernel<T, L><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
        static_cast<T*>(dinp), ea, eb, static_cast<const T*>(delta), static_cast<const T*>(t), static_cast<const T*>(x),
        mean, rstd, weight, C, HW);
    CUDA_CHECK_LAUNCH();
    if (dweight)
      ln_channel_sums_kernel<T, L><<<static_cast<unsigned>(C), kThreads, 0, stream>>>(
          dweight, nullptr, static_cast<const T*>(delta), static_cast<const T*>(x), static_cast<const T*>(t), mean, rstd,
          ea, eb, N, C, HW);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace gt::cuda
