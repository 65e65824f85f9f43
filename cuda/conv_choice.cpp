// choose_conv_candidate: cuDNN algorithm choice rules (deterministic first, FMA entries first for fp32, workspace limit).
#include "cuda/conv_choice.h"

namespace gt::cuda {

ConvChoiceResult choose_conv_candidate(const std::vector<ConvCandidate>& candidates, const ConvChoicePolicy& policy) {
  auto usable = [&](const ConvCandidate& c) {
    if (!c.succeeded || c.workspace > policy.workspace_limit) return false;
    return !(policy.fma_only && (c.math == ConvMath::tensor_op || c.math == ConvMath::tensor_op_allow_conversion));
  };
  // Rank of a usable candidate: lower is preferred; the time decides within a rank.
  auto rank = [&](const ConvCandidate& c) {
    int r = 0;
    if (policy.deterministic && !c.deterministic) r += 2;
    if (policy.fma_only && c.math != ConvMath::fma) r += 1;
    return r;
  };
  ConvChoiceResult best;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const ConvCandidate& c = candidates[i];
    if (!usable(c)) continue;
    if (best.index >= 0) {
      const ConvCandidate& b = candidates[static_cast<size_t>(best.index)];
      const int rc = rank(c), rb = rank(b);
      if (rc > rb || (rc == rb && !(c.milliseconds < b.milliseconds))) continue;
    }
    best.index = static_cast<int>(i);
  }
  if (best.index >= 0)
    best.nondeterministic_fallback =
        policy.deterministic && !candidates[static_cast<size_t>(best.index)].deterministic;
  return best;
}

}  // namespace gt::cuda
