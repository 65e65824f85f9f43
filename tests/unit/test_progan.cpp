// Progressive GAN on the CPU: each new layer's backward, tangent and double backward against finite differences, the weight scale of equalized learning rate, minibatch standard deviation over shards, and the phase networks (shapes, names that survive growth, fade-in at alpha 0 and 1).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/error.h"
#include "nn/layers.h"
#include "nn/progan.h"
#include "nn/sequential.h"
#include "train/large_batch.h"
#include "train/progressive.h"
#include "train/run_setup.h"
#include "common/test_util.h"

namespace gt {
namespace {

using test::random_tensor;

double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += static_cast<double>(a.f32()[i]) * b.f32()[i];
  return s;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(static_cast<double>(t.f32()[i])));
  return m;
}

void randomize(Layer& layer, std::mt19937& rng, float scale) {
  for (Param* p : layer.params()) p->value.copy_from(random_tensor(p->value.shape(), rng, -scale, scale));
}

// A layer's input gradient and parameter gradients of L = w . f(x) against central differences in double-checked
// float (h = 1e-2 on smooth maps: truncation ~h^2, rounding ~1e-7 / h).
void expect_backward_matches_differences(Layer& layer, const Tensor& x, std::mt19937& rng, double tolerance) {
  const Tensor y0 = layer.forward(x, Mode::train);
  const Tensor w = random_tensor(y0.shape(), rng);
  for (Param* p : layer.params()) p->grad.zero();
  const Tensor dx = layer.backward(w, true);
  const double h = 1e-2;
  auto loss = [&] { return dot(layer.forward(x, Mode::train), w); };
  Tensor xp = x.clone();
  const double scale = std::max(1.0, max_abs(dx));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float old = xp.f32()[i];
    xp.f32()[i] = old + static_cast<float>(h);
    const double plus = dot(layer.forward(xp, Mode::train), w);
    xp.f32()[i] = old - static_cast<float>(h);
    const double minus = dot(layer.forward(xp, Mode::train), w);
    xp.f32()[i] = old;
    EXPECT_NEAR(dx.f32()[i], (plus - minus) / (2 * h), tolerance * scale) << layer.kind() << " input " << i;
  }
  for (Param* p : layer.params()) {
    const Tensor g = p->grad.clone();
    for (int64_t i = 0; i < p->value.numel(); ++i) {
      float& v = p->value.f32()[i];
      const float old = v;
      v = old + static_cast<float>(h);
      const double plus = loss();
      v = old - static_cast<float>(h);
      const double minus = loss();
      v = old;
      EXPECT_NEAR(g.f32()[i], (plus - minus) / (2 * h), tolerance * std::max(1.0, max_abs(g)))
          << layer.kind() << " " << p->name << "[" << i << "]";
    }
  }
}

// tangent(t) is the directional derivative of the forward: (f(x + h t) - f(x - h t)) / 2h.
void expect_tangent_matches_differences(Layer& layer, const Tensor& x, std::mt19937& rng, double tolerance) {
  const Tensor t = random_tensor(x.shape(), rng);
  const double h = 1e-2;
  Tensor xp = x.clone(), xm = x.clone();
  for (int64_t i = 0; i < x.numel(); ++i) {
    xp.f32()[i] += static_cast<float>(h * t.f32()[i]);
    xm.f32()[i] -= static_cast<float>(h * t.f32()[i]);
  }
  const Tensor plus = layer.forward(xp, Mode::train).clone();
  const Tensor minus = layer.forward(xm, Mode::train).clone();
  layer.forward(x, Mode::train);
  const Tensor jt = layer.tangent(t);
  ASSERT_EQ(jt.shape(), plus.shape());
  const double scale = std::max(1.0, max_abs(jt));
  for (int64_t i = 0; i < jt.numel(); ++i)
    EXPECT_NEAR(jt.f32()[i], (plus.f32()[i] - minus.f32()[i]) / (2 * h), tolerance * scale) << layer.kind() << " " << i;
}

// backward_second's input part: d/dx of phi(x) = delta . J(x) t (dy_bar zero) against central differences of phi,
// with J(x) t from tangent() at the perturbed input.
void expect_second_matches_differences(Layer& layer, const Tensor& x, std::mt19937& rng, double tolerance) {
  const Tensor y = layer.forward(x, Mode::train);
  const Tensor t = random_tensor(x.shape(), rng);
  const Tensor delta = random_tensor(y.shape(), rng);
  layer.backward(delta, false);
  layer.tangent(t);
  const Tensor g = layer.backward_second(Tensor(), t, delta);
  auto phi = [&](const Tensor& at) {
    layer.forward(at, Mode::train);
    return dot(layer.tangent(t), delta);
  };
  ASSERT_TRUE(g.defined()) << layer.kind() << ": a curvature term was expected";
  ASSERT_GT(max_abs(g), 1e-3) << layer.kind() << ": the curvature term vanished, the test would prove nothing";
  const double h = 1e-2, scale = std::max(1.0, max_abs(g));
  Tensor xp = x.clone();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float old = xp.f32()[i];
    xp.f32()[i] = old + static_cast<float>(h);
    const double plus = phi(xp);
    xp.f32()[i] = old - static_cast<float>(h);
    const double minus = phi(xp);
    xp.f32()[i] = old;
    EXPECT_NEAR(g.f32()[i], (plus - minus) / (2 * h), tolerance * scale) << layer.kind() << " " << i;
  }
}

TEST(ProganLayers, PixelNormNormalizesEachPositionAndDifferentiates) {
  std::mt19937 rng(1);
  LayerPtr pn = make_pixel_norm();
  const Tensor x = random_tensor({2, 5, 3, 2}, rng, -2.f, 2.f);
  const Tensor y = pn->forward(x, Mode::train);
  for (int n = 0; n < 2; ++n)
    for (int p = 0; p < 6; ++p) {
      double ms = 0;
      for (int c = 0; c < 5; ++c) ms += std::pow(y.f32()[(n * 5 + c) * 6 + p], 2);
      EXPECT_NEAR(ms / 5, 1.0, 1e-5);  // unit root mean square over the channels
    }
  expect_backward_matches_differences(*pn, x, rng, 2e-3);
  expect_tangent_matches_differences(*pn, x, rng, 2e-3);
  expect_second_matches_differences(*pn, x, rng, 3e-3);
}

TEST(ProganLayers, MinibatchStddevAppendsEachGroupsMeanDeviation) {
  std::mt19937 rng(2);
  LayerPtr mb = make_minibatch_stddev(3);
  const Tensor x = random_tensor({6, 2, 2, 2}, rng, -2.f, 2.f);
  const Tensor y = mb->forward(x, Mode::train);
  ASSERT_EQ(y.shape(), Shape({6, 3, 2, 2}));
  for (int g = 0; g < 2; ++g) {
    double stat = 0;
    for (int j = 0; j < 8; ++j) {
      double mu = 0, q = 0;
      for (int i = 0; i < 3; ++i) mu += x.f32()[(g * 3 + i) * 8 + j] / 3.0;
      for (int i = 0; i < 3; ++i) q += std::pow(x.f32()[(g * 3 + i) * 8 + j] - mu, 2) / 3.0;
      stat += std::sqrt(q + 1e-8) / 8;
    }
    for (int i = 0; i < 3; ++i)
      for (int p = 0; p < 4; ++p) {
        EXPECT_NEAR(y.f32()[((g * 3 + i) * 3 + 2) * 4 + p], stat, 1e-6);
        EXPECT_EQ(y.f32()[((g * 3 + i) * 3 + 1) * 4 + p], x.f32()[((g * 3 + i) * 2 + 1) * 4 + p]);
      }
  }
  expect_backward_matches_differences(*mb, x, rng, 2e-3);
  expect_tangent_matches_differences(*mb, x, rng, 2e-3);
  expect_second_matches_differences(*mb, x, rng, 3e-3);
}

TEST(ProganLayers, MinibatchStddevGivesTheSameValuesOnEveryShardingOfItsGroups) {
  // Groups follow the global sample order: two shards of 4 (two ranks) see exactly what one batch of 8 sees.
  std::mt19937 rng(3);
  LayerPtr whole = make_minibatch_stddev(2), shard = make_minibatch_stddev(2);
  const Tensor x = random_tensor({8, 3, 2, 2}, rng);
  const Tensor y = whole->forward(x, Mode::train).clone();
  const Tensor w = random_tensor(y.shape(), rng);
  const Tensor dx = whole->backward(w, true).clone();
  const int64_t in_half = 4 * 12, out_half = 4 * 16;
  for (int s = 0; s < 2; ++s) {
    Tensor xs({4, 3, 2, 2}), ws({4, 4, 2, 2});
    for (int64_t i = 0; i < in_half; ++i) xs.f32()[i] = x.f32()[s * in_half + i];
    for (int64_t i = 0; i < out_half; ++i) ws.f32()[i] = w.f32()[s * out_half + i];
    const Tensor ys = shard->forward(xs, Mode::train);
    for (int64_t i = 0; i < out_half; ++i) EXPECT_EQ(ys.f32()[i], y.f32()[s * out_half + i]);
    const Tensor dxs = shard->backward(ws, true);
    for (int64_t i = 0; i < in_half; ++i) EXPECT_EQ(dxs.f32()[i], dx.f32()[s * in_half + i]);
  }
  EXPECT_THROW(shard->forward(random_tensor({3, 3, 2, 2}, rng), Mode::train), UserError);  // 3 is not a multiple of 2
}

TEST(ProganLayers, UpsampleAndPoolAreLinearAdjointsUpToAQuarter) {
  std::mt19937 rng(4);
  LayerPtr up = make_upsample2x(), pool = make_avg_pool2x();
  const Tensor x = random_tensor({2, 3, 3, 2}, rng);
  const Tensor u = up->forward(x, Mode::train);
  ASSERT_EQ(u.shape(), Shape({2, 3, 6, 4}));
  EXPECT_EQ(u.f32()[1 * 4 + 1], x.f32()[0]);        // (0, 0, 1, 1) repeats (0, 0, 0, 0)
  EXPECT_EQ(u.f32()[5 * 4 + 3], x.f32()[2 * 2 + 1]);  // (0, 0, 5, 3) repeats (0, 0, 2, 1)
  const Tensor back = pool->forward(u, Mode::train);  // pooling undoes nearest upsampling exactly
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(back.f32()[i], x.f32()[i]);
  // <up(x), v> = 4 <x, pool(v)>
  const Tensor v = random_tensor(u.shape(), rng);
  EXPECT_NEAR(dot(u, v), 4 * dot(x, pool->forward(v, Mode::train)), 1e-4);
  expect_backward_matches_differences(*up, x, rng, 1e-3);
  expect_backward_matches_differences(*pool, v, rng, 1e-3);
  EXPECT_THROW(pool->output_shape({1, 1, 3, 4}), UserError);  // odd height
}

TEST(ProganLayers, WeightScaleEqualsAScaledWeight) {
  // Equalized learning rate: computing with scale * w is the plain layer with the weight multiplied, and the
  // gradient of the stored weight is scale times the plain layer's.
  std::mt19937 rng(5);
  const float k = 0.37f;
  Conv2dSpec scaled{3, 4, 3, 1, 1, true};
  scaled.weight_scale = k;
  LayerPtr a = make_conv2d(scaled), b = make_conv2d({3, 4, 3, 1, 1, true});
  randomize(*a, rng, 1.f);
  for (size_t i = 0; i < 2; ++i) b->params()[i]->value.copy_from(a->params()[i]->value);
  for (int64_t i = 0; i < b->params()[0]->value.numel(); ++i) b->params()[0]->value.f32()[i] *= k;
  const Tensor x = random_tensor({2, 3, 5, 5}, rng);
  const Tensor ya = a->forward(x, Mode::train).clone(), yb = b->forward(x, Mode::train);
  for (int64_t i = 0; i < ya.numel(); ++i) EXPECT_NEAR(ya.f32()[i], yb.f32()[i], 1e-5);
  const Tensor dy = random_tensor(ya.shape(), rng);
  const Tensor dxa = a->backward(dy, true).clone(), dxb = b->backward(dy, true);
  for (int64_t i = 0; i < dxa.numel(); ++i) EXPECT_NEAR(dxa.f32()[i], dxb.f32()[i], 1e-5);
  const Tensor& ga = a->params()[0]->grad;
  const Tensor& gb = b->params()[0]->grad;
  for (int64_t i = 0; i < ga.numel(); ++i) EXPECT_NEAR(ga.f32()[i], k * gb.f32()[i], 1e-4);
  EXPECT_EQ(a->attrs().weight_scale, k);
  expect_backward_matches_differences(*a, x, rng, 2e-3);
  LayerPtr lin = make_linear(6, 3, true, k);
  randomize(*lin, rng, 1.f);
  expect_backward_matches_differences(*lin, random_tensor({4, 6}, rng), rng, 2e-3);
  EXPECT_EQ(lin->attrs().weight_scale, k);
}

TEST(ProganLayers, FadeMixesItsBranchesAndDifferentiates) {
  std::mt19937 rng(6);
  std::vector<NamedLayer> old_branch, new_branch;
  old_branch.push_back({"old", make_conv2d({2, 3, 1, 1, 0, true})});
  old_branch.push_back({"", make_tanh()});
  new_branch.push_back({"new", make_conv2d({2, 3, 3, 1, 1, true})});
  new_branch.push_back({"", make_pixel_norm()});
  std::unique_ptr<Fade> fade = make_fade(std::move(old_branch), std::move(new_branch));
  randomize(*fade, rng, 0.7f);
  std::set<std::string> names;
  for (const NamedParam& p : fade->scoped_params()) names.insert(p.name);
  EXPECT_EQ(names, (std::set<std::string>{"old.weight", "old.bias", "new.weight", "new.bias"}));
  const Tensor x = random_tensor({2, 2, 3, 3}, rng);
  fade->set_alpha(0.f);
  const Tensor a = fade->forward(x, Mode::train).clone();
  fade->set_alpha(1.f);
  const Tensor b = fade->forward(x, Mode::train).clone();
  fade->set_alpha(0.3f);
  const Tensor m = fade->forward(x, Mode::train);
  for (int64_t i = 0; i < m.numel(); ++i) EXPECT_NEAR(m.f32()[i], 0.7 * a.f32()[i] + 0.3 * b.f32()[i], 1e-6);
  expect_backward_matches_differences(*fade, x, rng, 2e-3);
  expect_tangent_matches_differences(*fade, x, rng, 2e-3);
  expect_second_matches_differences(*fade, x, rng, 3e-3);
  EXPECT_THROW(fade->set_alpha(1.5f), UserError);
}

ProganSpec tiny_spec() {
  ProganSpec s;
  s.nz = 6;
  s.resolution = 16;
  s.channels = 2;
  s.fmap_base = 64;  // widths 8 (4x4), 8 (8x8), 4 (16x16)
  s.fmap_max = 8;
  s.mbstd_group = 2;
  return s;
}

std::map<std::string, Shape> param_shapes(Sequential& net) {
  std::map<std::string, Shape> out;
  for (const NamedParam& p : net.named_params()) out[p.name] = p.param->value.shape();
  return out;
}

TEST(ProganNets, PhasesHaveTheirShapesAndKeepEveryNameAsTheyGrow) {
  const ProganSpec s = tiny_spec();
  EXPECT_EQ(progan_resolutions(s), (std::vector<int>{4, 8, 16}));
  EXPECT_EQ(progan_width(s, 4), 8);
  EXPECT_EQ(progan_width(s, 16), 4);
  std::map<std::string, Shape> before_g, before_d;
  for (int r : progan_resolutions(s))
    for (bool fading : {true, false}) {
      if (fading && r == 4) continue;
      Sequential g = make_progan_generator(s, r, fading), d = make_progan_discriminator(s, r, fading);
      EXPECT_EQ(g.output_shape({4, s.nz, 1, 1}), Shape({4, s.channels, r, r})) << r;
      EXPECT_EQ(d.output_shape({4, s.channels, r, r}), Shape({4, 1, 1, 1})) << r;
      // Every parameter of the phase before keeps its name and shape (growth adds, never renames).
      const auto now_g = param_shapes(g), now_d = param_shapes(d);
      for (const auto& [name, shape] : before_g) {
        ASSERT_TRUE(now_g.count(name)) << name << " lost at " << r << (fading ? " fading" : "");
        EXPECT_EQ(now_g.at(name), shape) << name;
      }
      for (const auto& [name, shape] : before_d) {
        ASSERT_TRUE(now_d.count(name)) << name << " lost at " << r << (fading ? " fading" : "");
        EXPECT_EQ(now_d.at(name), shape) << name;
      }
      // A stable phase drops the previous toRGB/fromRGB; keep the names that continue.
      before_g.clear();
      before_d.clear();
      for (const auto& [name, shape] : now_g)
        if (name.rfind("torgb", 0) != 0 || name == "torgb" + std::to_string(r) + ".weight" ||
            name == "torgb" + std::to_string(r) + ".bias")
          before_g[name] = shape;
      for (const auto& [name, shape] : now_d)
        if (name.rfind("fromrgb", 0) != 0 || name.rfind("fromrgb" + std::to_string(r) + ".", 0) == 0)
          before_d[name] = shape;
    }
  EXPECT_TRUE(before_g.count("b16.conv1.weight"));
  EXPECT_TRUE(before_d.count("b4.dense1.bias"));
  ProganSpec bad = s;
  bad.resolution = 48;
  EXPECT_THROW(progan_resolutions(bad), UserError);
  EXPECT_THROW(make_progan_generator(s, 32, false), UserError);
  EXPECT_THROW(make_progan_generator(s, 4, true), UserError);
}

// Copies every parameter of `from` into the same-named parameter of `to` (where it has one).
void copy_by_name(Sequential& from, Sequential& to) {
  std::map<std::string, Param*> dst;
  for (const NamedParam& p : to.named_params()) dst[p.name] = p.param;
  for (const NamedParam& p : from.named_params())
    if (dst.count(p.name)) dst[p.name]->value.copy_from(p.param->value);
}

TEST(ProganNets, FadeInStartsAtThePreviousPhaseAndEndsAtTheNext) {
  // alpha 0: the fading G at 16 is the stable G at 8 upsampled, the fading D at 16 the stable D at 8 on pooled
  // images; alpha 1: the stable networks at 16.
  const ProganSpec s = tiny_spec();
  std::mt19937 rng(7);
  Sequential g = make_progan_generator(s, 16, true), d = make_progan_discriminator(s, 16, true);
  progan_init(g, 11, 0);
  progan_init(d, 11, 1);
  for (const NamedParam& p : d.named_params())  // nonzero biases, so a wrong branch shows
    if (p.param->value.ndim() == 1) p.param->value.copy_from(random_tensor(p.param->value.shape(), rng, -0.1f, 0.1f));
  Sequential g8 = make_progan_generator(s, 8, false), g16 = make_progan_generator(s, 16, false);
  Sequential d8 = make_progan_discriminator(s, 8, false), d16 = make_progan_discriminator(s, 16, false);
  copy_by_name(g, g8);
  copy_by_name(g, g16);
  copy_by_name(d, d8);
  copy_by_name(d, d16);
  const Tensor z = random_tensor({4, s.nz, 1, 1}, rng);
  const Tensor x = random_tensor({4, s.channels, 16, 16}, rng);

  g.set_fade_alpha(0.f);
  d.set_fade_alpha(0.f);
  const Tensor up = make_upsample2x()->forward(g8.forward(z, Mode::train), Mode::train);
  const Tensor g0 = g.forward(z, Mode::train);
  for (int64_t i = 0; i < g0.numel(); ++i) EXPECT_NEAR(g0.f32()[i], up.f32()[i], 1e-5);
  const Tensor pooled = make_avg_pool2x()->forward(x, Mode::train);
  const Tensor d0 = d.forward(x, Mode::train).clone(), d0_ref = d8.forward(pooled, Mode::train);
  for (int64_t i = 0; i < d0.numel(); ++i) EXPECT_NEAR(d0.f32()[i], d0_ref.f32()[i], 1e-5);

  g.set_fade_alpha(1.f);
  d.set_fade_alpha(1.f);
  const Tensor g1 = g.forward(z, Mode::train).clone(), g1_ref = g16.forward(z, Mode::train);
  for (int64_t i = 0; i < g1.numel(); ++i) EXPECT_NEAR(g1.f32()[i], g1_ref.f32()[i], 1e-5);
  const Tensor d1 = d.forward(x, Mode::train).clone(), d1_ref = d16.forward(x, Mode::train);
  for (int64_t i = 0; i < d1.numel(); ++i) EXPECT_NEAR(d1.f32()[i], d1_ref.f32()[i], 1e-5);
  // The phases really differ (else the checks above prove nothing).
  EXPECT_GT(std::fabs(d0.f32()[0] - d1.f32()[0]), 1e-4);
}

TEST(ProganNets, InitIsKeyedByNameNotByPhase) {
  const ProganSpec s = tiny_spec();
  Sequential early = make_progan_generator(s, 8, false), late = make_progan_generator(s, 16, true);
  progan_init(early, 3, 0);
  progan_init(late, 3, 0);
  std::map<std::string, Param*> late_params;
  for (const NamedParam& p : late.named_params()) late_params[p.name] = p.param;
  for (const NamedParam& p : early.named_params()) {
    const Tensor& a = p.param->value;
    const Tensor& b = late_params.at(p.name)->value;
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.f32()[i], b.f32()[i]) << p.name;
    if (p.name.find(".weight") != std::string::npos) {
      double ms = 0;
      for (int64_t i = 0; i < a.numel(); ++i) ms += a.f32()[i] * a.f32()[i];
      if (a.numel() >= 64) {
        EXPECT_NEAR(ms / a.numel(), 1.0, 0.5) << p.name;  // N(0, 1): the runtime scale does the rest
      }
    } else {
      EXPECT_EQ(max_abs(a), 0.0) << p.name;
    }
  }
  Sequential other = make_progan_generator(s, 8, false);
  progan_init(other, 4, 0);
  EXPECT_NE(other.named_params()[0].param->value.f32()[0], early.named_params()[0].param->value.f32()[0]);
}

// ---- the schedule ------------------------------------------------------------------------------------

Config progan_config(const std::string& progan_yaml) {
  return parse_config("model: {arch: progan, resolution: 16, nz: 8, fmap_base: 64, fmap_max: 8, mbstd_group: 2}\n"
                      "train: {batch_size: 8}\n" + progan_yaml,
                      "progan.yaml");
}

TEST(ProganSchedule, PhasesFadeInEachNewResolution) {
  const ProganSchedule s = progan_schedule(progan_config("progan: {phase_length: [4, 6, 10], batch: [8, 4, 2], lr: 0.002}\n"));
  ASSERT_EQ(s.phases.size(), 5u);  // 4 stable, 8 transition, 8 stable, 16 transition, 16 stable
  const std::vector<std::string> names = {"4x4 stable", "8x8 transition", "8x8 stable", "16x16 transition",
                                          "16x16 stable"};
  const std::vector<int64_t> firsts = {0, 4, 10, 16, 26}, batches = {8, 4, 4, 2, 2};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(s.phases[i].name(), names[i]);
    EXPECT_EQ(s.phases[i].first_step, firsts[i]);
    EXPECT_EQ(s.phases[i].batch, batches[i]);
    EXPECT_EQ(s.phases[i].lr_g, 0.002);
  }
  EXPECT_EQ(s.total_steps(), 36);
  // Alpha: 0 at a transition's first step, (k / steps) at its k-th, 1 in stable phases.
  EXPECT_EQ(s.alpha(3), 1.0);
  EXPECT_EQ(s.alpha(4), 0.0);
  EXPECT_DOUBLE_EQ(s.alpha(7), 0.5);
  EXPECT_EQ(s.alpha(10), 1.0);
  EXPECT_DOUBLE_EQ(s.alpha(16 + 9), 0.9);
  EXPECT_DOUBLE_EQ(s.alpha_after(7), 0.5);   // 3 of the 8x8 transition's 6 steps done
  EXPECT_EQ(s.alpha_after(10), 1.0);          // the transition done: its networks at the full new block
  EXPECT_EQ(s.alpha_after(4), 1.0);           // the 4x4 stable phase
  EXPECT_EQ(s.phase_at(9).index, 1);
  EXPECT_EQ(s.phase_after(10).index, 1);  // the model after step 10 is still the transition's
  EXPECT_EQ(s.phase_after(0).index, 0);
  EXPECT_EQ(s.images_before(6), 4 * 8 + 2 * 4);
  EXPECT_EQ(s.images_before(100), 4 * 8 + 12 * 4 + 20 * 2);
}

TEST(ProganSchedule, ImagesRoundUpToWholeStepsAndDefaultsApply) {
  const Config c = progan_config("progan: {phase_length: 20, phase_unit: images}\noptim: {g: {lr: 0.003}}\n");
  const ProganSchedule s = progan_schedule(c);
  for (const ProganPhase& p : s.phases) {
    EXPECT_EQ(p.steps, 3);  // 20 images at batch 8: 3 steps
    EXPECT_EQ(p.batch, 8);
    EXPECT_EQ(p.lr_g, 0.003);
    EXPECT_EQ(p.lr_d, c.optim_d.lr);
  }
}

TEST(ProganSchedule, BadListsNameTheirKey) {
  auto message = [](const std::string& yaml) -> std::string {
    try {
      progan_schedule(progan_config(yaml));
    } catch (const UserError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message("progan: {batch: [8, 4]}\n").find("progan.batch has 2 values but the run has 3 resolutions"),
            std::string::npos);
  EXPECT_NE(message("progan: {phase_length: [1, 2, 3, 4]}\n").find("progan.phase_length"), std::string::npos);
  EXPECT_THROW(progan_schedule(parse_config("model: {arch: progan, resolution: 16, fmap_base: 8}\n", "x.yaml")),
               UserError);  // no feature maps at 16x16
}

TEST(ProganSchedule, BatchPlanKeepsWholeMinibatchStddevGroups) {
  // A share of 6 with groups of 4 cannot be split; a budget picks the largest multiple of the group that fits.
  EXPECT_THROW(plan_large_batch(12, 2, 0, 0, 1.0, "", 4), UserError);
  EXPECT_THROW(plan_large_batch(16, 1, 6, 0, 1.0, "", 2), UserError);  // train.micro_batch 6: not a multiple of 4? of 2 it is
  const LargeBatchPlan p = plan_large_batch(24, 1, 0, 13.0, 1.0, "budget", 4);
  EXPECT_EQ(p.micro_batch, 12);
  EXPECT_EQ(p.accumulation, 2);
}

TEST(ProganSchedule, GrowingKeepsTrainedWeightsAndStartsTheNewBlockFromItsInit) {
  Config c = progan_config("progan: {phase_length: 2, reset_optimizer: false}\nema: {beta: 0.9}\n");
  const ProganSpec spec = progan_spec(c.model);
  const ProganSchedule s = progan_schedule(c);
  std::unique_ptr<Models> m = make_progan_models(c, spec, s.phases[0]);
  for (const NamedParam& p : m->G.named_params()) p.param->value.fill(0.5f);  // "trained"
  for (const NamedState& st : m->opt_g->state()) st.tensor->fill(0.25f);
  m->opt_g->set_step_count(7);
  move_to_phase(*m, c, spec, s.phases[1]);
  std::unique_ptr<Models> fresh = make_progan_models(c, spec, s.phases[1]);
  std::map<std::string, Param*> init;
  for (const NamedParam& p : fresh->G.named_params()) init[p.name] = p.param;
  for (const NamedParam& p : m->G.named_params()) {
    const bool old = p.name.rfind("b4.", 0) == 0 || p.name.rfind("torgb4.", 0) == 0;
    for (int64_t i = 0; i < p.param->value.numel(); ++i)
      ASSERT_EQ(p.param->value.f32()[i], old ? 0.5f : init.at(p.name)->value.f32()[i]) << p.name;
  }
  EXPECT_EQ(m->opt_g->step_count(), 7);  // carried (progan.reset_optimizer false)
  for (const NamedState& st : m->opt_g->state()) {
    const bool old = st.name.find("b4.") != std::string::npos || st.name.find("torgb4.") != std::string::npos;
    EXPECT_EQ(st.tensor->f32()[0], old ? 0.25f : 0.f) << st.name;
  }
  ASSERT_TRUE(m->G_ema);
  EXPECT_EQ(m->G_ema->flat_size(), m->G.flat_size());
  c.progan.reset_optimizer = true;
  move_to_phase(*m, c, spec, s.phases[2]);
  EXPECT_EQ(m->opt_g->step_count(), 0);
}

TEST(ProganSchedule, RealsArePooledToThePhaseAndFaded) {
  std::mt19937 rng(9);
  const Tensor full = random_tensor({2, 3, 16, 16}, rng);
  Tensor r8({2, 3, 8, 8}), r8_fade({2, 3, 8, 8}), r4({2, 3, 4, 4});
  progan_reals(full, r8, false, 1.0);
  progan_reals(full, r4, false, 1.0);
  // The 8x8 image is the 2x2 mean of the full one; 4x4 the 4x4 mean.
  EXPECT_NEAR(r8.f32()[0], (full.f32()[0] + full.f32()[1] + full.f32()[16] + full.f32()[17]) / 4, 1e-6);
  double block = 0;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) block += full.f32()[y * 16 + x];
  EXPECT_NEAR(r4.f32()[0], block / 16, 1e-6);
  // alpha 0: the 4x4 image upsampled; alpha 1: the 8x8 one.
  progan_reals(full, r8_fade, true, 0.0);
  EXPECT_NEAR(r8_fade.f32()[1 * 8 + 1], r4.f32()[0], 1e-6);
  progan_reals(full, r8_fade, true, 1.0);
  for (int64_t i = 0; i < r8.numel(); ++i) EXPECT_NEAR(r8_fade.f32()[i], r8.f32()[i], 1e-6);
}

}  // namespace
}  // namespace gt
