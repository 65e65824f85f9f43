// Sequential: layers run in order, named "<prefix>.<index>" exactly as torch.nn.Sequential names them.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "nn/layer.h"

namespace gt {

struct NamedParam {
  std::string name;  // "main.0.weight"
  Param* param;
};
struct NamedBuffer {
  std::string name;  // "main.1.running_mean"
  Buffer* buffer;
};

class Sequential {
 public:
  explicit Sequential(std::string prefix = "main") : prefix_(std::move(prefix)) {}
  void add(LayerPtr layer) { layers_.push_back(std::move(layer)); }
  size_t size() const { return layers_.size(); }
  Layer& layer(size_t i) { return *layers_.at(i); }

  Tensor forward(const Tensor& x, Mode mode);
  Tensor backward(const Tensor& dy);  // returns dL/dinput
  // Called by backward() right after layer i's backward, while layers below it are still to run:
  // data-parallel training starts the all-reduce of finished gradients there. Empty = none.
  void set_backward_hook(std::function<void(size_t layer_index)> hook) { backward_hook_ = std::move(hook); }
  Shape output_shape(const Shape& in) const;

  std::vector<NamedParam> named_params();
  std::vector<NamedBuffer> named_buffers();
  int64_t param_count();
  void zero_grad();

 private:
  std::string prefix_;
  std::vector<LayerPtr> layers_;
  std::function<void(size_t)> backward_hook_;
};

}  // namespace gt
