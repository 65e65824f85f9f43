// The one GAN step (non-saturating BCE, as the classic PyTorch DCGAN) over Net, StepOps and NetOptimizer.
#include "train/gan_step.h"

#include <algorithm>

#include "parallel/communicator.h"
#include "parallel/gradient_bucketer.h"

namespace gt {

namespace {

// Forward D in train mode, BCE against a constant target, backward. The logits' gradient is given back
// before returning; the input gradient (when asked for) is not.
Tensor d_pass(GanStep& s, const Tensor& x, float target, StepScalar loss, const StepScalar* prob,
              const BackwardOptions& backward) {
  const size_t mark = s.ops.mark();
  Tensor logits = s.D.forward(x, Mode::train);
  Tensor dlogits = s.ops.buffer_like(logits);
  s.ops.bce_with_logits(logits, target, static_cast<float>(s.loss_scale), dlogits, loss, prob);
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

}  // namespace

Tensor run_gan_step(GanStep& s, const Tensor& real, const Tensor& z) {
  s.ops.phase(StepPhase::g_forward);
  Tensor fake = s.G.forward(z, Mode::train);

  // D step: real labelled 1, fake (treated as a constant) labelled 0; gradients of both summed. With
  // several ranks, D's gradients are summed over them while the second backward runs.
  s.ops.phase(StepPhase::d_forward_backward);
  s.D.zero_grad();
  const StepScalar prob_real = StepScalar::prob_real, prob_fake = StepScalar::prob_fake;
  d_pass(s, real, 1.f, StepScalar::loss_real, &prob_real, parameter_grads());
  s.reduce_d.arm();
  d_pass(s, fake, 0.f, StepScalar::loss_fake, &prob_fake, parameter_grads(s.reduce_d.hook()));
  s.ops.phase(StepPhase::comm_wait);
  s.reduce_d.finish();
  s.ops.phase(StepPhase::optimizer);
  s.ops.grad_norm(s.D, StepScalar::grad_norm_d);
  s.opt_d.update(s.clip_grad_norm);

  // G step: the same fakes through the updated D, labelled 1 (non-saturating loss); D's parameter
  // gradients of this pass are not needed.
  s.ops.phase(StepPhase::d_forward_backward);
  s.G.zero_grad();
  const size_t mark = s.ops.mark();
  Tensor dfake = d_pass(s, fake, 1.f, StepScalar::loss_g, nullptr, input_grad_only());
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
  r.d_loss = at(StepScalar::loss_real) * scale + at(StepScalar::loss_fake) * scale;
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
