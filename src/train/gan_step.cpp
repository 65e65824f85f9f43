// The one GAN step over Net, StepOps and NetOptimizer: critic iterations, then the G update, under any objective (core/loss_math.h).
#include "train/gan_step.h"

#include <algorithm>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/gradient_bucketer.h"

namespace gt {

namespace {

// One micro-batch's share of the step's scalars: the first writes its slot, the others add to it, each
// weighted 1 / accumulation, so a slot ends as the mean over the rank's whole share.
ScalarWrite scalar_write(const GanStep& s, int micro) {
  return {1.f / static_cast<float>(s.accumulation), micro > 0};
}

// The loss scale of one micro-batch: its share of the global batch.
float micro_scale(const GanStep& s) { return static_cast<float>(s.loss_scale / static_cast<double>(s.accumulation)); }

// Forward D in train mode, one term of the objective, backward. The logits' gradient is given back
// before returning; the input gradient (when asked for) is not.
Tensor d_pass(GanStep& s, const Tensor& x, LossRole role, StepScalar loss, const StepScalar* reported,
              const BackwardOptions& backward, int micro) {
  const size_t mark = s.ops.mark();
  Tensor logits = s.D.forward(x, Mode::train);
  Tensor dlogits = s.ops.buffer_like(logits);
  s.ops.gan_loss(logits, s.objective.term(role), micro_scale(s), dlogits, loss, reported, scalar_write(s, micro));
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
void penalty_pass(GanStep& s, const Tensor& real, const Tensor& fake, const Tensor& mix, int micro,
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
  const float scale = micro_scale(s) * static_cast<float>(s.objective.gp_every);
  s.ops.gradient_penalty(g, s.objective.gp_weight, scale, v, StepScalar::penalty, scalar_write(s, micro));
  s.D.backward_of_input_grad(v, parameter_grads(std::move(on_final)));
  s.ops.release(mark);
}

// Rows [j * m, (j + 1) * m) of t: micro-batch j of a rank's share (a view; every sample is contiguous in
// any layout).
Tensor micro_rows(const Tensor& t, int64_t j, int64_t m) {
  if (!t.defined() || m == t.dim(0)) return t;
  Shape shape = t.shape();
  shape[0] = m;
  return t.view(j * m * (t.numel() / t.dim(0)), shape);
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
  const int A = s.accumulation;
  const int64_t n = reals[0].dim(0);
  GT_CHECK(A >= 1 && n % A == 0, "run_gan_step: {} images do not split into {} micro-batches", n, A);
  const int64_t m = n / A;
  const StepScalar reported_real = StepScalar::prob_real, reported_fake = StepScalar::prob_fake;
  if (s.objective.gp_weight > 0.f) s.ops.zero_scalar(StepScalar::penalty);  // a lazy step may have none
  // With one micro-batch and no fresh noise, the G update reuses the last critic iteration's fakes and
  // G's activations (the classic step); with several, the G update makes each micro-batch's fakes again.
  const bool reuse_fakes = A == 1 && !s.objective.fresh_g_noise;
  Tensor fake;
  for (int k = 0; k < iterations; ++k) {
    const bool keep = k + 1 == iterations && reuse_fakes;
    // With a penalty on this batch, its pass is D's last backward (the reduction overlaps it).
    const int64_t batch = first_batch + k;
    const bool penalty = s.objective.penalty_on(batch);
    s.ops.phase(StepPhase::d_forward_backward);
    s.D.zero_grad();
    for (int j = 0; j < A; ++j) {
      const bool last = j + 1 == A;
      // G's activations of a micro-batch are not needed again: given back after its D passes.
      const size_t g_mark = s.ops.mark();
      s.ops.phase(StepPhase::g_forward);
      fake = s.G.forward(micro_rows(zs[k], j, m), Mode::train);

      // D update: real and fake (treated as a constant) terms, gradients of both summed over the
      // micro-batches. With several ranks, D's gradients are summed over them during the last backward.
      s.ops.phase(StepPhase::d_forward_backward);
      const Tensor real = micro_rows(reals[k], j, m);
      d_pass(s, real, LossRole::d_real, StepScalar::loss_real, &reported_real, parameter_grads(), j);
      if (last && !penalty) s.reduce_d.arm();
      d_pass(s, fake, LossRole::d_fake, StepScalar::loss_fake, &reported_fake,
             parameter_grads(last && !penalty ? s.reduce_d.hook() : std::function<void(int64_t)>()), j);
      if (penalty) {
        if (last) s.reduce_d.arm();
        penalty_pass(s, real, fake, micro_rows(mixes[static_cast<size_t>(k)], j, m), j,
                     last ? s.reduce_d.hook() : std::function<void(int64_t)>());
      }
      if (!keep) {
        fake = Tensor();
        s.ops.release(g_mark);
      }
    }
    s.ops.phase(StepPhase::comm_wait);
    s.reduce_d.finish();
    s.ops.phase(StepPhase::optimizer);
    s.ops.grad_norm(s.D, StepScalar::grad_norm_d);
    s.opt_d.update(s.clip_grad_norm, s.objective.clip_critic);
  }

  // G update: the fakes through the updated D, as real for G (the non-saturating loss, or -D(G(z)) for a
  // critic); D's parameter gradients of this pass are not needed. Its noise: the G update's own, or the
  // last critic iteration's.
  const Tensor& z = zs[static_cast<size_t>(s.objective.fresh_g_noise ? iterations : iterations - 1)];
  s.G.zero_grad();
  for (int j = 0; j < A; ++j) {
    const bool last = j + 1 == A;
    const size_t g_mark = s.ops.mark();
    if (!reuse_fakes) {
      s.ops.phase(StepPhase::g_forward);
      fake = s.G.forward(micro_rows(z, j, m), Mode::train);
    }
    const size_t mark = s.ops.mark();
    s.ops.phase(StepPhase::d_forward_backward);
    Tensor dfake = d_pass(s, fake, LossRole::g_fake, StepScalar::loss_g, nullptr, input_grad_only(), j);
    s.ops.phase(StepPhase::g_backward);
    if (last) s.reduce_g.arm();
    s.G.backward(dfake, parameter_grads(last ? s.reduce_g.hook() : std::function<void(int64_t)>()));
    // The last micro-batch's fakes are the step's result (step memory until the engine's step ends).
    if (last) {
      s.ops.release(mark);
    } else {
      fake = Tensor();
      s.ops.release(g_mark);
    }
  }
  s.ops.phase(StepPhase::comm_wait);
  s.reduce_g.finish();
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
