// Losses: the GAN objectives' terms over a batch of D's logits (non-saturating BCE, Wasserstein, hinge, drift), mean over the batch.
#pragma once
#include <cstdint>

#include "core/loss_math.h"

namespace gt {

// Mean over n of BCE(sigmoid(x_i), target). If dlogits is not null, writes dL/dx_i = (sigmoid(x_i) - target) / n * scale.
// Uses max(x,0) - x*t + log1p(exp(-|x|)), as torch.nn.BCEWithLogitsLoss.
float bce_with_logits(const float* logits, int64_t n, float target, float* dlogits, float scale = 1.f);

// One term of a GAN objective over n logits (core/loss_math.h): returns its mean (summed in double,
// rounded to float as the device computes it); dlogits (when not null) gets loss_math::dlogit with the
// rank's `scale`; *reported (when not null) the mean of loss_math::reported, summed in index order.
float gan_loss(const float* logits, int64_t n, const LossTerm& term, float* dlogits, float scale, double* reported);

}  // namespace gt
