// Conv2d and ConvTranspose2d layers: PyTorch weight layouts, shape checks and cached buffers around the conv kernels.
#include <string>
#include <vector>

#include "nn/cpu/kernels.h"
#include "nn/cpu/scratch.h"
#include "nn/layers.h"

namespace gt {
namespace {

std::string describe(const char* kind, const Conv2dSpec& s) {
  return fmt::format("{}(in_channels {}, out_channels {}, kernel {}, stride {}, padding {}, bias {}, weight scale {})",
                     kind, s.in_channels, s.out_channels, s.kernel, s.stride, s.padding, s.bias, s.weight_scale);
}

const Conv2dSpec& checked(const char* kind, const Conv2dSpec& s) {
  if (s.in_channels <= 0 || s.out_channels <= 0 || s.kernel <= 0 || s.stride <= 0 || s.padding < 0 ||
      !(s.weight_scale > 0.f))
    user_error("{} needs positive channels, kernel, stride and weight scale and a non-negative padding",
               describe(kind, s));
  return s;
}

// The batch and input-side sizes of x, after checking that x is [N, in_channels, H, W].
cpu::ConvGeometry input_geometry(const char* kind, const Conv2dSpec& s, const Shape& x) {
  if (x.size() != 4 || x[1] != s.in_channels || x[0] <= 0)
    user_error("{} cannot take an input of shape {}: expected [N, {}, H, W]", describe(kind, s), shape_str(x),
               s.in_channels);
  cpu::ConvGeometry g;
  g.batch = static_cast<int>(x[0]);
  g.in_channels = s.in_channels;
  g.in_h = static_cast<int>(x[2]);
  g.in_w = static_cast<int>(x[3]);
  g.out_channels = s.out_channels;
  g.kernel = s.kernel;
  g.stride = s.stride;
  g.padding = s.padding;
  g.weight_scale = s.weight_scale;
  return g;
}

LayerAttrs conv_attrs(const Conv2dSpec& s) {
  LayerAttrs a;
  a.in_channels = s.in_channels;
  a.out_channels = s.out_channels;
  a.kernel = s.kernel;
  a.stride = s.stride;
  a.padding = s.padding;
  a.bias = s.bias;
  a.weight_scale = s.weight_scale;
  return a;
}

Shape output_of(const cpu::ConvGeometry& g) { return {g.batch, g.out_channels, g.out_h, g.out_w}; }
Shape input_of(const cpu::ConvGeometry& g) { return {g.batch, g.in_channels, g.in_h, g.in_w}; }

class Conv2d final : public Layer {
 public:
  explicit Conv2d(const Conv2dSpec& s)
      : spec_(checked("Conv2d", s)),
        weight_(cpu::make_param("weight", {s.out_channels, s.in_channels, s.kernel, s.kernel})) {
    if (s.bias) bias_ = cpu::make_param("bias", {s.out_channels});
  }

  std::string kind() const override { return "Conv2d"; }
  LayerAttrs attrs() const override { return conv_attrs(spec_); }
  Shape output_shape(const Shape& in) const override { return output_of(geometry(in)); }

  Tensor forward(const Tensor& x, Mode) override {
    geom_ = geometry(x.shape());
    Tensor y(output_of(geom_));
    const size_t ws = cpu::conv2d_workspace_floats(geom_);
    cpu::conv2d_forward(y.f32(), x.f32(), weight_.value.f32(), spec_.bias ? bias_.value.f32() : nullptr, geom_,
                        cpu::scratch_floats(workspace_, ws), ws);
    x_ = x;  // shares the buffer; layers never write their inputs
    return y;
  }

  Tensor backward(const Tensor& dy, bool param_grads) override {
    GT_CHECK(x_.defined(), "Conv2d backward called before forward");
    GT_CHECK(dy.shape() == output_of(geom_), "Conv2d backward got {}, forward produced {}", dy.str(),
             shape_str(output_of(geom_)));
    Tensor dx(input_of(geom_));
    const size_t ws = cpu::conv2d_workspace_floats(geom_);
    cpu::conv2d_backward(dx.f32(), param_grads ? weight_.grad.f32() : nullptr,
                         param_grads && spec_.bias ? bias_.grad.f32() : nullptr, dy.f32(), x_.f32(),
                         weight_.value.f32(), geom_, cpu::scratch_floats(workspace_, ws), ws);
    return dx;
  }

  // Linear in x: J t is the convolution of t without the bias, and J does not depend on x.
  Tensor tangent(const Tensor& t) override {
    GT_CHECK(t.shape() == input_of(geom_), "Conv2d tangent of {}, forward saw {}", t.str(), shape_str(input_of(geom_)));
    Tensor y(output_of(geom_));
    const size_t ws = cpu::conv2d_workspace_floats(geom_);
    cpu::conv2d_forward(y.f32(), t.f32(), weight_.value.f32(), nullptr, geom_, cpu::scratch_floats(workspace_, ws), ws);
    return y;
  }

  // d(delta . conv(t; W))/dW is the weight gradient with t for the input; dy_bar's part is a plain backward.
  Tensor backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta) override {
    const size_t ws = cpu::conv2d_workspace_floats(geom_);
    cpu::conv2d_backward(nullptr, weight_.grad.f32(), nullptr, delta.f32(), t.f32(), weight_.value.f32(), geom_,
                         cpu::scratch_floats(workspace_, ws), ws);
    return dy_bar.defined() ? backward(dy_bar, true) : Tensor();
  }

  std::vector<Param*> params() override {
    if (spec_.bias) return {&weight_, &bias_};
    return {&weight_};
  }

 private:
  cpu::ConvGeometry geometry(const Shape& x) const {
    cpu::ConvGeometry g = input_geometry("Conv2d", spec_, x);
    g.out_h = cpu::conv_out_size(g.in_h, g.kernel, g.stride, g.padding);
    g.out_w = cpu::conv_out_size(g.in_w, g.kernel, g.stride, g.padding);
    if (g.out_h <= 0 || g.out_w <= 0 || g.in_h + 2 * g.padding < g.kernel || g.in_w + 2 * g.padding < g.kernel)
      user_error("{} cannot take an input of shape {}: the padded image is smaller than the kernel",
                 describe("Conv2d", spec_), shape_str(x));
    return g;
  }

  Conv2dSpec spec_;
  Param weight_, bias_;
  cpu::ConvGeometry geom_;          // of the last forward
  Tensor x_;                        // the last input, needed for dweight
  std::vector<float> workspace_;    // the kernels' per-thread buffers, kept between calls
};

class ConvTranspose2d final : public Layer {
 public:
  explicit ConvTranspose2d(const Conv2dSpec& s)
      : spec_(checked("ConvTranspose2d", s)),
        weight_(cpu::make_param("weight", {s.in_channels, s.out_channels, s.kernel, s.kernel})) {
    if (s.bias) bias_ = cpu::make_param("bias", {s.out_channels});
  }

  std::string kind() const override { return "ConvTranspose2d"; }
  LayerAttrs attrs() const override { return conv_attrs(spec_); }
  Shape output_shape(const Shape& in) const override { return output_of(geometry(in)); }

  Tensor forward(const Tensor& x, Mode) override {
    geom_ = geometry(x.shape());
    Tensor y(output_of(geom_));
    const size_t ws = cpu::conv_transpose2d_workspace_floats(geom_);
    cpu::conv_transpose2d_forward(y.f32(), x.f32(), weight_.value.f32(), spec_.bias ? bias_.value.f32() : nullptr,
                                  geom_, cpu::scratch_floats(workspace_, ws), ws);
    x_ = x;  // shares the buffer; layers never write their inputs
    return y;
  }

  Tensor backward(const Tensor& dy, bool param_grads) override {
    GT_CHECK(x_.defined(), "ConvTranspose2d backward called before forward");
    GT_CHECK(dy.shape() == output_of(geom_), "ConvTranspose2d backward got {}, forward produced {}", dy.str(),
             shape_str(output_of(geom_)));
    Tensor dx(input_of(geom_));
    const size_t ws = cpu::conv_transpose2d_workspace_floats(geom_);
    cpu::conv_transpose2d_backward(dx.f32(), param_grads ? weight_.grad.f32() : nullptr,
                                   param_grads && spec_.bias ? bias_.grad.f32() : nullptr, dy.f32(), x_.f32(),
                                   weight_.value.f32(), geom_, cpu::scratch_floats(workspace_, ws), ws);
    return dx;
  }

  Tensor tangent(const Tensor& t) override {
    GT_CHECK(t.shape() == input_of(geom_), "ConvTranspose2d tangent of {}, forward saw {}", t.str(),
             shape_str(input_of(geom_)));
    Tensor y(output_of(geom_));
    const size_t ws = cpu::conv_transpose2d_workspace_floats(geom_);
    cpu::conv_transpose2d_forward(y.f32(), t.f32(), weight_.value.f32(), nullptr, geom_,
                                  cpu::scratch_floats(workspace_, ws), ws);
    return y;
  }

  Tensor backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta) override {
    const size_t ws = cpu::conv_transpose2d_workspace_floats(geom_);
    cpu::conv_transpose2d_backward(nullptr, weight_.grad.f32(), nullptr, delta.f32(), t.f32(), weight_.value.f32(),
                                   geom_, cpu::scratch_floats(workspace_, ws), ws);
    return dy_bar.defined() ? backward(dy_bar, true) : Tensor();
  }

  std::vector<Param*> params() override {
    if (spec_.bias) return {&weight_, &bias_};
    return {&weight_};
  }

 private:
  cpu::ConvGeometry geometry(const Shape& x) const {
    cpu::ConvGeometry g = input_geometry("ConvTranspose2d", spec_, x);
    g.out_h = cpu::conv_transpose_out_size(g.in_h, g.kernel, g.stride, g.padding);
    g.out_w = cpu::conv_transpose_out_size(g.in_w, g.kernel, g.stride, g.padding);
    if (g.out_h <= 0 || g.out_w <= 0)
      user_error("{} cannot take an input of shape {}: the output would be empty", describe("ConvTranspose2d", spec_),
                 shape_str(x));
    return g;
  }

  Conv2dSpec spec_;
  Param weight_, bias_;
  cpu::ConvGeometry geom_;          // of the last forward
  Tensor x_;                        // the last input, needed for dweight
  std::vector<float> workspace_;    // the kernels' per-thread buffers, kept between calls
};

}  // namespace

LayerPtr make_conv2d(const Conv2dSpec& s) { return std::make_unique<Conv2d>(s); }
LayerPtr make_conv_transpose2d(const Conv2dSpec& s) { return std::make_unique<ConvTranspose2d>(s); }

}  // namespace gt
