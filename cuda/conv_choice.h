// The choice among cuDNN's timed convolution algorithms as a pure function over plain candidates (no cuDNN types), so its rules have CPU unit tests.
#pragma once
#include <cstddef>
#include <vector>

namespace gt::cuda {

// cudnnMathType_t, by meaning: default (float may use TF32 on Ampere and later), tensor ops, tensor ops with
// down-conversion, FMA only.
enum class ConvMath { default_math, tensor_op, tensor_op_allow_conversion, fma };

// One entry of cudnnFind*'s result, reduced to what the choice needs.
struct ConvCandidate {
  int algo = 0;
  bool succeeded = false;     // status CUDNN_STATUS_SUCCESS
  size_t workspace = 0;       // bytes
  bool deterministic = false;  // CUDNN_DETERMINISTIC
  ConvMath math = ConvMath::default_math;
  float milliseconds = 0.f;
};

struct ConvChoicePolicy {
  bool deterministic = true;  // prefer algorithms that give the same bits on every run
  bool fma_only = false;      // fp32: no tensor-op candidates, and FMA-math entries before default-math ones
  size_t workspace_limit = 0;
};

struct ConvChoiceResult {
  int index = -1;  // into the candidates; -1: none is usable (none succeeded within the workspace limit)
  // Deterministic algorithms were asked for but none is usable: the fastest usable one was taken instead.
  bool nondeterministic_fallback = false;
};

// The fastest usable candidate, preferring in this order: deterministic (when asked) over not, then (fma_only)
// FMA-math over default-math entries. FMA first because the engine runs fp32 convolutions with FMA math
// whatever entry it picks, and cudnnFind may have timed a default-math entry as a TF32 kernel: its time would
// not be the time it runs in. Ties in time keep cuDNN's order. A direction whose only usable candidates are
// non-deterministic gets the fastest of them (nondeterministic_fallback), so the run goes on.
ConvChoiceResult choose_conv_candidate(const std::vector<ConvCandidate>& candidates, const ConvChoicePolicy& policy);

}  // namespace gt::cuda
