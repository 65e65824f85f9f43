// Our own CUDA kernels (everything but convolutions and GEMMs) as free functions: device pointers and sizes in, a stream, no hidden state.
#pragma once
// C++17-clean (nvcc compiles the .cu files as C++17). Each function launches asynchronously on
// `stream` and checks the launch; a fault inside a kernel is reported at the next synchronizing call.
// The element-wise math is the CPU backend's own (core/activation_math.h, core/rng_inl.h) and the
// .cu files are compiled without multiply-add contraction (-fmad=false), so each element rounds as the
// CPU rounds it; where the CPU writes an explicit fmaf the kernel does too. Sums that the CPU adds in
// double are added in double here, in a fixed order (no atomics): results are run-to-run identical.
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "core/optim_math.h"

namespace gt::cuda {

// ---- activations -------------------------------------------------------------------------------
// The activation an element-wise kernel applies; also fused into batch norm. slope is leaky ReLU's.
enum class Activation : int { none = 0, relu, leaky_relu, tanh, sigmoid };

// out = act(in) over n values (out == in allowed).
void activation_forward(float* out, const float* in, int64_t n, Activation act, float slope, cudaStream_t stream);
// dinp = dL/din from dout and `saved`: the forward's output for relu, tanh and sigmoid, its input for
// leaky_relu (what the CPU kernels take). dinp == dout allowed.
void activation_backward(float* dinp, const float* dout, const float* saved, int64_t n, Activation act, float slope,
                         cudaStream_t stream);

// ---- dense-layer helpers (the GEMMs are cuBLAS: dense.h) ---------------------------------------
// out[r, c] += bias[c] for a row-major [rows, cols] matrix.
void add_bias_rows(float* out, const float* bias, int64_t rows, int cols, cudaStream_t stream);
// dbias[c] += float(sum over r of x[r, c]), the sum in double in row order (as the CPU's Linear).
void accumulate_column_sums(float* dbias, const float* x, int64_t rows, int cols, cudaStream_t stream);

// ---- BatchNorm2d over NCHW [N, C, HW] ----------------------------------------------------------------
// Train mode is split into steps around its per-channel sums, so a multi-rank run can all-reduce the
// sums (doubles, C of them) between the steps: synchronized batch norm with exactly the single-rank
// arithmetic. count is the number of values per channel over all ranks (N * HW on one rank).
// Every function with a workspace argument takes batchnorm_workspace_doubles(N, C, HW) doubles there
// (device memory, e.g. from the arena); per-channel arrays (mean, rstd, sums) are C values each.
size_t batchnorm_workspace_doubles(int N, int C, int HW);
// (1) sum[c] = sum of x over (n, hw).
void batchnorm_channel_sums(double* sum, const float* x, int N, int C, int HW, double* workspace, cudaStream_t stream);
// (2) mean[c] = float(sum[c] / count).
void batchnorm_mean_from_sums(float* mean, const double* sum, int C, double count, cudaStream_t stream);
// (3) sq[c] = sum of (x - mean[c])^2, the differences in float (two passes: no cancellation).
void batchnorm_channel_sq_dev(double* sq, const float* x, const float* mean, int N, int C, int HW, double* workspace,
                              cudaStream_t stream);
// (4) var[c] = float(sq[c] / count) (biased; var may be null), rstd[c] = float(1 / sqrt(sq/count + eps)).
void batchnorm_stats_from_sq(float* rstd, float* var, const double* sq, int C, double count, float eps,
                             cudaStream_t stream);
// (5) out = act(x * scale + shift) with scale = weight * rstd, shift = bias - mean * scale (weight,
// bias may be null: 1 and 0). out == x allowed.
void batchnorm_apply(float* out, const float* x, const float* mean, const float* rstd, const float* weight,
                     const float* bias, int N, int C, int HW, Activation act, float slope, cudaStream_t stream);
// Steps 1-5 on one rank; the CPU's batchnorm2d_forward_train followed by the activation.
void batchnorm_forward_train(float* out, float* mean, float* rstd, float* var, const float* x, const float* weight,
                             const float* bias, int N, int C, int HW, float eps, Activation act, float slope,
                             double* workspace, cudaStream_t stream);
// running = (1 - momentum) * running + momentum * batch, the variance unbiased by count / (count - 1).
void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, int C,
                              int64_t count, float momentum, cudaStream_t stream);
// Eval mode: normalizes with the running statistics, then act.
void batchnorm_forward_eval(float* out, const float* x, const float* weight, const float* bias,
                            const float* running_mean, const float* running_var, int N, int C, int HW, float eps,
                            Activation act, float slope, cudaStream_t stream);

// Backward of act(batchnorm(x)) in train mode. dout is the gradient after the activation; the
// normalized value before it is recomputed from x (the same float operations as the forward), so
// nothing but x and the statistics is kept from the forward.
// (1) sum_g[c] = sum of g, sum_g_xmu[c] = sum of g * (x - mean[c]), g = dL/d(pre-activation): all-reducible.
void batchnorm_backward_sums(double* sum_g, double* sum_g_xmu, const float* dout, const float* x, const float* mean,
                             const float* rstd, const float* weight, const float* bias, int N, int C, int HW,
                             Activation act, float slope, double* workspace, cudaStream_t stream);
// (2) dweight[c] += float(sum_g_xmu * rstd), dbias[c] += float(sum_g) (each may be null);
//     dinp = weight * rstd * (g - mean(g) - (x - mean) * mean(g * xhat) * rstd) (dinp may be null).
void batchnorm_backward_apply(float* dinp, float* dweight, float* dbias, const double* sum_g, const double* sum_g_xmu,
                              double count, const float* dout, const float* x, const float* mean, const float* rstd,
                              const float* weight, const float* bias, int N, int C, int HW, Activation act,
                              float slope, double* workspace, cudaStream_t stream);
// Steps 1-2 on one rank: the CPU's activation backward followed by batchnorm2d_backward_train.
void batchnorm_backward_train(float* dinp, float* dweight, float* dbias, const float* dout, const float* x,
                              const float* mean, const float* rstd, const float* weight, const float* bias, int N,
                              int C, int HW, Activation act, float slope, double* workspace, cudaStream_t stream);
// Eval mode backward (statistics are constants); dweight/dbias accumulate.
void batchnorm_backward_eval(float* dinp, float* dweight, float* dbias, const float* dout, const float* x,
                             const float* running_mean, const float* running_var, const float* weight,
                             const float* bias, int N, int C, int HW, float eps, Activation act, float slope,
                             double* workspace, cudaStream_t stream);

// ---- loss ------------------------------------------------------------------------------------------
// loss[0] = mean over n of BCE(sigmoid(logit), target), in double as train/loss.cpp; if dlogits is not
// null, dlogits[i] = float(sigmoid(x_i) - target) * scale / n. One block: n is a batch of logits.
// out[0] = sqrt(sum x^2) over n floats, summed in double by one block (the same bits every run).
void l2_norm(float* out, const float* x, int64_t n, cudaStream_t stream);
void bce_with_logits(float* loss, float* dlogits, const float* logits, int64_t n, float target, float scale,
                     cudaStream_t stream);

// ---- data -----------------------------------------------------------------------------------------
// uint8 NHWC [N, H, W, in_channels] -> float NCHW [N, out_channels, H, W] as v / divisor + offset (the
// loader's table is 127.5, -1: bit-identical), image i mirrored left-right where flips[i] != 0 (flips
// may be null). in_channels == out_channels, or 1 -> 3 (the gray value repeated).
void u8_nhwc_to_f32_nchw(float* out, const uint8_t* in, const uint8_t* flips, int N, int H, int W, int in_channels,
                         int out_channels, float divisor, float offset, cudaStream_t stream);
// flips[i] = 1 where gt::flip_drawn(seed, step, first_position + i) (data/image_source.h), else 0.
void draw_flips(uint8_t* flips, int64_t count, uint64_t seed, int64_t step, int64_t first_position,
                cudaStream_t stream);
// z [count, nz]: bit for bit gt::fill_noise(z, count, nz, seed, step, first_index) (core/rng.h).
void fill_noise(float* z, int64_t count, int nz, uint64_t seed, uint64_t step, int64_t first_index,
                cudaStream_t stream);

// e [count]: bit for bit gt::fill_penalty_mix(e, count, seed, batch, first_index) (core/rng.h).
void fill_penalty_mix(float* e, int64_t count, uint64_t seed, uint64_t batch, int64_t first_index,
                      cudaStream_t stream);

// ---- Progressive GAN layers (progan.cu): the CPU's nn/cpu/progan_kernels.cpp, f32 NCHW ---------------------
// PixelNorm over [N, C, HW]: y_c = x_c r per sample and position, r = (mean_c x_c^2 + eps)^-1/2 into rnorm [N*HW].
void pixelnorm_forward(float* out, float* rnorm, const float* in, int N, int C, int HW, float eps,
                       cudaStream_t stream);
// out = J t = r t - r^3 x mean_c(x t): PixelNorm's backward (t = dout) and its tangent (J is symmetric).
void pixelnorm_jacobian(float* out, const float* t, const float* in, const float* rnorm, int N, int C, int HW,
                        cudaStream_t stream);
// dinp = d(delta . J t)/dx, PixelNorm's curvature term (overwritten).
void pixelnorm_second(float* dinp, const float* delta, const float* t, const float* in, const float* rnorm, int N,
                      int C, int HW, cudaStream_t stream);
// Nearest upsampling by 2, [NC, H, W] -> [NC, 2H, 2W]; its backward sums each 2x2 block of dout (dinp written).
void upsample2x_forward(float* out, const float* in, int NC, int H, int W, cudaStream_t stream);
void upsample2x_backward(float* dinp, const float* dout, int NC, int H, int W, cudaStream_t stream);
// 2x2 average pooling, [NC, H, W] (H, W even) -> [NC, H/2, W/2]; its backward spreads dout / 4 (dinp written).
void avgpool2x_forward(float* out, const float* in, int NC, int H, int W, cudaStream_t stream);
void avgpool2x_backward(float* dinp, const float* dout, int NC, int H, int W, cudaStream_t stream);
// Minibatch stddev over groups of `group` consecutive samples (N a multiple of it): out [N, C+1, HW] is the input
// plus the group's mean over [C, HW] of sqrt(var + eps); mean and sigma [N/group, C*HW] are saved for the rest.
void mbstd_forward(float* out, float* mean, float* sigma, const float* in, int N, int C, int HW, int group, float eps,
                   cudaStream_t stream);
// dinp [N, C, HW] written from dout [N, C+1, HW].
void mbstd_backward(float* dinp, const float* dout, const float* in, const float* mean, const float* sigma, int N,
                    int C, int HW, int group, cudaStream_t stream);
// out [N, C+1, HW] = J t of t [N, C, HW].
void mbstd_tangent(float* out, const float* t, const float* in, const float* mean, const float* sigma, int N, int C,
                   int HW, int group, cudaStream_t stream);
// dinp = d(delta . J t)/dx, the curvature term (overwritten); delta [N, C+1, HW], t [N, C, HW].
void mbstd_second(float* dinp, const float* delta, const float* t, const float* in, const float* mean,
                  const float* sigma, int N, int C, int HW, int group, cudaStream_t stream);
// The fade-in mix out = a + alpha (b - a) over n values (the CPU's lerp_forward); alpha is a device float, read
// when the kernel runs (so a replayed CUDA graph takes its current value).
void lerp_forward(float* out, const float* a, const float* b, const float* alpha, int64_t n, cudaStream_t stream);
// out = w * in, w = 1 - alpha (branch 0) or alpha (branch 1), alpha a device float: a Fade branch's share.
void fade_scale(float* out, const float* in, const float* alpha, int branch, int64_t n, cudaStream_t stream);

// ---- multi-tensor updates (optimizers, clipping, EMA) ----------------------------------------------
// One launch updates every tensor of a list: the list is cut into chunks of kMultiTensorChunk values
// and each block takes one chunk. The slots live in device memory, uploaded once (optim_gpu.h).
constexpr int64_t kMultiTensorChunk = 8192;

struct MultiTensorSlot {
  float* param = nullptr;
  float* grad = nullptr;
  float* state0 = nullptr;  // exp_avg (Adam), square_avg (RMSprop), momentum buffer (SGD), average (EMA)
  float* state1 = nullptr;  // exp_avg_sq (Adam), momentum buffer (RMSprop)
  int64_t numel = 0;
  int64_t first_chunk = 0;  // chunks before this tensor's first
};

struct MultiTensorView {
  const MultiTensorSlot* slots = nullptr;  // device memory
  int count = 0;
  int64_t chunks = 0;
};

// The optimizers' per-step constants and element updates are shared with the CPU (core/optim_math.h),
// so the updates are bit-identical to the CPU's.
using gt::AdamCoefficients;
using gt::RmspropCoefficients;
using gt::SgdCoefficients;

// grad_scale: null, or a device float; where it is below 1 each gradient is multiplied by it before
// the update (global-norm clipping fused into the optimizer; the same product as clipping in place).
// Adam: state0 exp_avg, state1 exp_avg_sq.
void adam_update(const MultiTensorView& tensors, const AdamCoefficients& k, const float* grad_scale,
                 cudaStream_t stream);
// RMSprop: state0 square_avg, state1 the momentum buffer (null when momentum is 0).
void rmsprop_update(const MultiTensorView& tensors, const RmspropCoefficients& k, const float* grad_scale,
                    cudaStream_t stream);
// SGD: state0 the momentum buffer (null when momentum is 0).
void sgd_update(const MultiTensorView& tensors, const SgdCoefficients& k, const float* grad_scale,
                cudaStream_t stream);

// Global L2 norm of every grad (squares summed in double) into norm[0], and torch's clip coefficient
// coef[0] = (1 / (norm + 1e-6)) * max_norm, both on the device (no sync). partial: tensors.chunks doubles.
void grad_global_norm(float* norm, float* coef, const MultiTensorView& tensors, float max_norm, double* partial,
                      cudaStream_t stream);
// grad *= coef[0] where coef[0] < 1: torch.nn.utils.clip_grad_norm_ in place.
void scale_grads_below_one(const MultiTensorView& tensors, const float* coef, cudaStream_t stream);
// param = clamp(param, -limit, limit) (WGAN weight clipping; NaN stays NaN: optim_math::clip_weight).
void clip_weights(const MultiTensorView& tensors, float limit, cudaStream_t stream);
// state0 = state0 + (1 - beta) * (param - state0) (optim_math::ema_value): the moving average of the
// weights. one_minus_beta is computed by the caller in double and rounded once.
void ema_update(const MultiTensorView& tensors, float one_minus_beta, cudaStream_t stream);

}  // namespace gt::cuda
