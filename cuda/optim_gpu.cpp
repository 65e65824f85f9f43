// Multi-tensor tables and optimizer constants for the GPU updates (the arithmetic mirrors train/optim.cpp).
#include "optim_gpu.h"

#include <cmath>

#include "check.h"
#include "core/error.h"

namespace gt::cuda {

MultiTensorList::MultiTensorList(const std::vector<TensorRef>& tensors, cudaStream_t stream) {
  std::vector<MultiTensorSlot> slots;
  for (const TensorRef& t : tensors) {
    GT_CHECK(t.numel >= 0, "tensor with {} elements", t.numel);
    if (t.numel == 0) continue;
    GT_CHECK(t.param != nullptr, "multi-tensor slot {} has no parameter", slots.size());
    MultiTensorSlot s;
    s.param = t.param;
    s.grad = t.grad;
    s.state0 = t.state0;
    s.state1 = t.state1;
    s.numel = t.numel;
    s.first_chunk = chunks_;
    chunks_ += (t.numel + kMultiTensorChunk - 1) / kMultiTensorChunk;
    slots.push_back(s);
  }
  count_ = static_cast<int>(slots.size());
  if (slots.empty()) return;
  slots_ = DeviceBuffer<MultiTensorSlot>(slots.size());
  slots_.upload(slots.data(), slots.size(), stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));  // `slots` is about to go away
}

// As Adam::step in train/optim.cpp: double for the bias corrections and step size, then float.
AdamCoefficients adam_coefficients(const OptimConfig& cfg, int64_t step) {
  GT_CHECK(step >= 1, "Adam step numbers start at 1, got {}", step);
  const double beta1 = cfg.beta1, beta2 = cfg.beta2;
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const double step_size = cfg.lr / bias_correction1;
  AdamCoefficients k;
  k.beta1 = static_cast<float>(beta1);
  k.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  k.beta2 = static_cast<float>(beta2);
  k.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  k.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  k.eps = static_cast<float>(cfg.eps);
  k.weight_decay = static_cast<float>(cfg.weight_decay);
  k.minus_step_size = static_cast<float>(-step_size);
  return k;
}

RmspropCoefficients rmsprop_coefficients(const OptimConfig& cfg) {
  RmspropCoefficients k;
  k.alpha = static_cast<float>(cfg.alpha);
  k.one_minus_alpha = static_cast<float>(1.0 - cfg.alpha);
  k.eps = static_cast<float>(cfg.eps);
  k.weight_decay = static_cast<float>(cfg.weight_decay);
  k.momentum = static_cast<float>(cfg.momentum);
  k.minus_lr = static_cast<float>(-cfg.lr);
  return k;
}

SgdCoefficients sgd_coefficients(const OptimConfig& cfg, bool first_step) {
  SgdCoefficients k;
  k.weight_decay = static_cast<float>(cfg.weight_decay);
  k.momentum = static_cast<float>(cfg.momentum);
  k.minus_lr = static_cast<float>(-cfg.lr);
  k.first_step = first_step;
  return k;
}

}  // namespace gt::cuda
