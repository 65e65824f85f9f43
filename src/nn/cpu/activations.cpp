// Element-wise activation kernels and the ReLU, LeakyReLU, Tanh and Sigmoid layers.
#include <string>

#include "core/activation_math.h"
#include "nn/cpu/kernels.h"
#include "nn/layers.h"

namespace gt {
namespace cpu {
namespace {
// Element-wise work is memory-bound; below this many values one thread is faster than waking a team.
constexpr int64_t kParallelMinValues = 1 << 16;
}  // namespace

void relu_forward(float* out, const float* in, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinValues)
  for (int64_t i = 0; i < n; ++i) out[i] = relu_value(in[i]);
}

void relu_backward(float* dinp, const float* dout, const float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinValues)
  for (int64_t i = 0; i < n; ++i) dinp[i] = relu_grad(dout[i], out[i]);
}

void leaky_relu_forward(float* out, const float* in, int64_t n, float slope) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinValues)
  for (int64_t i = 0; i < n; ++i) out[i] = leaky_relu_value(in[i], slope);
}

void leaky_relu_backward(float* dinp, const float* dout, const float* in, int64_t n, float slope) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinValues)
  for (int64_t i = 0; i < n; ++i) dinp[i] = leaky_relu_grad(dout[i], in[i], slope);
}

void tanh_forward(float* out, const float* in, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMinValues / 8)
  for (int64_t i = 0; i < n; ++i) out[i] = tanh_value(in[i]);
}

void tanh_backward(float* dinp, const float* dout, const float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinValues)
  for (int64_t i = 0; i < n; ++i) dinp[i] = tanh_grad(dout[i], out[i]);
}

void sigmoid_forward(float* out, const float* in, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMinValues / 8)
  for (int64_t i = 0; i < n; ++i) out[i] = sigmoid_value(in[i]);
}

void sigmoid_backward(float* dinp, const float* dout, const float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinValues)
  for (int64_t i = 0; i < n; ++i) dinp[i] = sigmoid_grad(dout[i], out[i]);
}

void tanh_second(float* dinp, const float* delta, const float* t, const float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinValues)
  for (int64_t i = 0; i < n; ++i) dinp[i] += delta[i] * t[i] * tanh_curvature(out[i]);
}

void sigmoid_second(float* dinp, const float* delta, const float* t, const float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMinValues)
  for (int64_t i = 0; i < n; ++i) dinp[i] += delta[i] * t[i] * sigmoid_curvature(out[i]);
}

}  // namespace cpu

namespace {

// The kernels an activation layer runs, whether its backward needs the input or the output, and its
// curvature term for the double backward (null: piecewise linear, f'' = 0 almost everywhere).
struct ActivationKernels {
  const char* kind;
  void (*forward)(float* out, const float* in, int64_t n, float slope);
  void (*backward)(float* dinp, const float* dout, const float* saved, int64_t n, float slope);
  bool backward_uses_input;
  void (*second)(float* dinp, const float* delta, const float* t, const float* out, int64_t n) = nullptr;
};

class Activation final : public Layer {
 public:
  Activation(const ActivationKernels& k, float slope) : k_(k), slope_(slope) {}

  std::string kind() const override { return k_.kind; }
  LayerAttrs attrs() const override {
    LayerAttrs a;
    a.slope = slope_;
    return a;
  }
  Shape output_shape(const Shape& in) const override { return in; }

  Tensor forward(const Tensor& x, Mode) override {
    Tensor y(x.shape());
    k_.forward(y.f32(), x.f32(), x.numel(), slope_);
    saved_ = k_.backward_uses_input ? x : y;  // shares the buffer; layers never write their inputs
    return y;
  }

  Tensor backward(const Tensor& dy, bool) override {
    GT_CHECK(saved_.defined(), "{} backward called before forward", k_.kind);
    GT_CHECK(dy.shape() == saved_.shape(), "{} backward got {}, forward saw {}", k_.kind, dy.str(), saved_.str());
    Tensor dx(dy.shape());
    k_.backward(dx.f32(), dy.f32(), saved_.f32(), dy.numel(), slope_);
    return dx;
  }

  // J is diagonal, f'(x): the backward's kernel applied to t.
  Tensor tangent(const Tensor& t) override { return backward(t, false); }

  // dy_bar's part f'(x) dy_bar, plus delta t f''(x) where the activation is curved.
  Tensor backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta) override {
    if (!k_.second) return dy_bar.defined() ? backward(dy_bar, false) : Tensor();
    Tensor dx = dy_bar.defined() ? backward(dy_bar, false) : Tensor::zeros(t.shape());
    k_.second(dx.f32(), delta.f32(), t.f32(), saved_.f32(), t.numel());
    return dx;
  }

 private:
  ActivationKernels k_;
  float slope_;
  Tensor saved_;
};

const ActivationKernels kRelu{
    "ReLU", [](float* o, const float* i, int64_t n, float) { cpu::relu_forward(o, i, n); },
    [](float* d, const float* g, const float* y, int64_t n, float) { cpu::relu_backward(d, g, y, n); }, false};
const ActivationKernels kLeakyRelu{"LeakyReLU", cpu::leaky_relu_forward, cpu::leaky_relu_backward, true};
const ActivationKernels kTanh{
    "Tanh", [](float* o, const float* i, int64_t n, float) { cpu::tanh_forward(o, i, n); },
    [](float* d, const float* g, const float* y, int64_t n, float) { cpu::tanh_backward(d, g, y, n); }, false,
    cpu::tanh_second};
const ActivationKernels kSigmoid{
    "Sigmoid", [](float* o, const float* i, int64_t n, float) { cpu::sigmoid_forward(o, i, n); },
    [](float* d, const float* g, const float* y, int64_t n, float) { cpu::sigmoid_backward(d, g, y, n); }, false,
    cpu::sigmoid_second};

}  // namespace

LayerPtr make_relu() { return std::make_unique<Activation>(kRelu, 0.f); }
LayerPtr make_leaky_relu(float slope) { return std::make_unique<Activation>(kLeakyRelu, slope); }
LayerPtr make_tanh() { return std::make_unique<Activation>(kTanh, 0.f); }
LayerPtr make_sigmoid() { return std::make_unique<Activation>(kSigmoid, 0.f); }

}  // namespace gt
