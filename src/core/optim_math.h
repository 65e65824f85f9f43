// Per-element optimizer updates and their per-step constants, shared by the CPU optimizers (train/optim.cpp) and the CUDA kernels (cuda/optim.cu) so both compute the same bits. C++17, GT_HD.
#pragma once
#include <cmath>

#include "core/hd.h"

// Each torch op rounds to float32, so these must not be contracted into fused multiply-adds beyond
// the explicit fma_rn calls: on the device the _rn intrinsics never fuse; on the host contraction is
// switched off for this header's functions.
#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

namespace gt {

// Per-step constants, computed on the host in double as torch.optim computes them (optim.cpp).
struct AdamCoefficients {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, weight_decay, minus_step_size;
};
struct RmspropCoefficients {
  float alpha, one_minus_alpha, eps, weight_decay, momentum, minus_lr;
};
struct SgdCoefficients {
  float weight_decay, momentum, minus_lr;
  bool first_step;  // torch starts the momentum buffer as a copy of the first gradient
};

namespace optim_math {

#if defined(__CUDA_ARCH__)
GT_HD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
GT_HD float add_rn(float a, float b) { return __fadd_rn(a, b); }
GT_HD float sub_rn(float a, float b) { return __fsub_rn(a, b); }
GT_HD float div_rn(float a, float b) { return __fdiv_rn(a, b); }
GT_HD float sqrt_rn(float a) { return __fsqrt_rn(a); }
#else
GT_HD float mul_rn(float a, float b) { return a * b; }
GT_HD float add_rn(float a, float b) { return a + b; }
GT_HD float sub_rn(float a, float b) { return a - b; }
GT_HD float div_rn(float a, float b) { return a / b; }
GT_HD float sqrt_rn(float a) { return std::sqrt(a); }
#endif
// Where torch's AVX2 kernels fuse (add with alpha, addcmul), we fuse too.
GT_HD float fma_rn(float a, float b, float c) { return fmaf(a, b, c); }

// WGAN's weight clipping, as torch.clamp(p, -limit, limit): NaN stays NaN (fminf/fmaxf would drop it).
GT_HD float clip_weight(float p, float limit) { return p < -limit ? -limit : (p > limit ? limit : p); }

// One step of an exponential moving average: average + (1 - beta) * (param - average), each operation
// rounded to float (torch's lerp_ with weight 1 - beta computes the same for weights below 0.5).
GT_HD float ema_value(float average, float param, float one_minus_beta) {
  return add_rn(average, mul_rn(one_minus_beta, sub_rn(param, average)));
}

GT_HD float with_weight_decay(float p, float grad, float weight_decay) {
  return weight_decay != 0.f ? fma_rn(p, weight_decay, grad) : grad;
}

}  // namespace optim_math

// torch.optim.Adam (single-tensor path): m, v updated in place; p += (-lr/bc1 * m) / (sqrt(v)/sqrt(bc2) + eps).
GT_HD void adam_element(float& p, float grad, float& m, float& v, const AdamCoefficients& k) {
  using namespace optim_math;
  const float g = with_weight_decay(p, grad, k.weight_decay);
  m = fma_rn(g, k.one_minus_beta1, mul_rn(m, k.beta1));
  v = fma_rn(mul_rn(k.one_minus_beta2, g), g, mul_rn(v, k.beta2));
  const float denom = add_rn(div_rn(sqrt_rn(v), k.bias_correction2_sqrt), k.eps);
  p = add_rn(p, div_rn(mul_rn(k.minus_step_size, m), denom));
}

// torch.optim.RMSprop (not centered); buffer is null without momentum.
GT_HD void rmsprop_element(float& p, float grad, float& square_avg, float* buffer, const RmspropCoefficients& k) {
  using namespace optim_math;
  const float g = with_weight_decay(p, grad, k.weight_decay);
  square_avg = fma_rn(mul_rn(k.one_minus_alpha, g), g, mul_rn(square_avg, k.alpha));
  const float avg = add_rn(sqrt_rn(square_avg), k.eps);
  if (buffer) {
    *buffer = add_rn(mul_rn(*buffer, k.momentum), div_rn(g, avg));
    p = fma_rn(*buffer, k.minus_lr, p);
  } else {
    p = add_rn(p, div_rn(mul_rn(k.minus_lr, g), avg));
  }
}

// torch.optim.SGD (dampening 0, no nesterov); buffer is null without momentum.
GT_HD void sgd_element(float& p, float grad, float* buffer, const SgdCoefficients& k) {
  using namespace optim_math;
  float d = with_weight_decay(p, grad, k.weight_decay);
  if (buffer) {
    // mul_(momentum) then add_(d, alpha=1 - dampening) with dampening 0: alpha 1 adds exactly.
    d = k.first_step ? d : add_rn(mul_rn(*buffer, k.momentum), d);
    *buffer = d;
  }
  p = fma_rn(d, k.minus_lr, p);
}

}  // namespace gt

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
