// Host side of the GPU multi-tensor updates: the device table of a tensor list (the per-step constants come from train/optim.h).
#pragma once
#include <cstdint>
#include <vector>

#include "cuda/arena.h"
#include "cuda/kernels.h"

namespace gt::cuda {

// The pointers of one tensor of a multi-tensor update; state pointers null where the rule has none.
struct TensorRef {
  float* param = nullptr;
  float* grad = nullptr;
  float* state0 = nullptr;
  float* state1 = nullptr;
  int64_t numel = 0;
};

// A tensor list in device memory, uploaded once (synchronously) at set-up; view() is what the
// multi-tensor kernels take. Tensors with no elements are left out.
class MultiTensorList {
 public:
  MultiTensorList(const std::vector<TensorRef>& tensors, cudaStream_t stream);
  MultiTensorView view() const { return {slots_.data(), count_, chunks_}; }
  int64_t chunks() const { return chunks_; }  // also the doubles grad_global_norm needs in `partial`
  int count() const { return count_; }

 private:
  DeviceBuffer<MultiTensorSlot> slots_;
  int count_ = 0;
  int64_t chunks_ = 0;
};

}  // namespace gt::cuda
