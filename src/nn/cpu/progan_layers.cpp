// Progressive GAN layers on the CPU: PixelNorm, Upsample2x, AvgPool2x, MinibatchStddev, each with its double backward.
#include <string>
#include <vector>

#include "nn/cpu/kernels.h"
#include "nn/cpu/scratch.h"
#include "nn/layers.h"

namespace gt {
namespace {

void check_nchw(const char* what, const Shape& in) {
  if (in.size() != 4 || in[0] <= 0 || in[1] <= 0 || in[2] <= 0 || in[3] <= 0)
    user_error("{} cannot take an input of shape {}: expected [N, C, H, W]", what, shape_str(in));
}

void add_into(Tensor& dst, const Tensor& src) {
  float* d = dst.f32();
  const float* s = src.f32();
  for (int64_t i = 0; i < dst.numel(); ++i) d[i] += s[i];
}

// Pixel-wise feature normalization (Karras et al. 2018, 4.2): each position's feature vector scaled to unit
// root mean square. Its Jacobian depends on x, so its double backward has a curvature term.
class PixelNorm final : public Layer {
 public:
  explicit PixelNorm(float eps) : eps_(eps) {}
  std::string kind() const override { return "PixelNorm"; }
  LayerAttrs attrs() const override {
    LayerAttrs a;
    a.eps = eps_;
    return a;
  }
  Shape output_shape(const Shape& in) const override {
    check_nchw("PixelNorm", in);
    return in;
  }

  Tensor forward(const Tensor& x, Mode) override {
    output_shape(x.shape());
    sizes(x.shape());
    Tensor y(x.shape());
    cpu::pixelnorm_forward(y.f32(), cpu::scratch_floats(rnorm_, static_cast<size_t>(n_) * hw_), x.f32(), n_, c_, hw_,
                           eps_);
    x_ = x;
    return y;
  }
  Tensor backward(const Tensor& dy, bool) override { return jacobian("backward", dy); }
  Tensor tangent(const Tensor& t) override { return jacobian("tangent", t); }
  Tensor backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta) override {
    check_like_input("double backward", t);
    Tensor dx(t.shape());
    cpu::pixelnorm_second(dx.f32(), delta.f32(), t.f32(), x_.f32(), rnorm_.data(), n_, c_, hw_);
    if (dy_bar.defined()) add_into(dx, backward(dy_bar, true));
    return dx;
  }

 private:
  Tensor jacobian(const char* what, const Tensor& t) {
    check_like_input(what, t);
    Tensor y(t.shape());
    cpu::pixelnorm_jacobian(y.f32(), t.f32(), x_.f32(), rnorm_.data(), n_, c_, hw_);
    return y;
  }
  void sizes(const Shape& s) {
    n_ = static_cast<int>(s[0]);
    c_ = static_cast<int>(s[1]);
    hw_ = static_cast<int>(s[2] * s[3]);
  }
  void check_like_input(const char* what, const Tensor& t) const {
    GT_CHECK(x_.defined(), "PixelNorm {} called before forward", what);
    GT_CHECK(t.shape() == x_.shape(), "PixelNorm {} got {}, forward saw {}", what, t.str(), x_.str());
  }

  float eps_;
  Tensor x_;
  int n_ = 0, c_ = 0, hw_ = 0;
  std::vector<float> rnorm_;
};

// Nearest-neighbour upsampling by 2 and 2x2 average pooling: linear maps with constant Jacobians, so the
// tangent is the forward and the double backward only passes dy_bar down.
class Resample2x final : public Layer {
 public:
  explicit Resample2x(bool up) : up_(up) {}
  std::string kind() const override { return up_ ? "Upsample2x" : "AvgPool2x"; }
  Shape output_shape(const Shape& in) const override {
    check_nchw(up_ ? "Upsample2x" : "AvgPool2x", in);
    if (up_) return {in[0], in[1], 2 * in[2], 2 * in[3]};
    if (in[2] % 2 || in[3] % 2)
      user_error("AvgPool2x cannot take an input of shape {}: height and width must be even", shape_str(in));
    return {in[0], in[1], in[2] / 2, in[3] / 2};
  }
  Tensor forward(const Tensor& x, Mode) override {
    in_ = x.shape();
    return apply(x);
  }
  Tensor backward(const Tensor& dy, bool) override {
    GT_CHECK(!in_.empty(), "{} backward called before forward", kind());
    GT_CHECK(dy.shape() == output_shape(in_), "{} backward got {}", kind(), dy.str());
    Tensor dx(in_);
    const int NC = static_cast<int>(in_[0] * in_[1]), H = static_cast<int>(in_[2]), W = static_cast<int>(in_[3]);
    if (up_)
      cpu::upsample2x_backward(dx.f32(), dy.f32(), NC, H, W);
    else
      cpu::avgpool2x_backward(dx.f32(), dy.f32(), NC, H, W);
    return dx;
  }
  Tensor tangent(const Tensor& t) override {
    GT_CHECK(t.shape() == in_, "{} tangent of {}", kind(), t.str());
    return apply(t);
  }
  Tensor backward_second(const Tensor& dy_bar, const Tensor&, const Tensor&) override {
    return dy_bar.defined() ? backward(dy_bar, true) : Tensor();
  }

 private:
  Tensor apply(const Tensor& x) const {
    Tensor y(output_shape(x.shape()));
    const int NC = static_cast<int>(x.dim(0) * x.dim(1)), H = static_cast<int>(x.dim(2)), W = static_cast<int>(x.dim(3));
    if (up_)
      cpu::upsample2x_forward(y.f32(), x.f32(), NC, H, W);
    else
      cpu::avgpool2x_forward(y.f32(), x.f32(), NC, H, W);
    return y;
  }

  bool up_;
  Shape in_;
};

// Minibatch standard deviation (Karras et al. 2018, 3): one more channel holding, for the samples of each
// group of `group` consecutive samples, the mean over [C, H, W] of their standard deviation. Groups follow
// the sample order, so a global batch split into shards that are multiples of the group gives the same
// values on any number of ranks.
class MinibatchStddev final : public Layer {
 public:
  MinibatchStddev(int group, float eps) : group_(group), eps_(eps) {
    if (group < 1) user_error("MinibatchStddev needs a group size of at least 1, got {}", group);
  }
  std::string kind() const override { return "MinibatchStddev"; }
  LayerAttrs attrs() const override {
    LayerAttrs a;
    a.group = group_;
    a.eps = eps_;
    return a;
  }
  // Shapes alone (a memory estimate asks with one sample); forward needs whole groups.
  Shape output_shape(const Shape& in) const override {
    check_nchw("MinibatchStddev", in);
    return {in[0], in[1] + 1, in[2], in[3]};
  }

  Tensor forward(const Tensor& x, Mode) override {
    Tensor y(output_shape(x.shape()));
    if (x.dim(0) % group_)
      user_error("MinibatchStddev with groups of {} cannot take a batch of {} samples: each rank's (micro-)batch must "
                 "be a multiple of model.mbstd_group",
                 group_, x.dim(0));
    sizes(x.shape());
    const size_t stats = static_cast<size_t>(n_ / group_) * c_ * hw_;
    cpu::mbstd_forward(y.f32(), cpu::scratch_floats(mean_, stats), cpu::scratch_floats(sigma_, stats), x.f32(), n_, c_,
                       hw_, group_, eps_);
    x_ = x;
    return y;
  }
  Tensor backward(const Tensor& dy, bool) override {
    check("backward", dy, true);
    Tensor dx(x_.shape());
    cpu::mbstd_backward(dx.f32(), dy.f32(), x_.f32(), mean_.data(), sigma_.data(), n_, c_, hw_, group_);
    return dx;
  }
  Tensor tangent(const Tensor& t) override {
    check("tangent", t, false);
    Tensor y(output_shape(x_.shape()));
    cpu::mbstd_tangent(y.f32(), t.f32(), x_.f32(), mean_.data(), sigma_.data(), n_, c_, hw_, group_);
    return y;
  }
  Tensor backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta) override {
    check("double backward", t, false);
    Tensor dx(x_.shape());
    cpu::mbstd_second(dx.f32(), delta.f32(), t.f32(), x_.f32(), mean_.data(), sigma_.data(), n_, c_, hw_, group_);
    if (dy_bar.defined()) add_into(dx, backward(dy_bar, true));
    return dx;
  }

 private:
  void sizes(const Shape& s) {
    n_ = static_cast<int>(s[0]);
    c_ = static_cast<int>(s[1]);
    hw_ = static_cast<int>(s[2] * s[3]);
  }
  void check(const char* what, const Tensor& t, bool output_side) const {
    GT_CHECK(x_.defined(), "MinibatchStddev {} called before forward", what);
    const Shape want = output_side ? output_shape(x_.shape()) : x_.shape();
    GT_CHECK(t.shape() == want, "MinibatchStddev {} got {}, expected {}", what, t.str(), shape_str(want));
  }

  int group_;
  float eps_;
  Tensor x_;
  int n_ = 0, c_ = 0, hw_ = 0;
  std::vector<float> mean_, sigma_;
};

}  // namespace

LayerPtr make_pixel_norm(float eps) { return std::make_unique<PixelNorm>(eps); }
LayerPtr make_upsample2x() { return std::make_unique<Resample2x>(true); }
LayerPtr make_avg_pool2x() { return std::make_unique<Resample2x>(false); }
LayerPtr make_minibatch_stddev(int group, float eps) { return std::make_unique<MinibatchStddev>(group, eps); }

}  // namespace gt
