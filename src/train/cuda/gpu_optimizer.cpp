// The GPU twin of a host optimizer: state buffers named as the host's, clipping on the device, updates through the StepRecorder.
#include "train/cuda/gpu_optimizer.h"

#include <algorithm>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/check.h"
#include "cuda/gpu_net.h"
#include "cuda/kernels.h"
#include "cuda/optim_gpu.h"

namespace gt::cuda {

namespace {

// One multi-tensor launch of the optimizer's kind with its constants for step t (counted from 1).
using Launch = void (*)(const MultiTensorView&, const OptimConfig&, int64_t t, const float* scale, cudaStream_t);

Launch launch_of(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::adam:
      return [](const MultiTensorView& v, const OptimConfig& c, int64_t t, const float* scale, cudaStream_t s) {
        adam_update(v, adam_coefficients(c, t), scale, s);
      };
    case OptimizerKind::rmsprop:
      return [](const MultiTensorView& v, const OptimConfig& c, int64_t, const float* scale, cudaStream_t s) {
        rmsprop_update(v, rmsprop_coefficients(c), scale, s);
      };
    case OptimizerKind::sgd:
      return [](const MultiTensorView& v, const OptimConfig& c, int64_t t, const float* scale, cudaStream_t s) {
        sgd_update(v, sgd_coefficients(c, t == 1), scale, s);
      };
  }
  runtime_error("optimizer kind {} has no GPU update", static_cast<int>(kind));
}

class GpuOptimizer final : public DeviceOptimizer {
 public:
  GpuOptimizer(Optimizer& host, GpuNet& net)
      : host_(host), net_(net), stream_(net.context().stream()), launch_(launch_of(host.config().kind)) {
    // The host's state roles, in its order: "<param>/<role>" for the first parameter that has any.
    const std::string first = net.param_slots().empty() ? "" : net.param_slots().front().name + "/";
    for (const NamedState& st : host.state())
      if (st.name.rfind(first, 0) == 0) roles_.push_back(st.name.substr(first.size()));
    GT_CHECK(roles_.size() <= 2, "the GPU updates take at most two state tensors, {} has {}",
             choice_name(host.config().kind), roles_.size());
    const size_t n = static_cast<size_t>(std::max<int64_t>(net.flat_size(), 1));
    for (size_t k = 0; k < roles_.size(); ++k) state_[k] = DeviceBuffer<float>(n);
    std::vector<TensorRef> refs;
    for (const ParamSlot& s : net.param_slots())
      refs.push_back({net.flat_params() + s.offset, net.flat_grads() + s.offset,
                      state_[0].data() ? state_[0].data() + s.offset : nullptr,
                      state_[1].data() ? state_[1].data() + s.offset : nullptr, s.numel});
    list_ = std::make_unique<MultiTensorList>(refs, stream_);
    partial_ = DeviceBuffer<double>(static_cast<size_t>(std::max<int64_t>(list_->chunks(), 1)));
    norm_ = DeviceBuffer<float>(2);
    steps_ = host_.step_count();
    copy_states(/*to_device=*/true);
  }

  void update(float clip_norm, float weight_limit) override {
    // Clipping has constant arguments (it may be captured); the update's constants change every step.
    if (clip_norm > 0) grad_global_norm(norm_.data(), norm_.data() + 1, list_->view(), clip_norm, partial_.data(), stream_);
    const float* scale = clip_norm > 0 ? norm_.data() + 1 : nullptr;
    net_.context().recorder().eager([this, scale, weight_limit] {
      ++steps_;
      launch_(list_->view(), host_.config(), steps_, scale, stream_);  // the config is read each step: lr may change
      if (weight_limit > 0) clip_weights(list_->view(), weight_limit, stream_);  // the f32 master, before its copies
      net_.refresh_packed_weights();
    });
  }

  void sync_to_host() override {
    copy_states(/*to_device=*/false);
    host_.set_step_count(steps_);
  }

  void load_from_host() override {
    copy_states(/*to_device=*/true);
    steps_ = host_.step_count();
  }

 private:
  void copy_states(bool to_device) {
    std::vector<NamedState> states = host_.state();
    auto find = [&](const std::string& name) -> Tensor* {
      for (NamedState& s : states)
        if (s.name == name) return s.tensor;
      runtime_error("optimizer state {} is missing on the host", name);
    };
    for (const ParamSlot& slot : net_.param_slots())
      for (size_t k = 0; k < roles_.size(); ++k) {
        Tensor* t = find(slot.name + "/" + roles_[k]);
        GT_CHECK(t->numel() == slot.numel, "optimizer state {}/{} has {} values, parameter {}", slot.name, roles_[k],
                 t->numel(), slot.numel);
        const size_t bytes = static_cast<size_t>(slot.numel) * sizeof(float);
        if (to_device)
          copy_host_to_device(state_[k].data() + slot.offset, t->f32(), bytes, stream_);
        else
          copy_device_to_host(t->f32(), state_[k].data() + slot.offset, bytes, stream_);
      }
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  Optimizer& host_;
  GpuNet& net_;
  cudaStream_t stream_;
  Launch launch_;
  std::vector<std::string> roles_;
  DeviceBuffer<float> state_[2], norm_;
  DeviceBuffer<double> partial_;
  std::unique_ptr<MultiTensorList> list_;
  int64_t steps_ = 0;
};

}  // namespace

std::unique_ptr<DeviceOptimizer> make_gpu_optimizer(Optimizer& host, Net& net) {
  auto* gpu = dynamic_cast<GpuNet*>(&net);
  GT_CHECK(gpu != nullptr, "the GPU optimizer needs a GpuNet");
  return std::make_unique<GpuOptimizer>(host, *gpu);
}

}  // namespace gt::cuda
