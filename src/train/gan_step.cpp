// The one GAN step over Net, StepOps and NetOptimizer: critic iterations, then the G update, under any objective (core/loss_math.h).
#include "train/gan_step.h"

#include <algorithm>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/gradient_bucketer.h"

namespace gt {

namespace {

// Forward D in train mode, one term of the objective, backward. The logits' gradient is given back
// before returning; the input gradient (when asked for) is not.
Tensor d_pass(GanStep& s, const Tensor& x, LossRole role, StepScalar loss, const StepScalar* reported,
              const BackwardOptions& backward) {
  const size_t mark = s.ops.mark();
  Tensor logits = s.D.forward(x, Mode::train);
  Tensor dlogits = s.ops.buffer_like(logits);
  s.ops.gan_loss(logits, s.objective.term(role), static_cast<float>(s.loss_scale), dlogits, loss, reported);
  Tensor dx = s.D.backward(dlogits, backward);
  if (!backward.input_grad) s.ops.release(mark);
  return dx;
}

// Backward into the parameter gradients (on_final: the gradient bucketer's hook, when it reduces).
BackwardOptions parameter_grads(std::function<void(int64_t)> on_final = {}) {
  BackwardOptions o;
  o.on_final = std::move(on_final);
  return o;
}

// Backward to the input only: the G step's pass through D.
BackwardOptions input_grad_only() {
  BackwardOptions o;
  o.param_grads = false;
  o.input_grad = true;
  return o;
}

// WGAN-GP's penalty: D at the interpolates of real and fake, its input gradient g (a
// first backward from ones, no parameter gradients, the graph kept), the penalty's gradient v with
// respect to g, then the double backward adds d(v . g)/dtheta to D's gradients (the bucketer's hook on
// this last pass). Lazy regularization scales it by gp_every.
void penalty_pass(GanStep& s, const Tensor& real, const Tensor& fake, const Tensor& mix,
                  std::function<void(int64_t)> on_final) {
  const size_t mark = s.ops.mark();
  const Tensor mixed = s.ops.interpolate(real, fake, mix);
  const Tensor scores = s.D.forward(mixed, Mode::train);
  BackwardOptions first;
  first.param_grads = false;
  first.input_grad = true;
  first.create_graph = true;
  const Tensor g = s.D.backward(s.ops.ones_like(scores), first);
  Tensor v = s.ops.buffer_like(g);
  const float scale = static_cast<float>(s.loss_scale) * static_cast<float>(s.objective.gp_every);
  s.ops.gradient_penalty(g, s.objective.gp_weight, scale, v, StepScalar::penalty);
  s.D.backward_of_input_grad(v, parameter_grads(std::move(on_final)));
  s.ops.release(mark);
}

}  // namespace

Tensor run_gan_step(GanStep& s, std::span<const Tensor> reals, std::span<const Tensor> zs,
                    std::span<const Tensor> mixes, int64_t first_batch) {
  const int iterations = s.objective.n_critic;
  GT_CHECK(iterations >= 1 && static_cast<int>(reals.size()) == iterations &&
               static_cast<int>(zs.size()) == s.objective.noise_batches(),
           "run_gan_step: {} real batches and {} noise batches for n_critic {}{}", reals.size(), zs.size(), iterations,
           s.objective.fresh_g_noise ? " and fresh G noise" : "");
  GT_CHECK(s.objective.gp_weight <= 0.f || static_cast<int>(mixes.size()) == iterations,
           "run_gan_step: {} interpolation weight batches for n_critic {} with a gradient penalty", mixes.size(),
           iterations);
  const StepScalar reported_real = StepScalar::prob_real, reported_fake = StepScalar::prob_fake;
  if (s.objective.gp_weight > 0.f) s.ops.zero_scalar(StepScalar::penalty);  // a lazy step may have none
  Tensor fake;
  for (int k = 0; k < iterations; ++k) {
    const bool last = k + 1 == iterations && !s.objective.fresh_g_noise;
    // G's activations of an earlier iteration are not needed again: given back after its D update.
    const size_t g_mark = s.ops.mark();
    s.ops.phase(StepPhase::g_forward);
    fake = s.G.forward(zs[k], Mode::train);

    // D update: real and fake (treated as a constant) terms, gradients of both summed. With several
    // ranks, D's gradients are summed over them while the second backward runs.
    s.ops.phase(StepPhase::d_forward_backward);
    s.D.zero_grad();
    // With a penalty on this batch, its pass is D's last backward (the reduction overlaps it).
    const int64_t batch = first_batch + k;
    const bool penalty = s.objective.penalty_on(batch);
    d_pass(s, reals[k], LossRole::d_real, StepScalar::loss_real, &reported_real, parameter_grads());
    if (!penalty) s.reduce_d.arm();
    d_pass(s, fake, LossRole::d_fake, StepScalar::loss_fake, &reported_fake,
           parameter_grads(penalty ? std::function<void(int64_t)>() : s.reduce_d.hook()));
    if (penalty) {
      s.reduce_d.arm();
      penalty_pass(s, reals[k], fake, mixes[static_cast<size_t>(k)], s.reduce_d.hook());
    }
    s.ops.phase(StepPhase::comm_wait);
    s.reduce_d.finish();
    s.ops.phase(StepPhase::optimizer);
    s.ops.grad_norm(s.D, StepScalar::grad_norm_d);
    s.opt_d.update(s.clip_grad_norm, s.objective.clip_critic);
    if (!last) {
      fake = Tensor();
      s.ops.release(g_mark);
    }
  }

  // G update: the last fakes (or fresh ones) through the updated D, as real for G (the non-saturating
  // loss, or -D(G(z)) for a critic); D's parameter gradients of this pass are not needed.
  if (s.objective.fresh_g_noise) {
    s.ops.phase(StepPhase::g_forward);
    fake = s.G.forward(zs[static_cast<size_t>(iterations)], Mode::train);
  }
  s.ops.phase(StepPhase::d_forward_backward);
  s.G.zero_grad();
  const size_t mark = s.ops.mark();
  Tensor dfake = d_pass(s, fake, LossRole::g_fake, StepScalar::loss_g, nullptr, input_grad_only());
  s.ops.phase(StepPhase::g_backward);
  s.reduce_g.arm();
  s.G.backward(dfake, parameter_grads(s.reduce_g.hook()));
  s.ops.phase(StepPhase::comm_wait);
  s.reduce_g.finish();
  s.ops.release(mark);
  s.ops.phase(StepPhase::optimizer);
  s.ops.grad_norm(s.G, StepScalar::grad_norm_g);
  s.opt_g.update(s.clip_grad_norm);
  s.ops.phase(StepPhase::other);
  return fake;
}

StepResult step_result(const double (&v)[kStepScalars], double scale) {
  auto at = [&v](StepScalar k) { return v[static_cast<int>(k)]; };
  StepResult r;
  r.d_penalty = at(StepScalar::penalty) * scale;
  r.d_loss = at(StepScalar::loss_real) * scale + at(StepScalar::loss_fake) * scale + r.d_penalty;
  r.g_loss = at(StepScalar::loss_g) * scale;
  r.d_real = at(StepScalar::prob_real) * scale;
  r.d_fake = at(StepScalar::prob_fake) * scale;
  r.d_grad_norm = at(StepScalar::grad_norm_d);
  r.g_grad_norm = at(StepScalar::grad_norm_g);
  return r;
}

Tensor generate_across_ranks(const std::function<Tensor(const Tensor&)>& generate, const Tensor& z,
                             Communicator& comm) {
  const int64_t n = z.dim(0), nz = z.dim(1), P = comm.world_size();
  if (P == 1) return generate(z);
  // Equal shares (the last ones padded with copies of row 0) so that one all-gather collects them.
  const int64_t share = (n + P - 1) / P, first = comm.rank() * share;
  Tensor mine({share, nz});
  for (int64_t i = 0; i < share; ++i) {
    const int64_t row = first + i < n ? first + i : 0;
    std::copy_n(z.f32() + row * nz, nz, mine.f32() + i * nz);
  }
  Tensor part = generate(mine);
  Shape all_shape = part.shape();
  all_shape[0] = share * P;
  Tensor all(all_shape);
  comm.all_gather(part.f32(), all.f32(), part.numel());
  Shape out_shape = all_shape;
  out_shape[0] = n;
  Tensor out(out_shape);
  std::copy_n(all.f32(), out.numel(), out.f32());
  return out;
}

}  // namespace gt
