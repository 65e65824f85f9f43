// Tests for BCE-with-logits and the optimizers: against double-precision formulas written out here.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "train/loss.h"
#include "train/optim.h"

namespace gt {
namespace {

// ---- BCE with logits --------------------------------------------------------------------------

double naive_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// -[t log s + (1 - t) log(1 - s)], straight from the definition; fine for |x| < ~30 in double.
double naive_bce(double x, double t) {
  const double s = naive_sigmoid(x);
  return -(t * std::log(s) + (1 - t) * std::log(1 - s));
}

TEST(BceWithLogits, ValueAndGradientMatchTheDefinition) {
  const std::vector<float> logits = {-20.f, -7.5f, -3.f, -1.f, -0.25f, 0.f, 0.1f, 0.5f, 2.f, 4.f, 9.f, 25.f};
  const auto n = static_cast<int64_t>(logits.size());
  for (float target : {0.f, 1.f, 0.9f}) {
    for (float scale : {1.f, 0.5f}) {
      std::vector<float> grad(logits.size());
      const float loss = bce_with_logits(logits.data(), n, target, grad.data(), scale);
      double expected = 0;
      for (float x : logits) expected += naive_bce(x, target);
      expected /= static_cast<double>(n);
      EXPECT_NEAR(loss, expected, 1e-6 * expected) << "target " << target;
      for (int64_t i = 0; i < n; ++i) {
        const double g = (naive_sigmoid(logits[i]) - target) / static_cast<double>(n) * scale;
        EXPECT_NEAR(grad[i], g, 1e-7 * std::abs(g) + 1e-12) << "logit " << logits[i] << " target " << target;
      }
    }
  }
}

TEST(BceWithLogits, HugeLogitsStayFinite) {
  // For |x| >> 1 the loss is max(x, 0) - x t (the log1p term is below e^-|x|) and the
  // gradient is (step(x) - t) / n, exactly, in float.
  const std::vector<float> logits = {-1e30f, -1e4f, -200.f, 200.f, 1e4f, 1e30f};
  const auto n = static_cast<int64_t>(logits.size());
  for (float target : {0.f, 1.f, 0.9f}) {
    std::vector<float> grad(logits.size());
    const float loss = bce_with_logits(logits.data(), n, target, grad.data());
    double expected = 0;
    for (float x : logits) expected += std::max<double>(x, 0) - static_cast<double>(x) * target;
    expected /= static_cast<double>(n);
    ASSERT_TRUE(std::isfinite(loss));
    EXPECT_NEAR(loss, expected, 1e-6 * expected);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(std::isfinite(grad[i]));
      const float step = logits[i] > 0 ? 1.f : 0.f;
      EXPECT_EQ(grad[i], (step - target) / static_cast<float>(n)) << logits[i];
    }
  }
}

TEST(BceWithLogits, GradientIsOptional) {
  const std::vector<float> logits = {0.3f, -0.7f};
  std::vector<float> grad(2);
  EXPECT_EQ(bce_with_logits(logits.data(), 2, 1.f, nullptr), bce_with_logits(logits.data(), 2, 1.f, grad.data()));
}

TEST(BceWithLogits, AgreesWithFiniteDifferences) {
  std::vector<float> logits(16);
  fill_normal(logits.data(), 16, 0.f, 2.f, 1, RngStream::test, 0);
  std::vector<float> grad(16);
  bce_with_logits(logits.data(), 16, 0.9f, grad.data());
  for (int i = 0; i < 16; ++i) {
    const double h = 1e-3;
    double plus = 0, minus = 0;  // central difference on the double definition, one logit moved
    for (int j = 0; j < 16; ++j) {
      plus += naive_bce(logits[j] + (i == j ? h : 0), 0.9);
      minus += naive_bce(logits[j] - (i == j ? h : 0), 0.9);
    }
    EXPECT_NEAR(grad[i], (plus - minus) / (2 * h) / 16, 1e-7);
  }
}

// ---- Optimizers -------------------------------------------------------------------------------

// Two parameters, one larger than the parallel threshold, with fresh gradients every step.
struct Model {
  Param small{"weight", Tensor::from({2, 3}, {0.5f, -1.f, 2.f, 0.f, 0.25f, -3.f}), Tensor::zeros({2, 3})};
  Param big{"bias", Tensor::zeros({70000}), Tensor::zeros({70000})};

  Model() { fill_normal(big.value.f32(), big.value.numel(), 0.f, 1.f, 1, RngStream::test, 0); }
  std::vector<NamedParam> params() { return {{"main.0.weight", &small}, {"main.0.bias", &big}}; }
  std::vector<Param*> list() { return {&small, &big}; }

  // A different, deterministic gradient each step, of order 1, never tiny.
  void set_grads(int step) {
    uint64_t offset = 0;
    for (Param* p : list()) {
      float* g = p->grad.f32();
      fill_normal(g, p->grad.numel(), 0.f, 1.f, 77, RngStream::test, offset + 1000000ull * step);
      for (int64_t i = 0; i < p->grad.numel(); ++i) g[i] += g[i] >= 0 ? 0.1f : -0.1f;
      offset += static_cast<uint64_t>(p->grad.numel());
    }
  }
};

// Double-precision state of one parameter element for the reference formulas.
struct RefElement {
  double p, m = 0, v = 0, buf = 0;
};

std::vector<std::vector<RefElement>> reference_state(Model& model) {
  std::vector<std::vector<RefElement>> ref;
  for (Param* p : model.list()) {
    std::vector<RefElement> elements;
    for (int64_t i = 0; i < p->value.numel(); ++i) elements.push_back({p->value.f32()[i]});
    ref.push_back(elements);
  }
  return ref;
}

// Hyper-parameters as a Python config would hold them (doubles of the decimals written); the
// optimizer gets them rounded to float, as our config does.
struct Hyper {
  OptimizerKind kind;
  double lr, beta1 = 0.5, beta2 = 0.999, eps = 1e-8, alpha = 0.99, momentum = 0, weight_decay = 0;

  OptimConfig config() const {
    OptimConfig c;
    c.kind = kind;
    c.lr = static_cast<float>(lr);
    c.beta1 = static_cast<float>(beta1);
    c.beta2 = static_cast<float>(beta2);
    c.eps = static_cast<float>(eps);
    c.alpha = static_cast<float>(alpha);
    c.momentum = static_cast<float>(momentum);
    c.weight_decay = static_cast<float>(weight_decay);
    return c;
  }
};

// Adam (Kingma & Ba) as torch.optim.Adam defines it, with L2 weight decay added to the gradient.
void reference_adam(RefElement& e, double g, const Hyper& c, int t) {
  g += c.weight_decay * e.p;
  e.m = c.beta1 * e.m + (1 - c.beta1) * g;
  e.v = c.beta2 * e.v + (1 - c.beta2) * g * g;
  const double bc1 = 1 - std::pow(c.beta1, t), bc2 = 1 - std::pow(c.beta2, t);
  e.p -= c.lr / bc1 * e.m / (std::sqrt(e.v) / std::sqrt(bc2) + c.eps);
}

void reference_rmsprop(RefElement& e, double g, const Hyper& c, int) {
  g += c.weight_decay * e.p;
  e.v = c.alpha * e.v + (1 - c.alpha) * g * g;
  const double avg = std::sqrt(e.v) + c.eps;
  if (c.momentum > 0) {
    e.buf = c.momentum * e.buf + g / avg;
    e.p -= c.lr * e.buf;
  } else {
    e.p -= c.lr * g / avg;
  }
}

void reference_sgd(RefElement& e, double g, const Hyper& c, int t) {
  g += c.weight_decay * e.p;
  if (c.momentum != 0) {
    e.buf = t == 1 ? g : c.momentum * e.buf + g;  // torch starts the buffer at the first gradient
    g = e.buf;
  }
  e.p -= c.lr * g;
}

using ReferenceStep = void (*)(RefElement&, double, const Hyper&, int);

// Runs `steps` updates of the optimizer and of the reference, compares the parameters, and checks
// they moved by far more than the tolerance.
void expect_matches_reference(const Hyper& hyper, ReferenceStep reference, int steps) {
  Model model;
  auto ref = reference_state(model);
  auto optimizer = make_optimizer(hyper.config(), model.params());
  std::vector<std::vector<float>> initial;
  for (Param* p : model.list()) initial.emplace_back(p->value.f32(), p->value.f32() + p->value.numel());
  for (int t = 1; t <= steps; ++t) {
    model.set_grads(t);
    optimizer->step();
    for (size_t k = 0; k < ref.size(); ++k) {
      const float* g = model.list()[k]->grad.f32();
      for (size_t i = 0; i < ref[k].size(); ++i) reference(ref[k][i], g[i], hyper, t);
    }
  }
  EXPECT_EQ(optimizer->step_count(), steps);
  // Float rounding of p (~6e-8 relative) and of the update (~1e-7 relative) per step.
  const double tolerance_per_step = 2e-7;
  int64_t moved_far = 0, total = 0;
  for (size_t k = 0; k < ref.size(); ++k) {
    const float* p = model.list()[k]->value.f32();
    for (size_t i = 0; i < ref[k].size(); ++i) {
      const double tolerance = tolerance_per_step * steps * std::max(1.0, std::abs(ref[k][i].p));
      ASSERT_NEAR(p[i], ref[k][i].p, tolerance) << choice_name(hyper.kind) << " param " << k << " element " << i;
      moved_far += std::abs(p[i] - initial[k][i]) > 100 * tolerance;
      ++total;
    }
  }
  EXPECT_GT(moved_far, total * 9 / 10) << "updates too small for the test to mean anything";
}

OptimConfig config(OptimizerKind kind, float lr) {
  OptimConfig c;
  c.kind = kind;
  c.lr = lr;
  return c;
}

TEST(Adam, MatchesTheDoublePrecisionFormula) {
  expect_matches_reference({.kind = OptimizerKind::adam, .lr = 1e-2}, reference_adam, 8);
}

TEST(Adam, WithWeightDecayAndTorchDefaultBetas) {
  expect_matches_reference({.kind = OptimizerKind::adam, .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .weight_decay = 0.1},
                           reference_adam, 8);
}

TEST(Adam, MomentsAreKeptAsNamedState) {
  Model model;
  auto optimizer = make_optimizer(config(OptimizerKind::adam, 1e-3f), model.params());
  const std::vector<NamedState> state = optimizer->state();
  ASSERT_EQ(state.size(), 4u);
  EXPECT_EQ(state[0].name, "main.0.weight/exp_avg");
  EXPECT_EQ(state[1].name, "main.0.weight/exp_avg_sq");
  EXPECT_EQ(state[2].name, "main.0.bias/exp_avg");
  EXPECT_EQ(state[3].name, "main.0.bias/exp_avg_sq");
  EXPECT_TRUE(state[2].tensor->same_shape(model.big.value));
  EXPECT_EQ(optimizer->step_count(), 0);
  for (const auto& s : state)
    for (int64_t i = 0; i < s.tensor->numel(); ++i) ASSERT_EQ(s.tensor->f32()[i], 0.f);
  // After one step with beta1 0.5 the first moment is half the gradient.
  model.set_grads(1);
  optimizer->step();
  for (int64_t i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(state[0].tensor->f32()[i], 0.5f * model.small.grad.f32()[i]);
}

TEST(RMSprop, MatchesTheDoublePrecisionFormula) {
  expect_matches_reference({.kind = OptimizerKind::rmsprop, .lr = 1e-3}, reference_rmsprop, 8);
}

TEST(RMSprop, WithMomentumAndWeightDecay) {
  const Hyper hyper{.kind = OptimizerKind::rmsprop, .lr = 1e-3, .momentum = 0.9, .weight_decay = 0.05};
  expect_matches_reference(hyper, reference_rmsprop, 8);
  Model model;
  const auto state = make_optimizer(hyper.config(), model.params())->state();
  ASSERT_EQ(state.size(), 4u);
  EXPECT_EQ(state[0].name, "main.0.weight/square_avg");
  EXPECT_EQ(state[1].name, "main.0.weight/momentum_buffer");
}

TEST(SGD, PlainMatchesTheFormula) {
  const Hyper hyper{.kind = OptimizerKind::sgd, .lr = 0.05};
  expect_matches_reference(hyper, reference_sgd, 5);
  Model model;
  EXPECT_TRUE(make_optimizer(hyper.config(), model.params())->state().empty());
}

TEST(SGD, MomentumStartsFromTheFirstGradient) {
  const Hyper hyper{.kind = OptimizerKind::sgd, .lr = 0.05, .momentum = 0.9, .weight_decay = 0.01};
  expect_matches_reference(hyper, reference_sgd, 6);
  OptimConfig c = hyper.config();
  // First step: p -= lr * g exactly as without momentum (the buffer is g, not 0.1 g).
  Model with, without;
  auto a = make_optimizer(c, with.params());
  c.momentum = 0.f;
  auto b = make_optimizer(c, without.params());
  with.set_grads(1);
  without.set_grads(1);
  a->step();
  b->step();
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(with.small.value.f32()[i], without.small.value.f32()[i]);
  EXPECT_EQ(a->state().at(0).name, "main.0.weight/momentum_buffer");
}

// Resuming from a copy of the state and the step count continues bit for bit (checkpoints).
TEST(Optimizer, ResumeFromStateIsExact) {
  for (OptimizerKind kind : {OptimizerKind::adam, OptimizerKind::rmsprop, OptimizerKind::sgd}) {
    const std::string name = choice_name(kind);
    OptimConfig c = config(kind, 1e-2f);
    c.momentum = kind == OptimizerKind::adam ? 0.f : 0.5f;
    Model straight, resumed;
    auto first = make_optimizer(c, straight.params());
    auto second = make_optimizer(c, resumed.params());
    for (int t = 1; t <= 3; ++t) {
      straight.set_grads(t);
      first->step();
    }
    // "Load the checkpoint": parameters, state tensors and the step count.
    resumed.small.value.copy_from(straight.small.value);
    resumed.big.value.copy_from(straight.big.value);
    const auto from = first->state();
    const auto to = second->state();
    ASSERT_EQ(from.size(), to.size());
    for (size_t i = 0; i < from.size(); ++i) to[i].tensor->copy_from(*from[i].tensor);
    second->set_step_count(first->step_count());
    for (int t = 4; t <= 6; ++t) {
      straight.set_grads(t);
      resumed.set_grads(t);
      first->step();
      second->step();
    }
    for (int64_t i = 0; i < straight.big.value.numel(); ++i)
      ASSERT_EQ(straight.big.value.f32()[i], resumed.big.value.f32()[i]) << name << " element " << i;
  }
}

TEST(Optimizer, LearningRateCanChange) {
  Model model;
  auto optimizer = make_optimizer(config(OptimizerKind::sgd, 0.1f), model.params());
  optimizer->set_lr(0.f);
  EXPECT_EQ(optimizer->lr(), 0.f);
  const float before = model.small.value.f32()[0];
  model.set_grads(1);
  optimizer->step();
  EXPECT_EQ(model.small.value.f32()[0], before);
}

// An unknown optimizer name is stopped at the config boundary (OptimizerKind; test_config.cpp checks the
// message), so make_optimizer only sees the three kinds.

TEST(Optimizer, NegativeLearningRateIsAUserError) {
  Model model;
  EXPECT_THROW(make_optimizer(config(OptimizerKind::adam, -1.f), model.params()), UserError);
  OptimConfig c = config(OptimizerKind::adam, 1e-3f);
  c.beta2 = 1.f;
  EXPECT_THROW(make_optimizer(c, model.params()), UserError);
}

// ---- Gradient clipping ------------------------------------------------------------------------

double global_norm(Model& model) {
  double s = 0;
  for (Param* p : model.list())
    for (int64_t i = 0; i < p->grad.numel(); ++i) s += static_cast<double>(p->grad.f32()[i]) * p->grad.f32()[i];
  return std::sqrt(s);
}

TEST(ClipGradNorm, ScalesToMaxNorm) {
  Model model;
  model.set_grads(1);
  const double before = global_norm(model);
  const std::vector<float> small_before(model.small.grad.f32(), model.small.grad.f32() + 6);
  const float returned = clip_grad_norm(model.params(), 1.f);
  EXPECT_NEAR(returned, before, 1e-6 * before);
  // torch's coefficient is max_norm / (norm + 1e-6), so the result sits just under max_norm.
  EXPECT_NEAR(global_norm(model), 1.0, 2e-6);
  EXPECT_LE(global_norm(model), 1.0 + 1e-6);
  const double coefficient = 1.0 / (before + 1e-6);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(model.small.grad.f32()[i], small_before[i] * coefficient, 1e-8);
}

TEST(ClipGradNorm, NormIsGlobalOverParameters) {
  Param a{"a", Tensor::zeros({1}), Tensor::from({1}, {3.f})};
  Param b{"b", Tensor::zeros({2}), Tensor::from({2}, {0.f, 4.f})};
  const float norm = clip_grad_norm({{"a", &a}, {"b", &b}}, 2.5f);
  EXPECT_FLOAT_EQ(norm, 5.f);
  EXPECT_NEAR(a.grad.f32()[0], 1.5f, 1e-6f);
  EXPECT_NEAR(b.grad.f32()[1], 2.f, 1e-6f);
}

TEST(ClipGradNorm, LeavesSmallGradientsAlone) {
  Model model;
  model.set_grads(2);
  const Tensor before = model.big.grad.clone();
  const double norm = global_norm(model);
  EXPECT_NEAR(clip_grad_norm(model.params(), static_cast<float>(2 * norm)), norm, 1e-6 * norm);
  for (int64_t i = 0; i < before.numel(); ++i) ASSERT_EQ(model.big.grad.f32()[i], before.f32()[i]);
}

}  // namespace
}  // namespace gt
