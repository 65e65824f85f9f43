// The gradient penalty on the CPU: LayerNorm2d against torch's GroupNorm(1, C) semantics and finite differences, the double backward of every critic layer against central finite differences, the penalty op, and the refusals.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "nn/dcgan.h"
#include "nn/layers.h"
#include "nn/progan.h"
#include "nn/sequential.h"
#include "train/cpu_step.h"
#include "common/test_util.h"

namespace gt {
namespace {

using test::random_tensor;

void randomize(Sequential& net, std::mt19937& rng, float scale) {
  for (const NamedParam& p : net.named_params()) {
    p.param->value.copy_from(random_tensor(p.param->value.shape(), rng, -scale, scale));
    if (p.name.find(".weight") != std::string::npos && p.param->value.ndim() == 1)  // a norm's scale: near 1
      for (int64_t i = 0; i < p.param->value.numel(); ++i) p.param->value.f32()[i] += 1.f;
  }
}

// A smooth critic with every layer kind that has a double backward: conv (with bias), tanh, layer norm,
// transposed conv, sigmoid, reshape, linear. No kinks, so float central differences are clean.
Sequential smooth_critic() {
  Sequential d("main");
  d.add(make_conv2d({2, 3, 3, 1, 1, true}));
  d.add(make_tanh());
  d.add(make_layernorm2d(3));
  d.add(make_conv_transpose2d({3, 2, 4, 2, 1, true}));
  d.add(make_sigmoid());
  d.add(make_reshape({2 * 8 * 8}));
  d.add(make_linear(2 * 8 * 8, 1, true));
  return d;
}

// P = weight * mean_i (||grad_x D(x_i)|| - 1)^2 and its input gradient, through the step's own ops.
double penalty_value(Sequential& D, const Tensor& x, float weight, Tensor* v_out = nullptr) {
  CpuStepOps ops;
  const Tensor scores = D.forward(x, Mode::train);
  BackwardOptions o;
  o.param_grads = false;
  o.input_grad = true;
  o.create_graph = v_out != nullptr;
  const Tensor g = D.backward(ops.ones_like(scores), o);
  Tensor v = ops.buffer_like(g);
  ops.gradient_penalty(g, weight, 1.f, v, StepScalar::penalty, {});
  if (v_out) *v_out = v;
  return ops.scalars()[static_cast<int>(StepScalar::penalty)];
}

// Which inputs of D's LeakyReLU layers are positive: where a perturbation changes this, the input gradient
// jumps (a kink) and a central difference across it measures the jump, not the derivative.
std::vector<bool> relu_pattern(Sequential& D, const Tensor& x) {
  std::vector<bool> pattern;
  Tensor h = x;
  for (size_t i = 0; i < D.size(); ++i) {
    if (D.layer(i).kind() == "LeakyReLU")
      for (int64_t j = 0; j < h.numel(); ++j) pattern.push_back(h.f32()[j] > 0.f);
    h = D.layer(i).forward(h, Mode::train);
  }
  return pattern;
}

// The analytic gradient of the penalty (double backward) against central differences of every parameter;
// entries whose perturbation crosses a LeakyReLU kink are skipped (at most a tenth of them).
void expect_penalty_gradient_matches_differences(Sequential& D, const Tensor& x, float weight, double h,
                                                 double tolerance) {
  D.zero_grad();
  Tensor v;
  penalty_value(D, x, weight, &v);
  std::vector<int64_t> finals;
  BackwardOptions o;
  o.on_final = [&](int64_t lowest) { finals.push_back(lowest); };
  D.backward_of_input_grad(v, o);
  // The hook reports ever lower offsets, down to 0: the gradient bucketer's contract.
  ASSERT_FALSE(finals.empty());
  for (size_t i = 1; i < finals.size(); ++i) EXPECT_LE(finals[i], finals[i - 1]);
  EXPECT_EQ(finals.back(), 0);

  double largest = 0;
  for (const NamedParam& p : D.named_params())
    for (int64_t i = 0; i < p.param->grad.numel(); ++i) largest = std::max(largest, std::fabs(double(p.param->grad.f32()[i])));
  ASSERT_GT(largest, 1e-3) << "the penalty's gradient vanished: the test would prove nothing";
  int checked = 0, kinks = 0;
  const std::vector<bool> pattern = relu_pattern(D, x);
  for (const NamedParam& p : D.named_params()) {
    const Tensor analytic = p.param->grad.clone();
    for (int64_t i = 0; i < p.param->value.numel(); ++i) {
      float& w = p.param->value.f32()[i];
      const float old = w;
      w = static_cast<float>(old + h);
      const double plus = penalty_value(D, x, weight);
      const bool crossed_up = relu_pattern(D, x) != pattern;
      w = static_cast<float>(old - h);
      const double minus = penalty_value(D, x, weight);
      const bool crossed_down = relu_pattern(D, x) != pattern;
      w = old;
      if (crossed_up || crossed_down) {
        ++kinks;
        continue;
      }
      const double fd = (plus - minus) / (2 * h);
      EXPECT_NEAR(analytic.f32()[i], fd, tolerance * largest) << p.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
  EXPECT_LE(kinks * 10, checked + kinks) << kinks << " of " << checked + kinks << " entries crossed a kink";
}

TEST(Penalty, DoubleBackwardOfEveryLayerMatchesFiniteDifferences) {
  // Float central differences of a smooth penalty: rounding eps * P / h ~ 1e-4 of the largest gradient at
  // h = 1e-3, truncation h^2 smaller still; a missing or wrong second-order term is off by O(1).
  std::mt19937 rng(5);
  Sequential D = smooth_critic();
  randomize(D, rng, 0.6f);
  const Tensor x = random_tensor({3, 2, 4, 4}, rng);
  expect_penalty_gradient_matches_differences(D, x, 10.f, 1e-3, 3e-3);
}

TEST(Penalty, DoubleBackwardOfTheLayerNormCriticMatchesFiniteDifferences) {
  // The DCGAN critic with layer norm at its smallest; the entries whose +-h crosses a LeakyReLU kink are
  // left out (tests/oracle/test_penalty_oracle.py differentiates this critic in float64 at h = 1e-6).
  std::mt19937 rng(6);
  DcganSpec s{8, 4, 4, 32, 1, 0.2f};
  s.d_norm = NormKind::layer;
  Sequential D = make_dcgan_discriminator(s);
  randomize(D, rng, 0.3f);
  const Tensor x = random_tensor({2, 1, 32, 32}, rng);
  expect_penalty_gradient_matches_differences(D, x, 1.f, 2e-4, 3e-3);
}

TEST(Penalty, DoubleBackwardOfTheProganCriticMatchesFiniteDifferences) {
  // The Progressive GAN critic while its 8x8 block fades in: equalized-LR convolutions and dense layers, the fade,
  // average pooling and minibatch standard deviation (whose curvature mixes each group's samples).
  std::mt19937 rng(8);
  ProganSpec s;
  s.nz = 4;
  s.resolution = 8;
  s.channels = 2;
  s.fmap_base = 16;  // widths 4 (4x4) and 2 (8x8)
  s.fmap_max = 4;
  s.mbstd_group = 2;
  Sequential D = make_progan_discriminator(s, 8, true);
  randomize(D, rng, 0.8f);
  D.set_fade_alpha(0.4f);
  const Tensor x = random_tensor({4, 2, 8, 8}, rng);
  expect_penalty_gradient_matches_differences(D, x, 1.f, 1e-3, 3e-3);
}

TEST(Penalty, LayerNormForwardIsPerSampleAndBackwardMatchesDifferences) {
  std::mt19937 rng(7);
  LayerPtr ln = make_layernorm2d(3);
  EXPECT_EQ(ln->kind(), "LayerNorm2d");
  ASSERT_EQ(ln->params().size(), 2u);
  EXPECT_EQ(ln->params()[0]->value.f32()[0], 1.f);  // GroupNorm's initial affine
  EXPECT_EQ(ln->params()[1]->value.f32()[0], 0.f);
  const Tensor x = random_tensor({2, 3, 2, 2}, rng, -2.f, 3.f);
  const Tensor y = ln->forward(x, Mode::train);
  for (int n = 0; n < 2; ++n) {  // each sample: mean 0 and variance 1 over C*H*W (weight 1, bias 0)
    double s = 0, q = 0;
    for (int j = 0; j < 12; ++j) s += y.f32()[n * 12 + j];
    for (int j = 0; j < 12; ++j) q += double(y.f32()[n * 12 + j]) * y.f32()[n * 12 + j];
    EXPECT_NEAR(s / 12, 0.0, 1e-6);
    EXPECT_NEAR(q / 12, 1.0, 1e-4);  // eps 1e-5 in the variance
  }
  // Backward of L = sum(y * r) against central differences of the input and of the affine.
  for (Param* p : ln->params()) p->value.copy_from(random_tensor(p->value.shape(), rng, 0.5f, 1.5f));
  const Tensor r = random_tensor(x.shape(), rng);
  auto loss = [&](const Tensor& in) {
    const Tensor out = ln->forward(in, Mode::train);
    double l = 0;
    for (int64_t i = 0; i < out.numel(); ++i) l += double(out.f32()[i]) * r.f32()[i];
    return l;
  };
  loss(x);
  for (Param* p : ln->params()) p->grad.zero();
  const Tensor dx = ln->backward(r);
  const double h = 1e-3;
  for (int64_t i = 0; i < x.numel(); ++i) {
    Tensor xp = x.clone(), xm = x.clone();
    xp.f32()[i] += static_cast<float>(h);
    xm.f32()[i] -= static_cast<float>(h);
    EXPECT_NEAR(dx.f32()[i], (loss(xp) - loss(xm)) / (2 * h), 2e-3) << "x[" << i << "]";
  }
  for (Param* p : ln->params())
    for (int64_t i = 0; i < p->value.numel(); ++i) {
      const float old = p->value.f32()[i];
      p->value.f32()[i] = static_cast<float>(old + h);
      const double plus = loss(x);
      p->value.f32()[i] = static_cast<float>(old - h);
      const double minus = loss(x);
      p->value.f32()[i] = old;
      EXPECT_NEAR(p->grad.f32()[i], (plus - minus) / (2 * h), 2e-3) << p->name << "[" << i << "]";
    }
}

TEST(Penalty, BackwardWithoutParamGradsLeavesThemAlone) {
  std::mt19937 rng(8);
  Sequential D = smooth_critic();
  randomize(D, rng, 0.5f);
  D.zero_grad();
  const Tensor x = random_tensor({2, 2, 4, 4}, rng);
  const Tensor y = D.forward(x, Mode::train);
  BackwardOptions o;
  o.param_grads = false;
  o.input_grad = true;
  const Tensor dx = D.backward(Tensor::from({2, 1}, {1.f, -2.f}), o);
  EXPECT_TRUE(dx.defined());
  for (int64_t i = 0; i < D.flat_size(); ++i) ASSERT_EQ(D.flat_grads()[i], 0.f) << i;
}

TEST(Penalty, OpsInterpolateAndPenalize) {
  CpuStepOps ops;
  const Tensor real = Tensor::from({2, 1, 1, 2}, {1.f, 2.f, 3.f, 4.f});
  const Tensor fake = Tensor::from({2, 1, 1, 2}, {-1.f, 0.f, 1.f, 0.f});
  const Tensor mix = Tensor::from({2}, {0.25f, 1.f});
  const Tensor x = ops.interpolate(real, fake, mix);
  EXPECT_FLOAT_EQ(x.f32()[0], 0.25f * 1.f + 0.75f * -1.f);
  EXPECT_FLOAT_EQ(x.f32()[1], 0.25f * 2.f);
  EXPECT_FLOAT_EQ(x.f32()[2], 3.f);
  EXPECT_FLOAT_EQ(x.f32()[3], 4.f);
  // Rows of norm 5 and 0: penalty 2 * mean(16, 1) = 17; the zero row has a zero gradient (torch's).
  const Tensor g = Tensor::from({2, 2}, {3.f, 4.f, 0.f, 0.f});
  Tensor dg({2, 2});
  ops.gradient_penalty(g, 2.f, 0.5f, dg, StepScalar::penalty, {});
  EXPECT_DOUBLE_EQ(ops.scalars()[static_cast<int>(StepScalar::penalty)], 17.0);
  // d/dg of 0.5 * 2 * mean (||g|| - 1)^2 = 0.5 * 2 * 2 (5 - 1) / 5 * g / 2 = 0.8 g.
  EXPECT_FLOAT_EQ(dg.f32()[0], 0.8f * 3.f);
  EXPECT_FLOAT_EQ(dg.f32()[1], 0.8f * 4.f);
  EXPECT_EQ(dg.f32()[2], 0.f);
  EXPECT_EQ(dg.f32()[3], 0.f);
}

TEST(Penalty, MixWeightsAreKeyedByGlobalSampleAndBatch) {
  std::vector<float> all(8), upper(4), other(8);
  fill_penalty_mix(all.data(), 8, 42, 3, 0);
  fill_penalty_mix(upper.data(), 4, 42, 3, 4);  // rank 1 of 2: the same draws for its rows
  for (int i = 0; i < 4; ++i) EXPECT_EQ(all[4 + i], upper[i]);
  fill_penalty_mix(other.data(), 8, 42, 4, 0);  // the next batch draws others
  int same = 0;
  for (int i = 0; i < 8; ++i) {
    EXPECT_GE(all[i], 0.f);
    EXPECT_LT(all[i], 1.f);
    same += all[i] == other[i];
  }
  EXPECT_LT(same, 2);
}

TEST(Penalty, BatchNormCriticIsRefusedByName) {
  DcganSpec s{8, 4, 4, 32, 1, 0.2f};  // d_norm batch
  Sequential D = make_dcgan_discriminator(s);
  std::mt19937 rng(9);
  const Tensor x = random_tensor({2, 1, 32, 32}, rng);
  Tensor v;
  penalty_value(D, x, 1.f, &v);
  try {
    D.backward_of_input_grad(v, {});
    FAIL() << "a batch-norm critic took a gradient penalty";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("BatchNorm2d"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.d_norm"), std::string::npos) << e.what();
  }
}

TEST(Penalty, CriticNormsBuildTheirLayers) {
  DcganSpec s{8, 4, 4, 32, 1, 0.2f};
  for (NormKind norm : {NormKind::batch, NormKind::layer, NormKind::none}) {
    s.d_norm = norm;
    Sequential D = make_dcgan_discriminator(s);
    int bn = 0, ln = 0, biases = 0;
    for (size_t i = 0; i < D.size(); ++i) {
      bn += D.layer(i).kind() == "BatchNorm2d";
      ln += D.layer(i).kind() == "LayerNorm2d";
      biases += D.layer(i).kind() == "Conv2d" && D.layer(i).attrs().bias;
    }
    EXPECT_EQ(bn, norm == NormKind::batch ? 2 : 0);
    EXPECT_EQ(ln, norm == NormKind::layer ? 2 : 0);
    EXPECT_EQ(biases, norm == NormKind::none ? 2 : 0);  // the hidden convolutions, not the first or last
  }
}

}  // namespace
}  // namespace gt
