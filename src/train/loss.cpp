// The GAN losses over a batch of logits: binary cross-entropy with logits, and every objective's terms through core/loss_math.h.
#include "train/loss.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace gt {
namespace {

// log(1 + e^-|x|) + max(x, 0) - x t, in double: no overflow for any finite x, and no cancellation
// in the log term, which is why torch.nn.BCEWithLogitsLoss uses the same rearrangement.
double bce_term(double x, double target) {
  return std::max(x, 0.0) - x * target + std::log1p(std::exp(-std::abs(x)));
}

// 1 / (1 + e^-x) without overflowing e^-x for very negative x.
double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

}  // namespace

float bce_with_logits(const float* logits, int64_t n, float target, float* dlogits, float scale) {
  GT_CHECK(n > 0, "bce_with_logits needs at least one logit, got {}", n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += bce_term(logits[i], target);
  if (dlogits) {
    // torch's backward: (sigmoid(x) - t) * grad_output, then divided by numel for the mean.
    const float count = static_cast<float>(n);
    for (int64_t i = 0; i < n; ++i) {
      const float difference = static_cast<float>(sigmoid(logits[i]) - target);
      dlogits[i] = difference * scale / count;
    }
  }
  return static_cast<float>(sum / static_cast<double>(n));
}

float gan_loss(const float* logits, int64_t n, const LossTerm& term, float* dlogits, float scale, double* reported) {
  GT_CHECK(n > 0, "gan_loss needs at least one logit, got {}", n);
  double sum = 0, seen = 0;
  const float count = static_cast<float>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double x = logits[i];
    sum += loss_math::value(x, term);
    if (dlogits) dlogits[i] = loss_math::dlogit(x, term, scale, count);
    if (reported) seen += loss_math::reported(x, term.kind);
  }
  if (reported) *reported = seen / static_cast<double>(n);
  return static_cast<float>(sum / static_cast<double>(n));
}

}  // namespace gt
