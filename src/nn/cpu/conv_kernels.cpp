// Convolution kernels: batch-wide im2col/col2im (OpenMP) around one GEMM per pass; a kernel that covers the
// whole image (or a transposed conv of a 1x1 input) is a plain fully-connected GEMM with no reshuffling.
#include <algorithm>
#include <cstring>
#include <vector>

#include "nn/cpu/kernels.h"

namespace gt::cpu {
namespace {

// Below this many touched floats a parallel region costs more than it saves.
constexpr int64_t kParallelMinWork = 1 << 15;

// For each kernel offset k, the output positions o in [lo, hi) whose input o*stride - pad + k lies in [0, size).
struct ValidRanges {
  std::vector<int> lo, hi;
};

ValidRanges valid_ranges(int K, int pad, int stride, int size, int out_size) {
  ValidRanges r{std::vector<int>(K), std::vector<int>(K)};
  for (int k = 0; k < K; ++k) {
    const int first = pad - k;             // smallest o*stride that lands on index 0
    const int last = size - 1 + pad - k;   // largest o*stride that lands inside
    const int lo = std::min(first <= 0 ? 0 : (first + stride - 1) / stride, out_size);
    const int hi = last < 0 ? 0 : last / stride + 1;
    r.lo[k] = lo;
    r.hi[k] = std::clamp(hi, lo, out_size);
  }
  return r;
}

// acc[c] += sum over n and i of x[n][c][i]; each run of `inner` values in float, the rest in double.
void accumulate_channel_sums(float* acc, const float* x, int N, int C, int inner) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C * inner > kParallelMinWork)
  for (int c = 0; c < C; ++c) {
    double s = 0.0;
    for (int n = 0; n < N; ++n) {
      const float* p = x + (static_cast<int64_t>(n) * C + c) * inner;
      float part = 0.f;
#pragma omp simd reduction(+ : part)
      for (int i = 0; i < inner; ++i) part += p[i];
      s += part;
    }
    acc[c] += static_cast<float>(s);
  }
}

void add_channel_bias(float* x, const float* bias, int N, int C, int inner) {
#pragma omp parallel for collapse(2) schedule(static) if (static_cast<int64_t>(N) * C * inner > kParallelMinWork)
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) {
      float* p = x + (static_cast<int64_t>(n) * C + c) * inner;
      const float b = bias[c];
#pragma omp simd
      for (int i = 0; i < inner; ++i) p[i] += b;
    }
}

// Templated on the stride (0: given at run time) so the common strides 1 and 2 get fixed-step inner loops.
template <int kStride>
void im2col_impl(float* cols, const float* image, int N, int C, int H, int W, int K, int runtime_stride, int pad,
                 int OH, int OW) {
  const int stride = kStride ? kStride : runtime_stride;
  const int64_t row_len = static_cast<int64_t>(N) * OH * OW;
  const int rows = C * K * K;
  const ValidRanges vh = valid_ranges(K, pad, stride, H, OH), vw = valid_ranges(K, pad, stride, W, OW);
#pragma omp parallel for schedule(static) if (rows * row_len > kParallelMinWork)
  for (int r = 0; r < rows; ++r) {
    const int c = r / (K * K), kh = (r / K) % K, kw = r % K;
    const int oh_lo = vh.lo[kh], oh_hi = vh.hi[kh], ow_lo = vw.lo[kw], ow_hi = vw.hi[kw];
    const int count = ow_hi - ow_lo;
    for (int n = 0; n < N; ++n) {
      const float* plane = image + (static_cast<int64_t>(n) * C + c) * H * W;
      float* dst = cols + r * row_len + static_cast<int64_t>(n) * OH * OW;
      std::memset(dst, 0, sizeof(float) * oh_lo * OW);
      for (int oh = oh_lo; oh < oh_hi; ++oh) {
        float* d = dst + oh * OW;
        const float* src = plane + static_cast<int64_t>(oh * stride - pad + kh) * W + (ow_lo * stride - pad + kw);
        for (int ow = 0; ow < ow_lo; ++ow) d[ow] = 0.f;
        float* mid = d + ow_lo;
        for (int j = 0; j < count; ++j) mid[j] = src[j * stride];
        for (int ow = ow_hi; ow < OW; ++ow) d[ow] = 0.f;
      }
      std::memset(dst + oh_hi * OW, 0, sizeof(float) * (OH - oh_hi) * OW);
    }
  }
}

template <int kStride>
void col2im_impl(float* image, const float* cols, int N, int C, int H, int W, int K, int runtime_stride, int pad,
                 int OH, int OW) {
  const int stride = kStride ? kStride : runtime_stride;
  const int64_t row_len = static_cast<int64_t>(N) * OH * OW;
  const ValidRanges vh = valid_ranges(K, pad, stride, H, OH), vw = valid_ranges(K, pad, stride, W, OW);
  // One (n, c) plane per task: the planes are disjoint, so the scatter needs no atomics.
#pragma omp parallel for collapse(2) schedule(static) if (static_cast<int64_t>(C) * K * K * row_len > kParallelMinWork)
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < C; ++c) {
      float* plane = image + (static_cast<int64_t>(n) * C + c) * H * W;
      std::memset(plane, 0, sizeof(float) * H * W);
      for (int kh = 0; kh < K; ++kh) {
        for (int kw = 0; kw < K; ++kw) {
          const int ow_lo = vw.lo[kw], count = vw.hi[kw] - ow_lo;
          const float* src = cols + ((c * K + kh) * K + kw) * row_len + static_cast<int64_t>(n) * OH * OW + ow_lo;
          for (int oh = vh.lo[kh]; oh < vh.hi[kh]; ++oh) {
            float* d = plane + static_cast<int64_t>(oh * stride - pad + kh) * W + (ow_lo * stride - pad + kw);
            const float* s = src + oh * OW;
            for (int j = 0; j < count; ++j) d[j * stride] += s[j];
          }
        }
      }
    }
  }
}

// The kernel covers the whole unpadded image: one output pixel per sample, i.e. a fully-connected layer.
bool conv_is_dense(const ConvGeometry& g) {
  return g.padding == 0 && g.kernel == g.in_h && g.kernel == g.in_w;
}
// A transposed conv of a 1x1 input without padding writes one K x K block per sample: also fully connected.
bool conv_transpose_is_dense(const ConvGeometry& g) { return g.padding == 0 && g.in_h == 1 && g.in_w == 1; }

}  // namespace

void im2col(float* cols, const float* image, int N, int C, int H, int W, int K, int stride, int pad, int OH,
            int OW) {
  if (stride == 1) return im2col_impl<1>(cols, image, N, C, H, W, K, stride, pad, OH, OW);
  if (stride == 2) return im2col_impl<2>(cols, image, N, C, H, W, K, stride, pad, OH, OW);
  im2col_impl<0>(cols, image, N, C, H, W, K, stride, pad, OH, OW);
}

void col2im(float* image, const float* cols, int N, int C, int H, int W, int K, int stride, int pad, int OH,
            int OW) {
  if (stride == 1) return col2im_impl<1>(image, cols, N, C, H, W, K, stride, pad, OH, OW);
  if (stride == 2) return col2im_impl<2>(image, cols, N, C, H, W, K, stride, pad, OH, OW);
  col2im_impl<0>(image, cols, N, C, H, W, K, stride, pad, OH, OW);
}

void nchw_to_cnhw(float* dst, const float* src, int N, int C, int inner) {
#pragma omp parallel for collapse(2) schedule(static) if (static_cast<int64_t>(N) * C * inner > kParallelMinWork)
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < N; ++n)
      std::memcpy(dst + (static_cast<int64_t>(c) * N + n) * inner, src + (static_cast<int64_t>(n) * C + c) * inner,
                  sizeof(float) * inner);
}

void cnhw_to_nchw(float* dst, const float* src, int N, int C, int inner) {
#pragma omp parallel for collapse(2) schedule(static) if (static_cast<int64_t>(N) * C * inner > kParallelMinWork)
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      std::memcpy(dst + (static_cast<int64_t>(n) * C + c) * inner, src + (static_cast<int64_t>(c) * N + n) * inner,
                  sizeof(float) * inner);
}

// ---- Conv2d ------------------------------------------------------------------------------------------

size_t conv2d_cols_floats(const ConvGeometry& g) {
  return static_cast<size_t>(g.in_channels) * g.kernel * g.kernel * g.batch * g.out_h * g.out_w;
}

size_t conv2d_out_floats(const ConvGeometry& g) {
  return static_cast<size_t>(g.out_channels) * g.batch * g.out_h * g.out_w;
}

void conv2d_forward(float* out, float* cols, float* gemm_out, const float* in, const float* weight,
                    const float* bias, const ConvGeometry& g) {
  const int patch = g.in_channels * g.kernel * g.kernel;
  if (conv_is_dense(g)) {
    // cols keeps the input as [N, patch] for dweight; out [N, OC] = in [N, patch] * weight [OC, patch]^T.
    std::memcpy(cols, in, sizeof(float) * g.batch * patch);
    sgemm(false, true, g.batch, g.out_channels, patch, 1.f, in, patch, weight, patch, 0.f, out, g.out_channels);
  } else {
    const int positions = g.batch * g.out_h * g.out_w;
    im2col(cols, in, g.batch, g.in_channels, g.in_h, g.in_w, g.kernel, g.stride, g.padding, g.out_h, g.out_w);
    // out [OC, P] = weight [OC, patch] * cols [patch, P]; with one sample CNHW is NCHW, so no reshuffle.
    float* result = g.batch == 1 ? out : gemm_out;
    sgemm(false, false, g.out_channels, positions, patch, 1.f, weight, patch, cols, positions, 0.f, result,
          positions);
    if (g.batch != 1) cnhw_to_nchw(out, gemm_out, g.batch, g.out_channels, g.out_h * g.out_w);
  }
  if (bias) add_channel_bias(out, bias, g.batch, g.out_channels, g.out_h * g.out_w);
}

void conv2d_backward(float* dinp, float* dweight, float* dbias, float* dcols, float* dout_cnhw,
                     const float* dout, const float* cols, const float* weight, const ConvGeometry& g) {
  const int patch = g.in_channels * g.kernel * g.kernel;
  if (dbias) accumulate_channel_sums(dbias, dout, g.batch, g.out_channels, g.out_h * g.out_w);
  if (conv_is_dense(g)) {
    // dweight [OC, patch] += dout [N, OC]^T * in [N, patch]; dinp [N, patch] = dout [N, OC] * weight [OC, patch]
    sgemm(true, false, g.out_channels, patch, g.batch, 1.f, dout, g.out_channels, cols, patch, 1.f, dweight, patch);
    if (dinp)
      sgemm(false, false, g.batch, patch, g.out_channels, 1.f, dout, g.out_channels, weight, patch, 0.f, dinp,
            patch);
    return;
  }
  const int positions = g.batch * g.out_h * g.out_w;
  const float* dy = dout;
  if (g.batch != 1) {
    nchw_to_cnhw(dout_cnhw, dout, g.batch, g.out_channels, g.out_h * g.out_w);
    dy = dout_cnhw;
  }
  // dweight [OC, patch] += dy [OC, P] * cols [patch, P]^T
  sgemm(false, true, g.out_channels, patch, positions, 1.f, dy, positions, cols, positions, 1.f, dweight, patch);
  if (!dinp) return;
  // dcols [patch, P] = weight [OC, patch]^T * dy [OC, P]
  sgemm(true, false, patch, positions, g.out_channels, 1.f, weight, patch, dy, positions, 0.f, dcols, positions);
  col2im(dinp, dcols, g.batch, g.in_channels, g.in_h, g.in_w, g.kernel, g.stride, g.padding, g.out_h, g.out_w);
}

// ---- ConvTranspose2d -----------------------------------------------------------------------------------

size_t conv_transpose2d_cols_floats(const ConvGeometry& g) {
  return static_cast<size_t>(g.out_channels) * g.kernel * g.kernel * g.batch * g.in_h * g.in_w;
}

size_t conv_transpose2d_in_floats(const ConvGeometry& g) {
  return static_cast<size_t>(g.in_channels) * g.batch * g.in_h * g.in_w;
}

void conv_transpose2d_forward(float* out, float* in_cnhw, float* cols, const float* in, const float* weight,
                              const float* bias, const ConvGeometry& g) {
  const int patch = g.out_channels * g.kernel * g.kernel;
  if (conv_transpose_is_dense(g)) {
    // in_cnhw keeps the input as [N, C]; out [N, OC*K*K] = in [N, C] * weight [C, OC*K*K] is already NCHW.
    std::memcpy(in_cnhw, in, sizeof(float) * g.batch * g.in_channels);
    sgemm(false, false, g.batch, patch, g.in_channels, 1.f, in, g.in_channels, weight, patch, 0.f, out, patch);
  } else {
    const int positions = g.batch * g.in_h * g.in_w;
    nchw_to_cnhw(in_cnhw, in, g.batch, g.in_channels, g.in_h * g.in_w);
    // cols [patch, P] = weight [C, patch]^T * in [C, P], then scattered onto the output image.
    sgemm(true, false, patch, positions, g.in_channels, 1.f, weight, patch, in_cnhw, positions, 0.f, cols,
          positions);
    col2im(out, cols, g.batch, g.out_channels, g.out_h, g.out_w, g.kernel, g.stride, g.padding, g.in_h, g.in_w);
  }
  if (bias) add_channel_bias(out, bias, g.batch, g.out_channels, g.out_h * g.out_w);
}

void conv_transpose2d_backward(float* dinp, float* dweight, float* dbias, float* dcols, float* dinp_cnhw,
                               const float* dout, const float* in_cnhw, const float* weight,
                               const ConvGeometry& g) {
  const int patch = g.out_channels * g.kernel * g.kernel;
  if (dbias) accumulate_channel_sums(dbias, dout, g.batch, g.out_channels, g.out_h * g.out_w);
  if (conv_transpose_is_dense(g)) {
    // dweight [C, patch] += in [N, C]^T * dout [N, patch]; dinp [N, C] = dout [N, patch] * weight [C, patch]^T
    sgemm(true, false, g.in_channels, patch, g.batch, 1.f, in_cnhw, g.in_channels, dout, patch, 1.f, dweight,
          patch);
    if (dinp)
      sgemm(false, true, g.batch, g.in_channels, patch, 1.f, dout, patch, weight, patch, 0.f, dinp, g.in_channels);
    return;
  }
  const int positions = g.batch * g.in_h * g.in_w;
  im2col(dcols, dout, g.batch, g.out_channels, g.out_h, g.out_w, g.kernel, g.stride, g.padding, g.in_h, g.in_w);
  // dweight [C, patch] += in [C, P] * dcols [patch, P]^T
  sgemm(false, true, g.in_channels, patch, positions, 1.f, in_cnhw, positions, dcols, positions, 1.f, dweight,
        patch);
  if (!dinp) return;
  // dinp [C, P] = weight [C, patch] * dcols [patch, P]: a conv forward of dout
  float* result = g.batch == 1 ? dinp : dinp_cnhw;
  sgemm(false, false, g.in_channels, positions, patch, 1.f, weight, patch, dcols, positions, 0.f, result,
        positions);
  if (g.batch != 1) cnhw_to_nchw(dinp, dinp_cnhw, g.batch, g.in_channels, g.in_h * g.in_w);
}

}  // namespace gt::cpu
