// Reshape layer: [N, ...] -> [N, per_sample_shape...] as a view of the same buffer (and back in backward).
#include <string>

#include "nn/layers.h"

namespace gt {
namespace {

class Reshape final : public Layer {
 public:
  explicit Reshape(Shape per_sample) : per_sample_(std::move(per_sample)) {
    for (int64_t d : per_sample_)
      if (d <= 0) user_error("Reshape needs positive sizes, got {}", shape_str(per_sample_));
  }

  std::string kind() const override { return "Reshape"; }
  LayerAttrs attrs() const override {
    LayerAttrs a;
    a.per_sample_shape = per_sample_;
    return a;
  }

  Shape output_shape(const Shape& in) const override {
    if (in.empty() || shape_numel(in) != in[0] * shape_numel(per_sample_))
      user_error("Reshape to per-sample shape {} cannot take an input of shape {}: each sample must have {} values",
                 shape_str(per_sample_), shape_str(in), shape_numel(per_sample_));
    Shape out{in[0]};
    out.insert(out.end(), per_sample_.begin(), per_sample_.end());
    return out;
  }

  Tensor forward(const Tensor& x, Mode) override {
    in_shape_ = x.shape();
    return x.reshaped(output_shape(x.shape()));
  }

  Tensor backward(const Tensor& dy, bool) override {
    GT_CHECK(!in_shape_.empty(), "Reshape backward called before forward");
    return dy.reshaped(in_shape_);
  }

  Tensor tangent(const Tensor& t) override { return t.reshaped(output_shape(in_shape_)); }
  Tensor backward_second(const Tensor& dy_bar, const Tensor&, const Tensor&) override {
    return dy_bar.defined() ? dy_bar.reshaped(in_shape_) : Tensor();
  }

 private:
  Shape per_sample_;
  Shape in_shape_;  // of the last forward
};

}  // namespace

LayerPtr make_reshape(Shape per_sample_shape) { return std::make_unique<Reshape>(std::move(per_sample_shape)); }

}  // namespace gt
