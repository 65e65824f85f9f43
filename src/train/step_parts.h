// StepParts: what every engine builds the same way around the one GAN step: gradient bucketers, optimizer twins, synchronized batch norm and the GanStep over them.
#pragma once
#include <memory>

#include "nn/net.h"
#include "parallel/gradient_bucketer.h"
#include "train/cpu_step.h"
#include "train/gan_step.h"
#include "train/net_optimizer.h"

namespace gt {

struct StepSettings {
  float clip_grad_norm = 0.f;     // 0 = off
  double loss_scale = 1.0;        // this rank's share of the global batch (GanStep::loss_scale)
  int64_t bucket_elems = 1 << 20; // gradients per all-reduce bucket
  bool sync_bn = false;           // batch norm over the global batch (comm sums the per-channel values)
  GanObjective objective{};       // loss family, drift, weight clipping, critic iterations, gradient penalty
  int accumulation = 1;           // micro-batches per update (GanStep::accumulation)
  ElemType reduce_type = ElemType::f32;  // the gradient all-reduce's wire format (dist.reduce_precision)
};

// G and D are the engine's networks (the host models themselves on the CPU, their GPU twins on a GPU);
// comm moves their memory (the host communicator for host memory, the device one for device memory;
// with one rank it moves nothing). host supplies the optimizers the twins copy.
class StepParts {
 public:
  StepParts(GanModels& host, Net& G, Net& D, Communicator& comm, StepOps& ops, const StepSettings& s);
  StepParts(const StepParts&) = delete;
  StepParts& operator=(const StepParts&) = delete;

  GanStep& step() { return step_; }
  double loss_scale() const { return step_.loss_scale; }
  // The optimizers' device state back into the host optimizers (checkpoints).
  void sync_optimizers_to_host();
  // The host optimizers' state into the twins (after the host models were reloaded).
  void load_optimizers_from_host();

 private:
  GradientBucketer reduce_g_, reduce_d_;
  std::unique_ptr<DeviceOptimizer> opt_g_, opt_d_;
  GanStep step_;
};

}  // namespace gt
