// CPU reference kernels of the Progressive GAN layers: pixel norm, nearest upsampling, average pooling, minibatch standard deviation, fade.
#include <cmath>
#include <cstdint>

#include "core/progan_math.h"
#include "nn/cpu/kernels.h"

namespace gt::cpu {

// ---- PixelNorm -------------------------------------------------------------------------------------
// Per (sample, position): y_c = x_c r, r = (mean_c x_c^2 + eps)^-1/2. The Jacobian is symmetric:
// J t = r t - r^3 x u with u = mean_c x_c t_c.

void pixelnorm_forward(float* out, float* rnorm, const float* in, int N, int C, int HW, float eps) {
  const int64_t M = static_cast<int64_t>(C) * HW;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n)
    for (int p = 0; p < HW; ++p)
      rnorm[static_cast<int64_t>(n) * HW + p] =
          progan_math::pixelnorm_forward_at(out + n * M + p, in + n * M + p, C, HW, eps);
}

void pixelnorm_jacobian(float* out, const float* t, const float* in, const float* rnorm, int N, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n)
    for (int p = 0; p < HW; ++p)
      progan_math::pixelnorm_jacobian_at(out + n * M + p, t + n * M + p, in + n * M + p,
                                         rnorm[static_cast<int64_t>(n) * HW + p], C, HW);
}

// progan_math::pixelnorm_second_at derives the curvature term.
void pixelnorm_second(float* dinp, const float* delta, const float* t, const float* in, const float* rnorm, int N,
                      int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n)
    for (int p = 0; p < HW; ++p)
      progan_math::pixelnorm_second_at(dinp + n * M + p, delta + n * M + p, t + n * M + p, in + n * M + p,
                                       rnorm[static_cast<int64_t>(n) * HW + p], C, HW);
}

// ---- nearest upsampling by 2 and 2x2 average pooling ------------------------------------------------

void upsample2x_forward(float* out, const float* in, int NC, int H, int W) {
  const int OW = 2 * W;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < NC; ++i)
    for (int h = 0; h < H; ++h) {
      const float* x = in + (static_cast<int64_t>(i) * H + h) * W;
      float* y0 = out + (static_cast<int64_t>(i) * 2 * H + 2 * h) * OW;
      float* y1 = y0 + OW;
      for (int w = 0; w < W; ++w) y0[2 * w] = y0[2 * w + 1] = y1[2 * w] = y1[2 * w + 1] = x[w];
    }
}

void upsample2x_backward(float* dinp, const float* dout, int NC, int H, int W) {
  const int OW = 2 * W;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < NC; ++i)
    for (int h = 0; h < H; ++h) {
      const float* d0 = dout + (static_cast<int64_t>(i) * 2 * H + 2 * h) * OW;
      const float* d1 = d0 + OW;
      float* g = dinp + (static_cast<int64_t>(i) * H + h) * W;
      for (int w = 0; w < W; ++w) g[w] = (d0[2 * w] + d0[2 * w + 1]) + (d1[2 * w] + d1[2 * w + 1]);
    }
}

void avgpool2x_forward(float* out, const float* in, int NC, int H, int W) {
  const int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < NC; ++i)
    for (int h = 0; h < OH; ++h) {
      const float* x0 = in + (static_cast<int64_t>(i) * H + 2 * h) * W;
      const float* x1 = x0 + W;
      float* y = out + (static_cast<int64_t>(i) * OH + h) * OW;
      for (int w = 0; w < OW; ++w) y[w] = ((x0[2 * w] + x0[2 * w + 1]) + (x1[2 * w] + x1[2 * w + 1])) * 0.25f;
    }
}

void avgpool2x_backward(float* dinp, const float* dout, int NC, int H, int W) {
  const int OH = H / 2, OW = W / 2;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < NC; ++i)
    for (int h = 0; h < OH; ++h) {
      const float* d = dout + (static_cast<int64_t>(i) * OH + h) * OW;
      float* g0 = dinp + (static_cast<int64_t>(i) * H + 2 * h) * W;
      float* g1 = g0 + W;
      for (int w = 0; w < OW; ++w) g0[2 * w] = g0[2 * w + 1] = g1[2 * w] = g1[2 * w + 1] = d[w] * 0.25f;
    }
}

// ---- minibatch standard deviation ---------------------------------------------------------------------
// Group g holds the samples [g*G, (g+1)*G). Per group and value j of [C, H, W]: mean mu_j, sigma_j =
// sqrt(mean_i (x_ij - mu_j)^2 + eps); the group's statistic s_g = mean_j sigma_j fills channel C of its samples.

namespace {
inline int64_t row(int n, int64_t M) { return static_cast<int64_t>(n) * M; }
}  // namespace

void mbstd_forward(float* out, float* mean, float* sigma, const float* in, int N, int C, int HW, int group, float eps) {
  const int64_t M = static_cast<int64_t>(C) * HW, MO = M + HW;
  const int groups = N / group;
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups; ++g) {
    double total = 0;
    for (int64_t j = 0; j < M; ++j) {
      progan_math::mbstd_stats_at(&mean[row(g, M) + j], &sigma[row(g, M) + j], in + row(g * group, M) + j, group, M,
                                  eps);
      total += sigma[row(g, M) + j];
    }
    const float stat = static_cast<float>(total / static_cast<double>(M));
    for (int i = 0; i < group; ++i) {
      const int n = g * group + i;
      float* y = out + row(n, MO);
      const float* x = in + row(n, M);
      for (int64_t j = 0; j < M; ++j) y[j] = x[j];
      for (int p = 0; p < HW; ++p) y[M + p] = stat;
    }
  }
}

namespace {
// sum over the group's samples and positions of channel C of a [N, C+1, H, W] tensor.
double group_channel_sum(const float* a, int g, int group, int64_t M, int HW) {
  double s = 0;
  for (int i = 0; i < group; ++i) {
    const float* p = a + row(g * group + i, M + HW) + M;
    for (int q = 0; q < HW; ++q) s += p[q];
  }
  return s;
}
}  // namespace

void mbstd_backward(float* dinp, const float* dout, const float* in, const float* mean, const float* sigma, int N,
                    int C, int HW, int group) {
  const int64_t M = static_cast<int64_t>(C) * HW, MO = M + HW;
  const int groups = N / group;
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups; ++g) {
    // ds_g / M spread over the values: d sigma_j / d x_ij = (x_ij - mu_j) / (G sigma_j).
    const double k = group_channel_sum(dout, g, group, M, HW) / static_cast<double>(M) / group;
    for (int i = 0; i < group; ++i) {
      const int n = g * group + i;
      const float* x = in + row(n, M);
      const float* d = dout + row(n, MO);
      float* gx = dinp + row(n, M);
      for (int64_t j = 0; j < M; ++j)
        gx[j] = progan_math::mbstd_backward_value(d[j], x[j], mean[row(g, M) + j], sigma[row(g, M) + j], k);
    }
  }
}

void mbstd_tangent(float* out, const float* t, const float* in, const float* mean, const float* sigma, int N, int C,
                   int HW, int group) {
  const int64_t M = static_cast<int64_t>(C) * HW, MO = M + HW;
  const int groups = N / group;
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups; ++g) {
    double s = 0;
    for (int i = 0; i < group; ++i) {
      const int n = g * group + i;
      for (int64_t j = 0; j < M; ++j)
        s += progan_math::mbstd_tangent_term(in[row(n, M) + j], mean[row(g, M) + j], t[row(n, M) + j],
                                             sigma[row(g, M) + j]);
    }
    const float ts = static_cast<float>(s / static_cast<double>(M) / group);
    for (int i = 0; i < group; ++i) {
      const int n = g * group + i;
      float* y = out + row(n, MO);
      for (int64_t j = 0; j < M; ++j) y[j] = t[row(n, M) + j];
      for (int p = 0; p < HW; ++p) y[M + p] = ts;
    }
  }
}

// phi = sum_g K_g sum_j P_j / sigma_j with K_g = (sum of delta's channel C over group g) / (M G) and
// P_j = sum_i d_ij t_ij, d = x - mu: dphi/dx_kj = K_g ((t_kj - mean_i t_ij) / sigma_j - P_j d_kj / (G sigma_j^3)).
void mbstd_second(float* dinp, const float* delta, const float* t, const float* in, const float* mean,
                  const float* sigma, int N, int C, int HW, int group) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  const int groups = N / group;
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups; ++g) {
    const double K = group_channel_sum(delta, g, group, M, HW) / static_cast<double>(M) / group;
    for (int64_t j = 0; j < M; ++j)
      progan_math::mbstd_second_at(dinp + row(g * group, M) + j, t + row(g * group, M) + j, in + row(g * group, M) + j,
                                   mean[row(g, M) + j], sigma[row(g, M) + j], K, group, M);
  }
}

// ---- fade --------------------------------------------------------------------------------------------

void lerp_forward(float* out, const float* a, const float* b, float alpha, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + alpha * (b[i] - a[i]);
}

}  // namespace gt::cpu
