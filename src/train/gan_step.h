// One GAN training step on one process's shard: the D step on real and fake, then the G step reusing the same fakes.
#pragma once
#include <functional>

#include "nn/sequential.h"
#include "train/optim.h"

namespace gt {

struct GanModels {
  Sequential* G;
  Sequential* D;
  Optimizer* opt_g;
  Optimizer* opt_d;
};

class GradientReducer;
class Communicator;

struct StepOptions {
  float clip_grad_norm = 0.f;  // 0 = off
  // Data parallel: this rank's share of the global batch, local_n / global_n. Each loss is the mean
  // over the global batch, so this rank's logits gradients (and the losses it reports) are its batch
  // mean times this share; summed over the ranks they are the one-process values.
  double loss_scale = 1.0;
  // Sum D's and G's gradients over the ranks during their last backward (nullptr: one process).
  GradientReducer* reduce_d = nullptr;
  GradientReducer* reduce_g = nullptr;
};

// Losses and means of this rank's shard times StepOptions::loss_scale: the sum over the ranks is the global value.
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

// The same for samples split over the ranks: rank r generates its contiguous share of z's rows and
// the shares are all-gathered, so every rank returns all N images, in order (for rank 0's sample grid).
Tensor generate_across_ranks(Sequential& G, const Tensor& z, Communicator& comm);
// The same with any generator (an engine's): generate maps host z [n, nz] to host images [n, C, H, W].
Tensor generate_across_ranks(const std::function<Tensor(const Tensor&)>& generate, const Tensor& z,
                             Communicator& comm);

}  // namespace gt
