// Net: a network as the one GAN step sees it, on any device: forward, backward to parameter and input gradients, flat parameters and gradients, synchronized batch norm.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/layer.h"

namespace gt {

// Where one named parameter lives in a network's flat buffers (named_params() order, PyTorch names).
struct ParamSlot {
  std::string name;  // "main.0.weight"
  int64_t offset = 0, numel = 0;
};

// Sums per-channel batch-norm values over the data-parallel ranks, in place, in the network's memory
// (host doubles for the CPU network, device doubles for the CUDA one): synchronized batch norm.
using BatchStatsReducer = std::function<void(double* values, int64_t count)>;

struct BackwardOptions {
  bool param_grads = true;   // accumulate dL/dparam into grads(); false lets a backend skip them
  bool input_grad = false;   // return dL/dinput (else an empty tensor)
  // Called while backward runs, after each layer, with the lowest flat offset whose gradient is final
  // for this backward: [offset, flat_size()) will not change again. The gradient reduction starts its
  // buckets from there, so the sum over the ranks overlaps the rest of backward.
  std::function<void(int64_t lowest_final)> on_final;
  // Keep what backward_of_input_grad needs (every layer's output gradient), until the next forward.
  bool create_graph = false;
};

// A network on one device. Activations are tensors on device() in the network's storage (host f32
// tensors for the CPU; device memory in the engine's format for the GPU, alive until the engine gives
// its step memory back). Backward follows the last forward. Gradients accumulate (PyTorch semantics).
//
// The gradient penalty's double backward: backward(dy, {input_grad, create_graph}) returns g = dL/dx and
// keeps every layer's output gradient; backward_of_input_grad(v) then accumulates d(v . g)/dtheta into
// grads(), v held constant: the exact gradient of any function of g whose gradient with respect to g is v
// (docs/objectives.md "The exact penalty gradient").
class Net {
 public:
  virtual ~Net() = default;
  virtual Device device() const = 0;
  virtual Tensor forward(const Tensor& x, Mode mode) = 0;
  virtual Tensor backward(const Tensor& dy, const BackwardOptions& options) = 0;
  virtual void zero_grad() = 0;
  // After backward with create_graph: accumulates d(v . dL/dx)/dtheta into grads() (v shaped and stored
  // like the input); options.on_final as in backward. A layer without a double backward (batch norm) is a
  // UserError naming it.
  virtual void backward_of_input_grad(const Tensor& v, const BackwardOptions& options) = 0;

  // Flat f32 parameters and gradients on device(), flat_size() elements each: every parameter is the
  // range of its ParamSlot; what lies between slots (alignment) is zero and stays zero.
  virtual float* flat_params() = 0;
  virtual float* flat_grads() = 0;
  virtual int64_t flat_size() const = 0;
  virtual const std::vector<ParamSlot>& param_slots() const = 0;

  // Batch norm over the global batch of `world` equal shards: every batch-norm layer sums its
  // per-channel values with reduce (empty: this rank's shard alone).
  virtual void set_batch_stats_reducer(BatchStatsReducer reduce, int world) = 0;

  // The fade-in weight of every Fade layer (Progressive GAN transitions), used from the next forward on. A
  // network without one ignores it.
  virtual void set_fade_alpha(float alpha) { (void)alpha; }
};

}  // namespace gt
