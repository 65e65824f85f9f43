// Adam, RMSprop and SGD with torch.optim's float32 arithmetic, and clip_grad_norm like torch.nn.utils.
#include "train/optim.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/error.h"

// torch rounds each op to float32; a compiler that fuses our a*b+c into one fma (GCC does when it
// may use FMA instructions) would round differently, so contraction is off for this file.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// Bit-exactness with torch 1.13 (CPU, single-tensor path, which is its default):
// - Each torch in-place op rounds to float32, so we round after the same ops in the same order.
// - Python float hyper-parameters are cast to float32 where a kernel takes them (mul_(beta1),
//   add_(eps)), but 1 - beta, lr / bias_correction1 and sqrt(bias_correction2) are computed in
//   double first, from the doubles our config holds (as Python holds them).
// - torch's AVX2 kernels fuse add(x, alpha=a) into fma(y, a, x) and addcmul into
//   fma(value * t1, t2, x); addcdiv stays (value * t1) / t2 + x. We write those fmas explicitly.

namespace gt {
namespace {

// Elementwise loops below this many elements stay on one thread.
[[maybe_unused]] constexpr int64_t kParallelElements = 1 << 15;

void check_param(const NamedParam& p) {
  GT_CHECK(p.param != nullptr, "parameter {} is null", p.name);
  GT_CHECK(p.param->value.dtype() == DType::f32, "parameter {} is {}, optimizers need f32", p.name,
           p.param->value.str());
  GT_CHECK(p.param->grad.defined() && p.param->grad.same_shape(p.param->value),
           "parameter {} has grad {} for value {}", p.name, p.param->grad.defined() ? p.param->grad.str() : "none",
           p.param->value.str());
}

void check_config(const OptimConfig& cfg) {
  if (!(cfg.lr >= 0)) user_error("The optimizer learning rate must be >= 0, got {}.", cfg.lr);
  if (!(cfg.eps >= 0)) user_error("The optimizer eps must be >= 0, got {}.", cfg.eps);
  if (!(cfg.weight_decay >= 0)) user_error("The optimizer weight_decay must be >= 0, got {}.", cfg.weight_decay);
  if (!(cfg.momentum >= 0)) user_error("The optimizer momentum must be >= 0, got {}.", cfg.momentum);
  if (cfg.kind == OptimizerKind::adam) {
    if (!(cfg.beta1 >= 0 && cfg.beta1 < 1)) user_error("Adam beta1 must be in [0, 1), got {}.", cfg.beta1);
    if (!(cfg.beta2 >= 0 && cfg.beta2 < 1)) user_error("Adam beta2 must be in [0, 1), got {}.", cfg.beta2);
  }
  if (cfg.kind == OptimizerKind::rmsprop && !(cfg.alpha >= 0)) user_error("RMSprop alpha must be >= 0, got {}.", cfg.alpha);
}

// One named state tensor per parameter, zero, shaped like the parameter.
std::vector<Tensor> zero_state_like(const std::vector<NamedParam>& params) {
  std::vector<Tensor> state;
  state.reserve(params.size());
  for (const auto& p : params) state.emplace_back(p.param->value.shape());
  return state;
}

class Adam final : public Optimizer {
 public:
  Adam(OptimConfig cfg, std::vector<NamedParam> params)
      : Optimizer(std::move(cfg)), params_(std::move(params)), exp_avg_(zero_state_like(params_)),
        exp_avg_sq_(zero_state_like(params_)) {}

  void step() override {
    ++steps_;
    const AdamCoefficients k = adam_coefficients(cfg_, steps_);
    for (size_t i = 0; i < params_.size(); ++i) {
      check_param(params_[i]);
      update(*params_[i].param, exp_avg_[i].f32(), exp_avg_sq_[i].f32(), k);
    }
  }

  std::vector<NamedState> state() override {
    std::vector<NamedState> out;
    for (size_t i = 0; i < params_.size(); ++i) {
      out.push_back({params_[i].name + "/exp_avg", &exp_avg_[i]});
      out.push_back({params_[i].name + "/exp_avg_sq", &exp_avg_sq_[i]});
    }
    return out;
  }
  int64_t step_count() const override { return steps_; }
  void set_step_count(int64_t t) override { steps_ = t; }

 private:
  static void update(Param& param, float* exp_avg, float* exp_avg_sq, const AdamCoefficients& k) {
    float* p = param.value.f32();
    const float* grad = param.grad.f32();
    const int64_t n = param.value.numel();
#pragma omp parallel for schedule(static) if (n > kParallelElements)
    for (int64_t i = 0; i < n; ++i) adam_element(p[i], grad[i], exp_avg[i], exp_avg_sq[i], k);
  }

  std::vector<NamedParam> params_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  int64_t steps_ = 0;
};

class RMSprop final : public Optimizer {
 public:
  RMSprop(OptimConfig cfg, std::vector<NamedParam> params)
      : Optimizer(std::move(cfg)), params_(std::move(params)), square_avg_(zero_state_like(params_)) {
    if (cfg_.momentum > 0) momentum_buffer_ = zero_state_like(params_);
  }

  void step() override {
    ++steps_;
    const RmspropCoefficients k = rmsprop_coefficients(cfg_);
    for (size_t i = 0; i < params_.size(); ++i) {
      check_param(params_[i]);
      float* buffer = momentum_buffer_.empty() ? nullptr : momentum_buffer_[i].f32();
      update(*params_[i].param, square_avg_[i].f32(), buffer, k);
    }
  }

  std::vector<NamedState> state() override {
    std::vector<NamedState> out;
    for (size_t i = 0; i < params_.size(); ++i) {
      out.push_back({params_[i].name + "/square_avg", &square_avg_[i]});
      if (!momentum_buffer_.empty()) out.push_back({params_[i].name + "/momentum_buffer", &momentum_buffer_[i]});
    }
    return out;
  }
  int64_t step_count() const override { return steps_; }
  void set_step_count(int64_t t) override { steps_ = t; }

 private:
  // momentum_buffer is null without momentum.
  static void update(Param& param, float* square_avg, float* momentum_buffer, const RmspropCoefficients& k) {
    float* p = param.value.f32();
    const float* grad = param.grad.f32();
    const int64_t n = param.value.numel();
#pragma omp parallel for schedule(static) if (n > kParallelElements)
    for (int64_t i = 0; i < n; ++i)
      rmsprop_element(p[i], grad[i], square_avg[i], momentum_buffer ? momentum_buffer + i : nullptr, k);
  }

  std::vector<NamedParam> params_;
  std::vector<Tensor> square_avg_, momentum_buffer_;
  int64_t steps_ = 0;
};

class SGD final : public Optimizer {
 public:
  SGD(OptimConfig cfg, std::vector<NamedParam> params)
      : Optimizer(std::move(cfg)), params_(std::move(params)) {
    if (cfg_.momentum != 0) momentum_buffer_ = zero_state_like(params_);
  }

  void step() override {
    // torch creates the momentum buffer as a copy of the first step's gradient.
    const bool first_step = steps_ == 0;
    ++steps_;
    for (size_t i = 0; i < params_.size(); ++i) {
      check_param(params_[i]);
      float* buffer = momentum_buffer_.empty() ? nullptr : momentum_buffer_[i].f32();
      update(*params_[i].param, buffer, first_step);
    }
  }

  std::vector<NamedState> state() override {
    std::vector<NamedState> out;
    for (size_t i = 0; i < momentum_buffer_.size(); ++i)
      out.push_back({params_[i].name + "/momentum_buffer", &momentum_buffer_[i]});
    return out;
  }
  int64_t step_count() const override { return steps_; }
  void set_step_count(int64_t t) override { steps_ = t; }

 private:
  void update(Param& param, float* momentum_buffer, bool first_step) const {
    float* p = param.value.f32();
    const float* grad = param.grad.f32();
    const int64_t n = param.value.numel();
    const SgdCoefficients k = sgd_coefficients(cfg_, first_step);
#pragma omp parallel for schedule(static) if (n > kParallelElements)
    for (int64_t i = 0; i < n; ++i) sgd_element(p[i], grad[i], momentum_buffer ? momentum_buffer + i : nullptr, k);
  }

  std::vector<NamedParam> params_;
  std::vector<Tensor> momentum_buffer_;
  int64_t steps_ = 0;
};

}  // namespace

AdamCoefficients adam_coefficients(const OptimConfig& cfg, int64_t step) {
  GT_CHECK(step >= 1, "Adam step numbers start at 1, got {}", step);
  const double bias_correction1 = 1.0 - std::pow(cfg.beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(cfg.beta2, static_cast<double>(step));
  AdamCoefficients k;
  k.beta1 = static_cast<float>(cfg.beta1);
  k.one_minus_beta1 = static_cast<float>(1.0 - cfg.beta1);
  k.beta2 = static_cast<float>(cfg.beta2);
  k.one_minus_beta2 = static_cast<float>(1.0 - cfg.beta2);
  k.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  k.eps = static_cast<float>(cfg.eps);
  k.weight_decay = static_cast<float>(cfg.weight_decay);
  k.minus_step_size = static_cast<float>(-(cfg.lr / bias_correction1));
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

std::unique_ptr<Optimizer> make_optimizer(const OptimConfig& cfg, std::vector<NamedParam> params) {
  check_config(cfg);
  for (const auto& p : params) check_param(p);
  switch (cfg.kind) {
    case OptimizerKind::adam: return std::make_unique<Adam>(cfg, std::move(params));
    case OptimizerKind::rmsprop: return std::make_unique<RMSprop>(cfg, std::move(params));
    case OptimizerKind::sgd: return std::make_unique<SGD>(cfg, std::move(params));
  }
  runtime_error("optimizer kind {} is not handled", static_cast<int>(cfg.kind));
}

float clip_grad_norm(const std::vector<NamedParam>& params, float max_norm) {
  // Sum of squares in double over fixed chunks, added in a fixed order: the same norm for any
  // thread count (torch's own float reduction order is not reproducible anyway).
  constexpr int64_t kChunk = 1 << 16;
  double sum_squares = 0;
  for (const auto& p : params) {
    if (!p.param->grad.defined()) continue;
    const float* g = p.param->grad.f32();
    const int64_t n = p.param->grad.numel();
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      double s = 0;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) s += static_cast<double>(g[i]) * g[i];
      partial[static_cast<size_t>(c)] = s;
    }
    for (double s : partial) sum_squares += s;
  }
  const float total_norm = static_cast<float>(std::sqrt(sum_squares));
  // As torch: clip_coef = max_norm / (total_norm + 1e-6) on float32 tensors, where a Python
  // scalar divided by a tensor is reciprocal() * scalar; applied only when below 1.
  const float clip_coef = (1.f / (total_norm + 1e-6f)) * max_norm;
  if (clip_coef < 1.f) {
    for (const auto& p : params) {
      if (!p.param->grad.defined()) continue;
      float* g = p.param->grad.f32();
      const int64_t n = p.param->grad.numel();
#pragma omp parallel for schedule(static) if (n > kParallelElements)
      for (int64_t i = 0; i < n; ++i) g[i] *= clip_coef;
    }
  }
  return total_norm;
}

}  // namespace gt
