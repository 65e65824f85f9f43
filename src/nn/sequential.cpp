// Sequential container.
#include "nn/sequential.h"

namespace gt {

Tensor Sequential::forward(const Tensor& x, Mode mode) {
  Tensor h = x;
  for (auto& l : layers_) h = l->forward(h, mode);
  return h;
}

Tensor Sequential::backward(const Tensor& dy) {
  Tensor g = dy;
  for (size_t i = layers_.size(); i-- > 0;) {
    g = layers_[i]->backward(g);
    if (backward_hook_) backward_hook_(i);
  }
  return g;
}

Shape Sequential::output_shape(const Shape& in) const {
  Shape s = in;
  for (const auto& l : layers_) s = l->output_shape(s);
  return s;
}

std::vector<NamedParam> Sequential::named_params() {
  std::vector<NamedParam> out;
  for (size_t i = 0; i < layers_.size(); ++i)
    for (Param* p : layers_[i]->params()) out.push_back({prefix_ + "." + std::to_string(i) + "." + p->name, p});
  return out;
}

std::vector<NamedBuffer> Sequential::named_buffers() {
  std::vector<NamedBuffer> out;
  for (size_t i = 0; i < layers_.size(); ++i)
    for (Buffer* b : layers_[i]->buffers()) out.push_back({prefix_ + "." + std::to_string(i) + "." + b->name, b});
  return out;
}

int64_t Sequential::param_count() {
  int64_t n = 0;
  for (auto& np : named_params()) n += np.param->value.numel();
  return n;
}

void Sequential::zero_grad() {
  for (auto& np : named_params()) np.param->grad.zero();
}

}  // namespace gt
