// LayerNorm2d: per-sample normalization over [C, H, W] with a per-channel affine (torch.nn.GroupNorm(1, C)), its kernels and its double backward.
#include <cmath>
#include <string>
#include <vector>

#include "core/layernorm_math.h"
#include "nn/cpu/kernels.h"
#include "nn/cpu/scratch.h"
#include "nn/layers.h"

namespace gt {
namespace cpu {

// Every kernel works one sample at a time (OpenMP over the samples), with double sums over its C*HW values,
// and writes the per-channel parameter sums in a second pass over the channels (the same bits for any
// thread count).

void layernorm2d_forward(float* out, float* mean, float* rstd, const float* in, const float* weight,
                         const float* bias, int N, int C, int HW, float eps) {
  const int64_t M = static_cast<int64_t>(C) * HW;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = in + n * M;
    double s = 0;
    for (int64_t j = 0; j < M; ++j) s += x[j];
    const float mu = static_cast<float>(s / static_cast<double>(M));
    double q = 0;
    for (int64_t j = 0; j < M; ++j) q += static_cast<double>(x[j] - mu) * (x[j] - mu);
    const float r = static_cast<float>(1.0 / std::sqrt(q / static_cast<double>(M) + eps));
    mean[n] = mu;
    rstd[n] = r;
    float* y = out + n * M;
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < HW; ++i) {
        const int64_t j = static_cast<int64_t>(c) * HW + i;
        y[j] = (x[j] - mu) * r * weight[c] + bias[c];
      }
  }
}

namespace {

// dweight[c] += sum over samples and positions of a * xhat (or of a * b when b is given), dbias[c] += sum of a.
void channel_sums(float* dweight, float* dbias, const float* a, const float* in, const float* mean, const float* rstd,
                  const float* b, int N, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    double sw = 0, sb = 0;
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < HW; ++i) {
        const int64_t j = n * M + static_cast<int64_t>(c) * HW + i;
        sw += static_cast<double>(a[j]) * (b ? b[j] : (in[j] - mean[n]) * rstd[n]);
        sb += a[j];
      }
    if (dweight) dweight[c] += static_cast<float>(sw);
    if (dbias) dbias[c] += static_cast<float>(sb);
  }
}

// out = w[c] * r * (t - mean(t) - xhat * mean(t * xhat)) for one sample: the normalization's Jacobian,
// which is symmetric, so the backward (t = dy) and the tangent share it.
void normalize_jacobian(float* out, const float* t, const float* x, float mu, float r, const float* weight,
                        bool weight_first, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  auto tv = [&](int c, int64_t j) { return weight_first ? weight[c] * t[j] : t[j]; };
  double st = 0, stx = 0;
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < HW; ++i) {
      const int64_t j = static_cast<int64_t>(c) * HW + i;
      st += tv(c, j);
      stx += static_cast<double>(tv(c, j)) * ((x[j] - mu) * r);
    }
  const float a = static_cast<float>(st / static_cast<double>(M)), b = static_cast<float>(stx / static_cast<double>(M));
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < HW; ++i) {
      const int64_t j = static_cast<int64_t>(c) * HW + i;
      const float v = layernorm_math::jacobian(tv(c, j), x[j], mu, r, a, b);
      out[j] = weight_first ? v : weight[c] * v;
    }
}

}  // namespace

void layernorm2d_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                          const float* mean, const float* rstd, const float* weight, int N, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  if (dinp) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n)
      normalize_jacobian(dinp + n * M, dout + n * M, in + n * M, mean[n], rstd[n], weight, true, C, HW);
  }
  if (dweight || dbias) channel_sums(dweight, dbias, dout, in, mean, rstd, nullptr, N, C, HW);
}

void layernorm2d_tangent(float* out, const float* t, const float* in, const float* mean, const float* rstd,
                         const float* weight, int N, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) normalize_jacobian(out + n * M, t + n * M, in + n * M, mean[n], rstd[n], weight, false, C, HW);
}

// phi = sum_j a_j xhat'_j with a = w[c] delta and xhat' = r (t - mean(t) - xhat mean(xhat t)). With the
// centered input c = x - mean(x), U = mean(c t), V = sum(a c), S = sum(a t), A = sum(a), e = mean(t):
//   phi = r (S - e A) - r^3 U V,  r = (mean(c^2) + eps)^-1/2,  dr/dc_k = -r^3 c_k / M,
//   dphi/dc_k = -r^3 (t_k V / M + U a_k) + (S - e A - 3 r^2 U V) (-r^3 c_k / M),
// and dphi/dx = dphi/dc minus its mean (c = x - mean(x)). d(phi)/dw[c] = sum over the channel of delta xhat'.
void layernorm2d_second(float* dinp, float* dweight, const float* delta, const float* t, const float* in,
                        const float* mean, const float* rstd, const float* weight, int N, int C, int HW) {
  const int64_t M = static_cast<int64_t>(C) * HW;
  const double m = static_cast<double>(M);
  std::vector<float> xhat_t(static_cast<size_t>(N * M));  // xhat' of every sample, for dweight
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = in + n * M;
    const float* tt = t + n * M;
    const float* d = delta + n * M;
    const double mu = mean[n], r = rstd[n];
    double U = 0, V = 0, S = 0, A = 0, E = 0;
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < HW; ++i) {
        const int64_t j = static_cast<int64_t>(c) * HW + i;
        const double a = static_cast<double>(weight[c]) * d[j], cj = x[j] - mu;
        U += cj * tt[j];
        V += a * cj;
        S += a * tt[j];
        A += a;
        E += tt[j];
      }
    U /= m;
    E /= m;
    const double dphi_dr = layernorm_math::dphi_dr(S, E, A, r, U, V);
    float* g = dinp + n * M;
    double gsum = 0;
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < HW; ++i) {
        const int64_t j = static_cast<int64_t>(c) * HW + i;
        const double a = static_cast<double>(weight[c]) * d[j], cj = x[j] - mu;
        const double v = layernorm_math::curvature(tt[j], a, cj, r, m, U, V, dphi_dr);
        g[j] = static_cast<float>(v);
        gsum += v;
      }
    const float gmean = static_cast<float>(gsum / m);
    for (int64_t j = 0; j < M; ++j) g[j] -= gmean;
    if (dweight) {
      // xhat' without the weight: the tangent of the normalization alone.
      double st = 0, stx = 0;
      for (int64_t j = 0; j < M; ++j) {
        st += tt[j];
        stx += static_cast<double>(tt[j]) * ((x[j] - mean[n]) * rstd[n]);
      }
      const float ea = static_cast<float>(st / m), eb = static_cast<float>(stx / m);
      float* o = xhat_t.data() + n * M;
      for (int64_t j = 0; j < M; ++j) o[j] = layernorm_math::jacobian(tt[j], x[j], mean[n], rstd[n], ea, eb);
    }
  }
  if (dweight) channel_sums(dweight, nullptr, delta, in, mean, rstd, xhat_t.data(), N, C, HW);
}

}  // namespace cpu

namespace {

class LayerNorm2d final : public Layer {
 public:
  LayerNorm2d(int channels, float eps)
      : channels_(checked(channels)),
        eps_(eps),
        weight_(cpu::make_param("weight", {channels})),
        bias_(cpu::make_param("bias", {channels})) {
    weight_.value.fill(1.f);  // torch.nn.GroupNorm's initial affine: weight 1, bias 0
  }

  std::string kind() const override { return "LayerNorm2d"; }
  LayerAttrs attrs() const override {
    LayerAttrs a;
    a.in_channels = a.out_channels = channels_;
    a.eps = eps_;
    return a;
  }
  Shape output_shape(const Shape& in) const override {
    if (in.size() != 4 || in[1] != channels_ || in[0] <= 0)
      user_error("LayerNorm2d({}) cannot take an input of shape {}: expected [N, {}, H, W]", channels_, shape_str(in),
                 channels_);
    return in;
  }

  Tensor forward(const Tensor& x, Mode) override {
    output_shape(x.shape());
    sizes(x);
    Tensor y(x.shape());
    cpu::layernorm2d_forward(y.f32(), cpu::scratch_floats(mean_, n_), cpu::scratch_floats(rstd_, n_), x.f32(),
                             weight_.value.f32(), bias_.value.f32(), n_, channels_, hw_, eps_);
    x_ = x;  // shares the buffer; layers never write their inputs
    return y;
  }

  Tensor backward(const Tensor& dy, bool param_grads) override {
    check_like_input("backward", dy);
    Tensor dx(dy.shape());
    cpu::layernorm2d_backward(dx.f32(), param_grads ? weight_.grad.f32() : nullptr,
                              param_grads ? bias_.grad.f32() : nullptr, dy.f32(), x_.f32(), mean_.data(), rstd_.data(),
                              weight_.value.f32(), n_, channels_, hw_);
    return dx;
  }

  Tensor tangent(const Tensor& t) override {
    check_like_input("tangent", t);
    Tensor y(t.shape());
    cpu::layernorm2d_tangent(y.f32(), t.f32(), x_.f32(), mean_.data(), rstd_.data(), weight_.value.f32(), n_,
                             channels_, hw_);
    return y;
  }

  Tensor backward_second(const Tensor& dy_bar, const Tensor& t, const Tensor& delta) override {
    check_like_input("double backward", t);
    Tensor dx(t.shape());
    cpu::layernorm2d_second(dx.f32(), weight_.grad.f32(), delta.f32(), t.f32(), x_.f32(), mean_.data(), rstd_.data(),
                            weight_.value.f32(), n_, channels_, hw_);
    if (dy_bar.defined()) {
      Tensor plain = backward(dy_bar, true);
      float* d = dx.f32();
      const float* p = plain.f32();
      for (int64_t i = 0; i < dx.numel(); ++i) d[i] += p[i];
    }
    return dx;
  }

  std::vector<Param*> params() override { return {&weight_, &bias_}; }

 private:
  static int checked(int channels) {
    if (channels <= 0) user_error("LayerNorm2d needs a positive channel count, got {}", channels);
    return channels;
  }
  void sizes(const Tensor& x) {
    n_ = static_cast<int>(x.dim(0));
    hw_ = static_cast<int>(x.dim(2) * x.dim(3));
  }
  void check_like_input(const char* what, const Tensor& t) const {
    GT_CHECK(x_.defined(), "LayerNorm2d {} called before forward", what);
    GT_CHECK(t.shape() == x_.shape(), "LayerNorm2d {} got {}, forward saw {}", what, t.str(), x_.str());
  }

  int channels_;
  float eps_;
  Param weight_, bias_;
  Tensor x_;  // the last input
  int n_ = 0, hw_ = 0;
  std::vector<float> mean_, rstd_;  // per sample, of the last forward
};

}  // namespace

LayerPtr make_layernorm2d(int channels, float eps) { return std::make_unique<LayerNorm2d>(channels, eps); }

}  // namespace gt
