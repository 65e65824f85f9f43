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
  float weight_scale = 1.f;         // Conv2d, ConvTranspose2d, Linear: equalized learning rate's runtime scale
  int group = 0;                    // MinibatchStddev: samples per group
};

struct Param;
struct Buffer;
struct NamedParam {
  std::string name;  // "main.0.weight"
  Param* param;
};
struct NamedBuffer {
  std::string name;  // "main.1.running_mean"
  Buffer* buffer;
};

// A layer keeps what its backward needs from the last forward call; forward then backward, in order.
class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string kind() const = 0;                   // "Conv2d", "BatchNorm2d", ...
  virtual Shape output_shape(const Shape& in) const = 0;  // full shapes with the batch dimension
  virtual Tensor forward(const Tensor& x, Mode mode) = 0;
  // Returns dL/dx and, when param_grads, accumulates dL/dparam into each Param::grad.
  virtual Tensor backward(const Tensor& dy, bool param_grads) = 0;
  Tensor backward(const Tensor& dy) { return backward(dy, true); }

  // The double backward of a gradient penalty (Net::backward_of_input_grad), for the last forward
  // y = f(x; theta) with Jacobian J = dy/dx. tangent(t) is J t (t shaped like x). backward_second(dy_bar, t,
  // delta), with delta the output gradient the first backward gave this layer, accumulates into the
  // parameter gradients d/dtheta of  phi = dy_bar . f(x; theta) + delta . J(x; theta) t  and returns d(phi)/dx;
  // an undefined dy_bar stands for zero, and an undefined result for a zero gradient (no dy_bar and a
  // Jacobian that does not depend on x: convolutions, piecewise linear activations). The base versions
  // refuse by name: batch norm, which mixes the samples, has none.
  virtual Tensor tangent(const Tensor& t);
  virtual Tensor backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta);
  virtual std::vector<Param*> params() { return {}; }
  virtual std::vector<Buffer*> buffers() { return {}; }
  // params() and buffers() with the names the layer gives them: their local names ("weight"), or for a layer
  // made of named layers (Fade) "<inner name>.<local name>". A network prefixes them with the layer's own name.
  virtual std::vector<NamedParam> scoped_params();
  virtual std::vector<NamedBuffer> scoped_buffers();
  virtual LayerAttrs attrs() const { return {}; }
};

using LayerPtr = std::unique_ptr<Layer>;

}  // namespace gt
