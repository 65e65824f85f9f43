// The CPU engine's StepOps and NetOptimizer, and the one GAN step on host models for tools and tests.
#include "train/cpu_step.h"

#include <cmath>

#include "parallel/communicator.h"
#include "parallel/gradient_bucketer.h"
#include "train/loss.h"

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

StepResult dcgan_train_step(GanModels& m, const Tensor& real, const Tensor& z, const StepOptions& options) {
  auto alone = make_local_communicator();
  GradientBucketer reduce_g(*alone, m.G->flat_grads(), m.G->flat_size(), 1 << 20);
  GradientBucketer reduce_d(*alone, m.D->flat_grads(), m.D->flat_size(), 1 << 20);
  auto opt_g = make_net_optimizer(*m.opt_g, *m.G, *m.G), opt_d = make_net_optimizer(*m.opt_d, *m.D, *m.D);
  CpuStepOps ops;
  GanStep step{*m.G, *m.D, *opt_g, *opt_d, reduce_g, reduce_d, ops, options.clip_grad_norm, options.loss_scale};
  Tensor fake = run_gan_step(step, real, z.reshaped({z.dim(0), z.dim(1), 1, 1}));
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
