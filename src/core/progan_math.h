// The Progressive GAN layers' per-position and per-value math (pixel norm, minibatch standard deviation), shared by the CPU kernels and the CUDA ones (GT_HD), so both compute the same values in the same order.
#pragma once
#include <math.h>
#include <stdint.h>

#include "core/hd.h"

namespace gt::progan_math {

// ---- PixelNorm at one (sample, position): the C channels of x, t, y, ... lie `stride` (H*W) values apart ----

// y_c = x_c r with r = (mean_c x_c^2 + eps)^-1/2 (the sum in double); returns r.
GT_HD float pixelnorm_forward_at(float* y, const float* x, int C, int64_t stride, float eps) {
  double q = 0;
  for (int c = 0; c < C; ++c) q += static_cast<double>(x[c * stride]) * x[c * stride];
  const float r = static_cast<float>(1.0 / ::sqrt(q / C + eps));
  for (int c = 0; c < C; ++c) y[c * stride] = x[c * stride] * r;
  return r;
}

// The (symmetric) Jacobian applied to t: out = r t - r^3 x mean_c(x t): the backward (t = dout) and the tangent.
GT_HD void pixelnorm_jacobian_at(float* out, const float* t, const float* x, float r, int C, int64_t stride) {
  double s = 0;
  for (int c = 0; c < C; ++c) s += static_cast<double>(x[c * stride]) * t[c * stride];
  const float k = static_cast<float>(static_cast<double>(r) * r * r * (s / C));
  for (int c = 0; c < C; ++c) out[c * stride] = r * t[c * stride] - k * x[c * stride];
}

// g = d(phi)/dx for phi = delta . J t = r S - r^3 u D (S = sum delta t, D = sum delta x, u = mean x t; dr/dx_k =
// -r^3 x_k / C): g_k = -r^3 x_k S / C + 3 r^5 x_k u D / C - r^3 t_k D / C - r^3 u delta_k.
GT_HD void pixelnorm_second_at(float* g, const float* delta, const float* t, const float* x, float r_float, int C,
                               int64_t stride) {
  double S = 0, D = 0, U = 0;
  for (int c = 0; c < C; ++c) {
    S += static_cast<double>(delta[c * stride]) * t[c * stride];
    D += static_cast<double>(delta[c * stride]) * x[c * stride];
    U += static_cast<double>(x[c * stride]) * t[c * stride];
  }
  U /= C;
  const double r = r_float, r3 = r * r * r, r5 = r3 * r * r;
  const double kx = (-r3 * S + 3 * r5 * U * D) / C, kt = -r3 * D / C, kd = -r3 * U;
  for (int c = 0; c < C; ++c)
    g[c * stride] = static_cast<float>(kx * x[c * stride] + kt * t[c * stride] + kd * delta[c * stride]);
}

// ---- minibatch standard deviation at one value j of a group: the group's samples lie `stride` (C*H*W) apart ----

// mu = mean_i x_i and sigma = sqrt(mean_i (x_i - mu)^2 + eps), the sums in double, the samples in order.
GT_HD void mbstd_stats_at(float* mu_out, float* sigma_out, const float* x, int group, int64_t stride, float eps) {
  double s = 0;
  for (int i = 0; i < group; ++i) s += x[i * stride];
  const float mu = static_cast<float>(s / group);
  double q = 0;
  for (int i = 0; i < group; ++i) {
    const double d = x[i * stride] - mu;
    q += d * d;
  }
  *mu_out = mu;
  *sigma_out = static_cast<float>(::sqrt(q / group + eps));
}

// The input gradient of one value: the passed-through gradient d plus k (x - mu) / sigma, k = (the sum of the
// group's added-channel gradient) / (M G): d sigma_j / d x_ij = (x_ij - mu_j) / (G sigma_j).
GT_HD float mbstd_backward_value(float d, float x, float mu, float sigma, double k) {
  return static_cast<float>(d + k * (x - mu) / sigma);
}

// One value's term of the tangent's statistic, sum_ij (x_ij - mu_j) t_ij / sigma_j, before the / (M G).
GT_HD double mbstd_tangent_term(float x, float mu, float t, float sigma) {
  return static_cast<double>(x - mu) * t / sigma;
}

// The curvature at value j of every sample of the group: g_i = K ((t_i - mean_i t) / sigma - P (x_i - mu) / (G
// sigma^3)) with P = sum_i (x_i - mu) t_i and K = (the sum of delta's added channel over the group) / (M G).
GT_HD void mbstd_second_at(float* g, const float* t, const float* x, float mu_float, float sigma_float, double K,
                           int group, int64_t stride) {
  const double mu = mu_float, sd = sigma_float;
  double P = 0, T = 0;
  for (int i = 0; i < group; ++i) {
    P += (x[i * stride] - mu) * t[i * stride];
    T += t[i * stride];
  }
  T /= group;
  for (int i = 0; i < group; ++i) {
    const double d = x[i * stride] - mu;
    g[i * stride] = static_cast<float>(K * ((t[i * stride] - T) / sd - P * d / (group * sd * sd * sd)));
  }
}

}  // namespace gt::progan_math
