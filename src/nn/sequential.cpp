// Sequential: the layers in order, their parameters in flat buffers, and the backward's finality offsets.
#include "nn/sequential.h"

#include <algorithm>
#include <cstring>

#include "nn/layers.h"

namespace gt {

namespace {
constexpr int64_t kAlignFloats = 16;  // 64 bytes: where a parameter tensor of its own would start
int64_t aligned(int64_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }
}  // namespace

void Sequential::add(LayerPtr layer) { add(std::move(layer), prefix_ + "." + std::to_string(layers_.size())); }

void Sequential::add(LayerPtr layer, std::string name) {
  layers_.push_back(std::move(layer));
  names_.push_back(std::move(name));
  rebuild_flat();
}

void Sequential::add_all(std::vector<NamedLayer> layers) {
  for (NamedLayer& l : layers) {
    layers_.push_back(std::move(l.layer));
    names_.push_back(std::move(l.name));
  }
  rebuild_flat();
}

void Sequential::rebuild_flat() {
  std::vector<NamedParam> named = named_params();
  slots_.clear();
  int64_t size = 0;
  for (const NamedParam& np : named) {
    const int64_t offset = aligned(size);
    slots_.push_back({np.name, offset, np.param->value.numel()});
    size = offset + np.param->value.numel();
  }
  Tensor values({aligned(size)}), grads({aligned(size)});
  for (size_t i = 0; i < named.size(); ++i) {
    Param& p = *named[i].param;
    const Shape shape = p.value.shape();
    Tensor v = values.view(slots_[i].offset, shape), g = grads.view(slots_[i].offset, shape);
    v.copy_from(p.value);
    if (p.grad.defined()) g.copy_from(p.grad);
    p.value = v;
    p.grad = g;
  }
  flat_values_ = values;
  flat_grads_ = grads;
  // Backward runs from the last layer down: after layer i, the gradients of layers i.. are final.
  lowest_final_.assign(layers_.size(), aligned(size));
  int64_t lowest = aligned(size);
  size_t slot = slots_.size();
  for (size_t i = layers_.size(); i-- > 0;) {
    for (size_t k = layers_[i]->params().size(); k > 0; --k) lowest = slots_[--slot].offset;
    lowest_final_[i] = lowest;
  }
}

std::vector<NamedParam> Layer::scoped_params() {
  std::vector<NamedParam> out;
  for (Param* p : params()) out.push_back({p->name, p});
  return out;
}

std::vector<NamedBuffer> Layer::scoped_buffers() {
  std::vector<NamedBuffer> out;
  for (Buffer* b : buffers()) out.push_back({b->name, b});
  return out;
}

Tensor Layer::tangent(const Tensor&) {
  user_error("{} has no double backward: a critic with a gradient penalty (loss.gp_weight) cannot hold it{}", kind(),
             kind() == "BatchNorm2d" ? " (batch norm mixes the samples; use model.d_norm: layer or none)" : "");
}

Tensor Layer::backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta) {
  (void)dy_bar, (void)delta;
  return tangent(t);  // refuses by name
}

Tensor Sequential::forward(const Tensor& x, Mode mode) {
  deltas_.clear();
  Tensor h = x;
  for (auto& l : layers_) h = l->forward(h, mode);
  return h;
}

Tensor Sequential::backward(const Tensor& dy) {
  return backward(dy, {.param_grads = true, .input_grad = true, .on_final = {}});
}

Tensor Sequential::backward(const Tensor& dy, const BackwardOptions& options) {
  deltas_.clear();
  if (options.create_graph) deltas_.resize(layers_.size());
  Tensor g = dy;
  for (size_t i = layers_.size(); i-- > 0;) {
    if (options.create_graph) deltas_[i] = g;
    g = layers_[i]->backward(g, options.param_grads);
    if (options.on_final && options.param_grads) options.on_final(lowest_final_[i]);
  }
  return options.input_grad ? g : Tensor();
}

// Forward mode up (the tangents t_i = J_i ... J_1 v at every layer's input), then reverse mode down:
// layer i adds d/dtheta of [delta_i . J_i t_i] and of the adjoint from above, and passes its d/dx down.
void Sequential::backward_of_input_grad(const Tensor& v, const BackwardOptions& options) {
  GT_CHECK(deltas_.size() == layers_.size(), "backward_of_input_grad without a backward with create_graph");
  std::vector<Tensor> tangents(layers_.size());
  Tensor t = v;
  for (size_t i = 0; i < layers_.size(); ++i) {
    tangents[i] = t;
    if (i + 1 < layers_.size()) t = layers_[i]->tangent(t);
  }
  Tensor adjoint;  // undefined: zero (no layer above has curvature)
  for (size_t i = layers_.size(); i-- > 0;) {
    adjoint = layers_[i]->backward_second(adjoint, tangents[i], deltas_[i]);
    if (options.on_final) options.on_final(lowest_final_[i]);
  }
  deltas_.clear();
}

void Sequential::zero_grad() {
  if (flat_grads_.defined()) flat_grads_.zero();
}

void Sequential::set_batch_stats_reducer(BatchStatsReducer reduce, int world) {
  (void)world;  // the CPU layer sums its element count with the statistics
  for (auto& l : layers_) gt::set_batch_stats_reducer(*l, reduce);
}

Shape Sequential::output_shape(const Shape& in) const {
  Shape s = in;
  for (const auto& l : layers_) s = l->output_shape(s);
  return s;
}

namespace {
std::string joined(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}
}  // namespace

std::vector<NamedParam> Sequential::named_params() {
  std::vector<NamedParam> out;
  for (size_t i = 0; i < layers_.size(); ++i)
    for (const NamedParam& p : layers_[i]->scoped_params()) out.push_back({joined(names_[i], p.name), p.param});
  return out;
}

std::vector<NamedBuffer> Sequential::named_buffers() {
  std::vector<NamedBuffer> out;
  for (size_t i = 0; i < layers_.size(); ++i)
    for (const NamedBuffer& b : layers_[i]->scoped_buffers()) out.push_back({joined(names_[i], b.name), b.buffer});
  return out;
}

void Sequential::set_fade_alpha(float alpha) {
  for (auto& l : layers_)
    if (auto* fade = dynamic_cast<Fade*>(l.get())) fade->set_alpha(alpha);
}

int64_t Sequential::param_count() const {
  int64_t n = 0;
  for (const ParamSlot& s : slots_) n += s.numel;
  return n;
}

}  // namespace gt
