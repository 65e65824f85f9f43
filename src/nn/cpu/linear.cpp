// Linear layer (y = x W^T + b, PyTorch layout weight [out, in]) and its GEMM kernels.

#include <string>
#include <vector>

#include "nn/cpu/kernels.h"
#include "nn/cpu/scratch.h"
#include "nn/layers.h"

namespace gt {
namespace cpu {

void linear_forward(float* out, const float* in, const float* weight, const float* bias, int N, int IN, int OUT,
                    float weight_scale) {
  sgemm(false, true, N, OUT, IN, weight_scale, in, IN, weight, IN, 0.f, out, OUT);
  if (!bias) return;
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OUT; ++o) out[static_cast<int64_t>(n) * OUT + o] += bias[o];
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                     const float* weight, int N, int IN, int OUT, float weight_scale) {
  // dweight [OUT, IN] += dout[N, OUT]^T * in [N, IN]
  if (dweight) sgemm(true, false, OUT, IN, N, weight_scale, dout, OUT, in, IN, 1.f, dweight, IN);
  if (dbias) {
    for (int o = 0; o < OUT; ++o) {
      double s = 0.0;
      for (int n = 0; n < N; ++n) s += dout[static_cast<int64_t>(n) * OUT + o];
      dbias[o] += static_cast<float>(s);
    }
  }
  // dinp [N, IN] = dout [N, OUT] * weight [OUT, IN]
  if (dinp)
    sgemm(false, false, N, IN, OUT, weight_scale, dout, OUT, weight, IN, 0.f, dinp, IN);
}

}  // namespace cpu

namespace {

class Linear final : public Layer {
 public:
  Linear(int in_features, int out_features, bool bias, float weight_scale)
      : in_(checked(in_features, out_features)),
        out_(out_features),
        has_bias_(bias),
        scale_(weight_scale),
        weight_(cpu::make_param("weight", {out_features, in_features})) {
    if (bias) bias_ = cpu::make_param("bias", {out_features});
  }

  std::string kind() const override { return "Linear"; }
  LayerAttrs attrs() const override {
    LayerAttrs a;
    a.in_channels = in_;
    a.out_channels = out_;
    a.bias = has_bias_;
    a.weight_scale = scale_;
    return a;
  }

  Shape output_shape(const Shape& in) const override {
    if (in.size() != 2 || in[1] != in_)
      user_error("Linear(in_features {}, out_features {}) cannot take an input of shape {}: expected [N, {}]", in_,
                 out_, shape_str(in), in_);
    return {in[0], out_};
  }

  Tensor forward(const Tensor& x, Mode) override {
    Tensor y(output_shape(x.shape()));
    cpu::linear_forward(y.f32(), x.f32(), weight_.value.f32(), has_bias_ ? bias_.value.f32() : nullptr,
                        static_cast<int>(x.dim(0)), in_, out_, scale_);
    x_ = x;  // shares the buffer; layers never write their inputs
    return y;
  }

  Tensor backward(const Tensor& dy, bool param_grads) override {
    GT_CHECK(x_.defined(), "Linear backward called before forward");
    GT_CHECK(dy.shape() == Shape({x_.dim(0), out_}), "Linear backward got {} for input {}", dy.str(), x_.str());
    Tensor dx(x_.shape());
    cpu::linear_backward(dx.f32(), param_grads ? weight_.grad.f32() : nullptr,
                         param_grads && has_bias_ ? bias_.grad.f32() : nullptr, dy.f32(), x_.f32(),
                         weight_.value.f32(), static_cast<int>(x_.dim(0)), in_, out_, scale_);
    return dx;
  }

  Tensor tangent(const Tensor& t) override {
    GT_CHECK(t.shape() == x_.shape(), "Linear tangent of {}, forward saw {}", t.str(), x_.str());
    Tensor y({x_.dim(0), out_});
    cpu::linear_forward(y.f32(), t.f32(), weight_.value.f32(), nullptr, static_cast<int>(x_.dim(0)), in_, out_,
                        scale_);
    return y;
  }

  Tensor backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta) override {
    cpu::linear_backward(nullptr, weight_.grad.f32(), nullptr, delta.f32(), t.f32(), weight_.value.f32(),
                         static_cast<int>(x_.dim(0)), in_, out_, scale_);
    return dy_bar.defined() ? backward(dy_bar, true) : Tensor();
  }

  std::vector<Param*> params() override {
    if (has_bias_) return {&weight_, &bias_};
    return {&weight_};
  }

 private:
  static int checked(int in_features, int out_features) {
    if (in_features <= 0 || out_features <= 0)
      user_error("Linear needs positive sizes, got in_features {} and out_features {}", in_features, out_features);
    return in_features;
  }

  int in_, out_;
  bool has_bias_;
  float scale_;
  Param weight_, bias_;
  Tensor x_;  // the last input, needed for dweight
};

}  // namespace

LayerPtr make_linear(int in_features, int out_features, bool bias, float weight_scale) {
  return std::make_unique<Linear>(in_features, out_features, bias, weight_scale);
}

}  // namespace gt
