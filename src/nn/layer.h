// Layer: forward/backward with named parameters (value + grad) and buffers, PyTorch names and layouts.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gt {

enum class Mode { train, eval };

struct Param {
  std::string name;  // local name: "weight", "bias"
  Tensor value;      // PyTorch layout
  Tensor grad;       // same shape; backward accumulates (+=) into it
};

struct Buffer {
  std::string name;  // "running_mean", "running_var", "num_batches_tracked"
  Tensor value;      // f32, or i64 for num_batches_tracked
};

// A layer's constructor arguments, for a backend that runs it its own way (the CUDA network mirrors a
// Sequential from these). Fields a kind does not have stay at their defaults.
struct LayerAttrs {
  int in_channels = 0, out_channels = 0;  // Conv2d, ConvTranspose2d; Linear: in/out features
  int kernel = 0, stride = 1, padding = 0;
  bool bias = false;
  float eps = 0.f, momentum = 0.f;  // BatchNorm2d
  float slope = 0.f;                // LeakyReLU
  Shape per_sample_shape;           // Reshape
};

// A layer keeps what its backward needs from the last forward call; forward then backward, in order.
class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string kind() const = 0;                   // "Conv2d", "BatchNorm2d", ...
  virtual Shape output_shape(const Shape& in) const = 0;  // full shapes with the batch dimension
  virtual Tensor forward(const Tensor& x, Mode mode) = 0;
  // Returns dL/dx and accumulates dL/dparam into each Param::grad.
  virtual Tensor backward(const Tensor& dy) = 0;
  virtual std::vector<Param*> params() { return {}; }
  virtual std::vector<Buffer*> buffers() { return {}; }
  virtual LayerAttrs attrs() const { return {}; }
};

using LayerPtr = std::unique_ptr<Layer>;

}  // namespace gt
