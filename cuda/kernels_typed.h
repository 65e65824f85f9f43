// Kernels over activations in any ActFormat (f32 or bf16 storage, NCHW or NHWC layout): what the GPU network runs.
#pragma once
// C++17-clean. Every pointer typed void* holds elements of the format's DataType, laid out in its
// Layout; per-channel arrays (mean, rstd, weight, bias, sums) are always float or double and C long.
// The math is float (sums in double, fixed order, no atomics) whatever the storage; with f32 NCHW the
// results are bit-identical to the float functions of kernels.h (they share the code), so the CPU
// reference is the oracle for both. bf16 values are rounded to nearest even when stored.
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "core/loss_math.h"
#include "cuda/formats.h"
#include "cuda/kernels.h"

namespace gt::cuda {

// ---- conversions ---------------------------------------------------------------------------------------
// dst = src, element type converted (same type: a copy). n values, layout untouched.
void convert(void* dst, DataType dst_type, const void* src, DataType src_type, int64_t n, cudaStream_t stream);
// dst[i] += float(src[i]) over n values.
void accumulate_f32(float* dst, const void* src, DataType src_type, int64_t n, cudaStream_t stream);
// Activation tensor [N, C, H, W] in format `from` -> format `to` (type and layout may both change).
void convert_activations(void* dst, const ActFormat& to, const void* src, const ActFormat& from, int N, int C, int H,
                         int W, cudaStream_t stream);

// A convolution weight [K, C, R, S] (f32, PyTorch layout; for ConvTranspose2d K is its in_channels) packed
// into what cuDNN reads for `fmt`: fmt.type elements, KCRS for NCHW, KRSC for NHWC.
void pack_conv_weight(void* dst, const float* src_kcrs, int K, int C, int R, int S, const ActFormat& fmt,
                      cudaStream_t stream);
// The reverse for gradients: dst_kcrs[k, c, r, s] += float(src[...]) from a packed gradient in `fmt`.
void accumulate_conv_weight_grad(float* dst_kcrs, const void* src, int K, int C, int R, int S, const ActFormat& fmt,
                                 cudaStream_t stream);

// Per-channel bias of a convolution output: out[n, c, h, w] += bias[c]; dbias[c] += sum of dout over (n, h, w)
// (in double, fixed order).
void add_channel_bias(void* out, const float* bias, int N, int C, int HW, const ActFormat& fmt, cudaStream_t stream);
void accumulate_channel_bias_grad(float* dbias, const void* dout, int N, int C, int HW, const ActFormat& fmt,
                                  double* workspace, cudaStream_t stream);  // workspace: batchnorm_workspace_doubles

// ---- data ---------------------------------------------------------------------------------------------
// uint8 NHWC [N, H, W, in_channels] -> image [N, out_channels, H, W] in fmt, as u8_nhwc_to_f32_nchw.
void u8_nhwc_to_image(void* out, const ActFormat& fmt, const uint8_t* in, const uint8_t* flips, int N, int H, int W,
                      int in_channels, int out_channels, float divisor, float offset, cudaStream_t stream);

// ---- activations (element-wise: layout does not matter) ------------------------------------------------
void activation_forward(void* out, const void* in, int64_t n, Activation act, float slope, DataType type,
                        cudaStream_t stream);
void activation_backward(void* dinp, const void* dout, const void* saved, int64_t n, Activation act, float slope,
                         DataType type, cudaStream_t stream);

// ---- BatchNorm2d fused with its activation, any format ---------------------------------------------------
// The same steps and meaning as the float functions in kernels.h; workspace: batchnorm_workspace_doubles.
void batchnorm_channel_sums(double* sum, const void* x, int N, int C, int HW, const ActFormat& fmt, double* workspace,
                            cudaStream_t stream);
void batchnorm_channel_sq_dev(double* sq, const void* x, const float* mean, int N, int C, int HW,
                              const ActFormat& fmt, double* workspace, cudaStream_t stream);
void batchnorm_apply(void* out, const void* x, const float* mean, const float* rstd, const float* weight,
                     const float* bias, int N, int C, int HW, Activation act, float slope, const ActFormat& fmt,
                     cudaStream_t stream);
void batchnorm_forward_eval(void* out, const void* x, const float* weight, const float* bias,
                            const float* running_mean, const float* running_var, int N, int C, int HW, float eps,
                            Activation act, float slope, const ActFormat& fmt, cudaStream_t stream);
void batchnorm_backward_sums(double* sum_g, double* sum_g_xmu, const void* dout, const void* x, const float* mean,
                             const float* rstd, const float* weight, const float* bias, int N, int C, int HW,
                             Activation act, float slope, const ActFormat& fmt, double* workspace,
                             cudaStream_t stream);
void batchnorm_backward_apply(void* dinp, float* dweight, float* dbias, const double* sum_g, const double* sum_g_xmu,
                              double count, const void* dout, const void* x, const float* mean, const float* rstd,
                              const float* weight, const float* bias, int N, int C, int HW, Activation act,
                              float slope, const ActFormat& fmt, double* workspace, cudaStream_t stream);

// How a kernel writes a step scalar (train/gan_step.h ScalarWrite): out = v * weight, or out += v * weight.
struct ScalarStore {
  float weight = 1.f;
  bool accumulate = false;
};

// ---- loss -----------------------------------------------------------------------------------------------
// bce_with_logits of kernels.h over logits stored as `type` (dlogits stored as `type` too, may be null);
// also writes mean_prob[0] = mean over n of sigmoid(logit) in double (may be null).
void bce_with_logits(float* loss, float* mean_prob, void* dlogits, const void* logits, int64_t n, float target,
                     float scale, DataType type, cudaStream_t stream);
// One term of a GAN objective (core/loss_math.h) over n logits stored as `type`: loss[0] = the mean term
// (summed in double), dlogits[i] = loss_math::dlogit (stored as `type`, may be null), reported[0] = the
// mean of loss_math::reported, added in index order as the CPU adds it (may be null).
void gan_loss(float* loss, float* reported, void* dlogits, const void* logits, int64_t n, const LossTerm& term,
              float scale, DataType type, cudaStream_t stream, ScalarStore store = {});

// ---- the gradient penalty (WGAN-GP) ---------------------------------------------------------------------
// Each sample is a contiguous block of `per` values in either layout. out = penalty_math::mix(real, fake,
// mix[i]) row by row (mix: n floats).
void penalty_interpolate(void* out, const void* real, const void* fake, const float* mix, int64_t n, int64_t per,
                         DataType type, cudaStream_t stream);
// out[i] = value; dst[i] += src[i] (n values of `type`).
void fill_value(void* out, int64_t n, float value, DataType type, cudaStream_t stream);
void add_values(void* dst, const void* src, int64_t n, DataType type, cudaStream_t stream);
// loss[0] = weight * mean over the n rows of (||g_i|| - 1)^2 (norms in double, rows added in order) and
// dg = penalty_math::coefficient(||g_i||, weight, scale, n) * g_i. workspace: gradient_penalty_workspace_bytes(n).
void gradient_penalty(float* loss, void* dg, const void* g, int64_t n, int64_t per, float weight, float scale,
                      DataType type, void* workspace, cudaStream_t stream, ScalarStore store = {});
size_t gradient_penalty_workspace_bytes(int64_t n);
// The curvature term of the double backward of tanh and sigmoid (others: nothing to add):
// dinp += delta * t * f''(x), f'' from the saved output (the CPU's tanh_second, sigmoid_second).
void activation_second(void* dinp, const void* delta, const void* t, const void* saved_out, int64_t n, Activation act,
                       DataType type, cudaStream_t stream);

// ---- Fade (progan.cu): kernels.h's lerp_forward and fade_scale over values stored as `type` (element-wise:
// any layout) -------------------------------------------------------------------------------------------------
void lerp_forward(void* out, const void* a, const void* b, const float* alpha, int64_t n, DataType type,
                  cudaStream_t stream);
void fade_scale(void* out, const void* in, const float* alpha, int branch, int64_t n, DataType type,
                cudaStream_t stream);

// ---- LayerNorm2d: per sample over [C, HW], per-channel affine (the CPU's layernorm2d_* kernels) -------------
// mean and rstd: N floats each, written by the forward.
void layernorm_forward(void* out, float* mean, float* rstd, const void* x, const float* weight, const float* bias,
                       int N, int C, int HW, float eps, const ActFormat& fmt, cudaStream_t stream);
// dinp written, dweight/dbias accumulated; each skipped when null.
void layernorm_backward(void* dinp, float* dweight, float* dbias, const void* dout, const void* x, const float* mean,
                        const float* rstd, const float* weight, int N, int C, int HW, const ActFormat& fmt,
                        cudaStream_t stream);
void layernorm_tangent(void* out, const void* t, const void* x, const float* mean, const float* rstd,
                       const float* weight, int N, int C, int HW, const ActFormat& fmt, cudaStream_t stream);
// dinp written with the curvature term, dweight accumulated (may be null). workspace: 2N floats.
void layernorm_second(void* dinp, float* dweight, const void* delta, const void* t, const void* x, const float* mean,
                      const float* rstd, const float* weight, int N, int C, int HW, const ActFormat& fmt,
                      float* workspace, cudaStream_t stream);

}  // namespace gt::cuda
