// One GAN training step on one process's shard: the D step on real and fake, then the G step reusing the same fakes.
#pragma once
#include "nn/sequential.h"
#include "train/optim.h"

namespace gt {

struct GanModels {
  Sequential* G;
  Sequential* D;
  Optimizer* opt_g;
  Optimizer* opt_d;
};

struct StepOptions {
  float clip_grad_norm = 0.f;  // 0 = off
};

struct StepResult {
  double d_loss = 0;      // BCE(D(x), 1) + BCE(D(G(z)), 0)
  double g_loss = 0;      // BCE(D(G(z)), 1), with D after its update
  double d_real = 0;      // mean sigmoid(D(x))
  double d_fake = 0;      // mean sigmoid(D(G(z))) before the D update
  Tensor fake;            // G(z) [N, C, H, W] from this step
};

// real: f32 [N, C, H, W] in [-1, 1]; z: f32 [N, nz]. Updates G, D, their BN buffers and optimizers.
StepResult dcgan_train_step(GanModels& m, const Tensor& real, const Tensor& z, const StepOptions& opt);

// G(z) in eval mode (running BN statistics), for samples: z [N, nz] -> [N, C, H, W].
Tensor generate(Sequential& G, const Tensor& z);

}  // namespace gt
