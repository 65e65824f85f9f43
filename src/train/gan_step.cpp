// The DCGAN step with the non-saturating BCE loss, as in the classic PyTorch example.
#include "train/gan_step.h"

#include <cmath>

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

// Forward D, BCE against a constant target, backward; returns the loss and dL/dinput.
double d_loss_and_backward(Sequential& D, const Tensor& x, float target, double* mean_prob, Tensor* dx) {
  Tensor logits = D.forward(x, Mode::train);
  if (mean_prob) *mean_prob = mean_sigmoid(logits);
  Tensor dlogits(logits.shape());
  double loss = bce_with_logits(logits.f32(), logits.numel(), target, dlogits.f32());
  Tensor g = D.backward(dlogits);
  if (dx) *dx = g;
  return loss;
}

}  // namespace

StepResult dcgan_train_step(GanModels& m, const Tensor& real, const Tensor& z, const StepOptions& opt) {
  StepResult r;
  Tensor fake = m.G->forward(as_noise_image(z), Mode::train);

  // D step: real labelled 1, fake (treated as a constant) labelled 0; gradients of both summed.
  m.D->zero_grad();
  r.d_loss = d_loss_and_backward(*m.D, real, 1.f, &r.d_real, nullptr);
  r.d_loss += d_loss_and_backward(*m.D, fake, 0.f, &r.d_fake, nullptr);
  auto d_params = m.D->named_params();
  if (opt.clip_grad_norm > 0) clip_grad_norm(d_params, opt.clip_grad_norm);
  m.opt_d->step();

  // G step: the same fakes through the updated D, labelled 1 (non-saturating loss).
  m.G->zero_grad();
  Tensor dfake;
  r.g_loss = d_loss_and_backward(*m.D, fake, 1.f, nullptr, &dfake);
  m.G->backward(dfake);
  auto g_params = m.G->named_params();
  if (opt.clip_grad_norm > 0) clip_grad_norm(g_params, opt.clip_grad_norm);
  m.opt_g->step();

  r.fake = fake;
  return r;
}

Tensor generate(Sequential& G, const Tensor& z) { return G.forward(as_noise_image(z), Mode::eval); }

}  // namespace gt
