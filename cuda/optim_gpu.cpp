// Multi-tensor tables for the GPU updates: each tensor's first chunk, uploaded once.
#include "cuda/optim_gpu.h"

#include "core/error.h"
#include "cuda/check.h"

namespace gt::cuda {

MultiTensorList::MultiTensorList(const std::vector<TensorRef>& tensors, cudaStream_t stream) {
  std::vector<MultiTensorSlot> slots;
  for (const TensorRef& t : tensors) {
    GT_CHECK(t.numel >= 0, "tensor with {} elements", t.numel);
    if (t.numel == 0) continue;
    GT_CHECK(t.param != nullptr, "multi-tensor slot {} has no parameter", slots.size());
    MultiTensorSlot s;
    s.param = t.param;
    s.grad = t.grad;
    s.state0 = t.state0;
    s.state1 = t.state1;
    s.numel = t.numel;
    s.first_chunk = chunks_;
    chunks_ += (t.numel + kMultiTensorChunk - 1) / kMultiTensorChunk;
    slots.push_back(s);
  }
  count_ = static_cast<int>(slots.size());
  if (slots.empty()) return;
  slots_ = DeviceBuffer<MultiTensorSlot>(slots.size());
  slots_.upload(slots.data(), slots.size(), stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));  // `slots` is about to go away
}

}  // namespace gt::cuda
