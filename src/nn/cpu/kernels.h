// CPU reference kernels as free functions (pointers and sizes in, no hidden state); layers and GPU parity tests call them.
#pragma once
#include <cstddef>
#include <cstdint>

#include "nn/conv_geometry.h"

namespace gt::cpu {

// One geometry struct for both backends (nn/conv_geometry.h), named here as the kernels' own.
using gt::ConvGeometry;
using gt::conv_out_size;
using gt::conv_transpose_out_size;

// ---- GEMM -----------------------------------------------------------------------------------------
// Row-major C[M, N] = alpha * op(A) * op(B) + beta * C, split by blocks of C over the OpenMP threads
// (each element is computed by one call, so the result does not depend on the thread count).
// OpenBLAS itself is switched to one thread (once per process): its own spinning thread pool next to
// OpenMP's starves both on a small machine, so every parallel loop of the CPU backend uses OpenMP.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc);
// The same on the calling thread only (for use inside a parallel region).
void sgemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                  const float* B, int ldb, float beta, float* C, int ldc);

// ---- layout helpers (single-threaded) ----------------------------------------------------------------
// cols[(c*K + kh)*K + kw][(n*OH + oh)*OW + ow] = image[n][c][oh*stride - pad + kh][ow*stride - pad + kw]
// (zero outside the image). cols is [C*K*K, N*OH*OW]: one GEMM then covers N samples.
void im2col(float* cols, const float* image, int N, int C, int H, int W, int K, int stride, int pad, int OH,
            int OW);
// The adjoint of im2col: image (overwritten) = sum of the columns that read each pixel.
void col2im(float* image, const float* cols, int N, int C, int H, int W, int K, int stride, int pad, int OH,
            int OW);
// dst[c][n][i] = src[n][c][i] for i < inner: NCHW <-> CNHW, the layout of a GEMM over several samples.
void nchw_to_cnhw(float* dst, const float* src, int N, int C, int inner);
void cnhw_to_nchw(float* dst, const float* src, int N, int C, int inner);

// ---- Conv2d (weight [OC, C, K, K]) and ConvTranspose2d (weight [C, OC, K, K]); bias [OC] or null ----------
// The batch is cut into chunks of a few samples whose columns fit in L2; each OpenMP thread runs whole
// chunks (im2col, GEMM, col2im) and keeps its own dweight partial sum, added in thread order at the end
// (deterministic for a given thread count). A kernel that covers the whole image, or a transposed conv
// of a 1x1 input, is one fully-connected GEMM instead. The workspace holds the per-thread buffers.
size_t conv2d_workspace_floats(const ConvGeometry& g);
size_t conv_transpose2d_workspace_floats(const ConvGeometry& g);

// out [N, OC, OH, OW] from in [N, C, H, W].
void conv2d_forward(float* out, const float* in, const float* weight, const float* bias, const ConvGeometry& g,
                    float* workspace, size_t workspace_floats);
// Accumulates dweight (+=) and dbias (+=), each skipped when null; writes dinp (skipped when null).
void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                     const float* weight, const ConvGeometry& g, float* workspace, size_t workspace_floats);
// out [N, OC, OH, OW] from in [N, C, H, W] (H, W the small side): the conv's backward-data, GEMM then col2im.
void conv_transpose2d_forward(float* out, const float* in, const float* weight, const float* bias,
                              const ConvGeometry& g, float* workspace, size_t workspace_floats);
// Accumulates dweight/dbias (+=; each skipped when null); writes dinp (skipped when null): the data
// gradient is a convolution forward of dout.
void conv_transpose2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                               const float* weight, const ConvGeometry& g, float* workspace,
                               size_t workspace_floats);

// ---- BatchNorm2d over [N, C, HW] ------------------------------------------------------------------
// Normalizes with the batch statistics (biased variance). Writes per-channel mean, rstd = 1/sqrt(var+eps)
// and the biased var (skipped when null).
void batchnorm2d_forward_train(float* out, float* mean, float* rstd, float* var, const float* in,
                               const float* weight, const float* bias, int N, int C, int HW, float eps);
// running = (1 - momentum) * running + momentum * batch, with the unbiased variance var * M / (M - 1).
void batchnorm2d_update_running(float* running_mean, float* running_var, const float* mean, const float* var,
                                int C, int64_t count, float momentum);
// Normalizes with given statistics (eval mode: the running ones).
void batchnorm2d_forward_eval(float* out, const float* in, const float* weight, const float* bias,
                              const float* running_mean, const float* running_var, int N, int C, int HW,
                              float eps);
// Gradient of the train-mode forward (statistics depend on the batch); dweight/dbias accumulate.
void batchnorm2d_backward_train(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                                const float* mean, const float* rstd, const float* weight, int N, int C,
                                int HW);
// Gradient of the eval-mode forward (statistics are constants); dweight/dbias accumulate.
void batchnorm2d_backward_eval(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                               const float* running_mean, const float* running_var, const float* weight,
                               int N, int C, int HW, float eps);

// ---- LayerNorm2d: per sample over [C, HW] (torch.nn.GroupNorm with one group), affine per channel -----------
// Normalizes each sample with its own mean and biased variance; writes per-sample mean and rstd.
void layernorm2d_forward(float* out, float* mean, float* rstd, const float* in, const float* weight,
                         const float* bias, int N, int C, int HW, float eps);
// dinp written (skipped when null); dweight/dbias accumulate (each skipped when null).
void layernorm2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                          const float* mean, const float* rstd, const float* weight, int N, int C, int HW);
// The Jacobian of the forward applied to t: out = weight * rstd * (t - mean(t) - xhat * mean(t * xhat)) per sample.
void layernorm2d_tangent(float* out, const float* t, const float* in, const float* mean, const float* rstd,
                         const float* weight, int N, int C, int HW);
// The curvature terms of the double backward: for phi = sum(delta * tangent(t)) with t and delta fixed,
// dinp = d(phi)/d(in) (overwritten) and dweight += d(phi)/d(weight).
void layernorm2d_second(float* dinp, float* dweight, const float* delta, const float* t, const float* in,
                        const float* mean, const float* rstd, const float* weight, int N, int C, int HW);

// ---- element-wise activations over n values ---------------------------------------------------------
void relu_forward(float* out, const float* in, int64_t n);
void relu_backward(float* dinp, const float* dout, const float* out, int64_t n);  // PyTorch: grad where out > 0
void leaky_relu_forward(float* out, const float* in, int64_t n, float slope);
void leaky_relu_backward(float* dinp, const float* dout, const float* in, int64_t n, float slope);
void tanh_forward(float* out, const float* in, int64_t n);
void tanh_backward(float* dinp, const float* dout, const float* out, int64_t n);
void sigmoid_forward(float* out, const float* in, int64_t n);
void sigmoid_backward(float* dinp, const float* dout, const float* out, int64_t n);
// The curvature term of the double backward (tanh, sigmoid; the others are piecewise linear):
// dinp += delta * t * f''(x), with f'' taken from the saved output y.
void tanh_second(float* dinp, const float* delta, const float* t, const float* out, int64_t n);
void sigmoid_second(float* dinp, const float* delta, const float* t, const float* out, int64_t n);

// ---- Linear: out [N, OUT] = in [N, IN] * weight[OUT, IN]^T + bias ---------------------------------------
// weight_scale multiplies the weight (equalized learning rate); dweight is that of the stored weight.
void linear_forward(float* out, const float* in, const float* weight, const float* bias, int N, int IN, int OUT,
                    float weight_scale = 1.f);
// dweight/dbias accumulate (each skipped when null); dinp written (skipped when null).
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                     const float* weight, int N, int IN, int OUT, float weight_scale = 1.f);

// ---- Progressive GAN layers (nn/cpu/progan_kernels.cpp) ---------------------------------------------------
// PixelNorm over [N, C, HW]: per sample and position y_c = x_c r, r = (mean_c x_c^2 + eps)^-1/2, saved in
// rnorm [N*HW]. Its Jacobian J t = r t - r^3 x mean_c(x t) is symmetric: pixelnorm_jacobian is both the
// backward (t = dout) and the tangent. pixelnorm_second: dinp = d(delta . J t)/dx (overwritten).
void pixelnorm_forward(float* out, float* rnorm, const float* in, int N, int C, int HW, float eps);
void pixelnorm_jacobian(float* out, const float* t, const float* in, const float* rnorm, int N, int C, int HW);
void pixelnorm_second(float* dinp, const float* delta, const float* t, const float* in, const float* rnorm, int N,
                      int C, int HW);
// Nearest-neighbour upsampling by 2 of [NC, H, W] -> [NC, 2H, 2W]; backward sums each 2x2 block.
void upsample2x_forward(float* out, const float* in, int NC, int H, int W);
void upsample2x_backward(float* dinp, const float* dout, int NC, int H, int W);
// 2x2 average pooling of [NC, H, W] (H, W even) -> [NC, H/2, W/2]; backward spreads dout/4.
void avgpool2x_forward(float* out, const float* in, int NC, int H, int W);
void avgpool2x_backward(float* dinp, const float* dout, int NC, int H, int W);
// Minibatch standard deviation over groups of `group` consecutive samples (N a multiple of group): out
// [N, C+1, HW] is the input plus one channel holding, for every sample of group g, the mean over [C, HW] of
// the group's standard deviation sqrt(mean_i (x_i - mu)^2 + eps). mean and sigma [N/group, C*HW] are saved
// for the backward. mbstd_tangent writes J t [N, C+1, HW]; mbstd_second overwrites dinp with
// d(delta . J t)/dx.
void mbstd_forward(float* out, float* mean, float* sigma, const float* in, int N, int C, int HW, int group, float eps);
void mbstd_backward(float* dinp, const float* dout, const float* in, const float* mean, const float* sigma, int N,
                    int C, int HW, int group);
void mbstd_tangent(float* out, const float* t, const float* in, const float* mean, const float* sigma, int N, int C,
                   int HW, int group);
void mbstd_second(float* dinp, const float* delta, const float* t, const float* in, const float* mean,
                  const float* sigma, int N, int C, int HW, int group);
// The fade-in mix: out = a + alpha (b - a), i.e. (1 - alpha) a + alpha b.
void lerp_forward(float* out, const float* a, const float* b, float alpha, int64_t n);

}  // namespace gt::cpu
