// Element-wise activation math shared by the CPU and CUDA backends (GT_HD), so both compute the same values.
#pragma once
#include <math.h>

#include "core/hd.h"

namespace gt {

// NaN stays NaN (as torch.relu), so a diverged run is still caught downstream.
GT_HD float relu_value(float x) { return x < 0.f ? 0.f : x; }
// PyTorch's threshold_backward: the gradient passes where the output is positive.
GT_HD float relu_grad(float dy, float y) { return y > 0.f ? dy : 0.f; }

// x > 0 ? x : x * slope, written as two selects of a value or zero (exact: v + 0 == v) because GCC will not
// vectorize a conditional multiply under its default -ftrapping-math. NaN still gives NaN.
GT_HD float leaky_relu_value(float x, float slope) {
  const float pos = x > 0.f ? x : 0.f, neg = x > 0.f ? 0.f : x;
  return pos + neg * slope;
}
GT_HD float leaky_relu_grad(float dy, float x, float slope) {
  const float pos = x > 0.f ? dy : 0.f, neg = x > 0.f ? 0.f : dy;
  return pos + neg * slope;
}

GT_HD float tanh_value(float x) { return tanhf(x); }
// From the output, as PyTorch's tanh_backward: d tanh = 1 - y^2.
GT_HD float tanh_grad(float dy, float y) { return dy * (1.f - y * y); }

GT_HD float sigmoid_value(float x) { return 1.f / (1.f + expf(-x)); }
GT_HD float sigmoid_grad(float dy, float y) { return dy * y * (1.f - y); }

// Second derivatives from the output, for the gradient penalty's double backward (the others are
// piecewise linear): tanh'' = -2 y (1 - y^2), sigmoid'' = y (1 - y) (1 - 2 y).
GT_HD float tanh_curvature(float y) { return -2.f * y * (1.f - y * y); }
GT_HD float sigmoid_curvature(float y) { return y * (1.f - y) * (1.f - 2.f * y); }

}  // namespace gt
