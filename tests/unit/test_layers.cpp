// CPU layers: forward against naive loops, backward against central finite differences, BatchNorm statistics, names.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "nn/cpu/kernels.h"
#include "nn/layers.h"
#include "common/test_util.h"

namespace gt {
namespace {

// ---- helpers -------------------------------------------------------------------------------------

using test::random_tensor;

// Values with |v| in [0.2, 1] and random sign: central differences with h <= 0.05 never cross a kink at 0.
Tensor random_away_from_zero(const Shape& shape, std::mt19937& rng) {
  Tensor t = random_tensor(shape, rng, 0.2f, 1.f);
  std::bernoulli_distribution flip(0.5);
  for (int64_t i = 0; i < t.numel(); ++i)
    if (flip(rng)) t.f32()[i] = -t.f32()[i];
  return t;
}

void randomize_params(Layer& layer, std::mt19937& rng, float scale = 0.5f) {
  for (Param* p : layer.params()) p->value.copy_from(random_tensor(p->value.shape(), rng, -scale, scale));
}

// The scalar loss of the gradient checks: L = sum(y * r), accumulated in double.
double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0.0;
  for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.f32()[i]) * r.f32()[i];
  return s;
}

// Largest |a - b| / (1 + |b|) over two same-shaped tensors; b is the reference.
double max_scaled_error(const Tensor& a, const std::vector<double>& b, int64_t* where = nullptr) {
  double worst = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double e = std::abs(a.f32()[i] - b[i]) / (1.0 + std::abs(b[i]));
    if (e > worst) {
      worst = e;
      if (where) *where = i;
    }
  }
  return worst;
}

std::vector<double> as_doubles(const Tensor& t) { return std::vector<double>(t.f32(), t.f32() + t.numel()); }

// Central difference of L = sum(forward(x) * r) for every element of `value`, which forward reads.
std::vector<double> finite_differences(Layer& layer, const Tensor& x, Tensor& value, const Tensor& r, Mode mode,
                                       double h) {
  std::vector<double> fd(value.numel());
  float* v = value.f32();
  for (int64_t i = 0; i < value.numel(); ++i) {
    const float saved = v[i];
    v[i] = static_cast<float>(saved + h);
    const double plus = weighted_sum(layer.forward(x, mode), r);
    v[i] = static_cast<float>(saved - h);
    const double minus = weighted_sum(layer.forward(x, mode), r);
    v[i] = saved;
    // The actual step, since saved +- h is rounded to float.
    fd[i] = (plus - minus) / (static_cast<double>(static_cast<float>(saved + h)) - static_cast<float>(saved - h));
  }
  return fd;
}

// Backward (dL/dx and every param grad) against central differences; |analytic - fd| <= tol * (1 + |fd|).
void check_gradients(Layer& layer, const Tensor& x_in, Mode mode, double h, double tol, std::mt19937& rng) {
  Tensor x = x_in.clone();
  Tensor r = random_tensor(layer.output_shape(x.shape()), rng);
  for (Param* p : layer.params()) p->grad.zero();
  layer.forward(x, mode);
  Tensor dx = layer.backward(r);
  ASSERT_EQ(dx.shape(), x.shape());

  int64_t where = 0;
  double err = max_scaled_error(dx, finite_differences(layer, x, x, r, mode, h), &where);
  EXPECT_LE(err, tol) << layer.kind() << " dL/dx, worst at element " << where;
  for (Param* p : layer.params()) {
    Tensor grad = p->grad.clone();
    err = max_scaled_error(grad, finite_differences(layer, x, p->value, r, mode, h), &where);
    EXPECT_LE(err, tol) << layer.kind() << " dL/d" << p->name << ", worst at element " << where;
  }
}

// ---- naive references ----------------------------------------------------------------------------

float at4(const Tensor& t, int64_t a, int64_t b, int64_t c, int64_t d) {
  const Shape& s = t.shape();
  return t.f32()[((a * s[1] + b) * s[2] + c) * s[3] + d];
}

std::vector<double> naive_conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), OC = w.dim(0), K = w.dim(2);
  const int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
  std::vector<double> y(N * OC * OH * OW);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oc = 0; oc < OC; ++oc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = bias ? bias->f32()[oc] : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t kh = 0; kh < K; ++kh)
              for (int64_t kw = 0; kw < K; ++kw) {
                const int64_t ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += static_cast<double>(at4(x, n, c, ih, iw)) * at4(w, oc, c, kh, kw);
              }
          y[((n * OC + oc) * OH + oh) * OW + ow] = acc;
        }
  return y;
}

// PyTorch's definition: each input pixel scatters weight[c, oc] onto a stride-spaced output window.
std::vector<double> naive_conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride,
                                           int pad) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), OC = w.dim(1), K = w.dim(2);
  const int64_t OH = (H - 1) * stride - 2 * pad + K, OW = (W - 1) * stride - 2 * pad + K;
  std::vector<double> y(N * OC * OH * OW);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oc = 0; oc < OC; ++oc)
      for (int64_t i = 0; i < OH * OW; ++i) y[(n * OC + oc) * OH * OW + i] = bias ? bias->f32()[oc] : 0.0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw)
          for (int64_t oc = 0; oc < OC; ++oc)
            for (int64_t kh = 0; kh < K; ++kh)
              for (int64_t kw = 0; kw < K; ++kw) {
                const int64_t oh = ih * stride - pad + kh, ow = iw * stride - pad + kw;
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                y[((n * OC + oc) * OH + oh) * OW + ow] +=
                    static_cast<double>(at4(x, n, c, ih, iw)) * at4(w, c, oc, kh, kw);
              }
  return y;
}

// Gradients of the loops above for a given dy: the same index walk, accumulating the other way.
struct ConvGrads {
  std::vector<double> dx, dweight, dbias;
};

ConvGrads naive_conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, int stride, int pad) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), OC = w.dim(0), K = w.dim(2);
  const int64_t OH = dy.dim(2), OW = dy.dim(3);
  ConvGrads g{std::vector<double>(x.numel()), std::vector<double>(w.numel()), std::vector<double>(OC)};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oc = 0; oc < OC; ++oc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const double d = at4(dy, n, oc, oh, ow);
          g.dbias[oc] += d;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t kh = 0; kh < K; ++kh)
              for (int64_t kw = 0; kw < K; ++kw) {
                const int64_t ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                g.dx[((n * C + c) * H + ih) * W + iw] += d * at4(w, oc, c, kh, kw);
                g.dweight[((oc * C + c) * K + kh) * K + kw] += d * at4(x, n, c, ih, iw);
              }
        }
  return g;
}

ConvGrads naive_conv_transpose2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, int stride,
                                          int pad) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), OC = w.dim(1), K = w.dim(2);
  const int64_t OH = dy.dim(2), OW = dy.dim(3);
  ConvGrads g{std::vector<double>(x.numel()), std::vector<double>(w.numel()), std::vector<double>(OC)};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oc = 0; oc < OC; ++oc)
      for (int64_t i = 0; i < OH * OW; ++i) g.dbias[oc] += dy.f32()[(n * OC + oc) * OH * OW + i];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw)
          for (int64_t oc = 0; oc < OC; ++oc)
            for (int64_t kh = 0; kh < K; ++kh)
              for (int64_t kw = 0; kw < K; ++kw) {
                const int64_t oh = ih * stride - pad + kh, ow = iw * stride - pad + kw;
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                const double d = at4(dy, n, oc, oh, ow);
                g.dx[((n * C + c) * H + ih) * W + iw] += d * at4(w, c, oc, kh, kw);
                g.dweight[((c * OC + oc) * K + kh) * K + kw] += d * at4(x, n, c, ih, iw);
              }
  return g;
}

// ---- Conv2d / ConvTranspose2d --------------------------------------------------------------------

struct ConvCase {
  int batch, in_channels, out_channels, h, w, kernel, stride, padding;
  bool bias;
};

std::string case_name(const ConvCase& c) {
  return "n" + std::to_string(c.batch) + "_c" + std::to_string(c.in_channels) + "_oc" +
         std::to_string(c.out_channels) + "_" + std::to_string(c.h) + "x" + std::to_string(c.w) + "_k" +
         std::to_string(c.kernel) + "_s" + std::to_string(c.stride) + "_p" + std::to_string(c.padding) +
         (c.bias ? "_bias" : "_nobias");
}

Conv2dSpec spec_of(const ConvCase& c) {
  return Conv2dSpec{c.in_channels, c.out_channels, c.kernel, c.stride, c.padding, c.bias};
}

// Strides 1/2, paddings 0/1/2, kernels 1/3/4, non-square images, bias on/off, batch 1 and more.
const ConvCase kConvCases[] = {
    {1, 1, 1, 5, 5, 1, 1, 0, false}, {2, 3, 4, 7, 5, 3, 1, 1, true}, {3, 2, 5, 8, 6, 4, 2, 1, true},
    {2, 3, 2, 9, 7, 3, 2, 2, false}, {2, 4, 3, 6, 9, 4, 1, 0, true}, {1, 2, 3, 4, 4, 4, 1, 0, false},
    {2, 2, 2, 5, 6, 1, 2, 0, true},  {1, 3, 2, 6, 5, 3, 2, 0, true}, {2, 2, 3, 3, 4, 3, 1, 2, false},
};
// The DCGAN discriminator's layer shapes at batch 2 (forward only: too many values for finite differences).
const ConvCase kDcganConvCases[] = {
    {2, 1, 32, 32, 32, 4, 2, 1, false}, {2, 32, 64, 16, 16, 4, 2, 1, false}, {2, 128, 1, 4, 4, 4, 1, 0, false}};

// For a transposed conv, h x w is the (small) input.
const ConvCase kConvTransposeCases[] = {
    {1, 1, 1, 3, 3, 1, 1, 0, false}, {2, 3, 4, 3, 4, 4, 2, 1, true}, {2, 4, 3, 1, 1, 4, 1, 0, false},
    {2, 2, 3, 4, 3, 3, 2, 2, true},  {3, 2, 2, 3, 5, 3, 1, 1, true}, {2, 3, 2, 2, 3, 4, 2, 0, false},
    {2, 2, 3, 4, 5, 1, 2, 0, true},  {1, 3, 2, 5, 4, 3, 1, 2, false},
};
// The DCGAN generator's layer shapes at batch 2.
const ConvCase kDcganConvTransposeCases[] = {
    {2, 64, 128, 1, 1, 4, 1, 0, false}, {2, 64, 32, 8, 8, 4, 2, 1, false}, {2, 32, 1, 16, 16, 4, 2, 1, false}};

// Forward: float GEMM vs a double loop, |y - ref| <= 2e-5 * (1 + |ref|); the worst seen is 3e-6 (at
// 512-term sums of the DCGAN shapes).
constexpr double kForwardTol = 2e-5;
// Gradients: the layer is linear in x and in the weights, so central differences are exact up to the
// float rounding of y (about 1e-6 in L here, divided by 2h = 0.02); the worst seen is 3e-5.
constexpr double kConvGradStep = 1e-2;
constexpr double kConvGradTol = 5e-4;

class Conv2dForward : public ::testing::TestWithParam<ConvCase> {};
class Conv2dBackward : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dForward, MatchesNaiveLoop) {
  const ConvCase c = GetParam();
  std::mt19937 rng(1);
  LayerPtr conv = make_conv2d(spec_of(c));
  randomize_params(*conv, rng);
  Tensor x = random_tensor({c.batch, c.in_channels, c.h, c.w}, rng);
  Tensor y = conv->forward(x, Mode::train);
  const Tensor* bias = c.bias ? &conv->params()[1]->value : nullptr;
  std::vector<double> ref = naive_conv2d(x, conv->params()[0]->value, bias, c.stride, c.padding);
  ASSERT_EQ(y.shape(), conv->output_shape(x.shape()));
  ASSERT_EQ(y.numel(), static_cast<int64_t>(ref.size()));
  EXPECT_LE(max_scaled_error(y, ref), kForwardTol);
}

TEST_P(Conv2dBackward, MatchesFiniteDifferences) {
  const ConvCase c = GetParam();
  std::mt19937 rng(2);
  LayerPtr conv = make_conv2d(spec_of(c));
  randomize_params(*conv, rng);
  check_gradients(*conv, random_tensor({c.batch, c.in_channels, c.h, c.w}, rng), Mode::train, kConvGradStep,
                  kConvGradTol, rng);
}

auto param_name = [](const auto& info) { return case_name(info.param); };
INSTANTIATE_TEST_SUITE_P(Small, Conv2dForward, ::testing::ValuesIn(kConvCases), param_name);
INSTANTIATE_TEST_SUITE_P(Dcgan, Conv2dForward, ::testing::ValuesIn(kDcganConvCases), param_name);
INSTANTIATE_TEST_SUITE_P(Small, Conv2dBackward, ::testing::ValuesIn(kConvCases), param_name);

class ConvTranspose2dForward : public ::testing::TestWithParam<ConvCase> {};
class ConvTranspose2dBackward : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvTranspose2dForward, MatchesNaiveLoop) {
  const ConvCase c = GetParam();
  std::mt19937 rng(3);
  LayerPtr conv = make_conv_transpose2d(spec_of(c));
  randomize_params(*conv, rng);
  Tensor x = random_tensor({c.batch, c.in_channels, c.h, c.w}, rng);
  Tensor y = conv->forward(x, Mode::train);
  const Tensor* bias = c.bias ? &conv->params()[1]->value : nullptr;
  std::vector<double> ref = naive_conv_transpose2d(x, conv->params()[0]->value, bias, c.stride, c.padding);
  ASSERT_EQ(y.shape(), conv->output_shape(x.shape()));
  ASSERT_EQ(y.numel(), static_cast<int64_t>(ref.size()));
  EXPECT_LE(max_scaled_error(y, ref), kForwardTol);
}

TEST_P(ConvTranspose2dBackward, MatchesFiniteDifferences) {
  const ConvCase c = GetParam();
  std::mt19937 rng(4);
  LayerPtr conv = make_conv_transpose2d(spec_of(c));
  randomize_params(*conv, rng);
  check_gradients(*conv, random_tensor({c.batch, c.in_channels, c.h, c.w}, rng), Mode::train, kConvGradStep,
                  kConvGradTol, rng);
}

INSTANTIATE_TEST_SUITE_P(Small, ConvTranspose2dForward, ::testing::ValuesIn(kConvTransposeCases), param_name);
INSTANTIATE_TEST_SUITE_P(Dcgan, ConvTranspose2dForward, ::testing::ValuesIn(kDcganConvTransposeCases),
                         param_name);
INSTANTIATE_TEST_SUITE_P(Small, ConvTranspose2dBackward, ::testing::ValuesIn(kConvTransposeCases), param_name);

// Batches the kernels cut into several multi-sample chunks plus a one-sample remainder (13 = 4+4+4+1 for
// the D shape), at the DCGAN layer shapes: forward and backward against the naive loops above.
struct ChunkedCase {
  bool transposed;
  ConvCase c;
};
const ChunkedCase kChunkedCases[] = {
    {false, {13, 32, 64, 16, 16, 4, 2, 1, true}},
    {false, {13, 3, 5, 9, 7, 3, 2, 1, true}},
    {true, {13, 64, 32, 8, 8, 4, 2, 1, true}},
    {true, {11, 4, 3, 5, 6, 3, 1, 1, false}},
};

// A scaled tolerance for sums of many float products: 1e-5 * (1 + |ref|) at the forward's term counts,
// more for dweight, which sums over the whole batch (up to 13 * 8 * 8 = 832 terms here).
constexpr double kChunkedGradTol = 1e-4;

class ConvChunked : public ::testing::TestWithParam<ChunkedCase> {};

TEST_P(ConvChunked, ForwardAndBackwardMatchNaiveLoops) {
  const auto [transposed, c] = GetParam();
  std::mt19937 rng(21);
  LayerPtr conv = transposed ? make_conv_transpose2d(spec_of(c)) : make_conv2d(spec_of(c));
  randomize_params(*conv, rng, 0.2f);
  Tensor x = random_tensor({c.batch, c.in_channels, c.h, c.w}, rng);
  const Tensor& w = conv->params()[0]->value;
  const Tensor* bias = c.bias ? &conv->params()[1]->value : nullptr;
  Tensor y = conv->forward(x, Mode::train);
  std::vector<double> ref = transposed ? naive_conv_transpose2d(x, w, bias, c.stride, c.padding)
                                       : naive_conv2d(x, w, bias, c.stride, c.padding);
  EXPECT_LE(max_scaled_error(y, ref), kForwardTol);

  Tensor dy = random_tensor(y.shape(), rng);
  Tensor dx = conv->backward(dy);
  ConvGrads g = transposed ? naive_conv_transpose2d_backward(x, w, dy, c.stride, c.padding)
                           : naive_conv2d_backward(x, w, dy, c.stride, c.padding);
  EXPECT_LE(max_scaled_error(dx, g.dx), kForwardTol) << "dx";
  EXPECT_LE(max_scaled_error(conv->params()[0]->grad, g.dweight), kChunkedGradTol) << "dweight";
  if (c.bias) {
    EXPECT_LE(max_scaled_error(conv->params()[1]->grad, g.dbias), kChunkedGradTol) << "dbias";
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ConvChunked, ::testing::ValuesIn(kChunkedCases), [](const auto& info) {
  return std::string(info.param.transposed ? "transposed_" : "conv_") + case_name(info.param.c);
});

// Restores the OpenMP thread count a test changed.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(omp_get_max_threads()) {}
  ~ThreadCountGuard() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

// Runs forward and backward of a fresh copy of the layer and returns y, dx and dweight, in that order.
std::vector<Tensor> run_conv(bool transposed, const ConvCase& c, const Tensor& x, const Tensor& w, const Tensor& dy) {
  LayerPtr conv = transposed ? make_conv_transpose2d(spec_of(c)) : make_conv2d(spec_of(c));
  conv->params()[0]->value.copy_from(w);
  Tensor y = conv->forward(x, Mode::train);
  Tensor dx = conv->backward(dy);
  return {y, dx, conv->params()[0]->grad.clone()};
}

TEST(Conv, ResultsAreReproducibleAndAgreeAcrossThreadCounts) {
  ThreadCountGuard guard;
  std::mt19937 rng(22);
  for (bool transposed : {false, true}) {
    const ConvCase c =
        transposed ? ConvCase{24, 32, 16, 8, 8, 4, 2, 1, false} : ConvCase{24, 16, 32, 16, 16, 4, 2, 1, false};
    LayerPtr probe = transposed ? make_conv_transpose2d(spec_of(c)) : make_conv2d(spec_of(c));
    Tensor x = random_tensor({c.batch, c.in_channels, c.h, c.w}, rng);
    Tensor w = random_tensor(probe->params()[0]->value.shape(), rng, -0.2f, 0.2f);
    Tensor dy = random_tensor(probe->output_shape(x.shape()), rng);
    omp_set_num_threads(1);
    std::vector<Tensor> one = run_conv(transposed, c, x, w, dy);
    omp_set_num_threads(3);
    std::vector<Tensor> three = run_conv(transposed, c, x, w, dy);
    std::vector<Tensor> again = run_conv(transposed, c, x, w, dy);
    for (size_t i = 0; i < one.size(); ++i) {
      // Only the grouping of the dweight sums depends on the thread count.
      EXPECT_LE(max_scaled_error(three[i], as_doubles(one[i])), 1e-5) << "output " << i;
      EXPECT_EQ(as_doubles(again[i]), as_doubles(three[i])) << "output " << i << " not reproducible";
    }
  }
}

TEST(Conv, ParamsHavePyTorchNamesAndLayouts) {
  LayerPtr conv = make_conv2d({3, 8, 4, 2, 1, true});
  ASSERT_EQ(conv->params().size(), 2u);
  EXPECT_EQ(conv->kind(), "Conv2d");
  EXPECT_EQ(conv->params()[0]->name, "weight");
  EXPECT_EQ(conv->params()[0]->value.shape(), Shape({8, 3, 4, 4}));
  EXPECT_EQ(conv->params()[0]->grad.shape(), Shape({8, 3, 4, 4}));
  EXPECT_EQ(conv->params()[1]->name, "bias");
  EXPECT_EQ(conv->params()[1]->value.shape(), Shape({8}));
  EXPECT_EQ(make_conv2d({3, 8, 4, 2, 1, false})->params().size(), 1u);
  EXPECT_EQ(conv->output_shape({5, 3, 32, 30}), Shape({5, 8, 16, 15}));

  LayerPtr convt = make_conv_transpose2d({8, 3, 4, 2, 1, true});
  EXPECT_EQ(convt->kind(), "ConvTranspose2d");
  ASSERT_EQ(convt->params().size(), 2u);
  EXPECT_EQ(convt->params()[0]->value.shape(), Shape({8, 3, 4, 4}));
  EXPECT_EQ(convt->params()[1]->value.shape(), Shape({3}));
  EXPECT_EQ(convt->output_shape({5, 8, 16, 15}), Shape({5, 3, 32, 30}));
}

TEST(Conv, RejectsInputsThatDoNotFit) {
  LayerPtr conv = make_conv2d({3, 8, 4, 2, 1, false});
  EXPECT_THROW(conv->output_shape({2, 4, 8, 8}), UserError);   // wrong channels
  EXPECT_THROW(conv->output_shape({2, 3, 8}), UserError);      // not 4-D
  EXPECT_THROW(conv->output_shape({2, 3, 1, 8}), UserError);   // smaller than the kernel once padded
  EXPECT_THROW(make_conv2d({3, 8, 4, 0, 1, false}), UserError);  // stride 0
  EXPECT_THROW(make_conv_transpose2d({0, 8, 4, 1, 0, false}), UserError);
}

// Runs forward+backward twice with the same data: the second call must add the same grads again.
void check_accumulation(Layer& layer, const Tensor& x, std::mt19937& rng) {
  Tensor r = random_tensor(layer.output_shape(x.shape()), rng);
  for (Param* p : layer.params()) p->grad.zero();
  layer.forward(x, Mode::train);
  Tensor dx1 = layer.backward(r);
  std::vector<std::vector<double>> once;
  for (Param* p : layer.params()) once.push_back(as_doubles(p->grad));
  layer.forward(x, Mode::train);
  Tensor dx2 = layer.backward(r);
  EXPECT_LE(max_scaled_error(dx2, as_doubles(dx1)), 1e-6) << layer.kind() << ": dx changed between calls";
  for (size_t i = 0; i < once.size(); ++i) {
    std::vector<double> twice = once[i];
    for (double& v : twice) v *= 2.0;
    EXPECT_LE(max_scaled_error(layer.params()[i]->grad, twice), 1e-5)
        << layer.kind() << "." << layer.params()[i]->name << " did not accumulate";
    EXPECT_GT(std::abs(twice[0]) + std::abs(twice.back()), 0.0) << "degenerate gradient";
  }
}

TEST(Conv, GradientsAccumulateAcrossBackwardCalls) {
  std::mt19937 rng(5);
  LayerPtr conv = make_conv2d({3, 4, 3, 2, 1, true});
  randomize_params(*conv, rng);
  check_accumulation(*conv, random_tensor({2, 3, 7, 6}, rng), rng);
  LayerPtr convt = make_conv_transpose2d({3, 4, 4, 2, 1, true});
  randomize_params(*convt, rng);
  check_accumulation(*convt, random_tensor({2, 3, 3, 4}, rng), rng);
}

TEST(Conv, BackwardTwiceAfterOneForwardSeesTheSameCache) {
  std::mt19937 rng(6);
  for (bool transposed : {false, true}) {
    LayerPtr conv = transposed ? make_conv_transpose2d({2, 3, 4, 2, 1, true}) : make_conv2d({2, 3, 4, 2, 1, true});
    randomize_params(*conv, rng);
    Tensor x = random_tensor({2, 2, 6, 6}, rng);
    Tensor r = random_tensor(conv->output_shape(x.shape()), rng);
    conv->forward(x, Mode::train);
    Tensor dx1 = conv->backward(r);
    std::vector<double> w_once = as_doubles(conv->params()[0]->grad);
    Tensor dx2 = conv->backward(r);
    EXPECT_LE(max_scaled_error(dx2, as_doubles(dx1)), 1e-6) << conv->kind();
    for (double& v : w_once) v *= 2.0;
    EXPECT_LE(max_scaled_error(conv->params()[0]->grad, w_once), 1e-5) << conv->kind();
  }
}

// The free kernels are the adjoint pair the GPU parity tests rely on: <im2col(x), c> == <x, col2im(c)>.
TEST(ConvKernels, Col2imIsTheAdjointOfIm2col) {
  std::mt19937 rng(7);
  const int N = 2, C = 3, H = 7, W = 6, K = 3, stride = 2, pad = 1;
  const int OH = cpu::conv_out_size(H, K, stride, pad), OW = cpu::conv_out_size(W, K, stride, pad);
  Tensor x = random_tensor({N, C, H, W}, rng);
  Tensor c = random_tensor({C * K * K, N * OH * OW}, rng);
  Tensor cols({C * K * K, N * OH * OW});
  Tensor img({N, C, H, W});
  cpu::im2col(cols.f32(), x.f32(), N, C, H, W, K, stride, pad, OH, OW);
  cpu::col2im(img.f32(), c.f32(), N, C, H, W, K, stride, pad, OH, OW);
  EXPECT_NEAR(weighted_sum(cols, c), weighted_sum(x, img), 1e-4);
}

// ---- BatchNorm2d ---------------------------------------------------------------------------------

struct ChannelStats {
  std::vector<double> mean, biased_var;
};

ChannelStats naive_channel_stats(const Tensor& x) {
  const int64_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3);
  ChannelStats s{std::vector<double>(C), std::vector<double>(C)};
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0, sq = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) sum += x.f32()[(n * C + c) * HW + i];
    s.mean[c] = sum / (N * HW);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) sq += std::pow(x.f32()[(n * C + c) * HW + i] - s.mean[c], 2);
    s.biased_var[c] = sq / (N * HW);
  }
  return s;
}

std::vector<double> naive_batchnorm(const Tensor& x, const std::vector<double>& mean, const std::vector<double>& var,
                                    const Tensor& weight, const Tensor& bias, double eps) {
  const int64_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3);
  std::vector<double> y(x.numel());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t k = (n * C + c) * HW + i;
        y[k] = (x.f32()[k] - mean[c]) / std::sqrt(var[c] + eps) * weight.f32()[c] + bias.f32()[c];
      }
  return y;
}

Buffer* find_buffer(Layer& layer, const std::string& name) {
  for (Buffer* b : layer.buffers())
    if (b->name == name) return b;
  return nullptr;
}

TEST(BatchNorm2d, NamesDefaultsAndBufferTypes) {
  LayerPtr bn = make_batchnorm2d(5);
  EXPECT_EQ(bn->kind(), "BatchNorm2d");
  ASSERT_EQ(bn->params().size(), 2u);
  EXPECT_EQ(bn->params()[0]->name, "weight");
  EXPECT_EQ(bn->params()[1]->name, "bias");
  EXPECT_EQ(bn->params()[0]->value.shape(), Shape({5}));
  ASSERT_EQ(bn->buffers().size(), 3u);
  EXPECT_EQ(bn->buffers()[0]->name, "running_mean");
  EXPECT_EQ(bn->buffers()[1]->name, "running_var");
  EXPECT_EQ(bn->buffers()[2]->name, "num_batches_tracked");
  const Tensor& nbt = bn->buffers()[2]->value;
  EXPECT_EQ(nbt.dtype(), DType::i64);
  EXPECT_EQ(nbt.numel(), 1);
  EXPECT_EQ(nbt.i64()[0], 0);
  // PyTorch's initial values.
  for (int c = 0; c < 5; ++c) {
    EXPECT_EQ(bn->params()[0]->value.f32()[c], 1.f);
    EXPECT_EQ(bn->params()[1]->value.f32()[c], 0.f);
    EXPECT_EQ(bn->buffers()[0]->value.f32()[c], 0.f);
    EXPECT_EQ(bn->buffers()[1]->value.f32()[c], 1.f);
  }
  EXPECT_THROW(bn->output_shape({2, 4, 3, 3}), UserError);
}

TEST(BatchNorm2d, TrainForwardUsesBatchStatisticsAndUpdatesRunningOnes) {
  std::mt19937 rng(8);
  const float eps = 1e-5f, momentum = 0.3f;
  LayerPtr bn = make_batchnorm2d(3, eps, momentum);
  randomize_params(*bn, rng);
  Tensor& running_mean = find_buffer(*bn, "running_mean")->value;
  Tensor& running_var = find_buffer(*bn, "running_var")->value;
  running_mean.copy_from(random_tensor({3}, rng));
  running_var.copy_from(random_tensor({3}, rng, 0.5f, 2.f));

  for (int64_t step = 1; step <= 2; ++step) {
    // An offset mean and a non-unit spread, different per step.
    Tensor x = random_tensor({4, 3, 5, 3}, rng, -2.f + step, 1.f + 2 * step);
    std::vector<double> expect_mean = as_doubles(running_mean), expect_var = as_doubles(running_var);
    ChannelStats s = naive_channel_stats(x);
    const double count = 4 * 5 * 3;
    for (int c = 0; c < 3; ++c) {
      expect_mean[c] = (1 - momentum) * expect_mean[c] + momentum * s.mean[c];
      expect_var[c] = (1 - momentum) * expect_var[c] + momentum * s.biased_var[c] * count / (count - 1);
    }
    Tensor y = bn->forward(x, Mode::train);
    std::vector<double> ref = naive_batchnorm(x, s.mean, s.biased_var, bn->params()[0]->value,
                                              bn->params()[1]->value, eps);
    EXPECT_LE(max_scaled_error(y, ref), 1e-5);
    EXPECT_LE(max_scaled_error(running_mean, expect_mean), 1e-6);
    EXPECT_LE(max_scaled_error(running_var, expect_var), 1e-6);
    EXPECT_EQ(find_buffer(*bn, "num_batches_tracked")->value.i64()[0], step);
  }
}

TEST(BatchNorm2d, EvalForwardUsesRunningStatisticsAndChangesNothing) {
  std::mt19937 rng(9);
  const float eps = 1e-3f;
  LayerPtr bn = make_batchnorm2d(4, eps);
  randomize_params(*bn, rng);
  Tensor& running_mean = find_buffer(*bn, "running_mean")->value;
  Tensor& running_var = find_buffer(*bn, "running_var")->value;
  running_mean.copy_from(random_tensor({4}, rng));
  running_var.copy_from(random_tensor({4}, rng, 0.5f, 2.f));
  std::vector<double> mean_before = as_doubles(running_mean), var_before = as_doubles(running_var);

  Tensor x = random_tensor({2, 4, 3, 5}, rng);
  Tensor y = bn->forward(x, Mode::eval);
  EXPECT_LE(max_scaled_error(y, naive_batchnorm(x, mean_before, var_before, bn->params()[0]->value,
                                                bn->params()[1]->value, eps)),
            1e-6);
  EXPECT_EQ(as_doubles(running_mean), mean_before);
  EXPECT_EQ(as_doubles(running_var), var_before);
  EXPECT_EQ(find_buffer(*bn, "num_batches_tracked")->value.i64()[0], 0);
}

// BatchNorm is not linear in x: the step trades truncation (h^2) against rounding (1/h); the worst seen is 1e-4.
constexpr double kBnGradStep = 4e-3;
constexpr double kBnGradTol = 1e-3;

TEST(BatchNorm2d, TrainBackwardMatchesFiniteDifferences) {
  std::mt19937 rng(10);
  for (Shape shape : {Shape{3, 2, 3, 4}, Shape{1, 3, 4, 2}, Shape{5, 2, 1, 1}}) {
    LayerPtr bn = make_batchnorm2d(static_cast<int>(shape[1]));
    randomize_params(*bn, rng, 1.f);
    check_gradients(*bn, random_tensor(shape, rng, -1.f, 2.f), Mode::train, kBnGradStep, kBnGradTol, rng);
  }
}

TEST(BatchNorm2d, EvalBackwardMatchesFiniteDifferences) {
  std::mt19937 rng(11);
  LayerPtr bn = make_batchnorm2d(3);
  randomize_params(*bn, rng, 1.f);
  find_buffer(*bn, "running_mean")->value.copy_from(random_tensor({3}, rng));
  find_buffer(*bn, "running_var")->value.copy_from(random_tensor({3}, rng, 0.5f, 2.f));
  check_gradients(*bn, random_tensor({2, 3, 4, 3}, rng), Mode::eval, kConvGradStep, kConvGradTol, rng);
}

TEST(BatchNorm2d, GradientsAccumulateAcrossBackwardCalls) {
  std::mt19937 rng(12);
  LayerPtr bn = make_batchnorm2d(3);
  randomize_params(*bn, rng, 1.f);
  check_accumulation(*bn, random_tensor({2, 3, 4, 4}, rng), rng);
}

TEST(BatchNorm2d, TrainingOnOneValuePerChannelIsRejected) {
  LayerPtr bn = make_batchnorm2d(2);
  EXPECT_THROW(bn->forward(Tensor({1, 2, 1, 1}), Mode::train), UserError);
  EXPECT_NO_THROW(bn->forward(Tensor({1, 2, 1, 1}), Mode::eval));
}

// ---- activations -----------------------------------------------------------------------------------

struct ActivationCase {
  const char* kind;
  LayerPtr (*make)();
  double (*reference)(double);
};

const ActivationCase kActivations[] = {
    {"ReLU", [] { return make_relu(); }, [](double x) { return x > 0 ? x : 0.0; }},
    {"LeakyReLU", [] { return make_leaky_relu(); }, [](double x) { return x > 0 ? x : 0.01 * x; }},
    {"LeakyReLU", [] { return make_leaky_relu(0.2f); }, [](double x) { return x > 0 ? x : 0.2 * x; }},
    {"Tanh", [] { return make_tanh(); }, [](double x) { return std::tanh(x); }},
    {"Sigmoid", [] { return make_sigmoid(); }, [](double x) { return 1.0 / (1.0 + std::exp(-x)); }},
};

TEST(Activations, ForwardMatchesFormula) {
  std::mt19937 rng(13);
  for (const ActivationCase& a : kActivations) {
    LayerPtr layer = a.make();
    EXPECT_EQ(layer->kind(), a.kind);
    EXPECT_TRUE(layer->params().empty());
    Tensor x = random_tensor({3, 2, 4, 5}, rng, -4.f, 4.f);
    Tensor y = layer->forward(x, Mode::train);
    ASSERT_EQ(y.shape(), x.shape());
    std::vector<double> ref(x.numel());
    for (int64_t i = 0; i < x.numel(); ++i) ref[i] = a.reference(x.f32()[i]);
    EXPECT_LE(max_scaled_error(y, ref), 1e-6) << a.kind;
  }
}

TEST(Activations, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(14);
  for (const ActivationCase& a : kActivations) {
    LayerPtr layer = a.make();
    // h = 1e-3: truncation of tanh/sigmoid ~1e-7, rounding ~3e-5 (the worst seen); tolerance 5e-4.
    check_gradients(*layer, random_away_from_zero({2, 3, 4, 3}, rng), Mode::train, 1e-3, 5e-4, rng);
  }
}

TEST(Activations, ReluPassesGradientOnlyWherePositive) {
  LayerPtr relu = make_relu();
  Tensor x = Tensor::from({1, 4}, {-1.f, 0.f, 2.f, -0.5f});
  relu->forward(x, Mode::train);
  Tensor dx = relu->backward(Tensor::from({1, 4}, {1.f, 1.f, 1.f, 1.f}));
  EXPECT_EQ(as_doubles(dx), std::vector<double>({0.0, 0.0, 1.0, 0.0}));
}

// ---- Linear and Reshape ----------------------------------------------------------------------------

TEST(Linear, ForwardMatchesNaiveLoop) {
  std::mt19937 rng(15);
  for (bool bias : {true, false})
    for (int batch : {1, 4}) {
      LayerPtr lin = make_linear(7, 5, bias);
      randomize_params(*lin, rng);
      ASSERT_EQ(lin->params().size(), bias ? 2u : 1u);
      EXPECT_EQ(lin->params()[0]->name, "weight");
      EXPECT_EQ(lin->params()[0]->value.shape(), Shape({5, 7}));
      Tensor x = random_tensor({batch, 7}, rng);
      Tensor y = lin->forward(x, Mode::train);
      ASSERT_EQ(y.shape(), Shape({batch, 5}));
      std::vector<double> ref(batch * 5);
      const float* w = lin->params()[0]->value.f32();
      for (int n = 0; n < batch; ++n)
        for (int o = 0; o < 5; ++o) {
          double acc = bias ? lin->params()[1]->value.f32()[o] : 0.0;
          for (int i = 0; i < 7; ++i) acc += static_cast<double>(x.f32()[n * 7 + i]) * w[o * 7 + i];
          ref[n * 5 + o] = acc;
        }
      EXPECT_LE(max_scaled_error(y, ref), kForwardTol);
    }
}

TEST(Linear, BackwardMatchesFiniteDifferencesAndAccumulates) {
  std::mt19937 rng(16);
  for (bool bias : {true, false}) {
    LayerPtr lin = make_linear(6, 4, bias);
    randomize_params(*lin, rng);
    check_gradients(*lin, random_tensor({3, 6}, rng), Mode::train, kConvGradStep, kConvGradTol, rng);
    check_accumulation(*lin, random_tensor({3, 6}, rng), rng);
  }
  EXPECT_THROW(make_linear(6, 4)->output_shape({3, 5}), UserError);
}

TEST(Reshape, KeepsValuesAndShapesTheGradientBack) {
  std::mt19937 rng(17);
  LayerPtr reshape = make_reshape({3, 2, 2});
  EXPECT_EQ(reshape->kind(), "Reshape");
  Tensor x = random_tensor({2, 12}, rng);
  Tensor y = reshape->forward(x, Mode::train);
  EXPECT_EQ(y.shape(), Shape({2, 3, 2, 2}));
  EXPECT_EQ(as_doubles(y), as_doubles(x));
  Tensor dy = random_tensor({2, 3, 2, 2}, rng);
  Tensor dx = reshape->backward(dy);
  EXPECT_EQ(dx.shape(), Shape({2, 12}));
  EXPECT_EQ(as_doubles(dx), as_doubles(dy));
  EXPECT_THROW(reshape->output_shape({2, 11}), UserError);
}

}  // namespace
}  // namespace gt
