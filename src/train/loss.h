// Losses: binary cross-entropy with logits (numerically stable), mean over the batch.
#pragma once
#include <cstdint>

namespace gt {

// Mean over n of BCE(sigmoid(x_i), target). If dlogits is not null, writes dL/dx_i = (sigmoid(x_i) - target) / n * scale.
// Uses max(x,0) - x*t + log1p(exp(-|x|)), as torch.nn.BCEWithLogitsLoss.
float bce_with_logits(const float* logits, int64_t n, float target, float* dlogits, float scale = 1.f);

}  // namespace gt
