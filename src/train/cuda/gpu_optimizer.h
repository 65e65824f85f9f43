// The GPU twin of a host optimizer: its state in flat device buffers laid out as the network's parameters, one multi-tensor launch per step.
#pragma once
#include <memory>

#include "train/net_optimizer.h"

namespace gt::cuda {

// net must be a cuda::GpuNet. The twin's state k is the host optimizer's k-th state of each parameter
// (Adam exp_avg, exp_avg_sq; RMSprop square_avg, momentum_buffer; SGD momentum_buffer), copied in now;
// each update launches with the host optimizer's own per-step constants (train/optim.h) through the
// context's StepRecorder, so a replayed CUDA graph still gets this step's constants. Clipping computes
// torch's coefficient on the device and the update applies it (fused).
std::unique_ptr<DeviceOptimizer> make_gpu_optimizer(Optimizer& host, Net& net);

}  // namespace gt::cuda
