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
};

using LayerPtr = std::unique_ptr<Layer>;

}  // namespace gt
