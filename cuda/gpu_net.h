// GpuNet: a Sequential of CPU layers mirrored on the GPU (cuDNN convolutions, our fused kernels) as a Net, with flat f32 parameters and gradients.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cuda/arena.h"
#include "cuda/conv.h"
#include "cuda/formats.h"
#include "nn/layer.h"
#include "nn/net.h"
#include "nn/sequential.h"

namespace gt::cuda {

// The Net the one GAN step drives on a GPU. Activations are device memory in the engine's ActFormat,
// taken from the arena set with set_arena() (forward's outputs stay until the caller rewinds it);
// tensors that carry them are Tensor::borrow views (Device::cuda, dtype f32 or bf16, logical shape
// [N, C, H, W] whatever the layout).
class GpuNet final : public Net {
 public:
  // Mirrors host's layers for inputs of per-sample shape per_sample_in ({nz, 1, 1} for G, {C, H, W} for D).
  // Conv2d/ConvTranspose2d and BatchNorm2d run in fmt; a BatchNorm2d followed by an activation is one fused
  // op; Linear runs in f32 (converted around it in bf16); Reshape is a view (a layout change in NHWC).
  // Conv2d, ConvTranspose2d and Linear honour their equalized-learning-rate weight_scale (the library
  // calls' alpha). PixelNorm, Upsample2x, AvgPool2x and MinibatchStddev run their f32 NCHW kernels
  // (progan.cu), through f32 NCHW copies in other formats. A Fade is an op whose two branches are op
  // lists of their own, mixed by a device-side weight (set_fade_alpha). A layer kind it does not know is a
  // UserError naming it.
  GpuNet(Sequential& host, const Shape& per_sample_in, GpuContext& ctx, ConvEngine& conv, const ActFormat& fmt);
  ~GpuNet();
  GpuNet(const GpuNet&) = delete;
  GpuNet& operator=(const GpuNet&) = delete;

  // The arena forward and backward take their memory from (the engine's, sized from forward_bytes and
  // backward_bytes).
  void set_arena(DeviceArena* arena) { arena_ = arena; }

  // Net: the step's view of the network.
  Device device() const override { return Device::cuda; }
  Tensor forward(const Tensor& x, Mode mode) override;
  Tensor backward(const Tensor& dy, const BackwardOptions& options) override;
  void zero_grad() override;
  // The gradient penalty's double backward (Net): the tangents up, then each op's second-order pass down,
  // everything from the arena (given back by the caller's rewind, with the kept output gradients).
  void backward_of_input_grad(const Tensor& v, const BackwardOptions& options) override;
  float* flat_params() override { return params_; }
  float* flat_grads() override { return grads_; }
  int64_t flat_size() const override { return param_count_; }
  const std::vector<ParamSlot>& param_slots() const override { return slots_; }
  // Synchronized batch norm: sum its per-channel sums (device doubles) with reduce, over world ranks of
  // equal batches.
  void set_batch_stats_reducer(BatchStatsReducer reduce, int world) override;
  // The fade-in weight of every Fade (and of the host's layers), used from the next forward on. It goes to
  // device floats the kernels read when they run, so a captured step replays with the current weight; call it
  // between steps (not while a step is being captured).
  void set_fade_alpha(float alpha) override;

  // Host <-> device: parameters and buffers (PyTorch layout on the host). upload() also packs the weights.
  void upload();
  void download();
  // After the optimizer changed the f32 master weights: refresh the copies convolutions read (bf16 or
  // NHWC); nothing to do for f32 NCHW, where convolutions read the master itself.
  void refresh_packed_weights();

  int64_t param_count() const { return param_count_; }
  GpuContext& context() { return ctx_; }
  DType storage_dtype() const { return fmt_.type == DataType::bf16 ? DType::bf16 : DType::f32; }

  // The raw forms behind forward() and backward(). Forward of N samples: x in fmt, the output in fmt from
  // the arena (kept until the caller rewinds). A training forward is counted (num_batches_tracked) through
  // the context's StepRecorder, so a replayed step counts too.
  void* forward(const void* x, int N, Mode mode, DeviceArena& arena);
  // Backward of the last forward from dy (fmt). Writes dL/dinput into dx when not null; accumulates the
  // parameter gradients into grads() when param_grads (else skips them: the G step's pass through D).
  // Calls hook(offset) after each op with the lowest flat offset whose gradient is now final. Everything
  // it takes from the arena is given back before it returns.
  // With create_graph, every op's output gradient is kept for backward_of_input_grad and nothing is
  // given back (the caller rewinds the arena after the double backward).
  void backward(const void* dy, void* dx, bool param_grads, DeviceArena& arena,
                const std::function<void(int64_t)>& hook = {}, bool create_graph = false);

  Shape output_shape(int N) const;           // [N, ...] of forward's output
  int64_t input_numel_per_sample() const;
  int64_t output_numel_per_sample() const;
  // Arena bytes one forward and one backward of N samples take at most (activations kept for backward,
  // gradients, batch-norm workspaces), with the arena's alignment.
  size_t forward_bytes(int N) const;
  size_t backward_bytes(int N) const;
  // Arena bytes of a gradient penalty's pass on N samples: forward, the kept backward, tangents and the
  // second-order pass.
  size_t penalty_bytes(int N) const;
  std::string describe() const;  // one line per op

 private:
  struct Op;
  void* alloc(DeviceArena& arena, int64_t elems, DataType t) const;
  size_t op_temp_bytes(const Op& op, int N, int copies) const;
  void forward_op(Op& op, const void* x, void* y, int N, Mode mode, DeviceArena& arena);
  void backward_op(Op& op, const void* dy, void* dx, int N, bool param_grads, DeviceArena& arena);
  // J t of the op's last forward into out (returns out, or t itself for a view).
  const void* tangent_op(Op& op, const void* t, void* out, int N, DeviceArena& arena);
  // The op's part of the double backward (Layer::backward_second): parameter gradients, and d(phi)/dx into
  // dx (when not null). Returns whether dx was written (false: zero).
  bool second_op(Op& op, const void* adjoint, const void* t, const void* delta, void* dx, int N, DeviceArena& arena);
  // The Progressive GAN ops (PixelNorm, Upsample2x, AvgPool2x, MinibatchStddev): forward (keeping their
  // statistics in the arena), J v for the backward (dy -> dx) or the tangent (t -> J t), and the double
  // backward's input part.
  void progan_forward(Op& op, const void* x, void* y, int N, DeviceArena& arena);
  void progan_jacobian(Op& op, const void* v, void* result, bool tangent, int N, DeviceArena& arena);
  void progan_second(Op& op, const void* adjoint, const void* t, const void* delta, void* dx, int N,
                     DeviceArena& arena);
  size_t saved_bytes(const Op& op, int N) const;
  // A Fade: its branches' forward, backward, tangent and double backward (the CPU FadeLayer's rules).
  void fade_forward(Op& op, const void* x, void* y, int N, Mode mode, DeviceArena& arena);
  void fade_backward(Op& op, const void* dy, void* dx, int N, bool param_grads, DeviceArena& arena);
  void fade_tangent(Op& op, const void* t, void* out, int N, DeviceArena& arena);
  bool fade_second(Op& op, const void* adjoint, void* dx, int N, DeviceArena& arena);
  // Ops for layers [0, count) of a list (the network's, or a Fade branch's), from the input shape [1, ...];
  // shape becomes the output's. Plans the list's in-place ops.
  void build_ops(std::vector<std::unique_ptr<Op>>& ops, size_t count, const std::function<Layer&(size_t)>& layer_at,
                 Shape& shape, const std::function<int64_t(const Param*)>& offset_of, size_t& packed_bytes);
  int64_t lowest_param_offset(const Op& op) const;  // of its parameters and its branches' (param_count_: none)
  void for_each_op(const std::function<void(Op&)>& f);  // every op, a Fade's inner ones after it
  std::pair<size_t, size_t> forward_use(const std::vector<std::unique_ptr<Op>>& ops, int N) const;
  std::pair<size_t, size_t> backward_use(const std::vector<std::unique_ptr<Op>>& ops, int N) const;
  size_t tangent_use(const std::vector<std::unique_ptr<Op>>& ops, int N) const;
  void conv_weight_grad(Op& op, const void* dy, const void* x, int N);
  // What a convolution reads as its weight: the packed copy (bf16 or NHWC), or the f32 master itself.
  const void* conv_weight(const Op& op) const;

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
  BatchStatsReducer reduce_;
  DeviceArena* arena_ = nullptr;
  int world_ = 1;
  int64_t train_forwards_ = 0;  // since upload()
  int last_n_ = 0;
  std::vector<const void*> deltas_;  // create_graph: each op's output gradient in the last backward
};

}  // namespace gt::cuda
