// make_net_optimizer: the host optimizer as the CPU step's NetOptimizer, or the GPU twin (train/cuda/gpu_optimizer.cpp).
#include "train/net_optimizer.h"

#include "core/error.h"
#include "core/optim_math.h"
#if GANTRAIN_HAVE_CUDA
#include "train/cuda/gpu_optimizer.h"
#endif

namespace gt {

void HostNetOptimizer::update(float clip_norm, float weight_limit) {
  if (clip_norm > 0) clip_grad_norm(params_, clip_norm);
  opt_.step();
  if (weight_limit > 0)
    for (NamedParam& p : params_) {
      float* v = p.param->value.f32();
      for (int64_t i = 0; i < p.param->value.numel(); ++i) v[i] = optim_math::clip_weight(v[i], weight_limit);
    }
}

std::unique_ptr<DeviceOptimizer> make_net_optimizer(Optimizer& host, Sequential& host_net, Net& net) {
  if (net.device() == Device::cpu) {
    GT_CHECK(&net == &host_net, "a CPU network's optimizer runs over the host network itself");
    return std::make_unique<HostNetOptimizer>(host, host_net);
  }
#if GANTRAIN_HAVE_CUDA
  return cuda::make_gpu_optimizer(host, net);
#else
  runtime_error("a network on a device this build has no optimizer for");
#endif
}

}  // namespace gt
