// The GAN objectives' per-logit math (non-saturating BCE, Wasserstein, hinge, the drift term) and the gradient penalty's, shared by the CPU step and the CUDA loss kernel (GT_HD), so both compute the same values.
#pragma once
#include <math.h>
#include <stdint.h>

#include "core/hd.h"

namespace gt {

// The family of a GAN's losses (loss.objective).
enum class LossKind : uint8_t {
  bce,          // non-saturating: D: BCE(D(x), 1) + BCE(D(G(z)), 0); G: BCE(D(G(z)), 1)
  wasserstein,  // WGAN: D: -D(x) + D(G(z)); G: -D(G(z))
  hinge,        // D: max(0, 1 - D(x)) + max(0, 1 + D(G(z))); G: -D(G(z))
};

// Which of the step's three terms a batch of logits belongs to.
enum class LossRole : uint8_t { d_real, d_fake, g_fake };

// One term: its family and role, and the drift weight (only on d_real: epsilon * D(x)^2, the Progressive
// GAN paper's term that keeps a critic's outputs near zero; 0 = none).
struct LossTerm {
  LossKind kind = LossKind::bce;
  LossRole role = LossRole::d_real;
  float drift = 0.f;
};

namespace loss_math {

// 1 / (1 + e^-x) without overflowing e^-x for very negative x.
GT_HD double stable_sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + exp(-x));
  const double e = exp(x);
  return e / (1.0 + e);
}

// The BCE target of a role: D wants real 1 and fake 0; G wants its fakes taken for real (1).
GT_HD double bce_target(LossRole role) { return role == LossRole::d_fake ? 0.0 : 1.0; }

// BCE with logits against any target t: log(1 + e^-|x|) + max(x, 0) - x t, no overflow for any finite x
// (torch.nn.BCEWithLogitsLoss's rearrangement), and its gradient sigmoid(x) - t.
GT_HD double bce_value(double x, double target) { return (x > 0 ? x : 0.0) - x * target + log1p(exp(-fabs(x))); }
GT_HD double bce_grad(double x, double target) { return stable_sigmoid(x) - target; }

// The term's loss for one logit x, in double (the mean over the logits is the term's value).
GT_HD double value(double x, const LossTerm& t) {
  double v = 0;
  switch (t.kind) {
    case LossKind::bce: v = bce_value(x, bce_target(t.role)); break;
    case LossKind::wasserstein: v = t.role == LossRole::d_fake ? x : -x; break;
    case LossKind::hinge:
      if (t.role == LossRole::d_real) v = 1.0 - x > 0 ? 1.0 - x : 0.0;
      else if (t.role == LossRole::d_fake) v = 1.0 + x > 0 ? 1.0 + x : 0.0;
      else v = -x;
      break;
  }
  if (t.role == LossRole::d_real && t.drift != 0.f) v += static_cast<double>(t.drift) * x * x;
  return v;
}

// d(value)/dx, in double. At a hinge's kink the gradient is torch's: relu's backward passes nothing at 0.
GT_HD double grad(double x, const LossTerm& t) {
  double g = 0;
  switch (t.kind) {
    case LossKind::bce: g = bce_grad(x, bce_target(t.role)); break;
    case LossKind::wasserstein: g = t.role == LossRole::d_fake ? 1.0 : -1.0; break;
    case LossKind::hinge:
      if (t.role == LossRole::d_real) g = 1.0 - x > 0 ? -1.0 : 0.0;
      else if (t.role == LossRole::d_fake) g = 1.0 + x > 0 ? 1.0 : 0.0;
      else g = -1.0;
      break;
  }
  if (t.role == LossRole::d_real && t.drift != 0.f) g += 2.0 * static_cast<double>(t.drift) * x;
  return g;
}

// dL/dx_i as the step hands it to D's backward: the gradient, rounded to float, times the rank's loss
// scale over the number of logits (torch's mean: grad_output / numel). For BCE without drift this is
// bce_with_logits' expression (train/loss.cpp), bit for bit.
GT_HD float dlogit(double x, const LossTerm& t, float scale, float count) {
  return static_cast<float>(grad(x, t)) * scale / count;
}

// What the step reports as D's output on a batch: the mean probability sigmoid(x) for BCE (1 / (1 + e^-x),
// which is 0, not NaN, where e^-x overflows), the mean raw score x for a critic (Wasserstein, hinge).
GT_HD double reported(double x, LossKind kind) { return kind == LossKind::bce ? 1.0 / (1.0 + exp(-x)) : x; }

}  // namespace loss_math

// WGAN-GP's gradient penalty weight * mean_i (||g_i|| - 1)^2 over the rows g_i of D's input gradient at the
// interpolates, shared by the CPU step and the CUDA kernels.
namespace penalty_math {

// An interpolate's value: e x + (1 - e) f with one rounding order on every device (1 - e is exact for the
// 24-bit uniforms of penalty_mix_value).
GT_HD float mix(float x, float f, float e) { return fmaf(e, x, (1.f - e) * f); }

// One row's penalty term, (||g|| - 1)^2, from its norm.
GT_HD double value(double norm) { return (norm - 1.0) * (norm - 1.0); }

// d/dg_i of scale * weight * mean over n rows of (||g_i|| - 1)^2 is coefficient * g_i; 0 where g_i = 0
// (torch's norm backward there).
GT_HD float coefficient(double norm, float weight, float scale, double n) {
  if (!(norm > 0.0)) return 0.f;
  return static_cast<float>(2.0 * static_cast<double>(weight) * static_cast<double>(scale) * (norm - 1.0) / (norm * n));
}

}  // namespace penalty_math
}  // namespace gt
