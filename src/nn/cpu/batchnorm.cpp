// BatchNorm2d: per-channel kernels (OpenMP over channels, double-accumulated sums) and the layer with running stats.
#include <cmath>
#include <string>
#include <vector>

#include "nn/cpu/kernels.h"
#include "nn/cpu/scratch.h"
#include "nn/layers.h"

namespace gt {
namespace cpu {
namespace {

// Below this many values per call, one thread is faster than waking a team.
constexpr int64_t kParallelMinValues = 1 << 15;

const float* plane(const float* x, int n, int c, int C, int HW) {
  return x + (static_cast<int64_t>(n) * C + c) * HW;
}
float* plane(float* x, int n, int c, int C, int HW) { return x + (static_cast<int64_t>(n) * C + c) * HW; }

// Sum over the batch of (x - m)^2 for channel c; same arithmetic for local and synchronized BN.
double channel_squared_deviations(const float* in, float m, int c, int N, int C, int HW) {
  double sq = 0.0;
  for (int n = 0; n < N; ++n) {
    const float* p = plane(in, n, c, C, HW);
    float part = 0.f;
#pragma omp simd reduction(+ : part)
    for (int i = 0; i < HW; ++i) part += (p[i] - m) * (p[i] - m);
    sq += part;
  }
  return sq;
}

// Per channel c: sum of dy and sum of dy * (x - mean), float within a plane, double across planes.
// Shared by local and synchronized BN so one rank gives the same bits either way.
void channel_backward_sums(const float* dout, const float* in, float m, int c, int N, int C, int HW, double* sum_dy,
                           double* sum_dy_x) {
  for (int n = 0; n < N; ++n) {
    const float* g = plane(dout, n, c, C, HW);
    const float* p = plane(in, n, c, C, HW);
    float part_dy = 0.f, part_dy_x = 0.f;
#pragma omp simd reduction(+ : part_dy, part_dy_x)
    for (int i = 0; i < HW; ++i) {
      part_dy += g[i];
      part_dy_x += g[i] * (p[i] - m);
    }
    *sum_dy += part_dy;
    *sum_dy_x += part_dy_x;
  }
}

// Sum of channel c over the batch; each plane in float (vectorized), planes added in double.
double channel_sum(const float* x, int c, int N, int C, int HW) {
  double s = 0.0;
  for (int n = 0; n < N; ++n) {
    const float* p = plane(x, n, c, C, HW);
    float part = 0.f;
#pragma omp simd reduction(+ : part)
    for (int i = 0; i < HW; ++i) part += p[i];
    s += part;
  }
  return s;
}

}  // namespace

void batchnorm2d_forward_train(float* out, float* mean, float* rstd, float* var, const float* in,
                               const float* weight, const float* bias, int N, int C, int HW, float eps) {
  const double count = static_cast<double>(N) * HW;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C * HW > kParallelMinValues)
  for (int c = 0; c < C; ++c) {
    const float m = static_cast<float>(channel_sum(in, c, N, C, HW) / count);
    // Two passes (mean, then squared deviations): no cancellation when |mean| >> std.
    const double v = channel_squared_deviations(in, m, c, N, C, HW) / count;
    const float r = static_cast<float>(1.0 / std::sqrt(v + eps));
    mean[c] = m;
    rstd[c] = r;
    if (var) var[c] = static_cast<float>(v);
    const float scale = (weight ? weight[c] : 1.f) * r;
    const float shift = (bias ? bias[c] : 0.f) - m * scale;
    for (int n = 0; n < N; ++n) {
      const float* p = plane(in, n, c, C, HW);
      float* o = plane(out, n, c, C, HW);
#pragma omp simd
      for (int i = 0; i < HW; ++i) o[i] = p[i] * scale + shift;
    }
  }
}

void batchnorm2d_update_running(float* running_mean, float* running_var, const float* mean, const float* var,
                                int C, int64_t count, float momentum) {
  const double unbias = count > 1 ? static_cast<double>(count) / static_cast<double>(count - 1) : 1.0;
  for (int c = 0; c < C; ++c) {
    running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean[c];
    running_var[c] = (1.f - momentum) * running_var[c] + momentum * static_cast<float>(var[c] * unbias);
  }
}

void batchnorm2d_forward_eval(float* out, const float* in, const float* weight, const float* bias,
                              const float* running_mean, const float* running_var, int N, int C, int HW,
                              float eps) {
#pragma omp parallel for collapse(2) schedule(static) if (static_cast<int64_t>(N) * C * HW > kParallelMinValues)
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < C; ++c) {
      const float r = 1.f / std::sqrt(running_var[c] + eps);
      const float scale = (weight ? weight[c] : 1.f) * r;
      const float shift = (bias ? bias[c] : 0.f) - running_mean[c] * scale;
      const float* p = plane(in, n, c, C, HW);
      float* o = plane(out, n, c, C, HW);
#pragma omp simd
      for (int i = 0; i < HW; ++i) o[i] = p[i] * scale + shift;
    }
  }
}

void batchnorm2d_backward_train(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                                const float* mean, const float* rstd, const float* weight, int N, int C,
                                int HW) {
  const double count = static_cast<double>(N) * HW;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C * HW > kParallelMinValues)
  for (int c = 0; c < C; ++c) {
    const float m = mean[c], r = rstd[c];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    channel_backward_sums(dout, in, m, c, N, C, HW, &sum_dy, &sum_dy_xhat);
    sum_dy_xhat *= r;
    if (dweight) dweight[c] += static_cast<float>(sum_dy_xhat);
    if (dbias) dbias[c] += static_cast<float>(sum_dy);
    if (!dinp) continue;
    // dx = w * rstd * (dy - mean(dy) - xhat * mean(dy * xhat))
    const float scale = (weight ? weight[c] : 1.f) * r;
    const float mean_dy = static_cast<float>(sum_dy / count);
    const float k = static_cast<float>(sum_dy_xhat / count) * r;  // per unit of (x - mean)
    for (int n = 0; n < N; ++n) {
      const float* g = plane(dout, n, c, C, HW);
      const float* p = plane(in, n, c, C, HW);
      float* d = plane(dinp, n, c, C, HW);
#pragma omp simd
      for (int i = 0; i < HW; ++i) d[i] = scale * (g[i] - mean_dy - (p[i] - m) * k);
    }
  }
}

void batchnorm2d_backward_eval(float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                               const float* running_mean, const float* running_var, const float* weight,
                               int N, int C, int HW, float eps) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C * HW > kParallelMinValues)
  for (int c = 0; c < C; ++c) {
    const float m = running_mean[c];
    const float r = 1.f / std::sqrt(running_var[c] + eps);
    const float scale = (weight ? weight[c] : 1.f) * r;
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (int n = 0; n < N; ++n) {
      const float* g = plane(dout, n, c, C, HW);
      const float* p = plane(in, n, c, C, HW);
      float* d = dinp ? plane(dinp, n, c, C, HW) : nullptr;
      float part_dy = 0.f, part_dy_x = 0.f;
#pragma omp simd reduction(+ : part_dy, part_dy_x)
      for (int i = 0; i < HW; ++i) {
        part_dy += g[i];
        part_dy_x += g[i] * (p[i] - m);
      }
      if (d) {
#pragma omp simd
        for (int i = 0; i < HW; ++i) d[i] = g[i] * scale;
      }
      sum_dy += part_dy;
      sum_dy_xhat += part_dy_x;
    }
    if (dweight) dweight[c] += static_cast<float>(sum_dy_xhat * r);
    if (dbias) dbias[c] += static_cast<float>(sum_dy);
  }
}

// Synchronized batch norm (set_batch_stats_reducer): the same arithmetic as the kernels above, split
// where the per-channel sums are added up over the ranks. *count becomes the global count.
void batchnorm2d_forward_train_reduced(float* out, float* mean, float* rstd, float* var, double* count,
                                       const float* in, const float* weight, const float* bias, int N, int C,
                                       int HW, float eps, const BatchStatsReducer& reduce) {
  const bool parallel = static_cast<int64_t>(N) * C * HW > kParallelMinValues;
  std::vector<double> sums(static_cast<size_t>(C) + 1);
#pragma omp parallel for schedule(static) if (parallel)
  for (int c = 0; c < C; ++c) sums[c] = channel_sum(in, c, N, C, HW);
  sums[C] = static_cast<double>(N) * HW;
  reduce(sums.data(), C + 1);
  *count = sums[C];
  std::vector<double> sq(static_cast<size_t>(C));
#pragma omp parallel for schedule(static) if (parallel)
  for (int c = 0; c < C; ++c) {
    const float m = static_cast<float>(sums[c] / *count);
    mean[c] = m;
    sq[c] = channel_squared_deviations(in, m, c, N, C, HW);
  }
  reduce(sq.data(), C);
#pragma omp parallel for schedule(static) if (parallel)
  for (int c = 0; c < C; ++c) {
    const float m = mean[c];
    const double v = sq[c] / *count;
    const float r = static_cast<float>(1.0 / std::sqrt(v + eps));
    rstd[c] = r;
    var[c] = static_cast<float>(v);
    const float scale = (weight ? weight[c] : 1.f) * r;
    const float shift = (bias ? bias[c] : 0.f) - m * scale;
    for (int n = 0; n < N; ++n) {
      const float* p = plane(in, n, c, C, HW);
      float* o = plane(out, n, c, C, HW);
#pragma omp simd
      for (int i = 0; i < HW; ++i) o[i] = p[i] * scale + shift;
    }
  }
}

void batchnorm2d_backward_train_reduced(float* dinp, float* dweight, float* dbias, const float* dout,
                                        const float* in, const float* mean, const float* rstd, const float* weight,
                                        int N, int C, int HW, double count, const BatchStatsReducer& reduce) {
  const bool parallel = static_cast<int64_t>(N) * C * HW > kParallelMinValues;
  std::vector<double> sums(2 * static_cast<size_t>(C));  // [sum dy | sum dy * (x - mean)] per channel
#pragma omp parallel for schedule(static) if (parallel)
  for (int c = 0; c < C; ++c) {
    const float m = mean[c];
    double sum_dy = 0.0, sum_dy_x = 0.0;
    channel_backward_sums(dout, in, m, c, N, C, HW, &sum_dy, &sum_dy_x);
    // This rank's share of the parameter gradients; the gradient all-reduce adds the others.
    if (dweight) dweight[c] += static_cast<float>(sum_dy_x * rstd[c]);
    if (dbias) dbias[c] += static_cast<float>(sum_dy);
    sums[c] = sum_dy;
    sums[C + c] = sum_dy_x;
  }
  if (!dinp) return;
  reduce(sums.data(), 2 * C);
#pragma omp parallel for schedule(static) if (parallel)
  for (int c = 0; c < C; ++c) {
    const float m = mean[c], r = rstd[c];
    const float scale = (weight ? weight[c] : 1.f) * r;
    const float mean_dy = static_cast<float>(sums[c] / count);
    const float k = static_cast<float>(sums[C + c] * r / count) * r;
    for (int n = 0; n < N; ++n) {
      const float* g = plane(dout, n, c, C, HW);
      const float* p = plane(in, n, c, C, HW);
      float* d = plane(dinp, n, c, C, HW);
#pragma omp simd
      for (int i = 0; i < HW; ++i) d[i] = scale * (g[i] - mean_dy - (p[i] - m) * k);
    }
  }
}

}  // namespace cpu

namespace {

class BatchNorm2d final : public Layer {
 public:
  BatchNorm2d(int channels, float eps, float momentum)
      : channels_(channels),
        eps_(eps),
        momentum_(momentum),
        weight_(cpu::make_param("weight", {checked_channels(channels)})),
        bias_(cpu::make_param("bias", {channels})),
        running_mean_{"running_mean", Tensor({channels})},
        running_var_{"running_var", Tensor::full({channels}, 1.f)},
        num_batches_tracked_{"num_batches_tracked", Tensor(Shape{}, DType::i64)} {
    if (!(eps > 0.f) || !(momentum >= 0.f && momentum <= 1.f))
      user_error("BatchNorm2d needs eps > 0 and momentum in [0, 1], got eps {} and momentum {}", eps, momentum);
    weight_.value.fill(1.f);  // PyTorch's reset_parameters: weight 1, bias 0
  }

  std::string kind() const override { return "BatchNorm2d"; }
  LayerAttrs attrs() const override {
    LayerAttrs a;
    a.in_channels = a.out_channels = channels_;
    a.eps = eps_;
    a.momentum = momentum_;
    return a;
  }

  Shape output_shape(const Shape& in) const override {
    if (in.size() != 4 || in[1] != channels_)
      user_error("BatchNorm2d({}) cannot take an input of shape {}: expected [N, {}, H, W]", channels_,
                 shape_str(in), channels_);
    return in;
  }

  Tensor forward(const Tensor& x, Mode mode) override {
    output_shape(x.shape());
    const int N = static_cast<int>(x.dim(0)), HW = static_cast<int>(x.dim(2) * x.dim(3));
    Tensor y(x.shape());
    if (mode == Mode::train) {
      const int64_t count = static_cast<int64_t>(N) * HW;
      if (count < 2)
        user_error("BatchNorm2d in training needs more than one value per channel, got input of shape {}",
                   shape_str(x.shape()));
      float* var = cpu::scratch_floats(batch_var_, channels_);
      batch_count_ = static_cast<double>(count);
      if (reduce_) {
        cpu::batchnorm2d_forward_train_reduced(y.f32(), cpu::scratch_floats(mean_, channels_),
                                               cpu::scratch_floats(rstd_, channels_), var, &batch_count_, x.f32(),
                                               weight_.value.f32(), bias_.value.f32(), N, channels_, HW, eps_,
                                               reduce_);
      } else {
        cpu::batchnorm2d_forward_train(y.f32(), cpu::scratch_floats(mean_, channels_),
                                       cpu::scratch_floats(rstd_, channels_), var, x.f32(), weight_.value.f32(),
                                       bias_.value.f32(), N, channels_, HW, eps_);
      }
      cpu::batchnorm2d_update_running(running_mean_.value.f32(), running_var_.value.f32(), mean_.data(), var,
                                      channels_, static_cast<int64_t>(batch_count_), momentum_);
      num_batches_tracked_.value.i64()[0] += 1;
    } else {
      cpu::batchnorm2d_forward_eval(y.f32(), x.f32(), weight_.value.f32(), bias_.value.f32(),
                                    running_mean_.value.f32(), running_var_.value.f32(), N, channels_, HW, eps_);
    }
    x_ = x;
    mode_ = mode;
    return y;
  }

  Tensor backward(const Tensor& dy, bool param_grads) override {
    GT_CHECK(x_.defined(), "BatchNorm2d backward called before forward");
    GT_CHECK(dy.shape() == x_.shape(), "BatchNorm2d backward got {}, forward saw {}", dy.str(), x_.str());
    const int N = static_cast<int>(x_.dim(0)), HW = static_cast<int>(x_.dim(2) * x_.dim(3));
    Tensor dx(dy.shape());
    float* dw = param_grads ? weight_.grad.f32() : nullptr;
    float* db = param_grads ? bias_.grad.f32() : nullptr;
    if (mode_ == Mode::train && reduce_) {
      cpu::batchnorm2d_backward_train_reduced(dx.f32(), dw, db, dy.f32(), x_.f32(),
                                              mean_.data(), rstd_.data(), weight_.value.f32(), N, channels_, HW,
                                              batch_count_, reduce_);
    } else if (mode_ == Mode::train) {
      cpu::batchnorm2d_backward_train(dx.f32(), dw, db, dy.f32(), x_.f32(),
                                      mean_.data(), rstd_.data(), weight_.value.f32(), N, channels_, HW);
    } else {
      cpu::batchnorm2d_backward_eval(dx.f32(), dw, db, dy.f32(), x_.f32(),
                                     running_mean_.value.f32(), running_var_.value.f32(), weight_.value.f32(), N,
                                     channels_, HW, eps_);
    }
    return dx;
  }

  std::vector<Param*> params() override { return {&weight_, &bias_}; }
  std::vector<Buffer*> buffers() override { return {&running_mean_, &running_var_, &num_batches_tracked_}; }
  void set_reducer(BatchStatsReducer reduce) { reduce_ = std::move(reduce); }

 private:
  static int checked_channels(int channels) {
    if (channels <= 0) user_error("BatchNorm2d needs a positive channel count, got {}", channels);
    return channels;
  }

  int channels_;
  float eps_, momentum_;
  Param weight_, bias_;
  Buffer running_mean_, running_var_, num_batches_tracked_;
  // From the last forward: its input, mode, and (train mode) the batch statistics.
  Tensor x_;
  Mode mode_ = Mode::train;
  std::vector<float> mean_, rstd_, batch_var_;
  double batch_count_ = 0;     // values per channel in the last training batch (over all ranks when reduced)
  BatchStatsReducer reduce_;   // set: synchronized batch norm
};

}  // namespace

LayerPtr make_batchnorm2d(int channels, float eps, float momentum) {
  return std::make_unique<BatchNorm2d>(channels, eps, momentum);
}

bool set_batch_stats_reducer(Layer& layer, BatchStatsReducer reduce) {
  auto* bn = dynamic_cast<BatchNorm2d*>(&layer);
  if (bn) bn->set_reducer(std::move(reduce));
  return bn != nullptr;
}

}  // namespace gt
