// The CPU engine's side of the one GAN step (host tensors, double scalars, the host optimizers), and the step on host models for tools and tests.
#pragma once
#include <chrono>
#include <vector>

#include "nn/sequential.h"
#include "train/gan_step.h"
#include "train/net_optimizer.h"
#include "train/optim.h"

namespace gt {

// StepOps on the CPU: buffers are host tensors, scalars doubles available as soon as the step returns.
class CpuStepOps final : public StepOps {
 public:
  Tensor buffer_like(const Tensor& t) override { return Tensor(t.shape(), t.dtype()); }
  void gan_loss(const Tensor& logits, const LossTerm& term, float scale, Tensor& dlogits, StepScalar loss,
                const StepScalar* reported, const ScalarWrite& write) override;
  void grad_norm(Net& net, StepScalar slot) override;
  Tensor interpolate(const Tensor& real, const Tensor& fake, const Tensor& mix) override;
  Tensor ones_like(const Tensor& t) override;
  void zero_scalar(StepScalar slot) override { scalars_[static_cast<int>(slot)] = 0; }
  void gradient_penalty(const Tensor& g, float weight, float scale, Tensor& dg, StepScalar loss,
                        const ScalarWrite& write) override;
  void phase(StepPhase phase) override;
  // bf16 packs in host memory (the MPI communicator's), converted on the calling thread.
  GradientWire gradient_wire(int64_t n, ElemType type) override;
  const double (&scalars() const)[kStepScalars] { return scalars_; }
  // Seconds spent in each named phase since the last call (host clock), then zeroed; `other` stays 0.
  void take_phase_seconds(double (&seconds)[kStepPhases]);

 private:
  void put(StepScalar slot, double value, const ScalarWrite& write) {
    double& v = scalars_[static_cast<int>(slot)];
    v = (write.accumulate ? v : 0.0) + value * static_cast<double>(write.weight);
  }
  double scalars_[kStepScalars] = {};
  double phase_seconds_[kStepPhases] = {};
  std::vector<std::vector<uint16_t>> wires_;  // gradient_wire's buffers
  StepPhase current_ = StepPhase::other;
  std::chrono::steady_clock::time_point since_ = std::chrono::steady_clock::now();
};

// The host models of a run: G, D and their optimizers.
struct GanModels {
  Sequential* G;
  Sequential* D;
  Optimizer* opt_g;
  Optimizer* opt_d;
};

struct StepOptions {
  float clip_grad_norm = 0.f;  // 0 = off
  double loss_scale = 1.0;     // GanStep::loss_scale
  GanObjective objective{};    // BCE, one critic iteration: the classic DCGAN step
  uint64_t seed = 0;           // keys the gradient penalty's interpolation weights (fill_penalty_mix)
  int64_t first_batch = 0;     // the run's batch number of the first critic iteration (step * n_critic)
  int accumulation = 1;        // micro-batches per update (GanStep::accumulation)
};

// One step of the one GAN step on host models in this process alone (tools, tests): real f32
// [N, C, H, W] in [-1, 1], z f32 [N, nz]. The result carries the fakes.
StepResult dcgan_train_step(GanModels& m, const Tensor& real, const Tensor& z, const StepOptions& options = {});
// The same with objective.n_critic real batches and noise batches (critic iteration k takes reals[k], zs[k]).
StepResult gan_train_step(GanModels& m, std::span<const Tensor> reals, std::span<const Tensor> zs,
                          const StepOptions& options);

// G(z) in eval mode (running batch-norm statistics), for samples: z [N, nz] -> [N, C, H, W].
Tensor generate(Sequential& G, const Tensor& z);
// The same with the rows split over the ranks and gathered (every rank returns all of them).
Tensor generate_across_ranks(Sequential& G, const Tensor& z, Communicator& comm);

}  // namespace gt
