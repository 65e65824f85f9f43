// Convolution kernels: batch-wide im2col/col2im (OpenMP) around one OpenBLAS GEMM per pass.
#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "nn/cpu/kernels.h"

namespace gt::cpu {
namespace {

// Below this many touched floats a parallel region costs more than it saves.
constexpr int64_t kParallelMinWork = 1 << 15;

// The output positions ow in [lo, hi) whose input column ow*stride - pad + k lies inside [0, size).
void valid_range(int k, int pad, int stride, int size, int out_size, int* lo, int* hi) {
  const int first = pad - k;  // smallest ow*stride that lands on column 0
  int l = first <= 0 ? 0 : (first + stride - 1) / stride;
  const int last = size - 1 + pad - k;  // largest ow*stride that lands inside
  int h = last < 0 ? 0 : last / stride + 1;
  l = std::min(l, out_size);
  h = std::clamp(h, l, out_size);
  *lo = l;
  *hi = h;
}

// acc[c] += sum over n and i of x[n][c][i], in double so a long batch does not lose small terms.
void accumulate_channel_sums(float* acc, const float* x, int N, int C, int inner) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C * inner > kParallelMinWork)
  for (int c = 0; c < C; ++c) {
    double s = 0.0;
    for (int n = 0; n < N; ++n) {
      const float* p = x + (static_cast<int64_t>(n) * C + c) * inner;
      float part = 0.f;
      for (int i = 0; i < inner; ++i) part += p[i];
      s += part;
    }
    acc[c] += static_cast<float>(s);
  }
}

// Same sums for a CNHW buffer, where each channel is one contiguous row of `len` values.
void accumulate_row_sums(float* acc, const float* x, int rows, int64_t len) {
#pragma omp parallel for schedule(static) if (rows * len > kParallelMinWork)
  for (int r = 0; r < rows; ++r) {
    const float* p = x + r * len;
    double s = 0.0;
    for (int64_t start = 0; start < len; start += 1024) {
      const int64_t end = std::min(len, start + 1024);
      float part = 0.f;
      for (int64_t i = start; i < end; ++i) part += p[i];
      s += part;
    }
    acc[r] += static_cast<float>(s);
  }
}

void add_channel_bias(float* x, const float* bias, int N, int C, int inner) {
#pragma omp parallel for collapse(2) schedule(static) if (static_cast<int64_t>(N) * C * inner > kParallelMinWork)
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) {
      float* p = x + (static_cast<int64_t>(n) * C + c) * inner;
      const float b = bias[c];
      for (int i = 0; i < inner; ++i) p[i] += b;
    }
}

}  // namespace

void im2col(float* cols, const float* image, int N, int C, int H, int W, int K, int stride, int pad, int OH,
            int OW) {
  const int64_t row_len = static_cast<int64_t>(N) * OH * OW;
  const int rows = C * K * K;
#pragma omp parallel for collapse(2) schedule(static) if (rows * row_len > kParallelMinWork)
  for (int r = 0; r < rows; ++r) {
    for (int n = 0; n < N; ++n) {
      const int c = r / (K * K), kh = (r / K) % K, kw = r % K;
      const float* plane = image + (static_cast<int64_t>(n) * C + c) * H * W;
      float* dst = cols + r * row_len + static_cast<int64_t>(n) * OH * OW;
      int lo, hi;
      valid_range(kw, pad, stride, W, OW, &lo, &hi);
      for (int oh = 0; oh < OH; ++oh, dst += OW) {
        const int ih = oh * stride - pad + kh;
        if (ih < 0 || ih >= H) {
          std::memset(dst, 0, sizeof(float) * OW);
          continue;
        }
        const float* src = plane + static_cast<int64_t>(ih) * W - pad + kw;
        for (int ow = 0; ow < lo; ++ow) dst[ow] = 0.f;
        if (stride == 1) {
          std::memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
        } else {
          for (int ow = lo; ow < hi; ++ow) dst[ow] = src[ow * stride];
        }
        for (int ow = hi; ow < OW; ++ow) dst[ow] = 0.f;
      }
    }
  }
}

void col2im(float* image, const float* cols, int N, int C, int H, int W, int K, int stride, int pad, int OH,
            int OW) {
  const int64_t row_len = static_cast<int64_t>(N) * OH * OW;
  // One (n, c) plane per task: the planes are disjoint, so the scatter needs no atomics.
#pragma omp parallel for collapse(2) schedule(static) if (static_cast<int64_t>(C) * K * K * row_len > kParallelMinWork)
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < C; ++c) {
      float* plane = image + (static_cast<int64_t>(n) * C + c) * H * W;
      std::memset(plane, 0, sizeof(float) * H * W);
      for (int kh = 0; kh < K; ++kh) {
        for (int kw = 0; kw < K; ++kw) {
          const float* src = cols + ((c * K + kh) * K + kw) * row_len + static_cast<int64_t>(n) * OH * OW;
          int lo, hi;
          valid_range(kw, pad, stride, W, OW, &lo, &hi);
          for (int oh = 0; oh < OH; ++oh, src += OW) {
            const int ih = oh * stride - pad + kh;
            if (ih < 0 || ih >= H) continue;
            float* dst = plane + static_cast<int64_t>(ih) * W - pad + kw;
            for (int ow = lo; ow < hi; ++ow) dst[ow * stride] += src[ow];
          }
        }
      }
    }
  }
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
  const int64_t positions = static_cast<int64_t>(g.batch) * g.out_h * g.out_w;
  const int patch = g.in_channels * g.kernel * g.kernel;
  im2col(cols, in, g.batch, g.in_channels, g.in_h, g.in_w, g.kernel, g.stride, g.padding, g.out_h, g.out_w);
  // With one sample, CNHW is NCHW: the GEMM writes the output directly.
  float* result = g.batch == 1 ? out : gemm_out;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.out_channels, positions, patch, 1.f, weight, patch,
              cols, positions, 0.f, result, positions);
  if (g.batch != 1) cnhw_to_nchw(out, gemm_out, g.batch, g.out_channels, g.out_h * g.out_w);
  if (bias) add_channel_bias(out, bias, g.batch, g.out_channels, g.out_h * g.out_w);
}

void conv2d_backward(float* dinp, float* dweight, float* dbias, float* dcols, float* dout_cnhw,
                     const float* dout, const float* cols, const float* weight, const ConvGeometry& g) {
  const int64_t positions = static_cast<int64_t>(g.batch) * g.out_h * g.out_w;
  const int patch = g.in_channels * g.kernel * g.kernel;
  const float* dy = dout;
  if (g.batch != 1) {
    nchw_to_cnhw(dout_cnhw, dout, g.batch, g.out_channels, g.out_h * g.out_w);
    dy = dout_cnhw;
  }
  if (dbias) accumulate_row_sums(dbias, dy, g.out_channels, positions);
  // dweight [OC, patch] += dy [OC, P] * cols[patch, P]^T
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.out_channels, patch, positions, 1.f, dy, positions,
              cols, positions, 1.f, dweight, patch);
  if (!dinp) return;
  // dcols [patch, P] = weight[OC, patch]^T * dy [OC, P]
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, patch, positions, g.out_channels, 1.f, weight, patch, dy,
              positions, 0.f, dcols, positions);
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
  const int64_t positions = static_cast<int64_t>(g.batch) * g.in_h * g.in_w;
  const int patch = g.out_channels * g.kernel * g.kernel;
  nchw_to_cnhw(in_cnhw, in, g.batch, g.in_channels, g.in_h * g.in_w);
  // cols [patch, P] = weight[C, patch]^T * in [C, P]
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, patch, positions, g.in_channels, 1.f, weight, patch,
              in_cnhw, positions, 0.f, cols, positions);
  col2im(out, cols, g.batch, g.out_channels, g.out_h, g.out_w, g.kernel, g.stride, g.padding, g.in_h, g.in_w);
  if (bias) add_channel_bias(out, bias, g.batch, g.out_channels, g.out_h * g.out_w);
}

void conv_transpose2d_backward(float* dinp, float* dweight, float* dbias, float* dcols, float* dinp_cnhw,
                               const float* dout, const float* in_cnhw, const float* weight,
                               const ConvGeometry& g) {
  const int64_t positions = static_cast<int64_t>(g.batch) * g.in_h * g.in_w;
  const int patch = g.out_channels * g.kernel * g.kernel;
  if (dbias) accumulate_channel_sums(dbias, dout, g.batch, g.out_channels, g.out_h * g.out_w);
  im2col(dcols, dout, g.batch, g.out_channels, g.out_h, g.out_w, g.kernel, g.stride, g.padding, g.in_h, g.in_w);
  // dweight [C, patch] += in [C, P] * dcols [patch, P]^T
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.in_channels, patch, positions, 1.f, in_cnhw, positions,
              dcols, positions, 1.f, dweight, patch);
  if (!dinp) return;
  // dinp [C, P] = weight [C, patch] * dcols [patch, P]
  float* result = g.batch == 1 ? dinp : dinp_cnhw;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.in_channels, positions, patch, 1.f, weight, patch,
              dcols, positions, 0.f, result, positions);
  if (g.batch != 1) cnhw_to_nchw(dinp, dinp_cnhw, g.batch, g.in_channels, g.in_h * g.in_w);
}

}  // namespace gt::cpu
