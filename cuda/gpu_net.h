// GpuNet: a Sequential of CPU layers mirrored on the GPU (cuDNN convolutions, our fused kernels), with flat f32 parameters and gradients.
#pragma once
// Written against the CUDA backend's kernels; it has not yet run on a GPU (no GPU in the sessions that
// wrote it): tests/gpu/test_gpu_training.cpp compares whole training steps with the CPU engine.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda/arena.h"
#include "cuda/conv.h"
#include "cuda/formats.h"
#include "nn/layer.h"
#include "nn/sequential.h"

namespace gt::cuda {

// Sums device doubles over the data-parallel ranks in place (synchronized batch norm).
using DeviceSumReducer = std::function<void(double* device_values, int64_t count)>;

class GpuNet {
 public:
  // Mirrors host's layers for inputs of per-sample shape per_sample_in ({nz, 1, 1} for G, {C, H, W} for D).
  // Conv2d/ConvTranspose2d and BatchNorm2d run in fmt; a BatchNorm2d followed by an activation is one fused
  // op; Linear runs in f32 (converted around it in bf16); Reshape is a view (a layout change in NHWC).
  // A layer kind it does not know is a UserError naming it.
  GpuNet(Sequential& host, const Shape& per_sample_in, GpuContext& ctx, ConvEngine& conv, const ActFormat& fmt);
  ~GpuNet();
  GpuNet(const GpuNet&) = delete;
  GpuNet& operator=(const GpuNet&) = delete;

  // Synchronized batch norm: sum its per-channel sums with reduce, over world ranks of equal batches.
  void set_batch_stats_reducer(DeviceSumReducer reduce, int world);

  // Host <-> device: parameters and buffers (PyTorch layout on the host). upload() also packs the weights.
  void upload();
  void download();
  // After the optimizer changed the f32 master weights: refresh the copies convolutions read (bf16 or
  // NHWC); nothing to do for f32 NCHW, where convolutions read the master itself.
  void refresh_packed_weights();

  float* params() { return params_; }
  float* grads() { return grads_; }
  int64_t param_count() const { return param_count_; }
  // Offsets and sizes of each host parameter in the flat buffers, in named_params() order.
  struct ParamSlot {
    std::string name;
    int64_t offset = 0, numel = 0;
  };
  const std::vector<ParamSlot>& param_slots() const { return slots_; }
  void zero_grads();

  // Train-mode forwards done, for num_batches_tracked (a replayed graph runs forwards without the host).
  void count_train_forwards(int64_t n) { train_forwards_ += n; }

  // Forward of N samples: x in fmt, the output in fmt from the arena (kept until the caller rewinds).
  void* forward(const void* x, int N, Mode mode, DeviceArena& arena);
  // Backward of the last forward from dy (fmt). Writes dL/dinput into dx when not null; accumulates the
  // parameter gradients into grads() when param_grads (else skips them: the G step's pass through D).
  // Calls hook(offset) after each op with the lowest flat offset whose gradient is now final. Everything
  // it takes from the arena is given back before it returns.
  void backward(const void* dy, void* dx, bool param_grads, DeviceArena& arena,
                const std::function<void(int64_t)>& hook = {});

  Shape output_shape(int N) const;           // [N, ...] of forward's output
  int64_t input_numel_per_sample() const;
  int64_t output_numel_per_sample() const;
  // Arena bytes one forward and one backward of N samples take at most (activations kept for backward,
  // gradients, batch-norm workspaces), with the arena's alignment.
  size_t forward_bytes(int N) const;
  size_t backward_bytes(int N) const;
  std::string describe() const;  // one line per op

 private:
  struct Op;
  void* alloc(DeviceArena& arena, int64_t elems, DataType t) const;
  size_t op_temp_bytes(const Op& op, int N, int copies) const;
  void forward_op(Op& op, const void* x, void* y, int N, Mode mode, DeviceArena& arena);
  void backward_op(Op& op, const void* dy, void* dx, int N, bool param_grads, DeviceArena& arena);

  Sequential& host_;
  GpuContext& ctx_;
  ConvEngine& conv_;
  ActFormat fmt_;
  Shape in_shape_;  // per sample
  std::vector<std::unique_ptr<Op>> ops_;
  std::vector<ParamSlot> slots_;
  int64_t param_count_ = 0;
  DeviceBuffer<float> param_buf_, grad_buf_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  DeviceBuffer<std::byte> packed_buf_, packed_grad_buf_;  // conv weights in fmt, and their gradients
  DeviceSumReducer reduce_;
  int world_ = 1;
  int64_t train_forwards_ = 0;  // since upload()
  int last_n_ = 0;
};

}  // namespace gt::cuda
