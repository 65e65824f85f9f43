// BatchNorm2d over NCHW or NHWC, f32 or bf16 storage: per-channel sums in double (two-level, fixed order, all-reducible for sync BN), normalize fused with the activation, and its backward.
#include <type_traits>

#include "cuda/kernel_util.cuh"
#include "cuda/kernels_typed.h"

namespace gt::cuda {
namespace {

using detail::grid_for;
using detail::kThreads;
using detail::load_f32;
using detail::store_f32;

// NCHW: each block of a reduction sums one chunk of one channel's N*HW values (contiguous runs of HW);
// a second pass adds the chunks of a channel in order.
// NHWC: the channel is the innermost index, so a block takes a chunk of kRowChunk rows (n, hw) and 32
// channels: 32 lanes over consecutive channels (coalesced) times kRowGroups threads over rows, each
// thread adding its rows in order; the row groups are then added in order through shared memory, and
// the same second pass adds the chunks. Chunking depends only on the shape, so results repeat exactly.
constexpr int kReduceThreads = 256;
constexpr int64_t kReduceChunk = kReduceThreads * 16;
constexpr int kLanes = 32, kRowGroups = 8;
constexpr int64_t kRowChunk = 256;

int64_t chunks_per_channel(int N, int HW) { return (static_cast<int64_t>(N) * HW + kReduceChunk - 1) / kReduceChunk; }
int64_t row_chunks(int N, int HW) { return (static_cast<int64_t>(N) * HW + kRowChunk - 1) / kRowChunk; }
int64_t chunks_of(Layout l, int N, int HW) { return l == Layout::nhwc ? row_chunks(N, HW) : chunks_per_channel(N, HW); }
// The workspace holds the partial sums of either layout (NHWC has more, smaller chunks).
int64_t partial_chunks(int N, int HW) {
  const int64_t a = chunks_per_channel(N, HW), b = row_chunks(N, HW);
  return a > b ? a : b;
}

// The scale and shift of a channel, with the CPU's roundings (no contraction in this file).
struct Affine {
  float scale, shift;
};
__device__ __forceinline__ Affine channel_affine(const float* weight, const float* bias, float mean, float rstd) {
  const float scale = (weight ? weight[0] : 1.f) * rstd;
  const float shift = (bias ? bias[0] : 0.f) - mean * scale;
  return {scale, shift};
}

// What a reduction adds for one value x (with its gradient g where the pass has one).
enum class Reduce { sum, sq_dev, backward };

// The per-channel constants of a reduction pass.
struct ReduceChannel {
  float m;
  Affine a;
};
template <Reduce kind>
__device__ __forceinline__ ReduceChannel reduce_channel(int c, const float* mean, const float* rstd,
                                                        const float* weight, const float* bias) {
  const float m = (kind == Reduce::sum) ? 0.f : mean[c];
  Affine a{1.f, 0.f};
  if (kind == Reduce::backward)
    a = channel_affine(weight ? weight + c : nullptr, bias ? bias + c : nullptr, m, rstd[c]);
  return {m, a};
}

// Adds one value's terms to the running sums: the same float operations in both layouts.
template <Reduce kind, class T>
__device__ __forceinline__ void reduce_value(double& s0, double& s1, const T* x, const T* dout, int64_t at,
                                             const ReduceChannel& k, Activation act, float slope) {
  const float v = load_f32(x + at);
  if (kind == Reduce::sum) {
    s0 += v;
  } else if (kind == Reduce::sq_dev) {
    const float d = v - k.m;
    s0 += d * d;
  } else {
    const float pre = v * k.a.scale + k.a.shift;
    const float g = detail::activation_grad_pre(act, load_f32(dout + at), pre, slope);
    s0 += g;
    s1 += g * (v - k.m);
  }
}

// NCHW. partial[(which * C + c) * chunks + chunk]: which 0 (and 1 for the backward's second sum).
template <Reduce kind, class T>
__global__ void channel_reduce_kernel(double* partial, const T* x, const T* dout, const float* mean,
                                      const float* rstd, const float* weight, const float* bias, int N, int C, int HW,
                                      Activation act, float slope) {
  const int c = blockIdx.y;
  const int64_t chunks = gridDim.x;
  const int64_t per_channel = static_cast<int64_t>(N) * HW;
  const int64_t begin = blockIdx.x * kReduceChunk;
  const int64_t end = begin + kReduceChunk < per_channel ? begin + kReduceChunk : per_channel;
  const ReduceChannel k = reduce_channel<kind>(c, mean, rstd, weight, bias);
  double s0 = 0.0, s1 = 0.0;
  for (int64_t e = begin + threadIdx.x; e < end; e += blockDim.x) {
    const int64_t n = e / HW, i = e % HW;
    reduce_value<kind>(s0, s1, x, dout, (n * C + c) * HW + i, k, act, slope);
  }
  s0 = detail::block_sum(s0);
  if (kind == Reduce::backward) s1 = detail::block_sum(s1);
  if (threadIdx.x == 0) {
    partial[static_cast<int64_t>(c) * chunks + blockIdx.x] = s0;
    if (kind == Reduce::backward) partial[(static_cast<int64_t>(C) + c) * chunks + blockIdx.x] = s1;
  }
}

// NHWC, the same partial layout. Block (kLanes, kRowGroups); grid (row chunks, channel groups of 32).
template <Reduce kind, class T>
__global__ void __launch_bounds__(kLanes* kRowGroups)
    channel_reduce_nhwc_kernel(double* partial, const T* x, const T* dout, const float* mean, const float* rstd,
                               const float* weight, const float* bias, int N, int C, int HW, Activation act,
                               float slope) {
  __shared__ double group_sums[2][kRowGroups][kLanes];
  const int c = static_cast<int>(blockIdx.y) * kLanes + static_cast<int>(threadIdx.x);
  const int64_t chunks = gridDim.x;
  const int64_t rows = static_cast<int64_t>(N) * HW;
  const int64_t begin = blockIdx.x * kRowChunk;
  const int64_t end = begin + kRowChunk < rows ? begin + kRowChunk : rows;
  double s0 = 0.0, s1 = 0.0;
  if (c < C) {
    const ReduceChannel k = reduce_channel<kind>(c, mean, rstd, weight, bias);
    for (int64_t r = begin + threadIdx.y; r < end; r += kRowGroups)
      reduce_value<kind>(s0, s1, x, dout, r * C + c, k, act, slope);
  }
  group_sums[0][threadIdx.y][threadIdx.x] = s0;
  group_sums[1][threadIdx.y][threadIdx.x] = s1;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  double t0 = 0.0, t1 = 0.0;
  for (int g = 0; g < kRowGroups; ++g) {
    t0 += group_sums[0][g][threadIdx.x];
    t1 += group_sums[1][g][threadIdx.x];
  }
  partial[static_cast<int64_t>(c) * chunks + blockIdx.x] = t0;
  if (kind == Reduce::backward) partial[(static_cast<int64_t>(C) + c) * chunks + blockIdx.x] = t1;
}

// One warp per row of partial sums (a channel, or a channel's second sum): lanes stride, then a fixed tree.
__global__ void finish_rows_kernel(double* out, const double* partial, int rows, int64_t chunks) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;  // whole warps leave together
  double s = 0.0;
  for (int64_t k = lane; k < chunks; k += 32) s += partial[row * chunks + k];
  s = detail::warp_sum(s);
  if (lane == 0) out[row] = s;
}

void reduce_channels(double* out, const double* partial, int rows, int64_t chunks, cudaStream_t stream) {
  const int warps_per_block = kThreads / 32;
  finish_rows_kernel<<<(rows + warps_per_block - 1) / warps_per_block, kThreads, 0, stream>>>(out, partial, rows, chunks);
  CUDA_CHECK_LAUNCH();
}

__global__ void mean_kernel(float* mean, const double* sum, int C, double count) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < C) mean[c] = static_cast<float>(sum[c] / count);
}

__global__ void stats_kernel(float* rstd, float* var, const double* sq, int C, double count, float eps) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const double v = sq[c] / count;
  rstd[c] = static_cast<float>(1.0 / sqrt(v + eps));
  if (var) var[c] = static_cast<float>(v);
}

__global__ void running_kernel(float* running_mean, float* running_var, const float* mean, const float* var, int C,
                               double unbias, float momentum) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean[c];
  running_var[c] = (1.f - momentum) * running_var[c] + momentum * static_cast<float>(var[c] * unbias);
}

// rstd of the running variance, as the CPU's eval mode: 1.f / sqrtf(running_var + eps) in float.
__global__ void eval_rstd_kernel(float* rstd, const float* running_var, int C, float eps) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < C) rstd[c] = 1.f / sqrtf(running_var[c] + eps);
}

// Index is int32 when the tensor allows (the channel of an element costs a division per value).
template <class T, Layout L, class Index>
__global__ void apply_kernel(T* out, const T* x, const float* mean, const float* rstd, const float* weight,
                             const float* bias, Index total, int C, int HW, Activation act, float slope) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x) {
    const int c = detail::channel_of<L>(i, C, HW);
    const Affine a = channel_affine(weight ? weight + c : nullptr, bias ? bias + c : nullptr, mean[c], rstd[c]);
    store_f32(out + i, detail::activate(act, load_f32(x + i) * a.scale + a.shift, slope));
  }
}

// Eval mode: the rstd of the running variance per value (1.f / sqrtf(var + eps), as the CPU), so
// eval needs no workspace; it is not the training hot path.
template <class T, Layout L, class Index>
__global__ void eval_apply_kernel(T* out, const T* x, const float* running_mean, const float* running_var,
                                  const float* weight, const float* bias, Index total, int C, int HW, float eps,
                                  Activation act, float slope) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x) {
    const int c = detail::channel_of<L>(i, C, HW);
    const float r = 1.f / sqrtf(running_var[c] + eps);
    const Affine a = channel_affine(weight ? weight + c : nullptr, bias ? bias + c : nullptr, running_mean[c], r);
    store_f32(out + i, detail::activate(act, load_f32(x + i) * a.scale + a.shift, slope));
  }
}

// Per channel, the backward's constants: scale = w * rstd, mean(g), and k (per unit of x - mean).
// Also accumulates dweight and dbias, as the CPU does from the same double sums.
__global__ void backward_coefficients_kernel(float* coef, float* dweight, float* dbias, const double* sum_g,
                                             const double* sum_g_xmu, double count, const float* rstd,
                                             const float* weight, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const float r = rstd[c];
  const double g_xhat = sum_g_xmu[c] * r;
  if (dweight) dweight[c] += static_cast<float>(g_xhat);
  if (dbias) dbias[c] += static_cast<float>(sum_g[c]);
  coef[3 * c] = (weight ? weight[c] : 1.f) * r;
  coef[3 * c + 1] = static_cast<float>(sum_g[c] / count);
  coef[3 * c + 2] = static_cast<float>(g_xhat / count) * r;
}

template <class T, Layout L, class Index>
__global__ void backward_apply_kernel(T* dinp, const float* coef, const T* dout, const T* x, const float* mean,
                                      const float* rstd, const float* weight, const float* bias, Index total, int C,
                                      int HW, Activation act, float slope) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x) {
    const int c = detail::channel_of<L>(i, C, HW);
    const float m = mean[c];
    float g = load_f32(dout + i);
    if (act != Activation::none) {
      const Affine a = channel_affine(weight ? weight + c : nullptr, bias ? bias + c : nullptr, m, rstd[c]);
      g = detail::activation_grad_pre(act, g, load_f32(x + i) * a.scale + a.shift, slope);
    }
    const float scale = coef[3 * c], mean_g = coef[3 * c + 1], k = coef[3 * c + 2];
    store_f32(dinp + i, scale * (g - mean_g - (load_f32(x + i) - m) * k));
  }
}

// Eval-mode data gradient: dinp = g * scale, g recomputed through the activation.
template <class Index>
__global__ void backward_eval_kernel(float* dinp, const float* dout, const float* x, const float* mean,
                                     const float* rstd, const float* weight, const float* bias, Index total, int C,
                                     int HW, Activation act, float slope) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>((i / HW) % C);
    const Affine a = channel_affine(weight ? weight + c : nullptr, bias ? bias + c : nullptr, mean[c], rstd[c]);
    const float g = detail::activation_grad_pre(act, dout[i], x[i] * a.scale + a.shift, slope);
    dinp[i] = g * a.scale;
  }
}

__global__ void eval_param_grads_kernel(float* dweight, float* dbias, const double* sum_g, const double* sum_g_xmu,
                                        const float* rstd, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  if (dweight) dweight[c] += static_cast<float>(sum_g_xmu[c] * rstd[c]);
  if (dbias) dbias[c] += static_cast<float>(sum_g[c]);
}

// dbias[c] += float(sum[c]): a convolution's bias gradient from the channel sums of dout.
__global__ void add_sums_kernel(float* dbias, const double* sum, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < C) dbias[c] += static_cast<float>(sum[c]);
}

// out += bias[c] in the storage type (one rounding for bf16).
template <class T, Layout L, class Index>
__global__ void add_channel_bias_kernel(T* out, const float* bias, Index total, int C, int HW) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x)
    store_f32(out + i, load_f32(out + i) + bias[detail::channel_of<L>(i, C, HW)]);
}

unsigned channel_grid(int C) { return static_cast<unsigned>((C + kThreads - 1) / kThreads); }

// int32 indexing when the last grid-stride step cannot pass 2^31 - 1.
bool fits_int32(int N, int C, int HW) {
  return static_cast<int64_t>(N) * C * HW + detail::kMaxBlocks * kThreads < (int64_t{1} << 31);
}

// Launches an element-wise kernel over [N, C, HW] with int32 or int64 indexing: launch(Index{}, total).
template <class Launch>
void launch_elementwise(int N, int C, int HW, Launch&& launch) {
  const int64_t total = static_cast<int64_t>(N) * C * HW;
  if (total <= 0) return;
  if (fits_int32(N, C, HW)) launch(int32_t{0}, static_cast<int32_t>(total));
  else launch(int64_t{0}, total);
  CUDA_CHECK_LAUNCH();
}

// The first pass of a reduction into partial (see the kernels for its layout); chunks_of(L) per channel.
template <Reduce kind, class T, Layout L>
void launch_reduce(double* partial, const T* x, const T* dout, const float* mean, const float* rstd,
                   const float* weight, const float* bias, int N, int C, int HW, Activation act, float slope,
                   cudaStream_t stream) {
  if constexpr (L == Layout::nchw) {
    const dim3 grid(static_cast<unsigned>(chunks_per_channel(N, HW)), static_cast<unsigned>(C));
    channel_reduce_kernel<kind, T><<<grid, kReduceThreads, 0, stream>>>(partial, x, dout, mean, rstd, weight, bias, N,
                                                                        C, HW, act, slope);
  } else {
    const dim3 grid(static_cast<unsigned>(row_chunks(N, HW)), static_cast<unsigned>((C + kLanes - 1) / kLanes));
    channel_reduce_nhwc_kernel<kind, T><<<grid, dim3(kLanes, kRowGroups), 0, stream>>>(
        partial, x, dout, mean, rstd, weight, bias, N, C, HW, act, slope);
  }
  CUDA_CHECK_LAUNCH();
}

// Workspace layout, in doubles: [0, 2*C*partial_chunks) partial sums, then 2*C of per-channel sums, then
// 2*C (as 4*C floats) of per-channel coefficients.
struct Workspace {
  double* partial;
  double* sums_a;
  double* sums_b;
  float* coef;
};
Workspace carve(double* ws, int N, int C, int HW) {
  const int64_t partial = 2 * static_cast<int64_t>(C) * partial_chunks(N, HW);
  return {ws, ws + partial, ws + partial + C, reinterpret_cast<float*>(ws + partial + 2 * C)};
}

// ---- the steps, templated on storage and layout (the float NCHW functions below are <float, nchw>) ----

template <class T, Layout L>
void channel_sums(double* sum, const T* x, int N, int C, int HW, double* workspace, cudaStream_t stream) {
  launch_reduce<Reduce::sum, T, L>(workspace, x, nullptr, nullptr, nullptr, nullptr, nullptr, N, C, HW,
                                   Activation::none, 0.f, stream);
  reduce_channels(sum, workspace, C, chunks_of(L, N, HW), stream);
}

template <class T, Layout L>
void channel_sq_dev(double* sq, const T* x, const float* mean, int N, int C, int HW, double* workspace,
                    cudaStream_t stream) {
  launch_reduce<Reduce::sq_dev, T, L>(workspace, x, nullptr, mean, nullptr, nullptr, nullptr, N, C, HW,
                                      Activation::none, 0.f, stream);
  reduce_channels(sq, workspace, C, chunks_of(L, N, HW), stream);
}

template <class T, Layout L>
void apply(T* out, const T* x, const float* mean, const float* rstd, const float* weight, const float* bias, int N,
           int C, int HW, Activation act, float slope, cudaStream_t stream) {
  launch_elementwise(N, C, HW, [&](auto index, auto total) {
    using Index = decltype(index);
    apply_kernel<T, L, Index><<<grid_for(total), kThreads, 0, stream>>>(out, x, mean, rstd, weight, bias, total, C,
                                                                        HW, act, slope);
  });
}

template <class T, Layout L>
void forward_eval(T* out, const T* x, const float* weight, const float* bias, const float* running_mean,
                  const float* running_var, int N, int C, int HW, float eps, Activation act, float slope,
                  cudaStream_t stream) {
  launch_elementwise(N, C, HW, [&](auto index, auto total) {
    using Index = decltype(index);
    eval_apply_kernel<T, L, Index><<<grid_for(total), kThreads, 0, stream>>>(
        out, x, running_mean, running_var, weight, bias, total, C, HW, eps, act, slope);
  });
}

template <class T, Layout L>
void backward_sums(double* sum_g, double* sum_g_xmu, const T* dout, const T* x, const float* mean, const float* rstd,
                   const float* weight, const float* bias, int N, int C, int HW, Activation act, float slope,
                   double* workspace, cudaStream_t stream) {
  launch_reduce<Reduce::backward, T, L>(workspace, x, dout, mean, rstd, weight, bias, N, C, HW, act, slope, stream);
  const int64_t chunks = chunks_of(L, N, HW);
  reduce_channels(sum_g, workspace, C, chunks, stream);
  reduce_channels(sum_g_xmu, workspace + static_cast<int64_t>(C) * chunks, C, chunks, stream);
}

template <class T, Layout L>
void backward_apply(T* dinp, float* dweight, float* dbias, const double* sum_g, const double* sum_g_xmu, double count,
                    const T* dout, const T* x, const float* mean, const float* rstd, const float* weight,
                    const float* bias, int N, int C, int HW, Activation act, float slope, double* workspace,
                    cudaStream_t stream) {
  float* coef = carve(workspace, N, C, HW).coef;
  backward_coefficients_kernel<<<channel_grid(C), kThreads, 0, stream>>>(coef, dweight, dbias, sum_g, sum_g_xmu,
                                                                         count, rstd, weight, C);
  CUDA_CHECK_LAUNCH();
  if (!dinp) return;
  launch_elementwise(N, C, HW, [&](auto index, auto total) {
    using Index = decltype(index);
    backward_apply_kernel<T, L, Index><<<grid_for(total), kThreads, 0, stream>>>(
        dinp, coef, dout, x, mean, rstd, weight, bias, total, C, HW, act, slope);
  });
}

// The typed entry points cast their void pointers once here.
template <class F>
void dispatch(const ActFormat& fmt, F&& f) {
  detail::with_format(fmt, [&](auto type_tag, auto layout_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    f(T{}, layout_tag);  // a value of T: the callers' lambdas take decltype of it
  });
}

}  // namespace

size_t batchnorm_workspace_doubles(int N, int C, int HW) {
  return static_cast<size_t>(2 * static_cast<int64_t>(C) * partial_chunks(N, HW) + 4 * static_cast<int64_t>(C));
}

void batchnorm_channel_sums(double* sum, const float* x, int N, int C, int HW, double* workspace, cudaStream_t stream) {
  channel_sums<float, Layout::nchw>(sum, x, N, C, HW, workspace, stream);
}

void batchnorm_mean_from_sums(float* mean, const double* sum, int C, double count, cudaStream_t stream) {
  mean_kernel<<<channel_grid(C), kThreads, 0, stream>>>(mean, sum, C, count);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_channel_sq_dev(double* sq, const float* x, const float* mean, int N, int C, int HW, double* workspace,
                              cudaStream_t stream) {
  channel_sq_dev<float, Layout::nchw>(sq, x, mean, N, C, HW, workspace, stream);
}

void batchnorm_stats_from_sq(float* rstd, float* var, const double* sq, int C, double count, float eps,
                             cudaStream_t stream) {
  stats_kernel<<<channel_grid(C), kThreads, 0, stream>>>(rstd, var, sq, C, count, eps);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_apply(float* out, const float* x, const float* mean, const float* rstd, const float* weight,
                     const float* bias, int N, int C, int HW, Activation act, float slope, cudaStream_t stream) {
  apply<float, Layout::nchw>(out, x, mean, rstd, weight, bias, N, C, HW, act, slope, stream);
}

void batchnorm_forward_train(float* out, float* mean, float* rstd, float* var, const float* x, const float* weight,
                             const float* bias, int N, int C, int HW, float eps, Activation act, float slope,
                             double* workspace, cudaStream_t stream) {
  const Workspace ws = carve(workspace, N, C, HW);
  const double count = static_cast<double>(N) * HW;
  batchnorm_channel_sums(ws.sums_a, x, N, C, HW, ws.partial, stream);
  batchnorm_mean_from_sums(mean, ws.sums_a, C, count, stream);
  batchnorm_channel_sq_dev(ws.sums_b, x, mean, N, C, HW, ws.partial, stream);
  batchnorm_stats_from_sq(rstd, var, ws.sums_b, C, count, eps, stream);
  batchnorm_apply(out, x, mean, rstd, weight, bias, N, C, HW, act, slope, stream);
}

void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, int C,
                              int64_t count, float momentum, cudaStream_t stream) {
  const double unbias = count > 1 ? static_cast<double>(count) / static_cast<double>(count - 1) : 1.0;
  running_kernel<<<channel_grid(C), kThreads, 0, stream>>>(running_mean, running_var, mean, var, C, unbias, momentum);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_forward_eval(float* out, const float* x, const float* weight, const float* bias,
                            const float* running_mean, const float* running_var, int N, int C, int HW, float eps,
                            Activation act, float slope, cudaStream_t stream) {
  forward_eval<float, Layout::nchw>(out, x, weight, bias, running_mean, running_var, N, C, HW, eps, act, slope,
                                    stream);
}

void batchnorm_backward_sums(double* sum_g, double* sum_g_xmu, const float* dout, const float* x, const float* mean,
                             const float* rstd, const float* weight, const float* bias, int N, int C, int HW,
                             Activation act, float slope, double* workspace, cudaStream_t stream) {
  backward_sums<float, Layout::nchw>(sum_g, sum_g_xmu, dout, x, mean, rstd, weight, bias, N, C, HW, act, slope,
                                     workspace, stream);
}

void batchnorm_backward_apply(float* dinp, float* dweight, float* dbias, const double* sum_g, const double* sum_g_xmu,
                              double count, const float* dout, const float* x, const float* mean, const float* rstd,
                              const float* weight, const float* bias, int N, int C, int HW, Activation act,
                              float slope, double* workspace, cudaStream_t stream) {
  backward_apply<float, Layout::nchw>(dinp, dweight, dbias, sum_g, sum_g_xmu, count, dout, x, mean, rstd, weight,
                                      bias, N, C, HW, act, slope, workspace, stream);
}

void batchnorm_backward_train(float* dinp, float* dweight, float* dbias, const float* dout, const float* x,
                              const float* mean, const float* rstd, const float* weight, const float* bias, int N,
                              int C, int HW, Activation act, float slope, double* workspace, cudaStream_t stream) {
  const Workspace ws = carve(workspace, N, C, HW);
  batchnorm_backward_sums(ws.sums_a, ws.sums_b, dout, x, mean, rstd, weight, bias, N, C, HW, act, slope, ws.partial,
                          stream);
  batchnorm_backward_apply(dinp, dweight, dbias, ws.sums_a, ws.sums_b, static_cast<double>(N) * HW, dout, x, mean,
                           rstd, weight, bias, N, C, HW, act, slope, workspace, stream);
}

void batchnorm_backward_eval(float* dinp, float* dweight, float* dbias, const float* dout, const float* x,
                             const float* running_mean, const float* running_var, const float* weight,
                             const float* bias, int N, int C, int HW, float eps, Activation act, float slope,
                             double* workspace, cudaStream_t stream) {
  const Workspace ws = carve(workspace, N, C, HW);
  float* rstd = ws.coef;
  eval_rstd_kernel<<<channel_grid(C), kThreads, 0, stream>>>(rstd, running_var, C, eps);
  CUDA_CHECK_LAUNCH();
  if (dweight || dbias) {
    batchnorm_backward_sums(ws.sums_a, ws.sums_b, dout, x, running_mean, rstd, weight, bias, N, C, HW, act, slope,
                            ws.partial, stream);
    eval_param_grads_kernel<<<channel_grid(C), kThreads, 0, stream>>>(dweight, dbias, ws.sums_a, ws.sums_b, rstd, C);
    CUDA_CHECK_LAUNCH();
  }
  const int64_t total = static_cast<int64_t>(N) * C * HW;
  if (!dinp || total <= 0) return;
  if (fits_int32(N, C, HW))
    backward_eval_kernel<int32_t><<<grid_for(total), kThreads, 0, stream>>>(
        dinp, dout, x, running_mean, rstd, weight, bias, static_cast<int32_t>(total), C, HW, act, slope);
  else
    backward_eval_kernel<int64_t><<<grid_for(total), kThreads, 0, stream>>>(dinp, dout, x, running_mean, rstd, weight,
                                                                            bias, total, C, HW, act, slope);
  CUDA_CHECK_LAUNCH();
}

// ---- any format (kernels_typed.h) ------------------------------------------------------------------------

void batchnorm_channel_sums(double* sum, const void* x, int N, int C, int HW, const ActFormat& fmt, double* workspace,
                            cudaStream_t stream) {
  dispatch(fmt, [&](auto t, auto l) {
    using T = decltype(t);
    channel_sums<T, decltype(l)::value>(sum, static_cast<const T*>(x), N, C, HW, workspace, stream);
  });
}

void batchnorm_channel_sq_dev(double* sq, const void* x, const float* mean, int N, int C, int HW,
                              const ActFormat& fmt, double* workspace, cudaStream_t stream) {
  dispatch(fmt, [&](auto t, auto l) {
    using T = decltype(t);
    channel_sq_dev<T, decltype(l)::value>(sq, static_cast<const T*>(x), mean, N, C, HW, workspace, stream);
  });
}

void batchnorm_apply(void* out, const void* x, const float* mean, const float* rstd, const float* weight,
                     const float* bias, int N, int C, int HW, Activation act, float slope, const ActFormat& fmt,
                     cudaStream_t stream) {
  dispatch(fmt, [&](auto t, auto l) {
    using T = decltype(t);
    apply<T, decltype(l)::value>(static_cast<T*>(out), static_cast<const T*>(x), mean, rstd, weight, bias, N, C, HW,
                                 act, slope, stream);
  });
}

void batchnorm_forward_eval(void* out, const void* x, const float* weight, const float* bias,
                            const float* running_mean, const float* running_var, int N, int C, int HW, float eps,
                            Activation act, float slope, const ActFormat& fmt, cudaStream_t stream) {
  dispatch(fmt, [&](auto t, auto l) {
    using T = decltype(t);
    forward_eval<T, decltype(l)::value>(static_cast<T*>(out), static_cast<const T*>(x), weight, bias, running_mean,
                                        running_var, N, C, HW, eps, act, slope, stream);
  });
}

void batchnorm_backward_sums(double* sum_g, double* sum_g_xmu, const void* dout, const void* x, const float* mean,
                             const float* rstd, const float* weight, const float* bias, int N, int C, int HW,
                             Activation act, float slope, const ActFormat& fmt, double* workspace,
                             cudaStream_t stream) {
  dispatch(fmt, [&](auto t, auto l) {
    using T = decltype(t);
    backward_sums<T, decltype(l)::value>(sum_g, sum_g_xmu, static_cast<const T*>(dout), static_cast<const T*>(x), mean,
                                         rstd, weight, bias, N, C, HW, act, slope, workspace, stream);
  });
}

void batchnorm_backward_apply(void* dinp, float* dweight, float* dbias, const double* sum_g, const double* sum_g_xmu,
                              double count, const void* dout, const void* x, const float* mean, const float* rstd,
                              const float* weight, const float* bias, int N, int C, int HW, Activation act,
                              float slope, const ActFormat& fmt, double* workspace, cudaStream_t stream) {
  dispatch(fmt, [&](auto t, auto l) {
    using T = decltype(t);
    backward_apply<T, decltype(l)::value>(static_cast<T*>(dinp), dweight, dbias, sum_g, sum_g_xmu, count,
                                          static_cast<const T*>(dout), static_cast<const T*>(x), mean, rstd, weight,
                                          bias, N, C, HW, act, slope, workspace, stream);
  });
}

// A convolution's per-channel bias lives here because its gradient is the batch-norm channel sum.
void add_channel_bias(void* out, const float* bias, int N, int C, int HW, const ActFormat& fmt, cudaStream_t stream) {
  dispatch(fmt, [&](auto t, auto l) {
    using T = decltype(t);
    constexpr Layout L = decltype(l)::value;
    launch_elementwise(N, C, HW, [&](auto index, auto total) {
      using Index = decltype(index);
      add_channel_bias_kernel<T, L, Index><<<grid_for(total), kThreads, 0, stream>>>(static_cast<T*>(out), bias, total,
                                                                                     C, HW);
    });
  });
}

void accumulate_channel_bias_grad(float* dbias, const void* dout, int N, int C, int HW, const ActFormat& fmt,
                                  double* workspace, cudaStream_t stream) {
  if (C <= 0) return;
  const Workspace ws = carve(workspace, N, C, HW);
  batchnorm_channel_sums(ws.sums_a, dout, N, C, HW, fmt, ws.partial, stream);
  add_sums_kernel<<<channel_grid(C), kThreads, 0, stream>>>(dbias, ws.sums_a, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace gt::cuda
