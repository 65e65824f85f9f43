// The CPU engine's StepOps and NetOptimizer, and the one GAN step on host models for tools and tests.
#include "train/cpu_step.h"

#include <cmath>

#include "parallel/communicator.h"
#include "train/loss.h"
#include "train/step_parts.h"

namespace gt {

namespace {

double mean_sigmoid(const Tensor& logits) {
  const float* p = logits.f32();
  double s = 0;
  for (int64_t i = 0; i < logits.numel(); ++i) s += 1.0 / (1.0 + std::exp(-static_cast<double>(p[i])));
  return s / static_cast<double>(logits.numel());
}

}  // namespace

void CpuStepOps::bce_with_logits(const Tensor& logits, float target, float scale, Tensor& dlogits, StepScalar loss,
                                 const StepScalar* prob) {
  if (prob) scalars_[static_cast<int>(*prob)] = mean_sigmoid(logits);
  scalars_[static_cast<int>(loss)] = gt::bce_with_logits(logits.f32(), logits.numel(), target, dlogits.f32(), scale);
}

void CpuStepOps::grad_norm(Net& net, StepScalar slot) {
  const float* g = net.flat_grads();
  double sum = 0;
  for (int64_t i = 0; i < net.flat_size(); ++i) sum += static_cast<double>(g[i]) * g[i];
  scalars_[static_cast<int>(slot)] = std::sqrt(sum);
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

StepResult dcgan_train_step(GanModels& m, const Tensor& real, const Tensor& z, const StepOptions& options) {
  auto alone = make_local_communicator();
  CpuStepOps ops;
  StepParts parts(m, *m.G, *m.D, *alone, ops, {options.clip_grad_norm, options.loss_scale});
  Tensor fake = run_gan_step(parts.step(), real, z.reshaped({z.dim(0), z.dim(1), 1, 1}));
  StepResult r = step_result(ops.scalars(), options.loss_scale);
  r.fake = fake;
  return r;
}

Tensor generate(Sequential& G, const Tensor& z) {
  return G.forward(z.reshaped({z.dim(0), z.dim(1), 1, 1}), Mode::eval);
}

Tensor generate_across_ranks(Sequential& G, const Tensor& z, Communicator& comm) {
  return generate_across_ranks([&G](const Tensor& zz) { return generate(G, zz); }, z, comm);
}

}  // namespace gt
