// The CPU engine's StepOps and NetOptimizer, and the one GAN step on host models for tools and tests.
#include "train/cpu_step.h"

#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"
#include "core/rng.h"

#include "parallel/communicator.h"
#include "train/loss.h"
#include "train/step_parts.h"

namespace gt {

void CpuStepOps::gan_loss(const Tensor& logits, const LossTerm& term, float scale, Tensor& dlogits, StepScalar loss,
                          const StepScalar* reported, const ScalarWrite& write) {
  double seen = 0;
  put(loss, gt::gan_loss(logits.f32(), logits.numel(), term, dlogits.f32(), scale, reported ? &seen : nullptr), write);
  if (reported) put(*reported, seen, write);
}

void CpuStepOps::grad_norm(Net& net, StepScalar slot) {
  const float* g = net.flat_grads();
  double sum = 0;
  for (int64_t i = 0; i < net.flat_size(); ++i) sum += static_cast<double>(g[i]) * g[i];
  scalars_[static_cast<int>(slot)] = std::sqrt(sum);
}

Tensor CpuStepOps::interpolate(const Tensor& real, const Tensor& fake, const Tensor& mix) {
  GT_CHECK(real.shape() == fake.shape() && mix.numel() == real.dim(0), "interpolate: real {}, fake {}, mix {}",
           real.str(), fake.str(), mix.str());
  const int64_t n = real.dim(0), per = real.numel() / std::max<int64_t>(n, 1);
  const float* e = mix.f32();
  Tensor out(real.shape());
  const float* x = real.f32();
  const float* f = fake.f32();
  float* o = out.f32();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i * per; j < (i + 1) * per; ++j) o[j] = penalty_math::mix(x[j], f[j], e[i]);
  return out;
}

Tensor CpuStepOps::ones_like(const Tensor& t) {
  Tensor out(t.shape());
  out.fill(1.f);
  return out;
}

void CpuStepOps::gradient_penalty(const Tensor& g, float weight, float scale, Tensor& dg, StepScalar loss,
                                  const ScalarWrite& write) {
  const int64_t n = g.dim(0), per = g.numel() / std::max<int64_t>(n, 1);
  const float* gv = g.f32();
  float* d = dg.f32();
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    double sq = 0;
    for (int64_t j = i * per; j < (i + 1) * per; ++j) sq += static_cast<double>(gv[j]) * gv[j];
    const double norm = std::sqrt(sq);
    sum += penalty_math::value(norm);
    const float coef = penalty_math::coefficient(norm, weight, scale, static_cast<double>(n));
    for (int64_t j = i * per; j < (i + 1) * per; ++j) d[j] = coef * gv[j];
  }
  put(loss, static_cast<double>(weight) * sum / static_cast<double>(n), write);
}

GradientWire CpuStepOps::gradient_wire(int64_t n, ElemType type) {
  GT_CHECK(type == ElemType::bf16, "the CPU engine packs gradients as bfloat16, not {}", elem_type_name(type));
  wires_.emplace_back(static_cast<size_t>(n));
  GradientWire w;
  w.type = type;
  w.buffer = wires_.back().data();
  w.pack = [](const float* from, void* to, int64_t count) {
    uint16_t* out = static_cast<uint16_t*>(to);
#pragma omp parallel for simd schedule(static) if (count > (int64_t{1} << 16))
    for (int64_t i = 0; i < count; ++i) out[i] = float_to_bf16_bits(from[i]);
  };
  w.unpack = [](const void* from, float* to, int64_t count) {
    const uint16_t* in = static_cast<const uint16_t*>(from);
#pragma omp parallel for simd schedule(static) if (count > (int64_t{1} << 16))
    for (int64_t i = 0; i < count; ++i) to[i] = bf16_bits_to_float(in[i]);
  };
  return w;
}

// `other` is outside the named phases (the end of a step, or between steps): not counted here; the
// trainer attributes what remains of its step time to it.
void CpuStepOps::phase(StepPhase phase) {
  const auto now = std::chrono::steady_clock::now();
  if (current_ != StepPhase::other)
    phase_seconds_[static_cast<int>(current_)] += std::chrono::duration<double>(now - since_).count();
  current_ = phase;
  since_ = now;
}

void CpuStepOps::take_phase_seconds(double (&seconds)[kStepPhases]) {
  phase(current_);  // close a running interval
  for (int i = 0; i < kStepPhases; ++i) seconds[i] = phase_seconds_[i], phase_seconds_[i] = 0;
}

StepResult gan_train_step(GanModels& m, std::span<const Tensor> reals, std::span<const Tensor> zs,
                          const StepOptions& options) {
  auto alone = make_local_communicator();
  CpuStepOps ops;
  StepSettings settings;
  settings.clip_grad_norm = options.clip_grad_norm;
  settings.loss_scale = options.loss_scale;
  settings.objective = options.objective;
  settings.accumulation = options.accumulation;
  StepParts parts(m, *m.G, *m.D, *alone, ops, settings);
  std::vector<Tensor> noise;
  for (const Tensor& z : zs) noise.push_back(z.reshaped({z.dim(0), z.dim(1), 1, 1}));
  std::vector<Tensor> mixes;
  if (options.objective.gp_weight > 0)
    for (int k = 0; k < options.objective.n_critic; ++k) {
      Tensor e({reals[static_cast<size_t>(k)].dim(0)});
      fill_penalty_mix(e.f32(), e.numel(), options.seed, static_cast<uint64_t>(options.first_batch + k), 0);
      mixes.push_back(e);
    }
  Tensor fake = run_gan_step(parts.step(), reals, noise, mixes, options.first_batch);
  StepResult r = step_result(ops.scalars(), options.loss_scale);
  r.fake = fake;
  return r;
}

StepResult dcgan_train_step(GanModels& m, const Tensor& real, const Tensor& z, const StepOptions& options) {
  GT_CHECK(options.objective.noise_batches() == 1, "dcgan_train_step takes one batch; n_critic {}{} needs gan_train_step",
           options.objective.n_critic, options.objective.fresh_g_noise ? " with fresh G noise" : "");
  return gan_train_step(m, std::span<const Tensor>(&real, 1), std::span<const Tensor>(&z, 1), options);
}

Tensor generate(Sequential& G, const Tensor& z) {
  return G.forward(z.reshaped({z.dim(0), z.dim(1), 1, 1}), Mode::eval);
}

Tensor generate_across_ranks(Sequential& G, const Tensor& z, Communicator& comm) {
  return generate_across_ranks([&G](const Tensor& zz) { return generate(G, zz); }, z, comm);
}

}  // namespace gt
