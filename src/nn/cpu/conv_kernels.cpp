// Convolution kernels: per-thread chunks of samples (im2col, GEMM, col2im in L2) or one fully-connected GEMM.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "nn/cpu/kernels.h"

// GCC turns the short strided row copies of im2col/col2im into slower code: vector loops with alias checks
// and remainders for rows of 4-8 values, and library memset calls for a few zeros. Plain scalar loops
// measured 1.3-2x faster there.
#if defined(__GNUC__) && !defined(__clang__)
#define GT_SCALAR_LOOPS __attribute__((optimize("no-tree-vectorize", "no-tree-loop-distribute-patterns")))
#else
#define GT_SCALAR_LOOPS
#endif

namespace gt::cpu {
namespace {

// Target size of one chunk's column buffer: 128 Ki floats (512 KiB) stays in a core's L2 next to the GEMM's
// panels (64 Ki and 256 Ki measured no better on the DCGAN shapes).
constexpr int64_t kChunkColsFloats = 128 * 1024;
// Below this many touched floats a parallel region costs more than it saves.
constexpr int64_t kParallelMinWork = 1 << 15;

// For each kernel offset k, the output positions o in [lo, hi) whose input o*stride - pad + k lies in [0, size).
struct ValidRanges {
  std::vector<int> lo, hi;
};

ValidRanges valid_ranges(int K, int pad, int stride, int size, int out_size) {
  ValidRanges r{std::vector<int>(K), std::vector<int>(K)};
  for (int k = 0; k < K; ++k) {
    const int first = pad - k;            // smallest o*stride that lands on index 0
    const int last = size - 1 + pad - k;  // largest o*stride that lands inside
    const int lo = std::min(first <= 0 ? 0 : (first + stride - 1) / stride, out_size);
    const int hi = last < 0 ? 0 : last / stride + 1;
    r.lo[k] = lo;
    r.hi[k] = std::clamp(hi, lo, out_size);
  }
  return r;
}

// Templated on the stride (0: given at run time) so the common strides get fixed-step loops.
template <int kStride>
GT_SCALAR_LOOPS void im2col_impl(float* cols, const float* image, int N, int C, int H, int W, int K,
                                 int runtime_stride, int pad, int OH, int OW) {
  const int stride = kStride ? kStride : runtime_stride;
  const int64_t row_len = static_cast<int64_t>(N) * OH * OW;
  const ValidRanges vh = valid_ranges(K, pad, stride, H, OH), vw = valid_ranges(K, pad, stride, W, OW);
  for (int c = 0; c < C; ++c) {
    for (int kh = 0; kh < K; ++kh) {
      for (int kw = 0; kw < K; ++kw) {
        const int oh_lo = vh.lo[kh], oh_hi = vh.hi[kh], ow_lo = vw.lo[kw], ow_hi = vw.hi[kw];
        float* row = cols + ((static_cast<int64_t>(c) * K + kh) * K + kw) * row_len;
        for (int n = 0; n < N; ++n) {
          const float* plane = image + (static_cast<int64_t>(n) * C + c) * H * W;
          float* __restrict dst = row + static_cast<int64_t>(n) * OH * OW;
          for (int i = 0; i < oh_lo * OW; ++i) dst[i] = 0.f;
          for (int oh = oh_lo; oh < oh_hi; ++oh) {
            float* __restrict d = dst + oh * OW;
            const float* __restrict src = plane + (oh * stride - pad + kh) * W + (ow_lo * stride - pad + kw);
            for (int ow = 0; ow < ow_lo; ++ow) d[ow] = 0.f;
            for (int j = 0; j < ow_hi - ow_lo; ++j) d[ow_lo + j] = src[j * stride];
            for (int ow = ow_hi; ow < OW; ++ow) d[ow] = 0.f;
          }
          for (int i = oh_hi * OW; i < OH * OW; ++i) dst[i] = 0.f;
        }
      }
    }
  }
}

template <int kStride>
GT_SCALAR_LOOPS void col2im_impl(float* image, const float* cols, int N, int C, int H, int W, int K,
                                 int runtime_stride, int pad, int OH, int OW) {
  const int stride = kStride ? kStride : runtime_stride;
  const int64_t row_len = static_cast<int64_t>(N) * OH * OW;
  const ValidRanges vh = valid_ranges(K, pad, stride, H, OH), vw = valid_ranges(K, pad, stride, W, OW);
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < C; ++c) {
      float* plane = image + (static_cast<int64_t>(n) * C + c) * H * W;
      std::memset(plane, 0, sizeof(float) * H * W);
      for (int kh = 0; kh < K; ++kh) {
        for (int kw = 0; kw < K; ++kw) {
          const int ow_lo = vw.lo[kw], count = vw.hi[kw] - ow_lo;
          const float* src = cols + ((static_cast<int64_t>(c) * K + kh) * K + kw) * row_len +
                             static_cast<int64_t>(n) * OH * OW + ow_lo;
          for (int oh = vh.lo[kh]; oh < vh.hi[kh]; ++oh) {
            float* __restrict d = plane + (oh * stride - pad + kh) * W + (ow_lo * stride - pad + kw);
            const float* __restrict s = src + oh * OW;
            for (int j = 0; j < count; ++j) d[j * stride] += s[j];
          }
        }
      }
    }
  }
}

void add_channel_bias(float* x, const float* bias, int N, int C, int inner) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) {
      float* p = x + (static_cast<int64_t>(n) * C + c) * inner;
      const float b = bias[c];
#pragma omp simd
      for (int i = 0; i < inner; ++i) p[i] += b;
    }
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

void add_channel_bias_parallel(float* x, const float* bias, int N, int C, int inner) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C * inner > kParallelMinWork)
  for (int n = 0; n < N; ++n) add_channel_bias(x + static_cast<int64_t>(n) * C * inner, bias, 1, C, inner);
}

// The kernel covers the whole unpadded image: one output pixel per sample, i.e. a fully-connected layer.
bool conv_is_dense(const ConvGeometry& g) {
  return g.padding == 0 && g.kernel == g.in_h && g.kernel == g.in_w;
}
// A transposed conv of a 1x1 input without padding writes one K x K block per sample: also fully connected.
bool conv_transpose_is_dense(const ConvGeometry& g) { return g.padding == 0 && g.in_h == 1 && g.in_w == 1; }

// How the batch is cut into chunks and how each thread's part of the workspace is laid out:
// [cols: patch x chunk positions][gemm: rows x chunk positions][dweight partial sum].
struct ChunkPlan {
  int threads = 1, chunk = 1, chunks = 1;
  int positions = 0;  // columns of the column matrix per sample
  size_t cols = 0, gemm = 0, dweight = 0, per_thread = 0;
};

// patch: rows of the column matrix; positions: its columns per sample; gemm_rows: channels of the other side.
ChunkPlan make_plan(int batch, int patch, int positions, int gemm_rows, size_t weight_floats) {
  ChunkPlan p;
  p.threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  p.positions = positions;
  const int64_t per_sample = static_cast<int64_t>(patch) * positions;
  const int fit = static_cast<int>(std::max<int64_t>(1, kChunkColsFloats / std::max<int64_t>(1, per_sample)));
  const int spread = (batch + p.threads - 1) / p.threads;  // so every thread gets a chunk
  p.chunk = std::clamp(std::min(fit, spread), 1, batch);
  p.chunks = (batch + p.chunk - 1) / p.chunk;
  p.threads = std::min(p.threads, p.chunks);
  p.cols = static_cast<size_t>(per_sample) * p.chunk;
  p.gemm = static_cast<size_t>(gemm_rows) * positions * p.chunk;
  p.dweight = weight_floats;
  p.per_thread = p.cols + p.gemm + p.dweight;
  return p;
}

ChunkPlan conv_plan(const ConvGeometry& g) {
  return make_plan(g.batch, g.in_channels * g.kernel * g.kernel, g.out_h * g.out_w, g.out_channels,
                   static_cast<size_t>(g.out_channels) * g.in_channels * g.kernel * g.kernel);
}

ChunkPlan conv_transpose_plan(const ConvGeometry& g) {
  return make_plan(g.batch, g.out_channels * g.kernel * g.kernel, g.in_h * g.in_w, g.in_channels,
                   static_cast<size_t>(g.in_channels) * g.out_channels * g.kernel * g.kernel);
}

struct ThreadBuffers {
  float* cols;
  float* gemm;
  float* dweight;
};

ThreadBuffers buffers_of(const ChunkPlan& p, float* workspace, int thread) {
  float* base = workspace + p.per_thread * thread;
  return {base, base + p.cols, base + p.cols + p.gemm};
}

void check_workspace(const ChunkPlan& p, size_t workspace_floats) {
  GT_CHECK(p.per_thread * p.threads <= workspace_floats, "conv workspace of {} floats, plan needs {}",
           workspace_floats, p.per_thread * p.threads);
}

// Every planned thread's partial sum starts at zero, also those of threads the runtime did not start.
void zero_dweight_partials(const ChunkPlan& p, float* workspace) {
  for (int t = 0; t < p.threads; ++t) std::memset(buffers_of(p, workspace, t).dweight, 0, sizeof(float) * p.dweight);
}

// dweight += the threads' partial sums, added in thread order so the result is reproducible.
void reduce_dweight(float* dweight, const ChunkPlan& p, float* workspace) {
  const int64_t n = static_cast<int64_t>(p.dweight);
#pragma omp parallel for schedule(static) num_threads(p.threads) if (p.threads > 1 && n > 4096)
  for (int64_t i = 0; i < n; ++i) {
    float s = 0.f;
    for (int t = 0; t < p.threads; ++t) s += buffers_of(p, workspace, t).dweight[i];
    dweight[i] += s;
  }
}

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
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < N; ++n)
      std::memcpy(dst + (static_cast<int64_t>(c) * N + n) * inner, src + (static_cast<int64_t>(n) * C + c) * inner,
                  sizeof(float) * inner);
}

void cnhw_to_nchw(float* dst, const float* src, int N, int C, int inner) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      std::memcpy(dst + (static_cast<int64_t>(n) * C + c) * inner, src + (static_cast<int64_t>(c) * N + n) * inner,
                  sizeof(float) * inner);
}

// ---- Conv2d ------------------------------------------------------------------------------------------

size_t conv2d_workspace_floats(const ConvGeometry& g) {
  if (conv_is_dense(g)) return 0;
  const ChunkPlan p = conv_plan(g);
  return p.per_thread * p.threads;
}

void conv2d_forward(float* out, const float* in, const float* weight, const float* bias, const ConvGeometry& g,
                    float* workspace, size_t workspace_floats) {
  const int patch = g.in_channels * g.kernel * g.kernel;
  if (conv_is_dense(g)) {
    // out [N, OC] = in [N, patch] * weight [OC, patch]^T
    sgemm(false, true, g.batch, g.out_channels, patch, g.weight_scale, in, patch, weight, patch, 0.f, out, g.out_channels);
    if (bias) add_channel_bias_parallel(out, bias, g.batch, g.out_channels, 1);
    return;
  }
  const ChunkPlan p = conv_plan(g);
  check_workspace(p, workspace_floats);
  const int64_t in_sample = static_cast<int64_t>(g.in_channels) * g.in_h * g.in_w;
  const int64_t out_sample = static_cast<int64_t>(g.out_channels) * p.positions;
#pragma omp parallel for schedule(static, 1) num_threads(p.threads) if (p.threads > 1)
  for (int chunk = 0; chunk < p.chunks; ++chunk) {
    const ThreadBuffers b = buffers_of(p, workspace, omp_get_thread_num());
    const int n0 = chunk * p.chunk, count = std::min(p.chunk, g.batch - n0), cols = count * p.positions;
    im2col(b.cols, in + n0 * in_sample, count, g.in_channels, g.in_h, g.in_w, g.kernel, g.stride, g.padding,
           g.out_h, g.out_w);
    // y [OC, cols] = weight [OC, patch] * cols [patch, cols]
    float* y = count == 1 ? out + n0 * out_sample : b.gemm;  // one sample: CNHW is NCHW
    sgemm_serial(false, false, g.out_channels, cols, patch, g.weight_scale, weight, patch, b.cols, cols, 0.f, y, cols);
    if (count != 1) cnhw_to_nchw(out + n0 * out_sample, b.gemm, count, g.out_channels, p.positions);
    if (bias) add_channel_bias(out + n0 * out_sample, bias, count, g.out_channels, p.positions);
  }
}

void conv2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                     const float* weight, const ConvGeometry& g, float* workspace, size_t workspace_floats) {
  const int patch = g.in_channels * g.kernel * g.kernel;
  if (dbias) accumulate_channel_sums(dbias, dout, g.batch, g.out_channels, g.out_h * g.out_w);
  if (conv_is_dense(g)) {
    // dweight [OC, patch] += dout [N, OC]^T * in [N, patch]; dinp [N, patch] = dout [N, OC] * weight [OC, patch]
    if (dweight)
      sgemm(true, false, g.out_channels, patch, g.batch, g.weight_scale, dout, g.out_channels, in, patch, 1.f, dweight, patch);
    if (dinp)
      sgemm(false, false, g.batch, patch, g.out_channels, g.weight_scale, dout, g.out_channels, weight, patch, 0.f, dinp,
            patch);
    return;
  }
  const ChunkPlan p = conv_plan(g);
  check_workspace(p, workspace_floats);
  const int64_t in_sample = static_cast<int64_t>(g.in_channels) * g.in_h * g.in_w;
  const int64_t out_sample = static_cast<int64_t>(g.out_channels) * p.positions;
  if (dweight) zero_dweight_partials(p, workspace);
#pragma omp parallel num_threads(p.threads) if (p.threads > 1)
  {
    const ThreadBuffers b = buffers_of(p, workspace, omp_get_thread_num());
#pragma omp for schedule(static, 1)
    for (int chunk = 0; chunk < p.chunks; ++chunk) {
      const int n0 = chunk * p.chunk, count = std::min(p.chunk, g.batch - n0), cols = count * p.positions;
      im2col(b.cols, in + n0 * in_sample, count, g.in_channels, g.in_h, g.in_w, g.kernel, g.stride, g.padding,
             g.out_h, g.out_w);
      const float* dy = dout + n0 * out_sample;
      if (count != 1) {
        nchw_to_cnhw(b.gemm, dy, count, g.out_channels, p.positions);
        dy = b.gemm;
      }
      // dweight [OC, patch] += dy [OC, cols] * cols [patch, cols]^T
      if (dweight)
        sgemm_serial(false, true, g.out_channels, patch, cols, g.weight_scale, dy, cols, b.cols, cols, 1.f, b.dweight, patch);
      if (dinp) {
        // dcols [patch, cols] = weight [OC, patch]^T * dy [OC, cols], into the now free column buffer
        sgemm_serial(true, false, patch, cols, g.out_channels, g.weight_scale, weight, patch, dy, cols, 0.f, b.cols, cols);
        col2im(dinp + n0 * in_sample, b.cols, count, g.in_channels, g.in_h, g.in_w, g.kernel, g.stride,
               g.padding, g.out_h, g.out_w);
      }
    }
  }
  if (dweight) reduce_dweight(dweight, p, workspace);
}

// ---- ConvTranspose2d -----------------------------------------------------------------------------------

size_t conv_transpose2d_workspace_floats(const ConvGeometry& g) {
  if (conv_transpose_is_dense(g)) return 0;
  const ChunkPlan p = conv_transpose_plan(g);
  return p.per_thread * p.threads;
}

void conv_transpose2d_forward(float* out, const float* in, const float* weight, const float* bias,
                              const ConvGeometry& g, float* workspace, size_t workspace_floats) {
  const int patch = g.out_channels * g.kernel * g.kernel;
  if (conv_transpose_is_dense(g)) {
    // out [N, OC*K*K] = in [N, C] * weight [C, OC*K*K], already NCHW
    sgemm(false, false, g.batch, patch, g.in_channels, g.weight_scale, in, g.in_channels, weight, patch, 0.f, out, patch);
    if (bias) add_channel_bias_parallel(out, bias, g.batch, g.out_channels, g.out_h * g.out_w);
    return;
  }
  const ChunkPlan p = conv_transpose_plan(g);
  check_workspace(p, workspace_floats);
  const int64_t in_sample = static_cast<int64_t>(g.in_channels) * p.positions;
  const int64_t out_sample = static_cast<int64_t>(g.out_channels) * g.out_h * g.out_w;
#pragma omp parallel for schedule(static, 1) num_threads(p.threads) if (p.threads > 1)
  for (int chunk = 0; chunk < p.chunks; ++chunk) {
    const ThreadBuffers b = buffers_of(p, workspace, omp_get_thread_num());
    const int n0 = chunk * p.chunk, count = std::min(p.chunk, g.batch - n0), cols = count * p.positions;
    const float* x = in + n0 * in_sample;
    if (count != 1) {
      nchw_to_cnhw(b.gemm, x, count, g.in_channels, p.positions);
      x = b.gemm;
    }
    // cols [patch, cols] = weight [C, patch]^T * x [C, cols], then scattered onto the output image
    sgemm_serial(true, false, patch, cols, g.in_channels, g.weight_scale, weight, patch, x, cols, 0.f, b.cols, cols);
    col2im(out + n0 * out_sample, b.cols, count, g.out_channels, g.out_h, g.out_w, g.kernel, g.stride, g.padding,
           g.in_h, g.in_w);
    if (bias) add_channel_bias(out + n0 * out_sample, bias, count, g.out_channels, g.out_h * g.out_w);
  }
}

void conv_transpose2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                               const float* weight, const ConvGeometry& g, float* workspace,
                               size_t workspace_floats) {
  const int patch = g.out_channels * g.kernel * g.kernel;
  if (dbias) accumulate_channel_sums(dbias, dout, g.batch, g.out_channels, g.out_h * g.out_w);
  if (conv_transpose_is_dense(g)) {
    // dweight [C, patch] += in [N, C]^T * dout [N, patch]; dinp [N, C] = dout [N, patch] * weight [C, patch]^T
    if (dweight)
      sgemm(true, false, g.in_channels, patch, g.batch, g.weight_scale, in, g.in_channels, dout, patch, 1.f, dweight, patch);
    if (dinp)
      sgemm(false, true, g.batch, g.in_channels, patch, g.weight_scale, dout, patch, weight, patch, 0.f, dinp, g.in_channels);
    return;
  }
  const ChunkPlan p = conv_transpose_plan(g);
  check_workspace(p, workspace_floats);
  const int64_t in_sample = static_cast<int64_t>(g.in_channels) * p.positions;
  const int64_t out_sample = static_cast<int64_t>(g.out_channels) * g.out_h * g.out_w;
  if (dweight) zero_dweight_partials(p, workspace);
#pragma omp parallel num_threads(p.threads) if (p.threads > 1)
  {
    const ThreadBuffers b = buffers_of(p, workspace, omp_get_thread_num());
#pragma omp for schedule(static, 1)
    for (int chunk = 0; chunk < p.chunks; ++chunk) {
      const int n0 = chunk * p.chunk, count = std::min(p.chunk, g.batch - n0), cols = count * p.positions;
      im2col(b.cols, dout + n0 * out_sample, count, g.out_channels, g.out_h, g.out_w, g.kernel, g.stride,
             g.padding, g.in_h, g.in_w);
      const float* x = in + n0 * in_sample;
      if (count != 1) {
        nchw_to_cnhw(b.gemm, x, count, g.in_channels, p.positions);
        x = b.gemm;
      }
      // dweight [C, patch] += x [C, cols] * dcols [patch, cols]^T
      if (dweight)
        sgemm_serial(false, true, g.in_channels, patch, cols, g.weight_scale, x, cols, b.cols, cols, 1.f, b.dweight, patch);
      if (dinp) {
        // dx [C, cols] = weight [C, patch] * dcols [patch, cols]: a conv forward of dout
        float* dx = count == 1 ? dinp + n0 * in_sample : b.gemm;
        sgemm_serial(false, false, g.in_channels, cols, patch, g.weight_scale, weight, patch, b.cols, cols, 0.f, dx, cols);
        if (count != 1) cnhw_to_nchw(dinp + n0 * in_sample, b.gemm, count, g.in_channels, p.positions);
      }
    }
  }
  if (dweight) reduce_dweight(dweight, p, workspace);
}

}  // namespace gt::cpu
