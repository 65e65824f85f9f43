// Optimizers with PyTorch's exact update rules (Adam, RMSProp, SGD) and gradient clipping by global norm.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "nn/sequential.h"
#include "core/optim_math.h"

namespace gt {

// Named optimizer state tensor for checkpoints: "<param name>/exp_avg" etc.
struct NamedState {
  std::string name;
  Tensor* tensor;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Applies one update to every parameter from its grad.
  virtual void step() = 0;
  virtual std::vector<NamedState> state() = 0;  // for checkpoints; stable order and names
  virtual int64_t step_count() const = 0;
  virtual void set_step_count(int64_t t) = 0;
  double lr() const { return cfg_.lr; }
  void set_lr(double lr) { cfg_.lr = lr; }
  const OptimConfig& config() const { return cfg_; }

 protected:
  explicit Optimizer(OptimConfig cfg) : cfg_(std::move(cfg)) {}
  OptimConfig cfg_;
};

// Builds the optimizer named in cfg.name over the given parameters (names as in the checkpoint).
std::unique_ptr<Optimizer> make_optimizer(const OptimConfig& cfg, std::vector<NamedParam> params);

// Per-step constants of the element updates in core/optim_math.h (shared with the CUDA kernels).
AdamCoefficients adam_coefficients(const OptimConfig& cfg, int64_t step);  // step counts from 1
RmspropCoefficients rmsprop_coefficients(const OptimConfig& cfg);
SgdCoefficients sgd_coefficients(const OptimConfig& cfg, bool first_step);

// Scales all grads so their global L2 norm is at most max_norm (torch.nn.utils.clip_grad_norm_:
// coefficient max_norm / (norm + 1e-6), applied only when below 1). Returns the norm before clipping.
float clip_grad_norm(const std::vector<NamedParam>& params, float max_norm);

}  // namespace gt
