// The DCGAN step with the non-saturating BCE loss, as in the classic PyTorch example.
#include "train/gan_step.h"

#include <algorithm>
#include <cmath>

#include "dist/communicator.h"
#include "dist/gradient_reducer.h"
#include "train/loss.h"

namespace gt {

namespace {

double mean_sigmoid(const Tensor& logits) {
  const float* p = logits.f32();
  double s = 0;
  for (int64_t i = 0; i < logits.numel(); ++i) s += 1.0 / (1.0 + std::exp(-static_cast<double>(p[i])));
  return s / static_cast<double>(logits.numel());
}

Tensor as_noise_image(const Tensor& z) { return z.reshaped({z.dim(0), z.dim(1), 1, 1}); }

// Forward D, BCE against a constant target, backward; returns the loss and dL/dinput. scale is this
// rank's share of the global batch: the loss and its gradient are those of the global mean.
double d_loss_and_backward(Sequential& D, const Tensor& x, float target, double scale, double* mean_prob,
                           Tensor* dx) {
  Tensor logits = D.forward(x, Mode::train);
  if (mean_prob) *mean_prob = mean_sigmoid(logits) * scale;
  Tensor dlogits(logits.shape());
  double loss = bce_with_logits(logits.f32(), logits.numel(), target, dlogits.f32(), static_cast<float>(scale));
  Tensor g = D.backward(dlogits);
  if (dx) *dx = g;
  return loss * scale;
}

void arm(GradientReducer* r) {
  if (r) r->arm();
}
void finish(GradientReducer* r) {
  if (r) r->finish();
}

}  // namespace

StepResult dcgan_train_step(GanModels& m, const Tensor& real, const Tensor& z, const StepOptions& opt) {
  StepResult r;
  Tensor fake = m.G->forward(as_noise_image(z), Mode::train);

  // D step: real labelled 1, fake (treated as a constant) labelled 0; gradients of both summed.
  // With several ranks, D's gradients are summed over them while the second backward runs.
  m.D->zero_grad();
  r.d_loss = d_loss_and_backward(*m.D, real, 1.f, opt.loss_scale, &r.d_real, nullptr);
  arm(opt.reduce_d);
  r.d_loss += d_loss_and_backward(*m.D, fake, 0.f, opt.loss_scale, &r.d_fake, nullptr);
  finish(opt.reduce_d);
  auto d_params = m.D->named_params();
  if (opt.clip_grad_norm > 0) clip_grad_norm(d_params, opt.clip_grad_norm);
  m.opt_d->step();

  // G step: the same fakes through the updated D, labelled 1 (non-saturating loss).
  m.G->zero_grad();
  Tensor dfake;
  r.g_loss = d_loss_and_backward(*m.D, fake, 1.f, opt.loss_scale, nullptr, &dfake);
  arm(opt.reduce_g);
  m.G->backward(dfake);
  finish(opt.reduce_g);
  auto g_params = m.G->named_params();
  if (opt.clip_grad_norm > 0) clip_grad_norm(g_params, opt.clip_grad_norm);
  m.opt_g->step();

  r.fake = fake;
  return r;
}

Tensor generate(Sequential& G, const Tensor& z) { return G.forward(as_noise_image(z), Mode::eval); }

Tensor generate_across_ranks(Sequential& G, const Tensor& z, Communicator& comm) {
  return generate_across_ranks([&G](const Tensor& zz) { return generate(G, zz); }, z, comm);
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
