// The GAN losses over a batch of logits: binary cross-entropy with logits, and every objective's terms through core/loss_math.h.
#include "train/loss.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace gt {

float bce_with_logits(const float* logits, int64_t n, float target, float* dlogits, float scale) {
  GT_CHECK(n > 0, "bce_with_logits needs at least one logit, got {}", n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += loss_math::bce_value(logits[i], target);
  if (dlogits) {
    // torch's backward: (sigmoid(x) - t) * grad_output, then divided by numel for the mean.
    const float count = static_cast<float>(n);
    for (int64_t i = 0; i < n; ++i)
      dlogits[i] = static_cast<float>(loss_math::bce_grad(logits[i], target)) * scale / count;
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
