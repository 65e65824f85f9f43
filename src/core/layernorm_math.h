// LayerNorm2d's per-element math for its Jacobian and its double backward's curvature term, shared by the CPU kernels and the CUDA ones (GT_HD), so both compute the same values.
#pragma once
#include "core/hd.h"

namespace gt::layernorm_math {

// The normalization's (symmetric) Jacobian at one value of a sample: r (t - mean(t) - xhat mean(t xhat)),
// with xhat = (x - mu) r and the sample's means mean_t, mean_tx (in float, as both backends store them).
GT_HD float jacobian(float t, float x, float mu, float r, float mean_t, float mean_tx) {
  return r * (t - mean_t - (x - mu) * r * mean_tx);
}

// The curvature term of phi = sum(a xhat') (src/nn/cpu/layernorm.cpp derives it) at one value, before the
// sample's mean of it is subtracted: t the tangent, a = w[c] delta, c = x - mu; U = mean(c t), V = sum(a c),
// dphi_dr = sum(a t) - mean(t) sum(a) - 3 r^2 U V; m values per sample.
GT_HD double dphi_dr(double S, double mean_t, double A, double r, double U, double V) {
  return S - mean_t * A - 3.0 * r * r * U * V;
}
GT_HD double curvature(double t, double a, double c, double r, double m, double U, double V, double dphi_dr) {
  const double r3 = r * r * r;
  return -r3 * (t * V / m + U * a) - dphi_dr * r3 * c / m;
}

}  // namespace gt::layernorm_math
