// The one optimizer factory: the host optimizer of a config, and its twin where a network runs (the host optimizer itself on the CPU, the multi-tensor kernels on a GPU).
#pragma once
#include <memory>
#include <vector>

#include "nn/sequential.h"
#include "train/gan_step.h"
#include "train/optim.h"

namespace gt {

// The twin of host (made by make_optimizer over host_net's parameters) for the step on net: for a CPU
// net (host_net itself) the host optimizer with clipping; for a GPU net its state in device memory,
// copied in from host now and back by sync_to_host(). The optimizer's kind is dispatched once, here.
class DeviceOptimizer : public NetOptimizer {
 public:
  // Device state -> host optimizer (state tensors and step count), for checkpoints.
  virtual void sync_to_host() = 0;
  // The host optimizer's state and step count into the device (a rollback reloaded the host).
  virtual void load_from_host() = 0;
};
std::unique_ptr<DeviceOptimizer> make_net_optimizer(Optimizer& host, Sequential& host_net, Net& net);

// The CPU twin: the host optimizer over the host network, clipping over its parameters, then the update.
class HostNetOptimizer final : public DeviceOptimizer {
 public:
  HostNetOptimizer(Optimizer& optimizer, Sequential& net) : opt_(optimizer), params_(net.named_params()) {}
  void update(float clip_norm, float weight_limit = 0.f) override;
  void sync_to_host() override {}
  void load_from_host() override {}

 private:
  Optimizer& opt_;
  std::vector<NamedParam> params_;
};

}  // namespace gt
