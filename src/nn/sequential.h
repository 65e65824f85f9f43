// Sequential: layers run in order, named "<prefix>.<index>" exactly as torch.nn.Sequential names them; the CPU implementation of Net.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "nn/layer.h"
#include "nn/layers.h"
#include "nn/net.h"

namespace gt {

// Every parameter's value and gradient is a view into two flat host buffers (each parameter starts
// on a 64-byte boundary, as a tensor of its own would), so the gradient reduction and the optimizers
// see one range per network, as on the GPU.
class Sequential final : public Net {
 public:
  explicit Sequential(std::string prefix = "main") : prefix_(std::move(prefix)) {}
  // Appends a layer and moves every parameter (values and gradients kept) into the flat buffers. Its
  // parameters are named "<prefix>.<index>.<local>"; with a name, "<name>.<local>" (an empty name: the layer's
  // scoped names alone), so a network that grows (Progressive GAN) keeps each parameter's name.
  void add(LayerPtr layer);
  void add(LayerPtr layer, std::string name);
  // Appends layers with their names and rebuilds the flat buffers once (a large network is built in one go).
  void add_all(std::vector<NamedLayer> layers);
  size_t size() const { return layers_.size(); }
  Layer& layer(size_t i) { return *layers_.at(i); }

  Device device() const override { return Device::cpu; }
  Tensor forward(const Tensor& x, Mode mode) override;
  Tensor backward(const Tensor& dy);  // returns dL/dinput; parameter gradients accumulate
  Tensor backward(const Tensor& dy, const BackwardOptions& options) override;
  void zero_grad() override;
  void backward_of_input_grad(const Tensor& v, const BackwardOptions& options) override;
  float* flat_params() override { return flat_values_.defined() ? flat_values_.f32() : nullptr; }
  float* flat_grads() override { return flat_grads_.defined() ? flat_grads_.f32() : nullptr; }
  int64_t flat_size() const override { return flat_values_.defined() ? flat_values_.numel() : 0; }
  const std::vector<ParamSlot>& param_slots() const override { return slots_; }
  void set_batch_stats_reducer(BatchStatsReducer reduce, int world) override;
  void set_fade_alpha(float alpha) override;

  Shape output_shape(const Shape& in) const;
  std::vector<NamedParam> named_params();
  std::vector<NamedBuffer> named_buffers();
  int64_t param_count() const;  // elements of all parameters (alignment gaps not counted)

 private:
  void rebuild_flat();

  std::string prefix_;
  std::vector<LayerPtr> layers_;
  std::vector<std::string> names_;  // per layer: the prefix of its parameters' names
  Tensor flat_values_, flat_grads_;
  std::vector<ParamSlot> slots_;
  std::vector<int64_t> lowest_final_;  // per layer: lowest flat offset whose gradient is final after its backward
  std::vector<Tensor> deltas_;         // create_graph: the output gradient each layer's backward got
};

}  // namespace gt
