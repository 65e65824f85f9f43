// GPU-vs-CPU parity: one table of cases (kernel, shape, precision, tolerance); each runs the CUDA kernel and the CPU reference on the same fresh random inputs.
//
// Every row runs its GPU kernel and the CPU reference (nn/cpu/kernels.h, train/optim.cpp,
// train/loss.cpp, core/rng.h, data/image_source.h) on the same random inputs, drawn afresh each run
// (the seed is printed; GT_PARITY_SEED=<n> repeats a run), with every GPU output poisoned (NaN bytes)
// first so an element the kernel never wrote fails. Outputs are compared by normalized error
// ||gpu - cpu|| / ||cpu|| against the row's tolerance; tolerance 0 means bit-identical. A new kernel
// gets its test by adding rows to cases(). Without a usable GPU every row skips, saying why.
// Rows with a storage format (f32 NHWC, bf16 NCHW/NHWC: kernels_typed.h) convert layouts on the host and,
// for bf16, give the CPU reference the inputs rounded to bf16.
#include <gtest/gtest.h>

#ifdef GANTRAIN_HAVE_CUDA

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda/arena.h"
#include "cuda/context.h"
#include "cuda/conv.h"
#include "core/optim_math.h"
#include "core/rng.h"
#include "data/image_source.h"
#include "cuda/dense.h"
#include "cuda/device.h"
#include "cuda/formats.h"
#include "cuda/kernels.h"
#include "cuda/kernels_typed.h"
#include "nn/cpu/kernels.h"
#include "common/require_gpu.h"
#include "cuda/optim_gpu.h"
#include "core/loss_math.h"
#include "train/cpu_step.h"
#include "train/gan_step.h"
#include "train/loss.h"
#include "train/optim.h"

namespace {

using gt::cuda::ActFormat;
using gt::cuda::Activation;
using gt::cuda::DataType;
using gt::cuda::DeviceBuffer;
using gt::cuda::Layout;
using gt::cuda::Precision;

// ---- the rig: one context per precision, made on first use, with a conv engine per storage format ---------

struct Rig {
  explicit Rig(Precision p) : ctx(make_options(p)), conv(ctx) {}
  static gt::cuda::GpuOptions make_options(Precision p) {
    gt::cuda::GpuOptions o;
    o.precision = p;
    return o;
  }
  cudaStream_t stream() const { return ctx.stream(); }
  gt::cuda::ConvEngine& conv_for(const ActFormat& f) {
    if (f == ActFormat{}) return conv;
    auto& slot = engines[{static_cast<int>(f.type), static_cast<int>(f.layout)}];
    if (!slot) slot = std::make_unique<gt::cuda::ConvEngine>(ctx, f);
    return *slot;
  }
  gt::cuda::GpuContext ctx;
  gt::cuda::ConvEngine conv;  // f32 NCHW
  std::map<std::pair<int, int>, std::unique_ptr<gt::cuda::ConvEngine>> engines;
};

struct Output {
  std::string name;
  std::vector<float> cpu, gpu;
};

struct Case;
using Runner = std::vector<Output> (*)(const Case&, Rig&, uint64_t seed);

// One row of the table. dims and variant mean what the runner says.
struct Case {
  const char* kernel;
  Runner run;
  std::vector<int> dims;
  Precision precision;
  double tolerance;  // largest normalized error allowed; 0: bit-identical
  int variant = 0;
  ActFormat format{};  // the storage format of rows over kernels_typed.h
};

// ---- host/device helpers ---------------------------------------------------------------------------------

std::vector<float> random_normal(size_t n, uint64_t seed, float mean = 0.f, float std = 1.f) {
  std::vector<float> v(n);
  gt::fill_normal(v.data(), static_cast<int64_t>(n), mean, std, seed, gt::RngStream::test, 0);
  return v;
}

std::vector<float> random_positive(size_t n, uint64_t seed, float lo, float hi) {
  std::vector<float> v(n);
  gt::fill_uniform(v.data(), static_cast<int64_t>(n), lo, hi, seed, gt::RngStream::test, 0);
  return v;
}

// The host vector must outlive the copy: callers keep it until they download (which synchronizes).
template <class T>
DeviceBuffer<T> to_device(const std::vector<T>& host, cudaStream_t stream) {
  DeviceBuffer<T> d(host.size());
  d.upload(host.data(), host.size(), stream);
  return d;
}

template <class T>
std::vector<T> to_host(const DeviceBuffer<T>& d, cudaStream_t stream) {
  std::vector<T> h(d.size());
  d.download(h.data(), h.size(), stream);
  return h;
}

// All bytes 0xFF: a NaN in every float, so an element the kernel did not write cannot pass.
DeviceBuffer<float> poisoned(size_t n, cudaStream_t stream) {
  DeviceBuffer<float> d(n);
  d.fill_bytes(0xFF, stream);
  return d;
}

std::vector<float> bytes_as_floats(const std::vector<uint8_t>& b) { return std::vector<float>(b.begin(), b.end()); }

// ---- storage formats on the host: bf16 rounding and layouts -------------------------------------------------

// float -> bf16 bits, rounded to nearest even (as __float2bfloat16_rn); NaN stays a quiet NaN.
uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float bf16_value(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
// The values a tensor of type t holds: bf16 rounds each one.
std::vector<float> rounded(std::vector<float> v, DataType t) {
  if (t == DataType::bf16)
    for (float& x : v) x = bf16_value(bf16_bits(x));
  return v;
}

// [N, C, HW] NCHW <-> the layout l (NHWC: [N, HW, C]).
std::vector<float> nchw_nhwc(const std::vector<float>& v, int N, int C, int HW, bool to_nhwc) {
  std::vector<float> out(v.size());
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < HW; ++i) {
        const size_t nchw = (static_cast<size_t>(n) * C + c) * HW + i, nhwc = (static_cast<size_t>(n) * HW + i) * C + c;
        out[to_nhwc ? nhwc : nchw] = v[to_nhwc ? nchw : nhwc];
      }
  return out;
}
std::vector<float> to_layout(const std::vector<float>& nchw, int N, int C, int HW, Layout l) {
  return l == Layout::nchw ? nchw : nchw_nhwc(nchw, N, C, HW, true);
}
std::vector<float> from_layout(const std::vector<float>& v, int N, int C, int HW, Layout l) {
  return l == Layout::nchw ? v : nchw_nhwc(v, N, C, HW, false);
}

// A device tensor of f32 or bf16 values, filled from and read back as floats. It keeps its host staging
// copy, so an upload's source lives as long as the buffer.
struct TypedBuffer {
  TypedBuffer(DataType t, size_t n) : type(t), count(n), bytes(n * gt::cuda::data_type_size(t)) {}
  void* data() { return bytes.data(); }
  void upload(const std::vector<float>& v, cudaStream_t s) {
    staging.resize(bytes.size());
    if (type == DataType::f32) {
      std::memcpy(staging.data(), v.data(), v.size() * sizeof(float));
    } else {
      for (size_t i = 0; i < v.size(); ++i) {
        const uint16_t b = bf16_bits(v[i]);
        std::memcpy(staging.data() + 2 * i, &b, 2);
      }
    }
    bytes.upload(staging.data(), staging.size(), s);
  }
  std::vector<float> download(cudaStream_t s) const {
    std::vector<std::byte> raw(bytes.size());
    bytes.download(raw.data(), raw.size(), s);
    std::vector<float> v(count);
    for (size_t i = 0; i < count; ++i) {
      if (type == DataType::f32) {
        std::memcpy(&v[i], raw.data() + 4 * i, 4);
      } else {
        uint16_t b;
        std::memcpy(&b, raw.data() + 2 * i, 2);
        v[i] = bf16_value(b);
      }
    }
    return v;
  }
  DataType type;
  size_t count;
  DeviceBuffer<std::byte> bytes;
  std::vector<std::byte> staging;
};

TypedBuffer typed_device(const std::vector<float>& v, DataType t, cudaStream_t s) {
  TypedBuffer b(t, v.size());
  b.upload(v, s);
  return b;
}
TypedBuffer typed_poisoned(size_t n, DataType t, cudaStream_t s) {
  TypedBuffer b(t, n);
  b.bytes.fill_bytes(0xFF, s);  // NaN in f32 and in bf16
  return b;
}

const float kSlope = 0.2f;
const float kEps = 1e-5f;

void cpu_activation_forward(Activation act, float* out, const float* in, int64_t n) {
  switch (act) {
    case Activation::relu: return gt::cpu::relu_forward(out, in, n);
    case Activation::leaky_relu: return gt::cpu::leaky_relu_forward(out, in, n, kSlope);
    case Activation::tanh: return gt::cpu::tanh_forward(out, in, n);
    case Activation::sigmoid: return gt::cpu::sigmoid_forward(out, in, n);
    case Activation::none: std::memmove(out, in, static_cast<size_t>(n) * sizeof(float)); return;
  }
}

void cpu_activation_backward(Activation act, float* dinp, const float* dout, const float* saved, int64_t n) {
  switch (act) {
    case Activation::relu: return gt::cpu::relu_backward(dinp, dout, saved, n);
    case Activation::leaky_relu: return gt::cpu::leaky_relu_backward(dinp, dout, saved, n, kSlope);
    case Activation::tanh: return gt::cpu::tanh_backward(dinp, dout, saved, n);
    case Activation::sigmoid: return gt::cpu::sigmoid_backward(dinp, dout, saved, n);
    case Activation::none: std::memmove(dinp, dout, static_cast<size_t>(n) * sizeof(float)); return;
  }
}

const char* activation_name(Activation act) {
  switch (act) {
    case Activation::none: return "none";
    case Activation::relu: return "relu";
    case Activation::leaky_relu: return "leaky";
    case Activation::tanh: return "tanh";
    case Activation::sigmoid: return "sigmoid";
  }
  return "?";
}

// ---- runners ---------------------------------------------------------------------------------------------

// dims {n}; variant: the activation.
std::vector<Output> run_activation(const Case& c, Rig& rig, uint64_t seed) {
  const auto act = static_cast<Activation>(c.variant);
  const int64_t n = c.dims[0];
  const auto s = rig.stream();
  const std::vector<float> x = random_normal(static_cast<size_t>(n), seed, 0.f, 3.f);
  const std::vector<float> dy = random_normal(static_cast<size_t>(n), seed + 1);
  std::vector<float> y(x.size()), dx(x.size());
  cpu_activation_forward(act, y.data(), x.data(), n);
  // The CPU backward keeps the input for leaky ReLU and the output for the others.
  const std::vector<float>& saved = act == Activation::leaky_relu ? x : y;
  cpu_activation_backward(act, dx.data(), dy.data(), saved.data(), n);

  auto gx = to_device(x, s), gdy = to_device(dy, s), gsaved = to_device(saved, s);
  auto gy = poisoned(x.size(), s), gdx = poisoned(x.size(), s);
  gt::cuda::activation_forward(gy.data(), gx.data(), n, act, kSlope, s);
  gt::cuda::activation_backward(gdx.data(), gdy.data(), gsaved.data(), n, act, kSlope, s);
  return {{"forward", y, to_host(gy, s)}, {"backward", dx, to_host(gdx, s)}};
}

struct BnShape {
  int N, C, H, W;
  int HW() const { return H * W; }
  size_t size() const { return static_cast<size_t>(N) * C * H * W; }
};
BnShape bn_shape(const Case& c) { return {c.dims[0], c.dims[1], c.dims[2], c.dims[3]}; }

// dims {N, C, H, W}; variant: the fused activation. Forward in train mode: output and statistics.
std::vector<Output> run_batchnorm_train_forward(const Case& c, Rig& rig, uint64_t seed) {
  const auto act = static_cast<Activation>(c.variant);
  const BnShape b = bn_shape(c);
  const auto s = rig.stream();
  // A large mean next to a small spread checks the two-pass variance.
  const std::vector<float> x = random_normal(b.size(), seed, 3.f, 2.f);
  const std::vector<float> w = random_normal(static_cast<size_t>(b.C), seed + 1, 1.f, 0.5f);
  const std::vector<float> bias = random_normal(static_cast<size_t>(b.C), seed + 2);
  std::vector<float> y(b.size()), mean(b.C), rstd(b.C), var(b.C);
  gt::cpu::batchnorm2d_forward_train(y.data(), mean.data(), rstd.data(), var.data(), x.data(), w.data(), bias.data(),
                                     b.N, b.C, b.HW(), kEps);
  cpu_activation_forward(act, y.data(), y.data(), static_cast<int64_t>(y.size()));

  auto gx = to_device(x, s), gw = to_device(w, s), gb = to_device(bias, s);
  auto gy = poisoned(b.size(), s), gmean = poisoned(b.C, s), grstd = poisoned(b.C, s), gvar = poisoned(b.C, s);
  DeviceBuffer<double> ws(gt::cuda::batchnorm_workspace_doubles(b.N, b.C, b.HW()));
  gt::cuda::batchnorm_forward_train(gy.data(), gmean.data(), grstd.data(), gvar.data(), gx.data(), gw.data(),
                                    gb.data(), b.N, b.C, b.HW(), kEps, act, kSlope, ws.data(), s);
  return {{"out", y, to_host(gy, s)},
          {"mean", mean, to_host(gmean, s)},
          {"rstd", rstd, to_host(grstd, s)},
          {"var", var, to_host(gvar, s)}};
}

// dims {C}: the running statistics update from given batch statistics.
std::vector<Output> run_batchnorm_running(const Case& c, Rig& rig, uint64_t seed) {
  const int C = c.dims[0];
  const int64_t count = 4097;
  const float momentum = 0.1f;
  const auto s = rig.stream();
  std::vector<float> rm = random_normal(C, seed), rv = random_positive(C, seed + 1, 0.5f, 2.f);
  const std::vector<float> mean = random_normal(C, seed + 2), var = random_positive(C, seed + 3, 0.1f, 3.f);
  auto grm = to_device(rm, s), grv = to_device(rv, s), gmean = to_device(mean, s), gvar = to_device(var, s);
  gt::cpu::batchnorm2d_update_running(rm.data(), rv.data(), mean.data(), var.data(), C, count, momentum);
  gt::cuda::batchnorm_update_running(grm.data(), grv.data(), gmean.data(), gvar.data(), C, count, momentum, s);
  return {{"running_mean", rm, to_host(grm, s)}, {"running_var", rv, to_host(grv, s)}};
}

// dims {N, C, H, W}; variant: the fused activation. Eval-mode forward and backward.
std::vector<Output> run_batchnorm_eval(const Case& c, Rig& rig, uint64_t seed) {
  const auto act = static_cast<Activation>(c.variant);
  const BnShape b = bn_shape(c);
  const int64_t n = static_cast<int64_t>(b.size());
  const auto s = rig.stream();
  const std::vector<float> x = random_normal(b.size(), seed, 1.f, 2.f), dy = random_normal(b.size(), seed + 1);
  const std::vector<float> w = random_normal(b.C, seed + 2, 1.f, 0.5f), bias = random_normal(b.C, seed + 3);
  const std::vector<float> rm = random_normal(b.C, seed + 4), rv = random_positive(b.C, seed + 5, 0.5f, 4.f);
  std::vector<float> dw = random_normal(b.C, seed + 6), db = random_normal(b.C, seed + 7);
  auto gdw = to_device(dw, s), gdb = to_device(db, s);  // both sides accumulate into the same start

  std::vector<float> pre(b.size()), y(b.size()), g(b.size()), dx(b.size());
  gt::cpu::batchnorm2d_forward_eval(pre.data(), x.data(), w.data(), bias.data(), rm.data(), rv.data(), b.N, b.C,
                                    b.HW(), kEps);
  cpu_activation_forward(act, y.data(), pre.data(), n);
  cpu_activation_backward(act, g.data(), dy.data(), act == Activation::leaky_relu ? pre.data() : y.data(), n);
  gt::cpu::batchnorm2d_backward_eval(dx.data(), dw.data(), db.data(), g.data(), x.data(), rm.data(), rv.data(),
                                     w.data(), b.N, b.C, b.HW(), kEps);

  auto gx = to_device(x, s), gdy = to_device(dy, s), gw = to_device(w, s), gb = to_device(bias, s);
  auto grm = to_device(rm, s), grv = to_device(rv, s);
  auto gy = poisoned(b.size(), s), gdx = poisoned(b.size(), s);
  DeviceBuffer<double> ws(gt::cuda::batchnorm_workspace_doubles(b.N, b.C, b.HW()));
  gt::cuda::batchnorm_forward_eval(gy.data(), gx.data(), gw.data(), gb.data(), grm.data(), grv.data(), b.N, b.C,
                                   b.HW(), kEps, act, kSlope, s);
  gt::cuda::batchnorm_backward_eval(gdx.data(), gdw.data(), gdb.data(), gdy.data(), gx.data(), grm.data(), grv.data(),
                                    gw.data(), gb.data(), b.N, b.C, b.HW(), kEps, act, kSlope, ws.data(), s);
  return {{"out", y, to_host(gy, s)},
          {"dinp", dx, to_host(gdx, s)},
          {"dweight", dw, to_host(gdw, s)},
          {"dbias", db, to_host(gdb, s)}};
}

// dims {N, C, H, W}; variant: the fused activation. Train-mode backward from the CPU forward's statistics.
std::vector<Output> run_batchnorm_train_backward(const Case& c, Rig& rig, uint64_t seed) {
  const auto act = static_cast<Activation>(c.variant);
  const BnShape b = bn_shape(c);
  const int64_t n = static_cast<int64_t>(b.size());
  const auto s = rig.stream();
  const std::vector<float> x = random_normal(b.size(), seed, -1.f, 2.f), dy = random_normal(b.size(), seed + 1);
  const std::vector<float> w = random_normal(b.C, seed + 2, 1.f, 0.5f), bias = random_normal(b.C, seed + 3);
  std::vector<float> dw = random_normal(b.C, seed + 4), db = random_normal(b.C, seed + 5);
  auto gdw = to_device(dw, s), gdb = to_device(db, s);

  std::vector<float> pre(b.size()), y(b.size()), g(b.size()), dx(b.size()), mean(b.C), rstd(b.C);
  gt::cpu::batchnorm2d_forward_train(pre.data(), mean.data(), rstd.data(), nullptr, x.data(), w.data(), bias.data(),
                                     b.N, b.C, b.HW(), kEps);
  cpu_activation_forward(act, y.data(), pre.data(), n);
  cpu_activation_backward(act, g.data(), dy.data(), act == Activation::leaky_relu ? pre.data() : y.data(), n);
  gt::cpu::batchnorm2d_backward_train(dx.data(), dw.data(), db.data(), g.data(), x.data(), mean.data(), rstd.data(),
                                      w.data(), b.N, b.C, b.HW());

  auto gx = to_device(x, s), gdy = to_device(dy, s), gw = to_device(w, s), gb = to_device(bias, s);
  auto gmean = to_device(mean, s), grstd = to_device(rstd, s);
  auto gdx = poisoned(b.size(), s);
  DeviceBuffer<double> ws(gt::cuda::batchnorm_workspace_doubles(b.N, b.C, b.HW()));
  gt::cuda::batchnorm_backward_train(gdx.data(), gdw.data(), gdb.data(), gdy.data(), gx.data(), gmean.data(),
                                     grstd.data(), gw.data(), gb.data(), b.N, b.C, b.HW(), act, kSlope, ws.data(), s);
  return {{"dinp", dx, to_host(gdx, s)}, {"dweight", dw, to_host(gdw, s)}, {"dbias", db, to_host(gdb, s)}};
}

// dims {n}; variant: the target (0 or 1).
std::vector<Output> run_bce(const Case& c, Rig& rig, uint64_t seed) {
  const int64_t n = c.dims[0];
  const float target = static_cast<float>(c.variant), scale = 0.5f;
  const auto s = rig.stream();
  const std::vector<float> logits = random_normal(static_cast<size_t>(n), seed, 0.f, 4.f);
  std::vector<float> dlogits(logits.size());
  const float loss = gt::bce_with_logits(logits.data(), n, target, dlogits.data(), scale);
  auto glogits = to_device(logits, s);
  auto gloss = poisoned(1, s), gd = poisoned(logits.size(), s);
  gt::cuda::bce_with_logits(gloss.data(), gd.data(), glogits.data(), n, target, scale, s);
  return {{"loss", {loss}, to_host(gloss, s)}, {"dlogits", dlogits, to_host(gd, s)}};
}

// Random uint8 NHWC images and flips for the rows below (dims {N, H, W, in_channels, out_channels}), with
// the CPU's float NCHW conversion of them: the loader's hwc_u8_to_chw_f32.
struct U8Images {
  int N, H, W, cin, cout;
  std::vector<uint8_t> pixels, flips;
  std::vector<float> reference;
};
U8Images random_u8_images(const Case& c, uint64_t seed) {
  U8Images u{c.dims[0], c.dims[1], c.dims[2], c.dims[3], c.dims[4], {}, {}, {}};
  std::mt19937 gen(static_cast<uint32_t>(seed));
  u.pixels.resize(static_cast<size_t>(u.N) * u.H * u.W * u.cin);
  u.flips.resize(static_cast<size_t>(u.N));
  for (auto& p : u.pixels) p = static_cast<uint8_t>(gen() & 0xFF);
  for (auto& f : u.flips) f = static_cast<uint8_t>(gen() & 1);
  const size_t per_image = static_cast<size_t>(u.cout) * u.H * u.W;
  u.reference.resize(per_image * u.N);
  for (int i = 0; i < u.N; ++i)
    gt::hwc_u8_to_chw_f32(u.pixels.data() + static_cast<size_t>(i) * u.H * u.W * u.cin, u.H, u.W, u.cin, u.cout,
                          u.flips[i] != 0, u.reference.data() + i * per_image);
  return u;
}

// uint8 NHWC to float NCHW with random flips.
std::vector<Output> run_u8_to_f32(const Case& c, Rig& rig, uint64_t seed) {
  const auto s = rig.stream();
  const U8Images u = random_u8_images(c, seed);
  auto gpixels = to_device(u.pixels, s);
  auto gflips = to_device(u.flips, s);
  auto gout = poisoned(u.reference.size(), s);
  gt::cuda::u8_nhwc_to_f32_nchw(gout.data(), gpixels.data(), gflips.data(), u.N, u.H, u.W, u.cin, u.cout, 127.5f,
                                -1.f, s);
  return {{"images", u.reference, to_host(gout, s)}};
}

// dims {count, step, first position}.
std::vector<Output> run_flips(const Case& c, Rig& rig, uint64_t seed) {
  const int64_t count = c.dims[0], step = c.dims[1], first = c.dims[2];
  const auto s = rig.stream();
  std::vector<uint8_t> flips(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) flips[static_cast<size_t>(i)] = gt::flip_drawn(seed, step, first + i) ? 1 : 0;
  DeviceBuffer<uint8_t> gflips(flips.size());
  gflips.fill_bytes(0x77, s);
  gt::cuda::draw_flips(gflips.data(), count, seed, step, first, s);
  return {{"flips", bytes_as_floats(flips), bytes_as_floats(to_host(gflips, s))}};
}

// dims {count, nz}: the generator's noise at a step past 2^32, so both halves of the step count.
std::vector<Output> run_noise(const Case& c, Rig& rig, uint64_t seed) {
  const int64_t count = c.dims[0];
  const int nz = c.dims[1];
  const uint64_t step = (uint64_t{1} << 33) + 12345;
  const int64_t first = 1000;
  const auto s = rig.stream();
  std::vector<float> z(static_cast<size_t>(count) * nz);
  gt::fill_noise(z.data(), count, nz, seed, step, first);
  auto gz = poisoned(z.size(), s);
  gt::cuda::fill_noise(gz.data(), count, nz, seed, step, first, s);
  return {{"z", z, to_host(gz, s)}};
}

// ---- optimizers and other multi-tensor updates --------------------------------------------------------

enum OptimVariant { adam, adam_wd, adam_clipped, rmsprop, rmsprop_momentum_wd, sgd, sgd_momentum_wd };

gt::OptimConfig optim_config(int variant) {
  gt::OptimConfig cfg;
  switch (variant) {
    case adam: break;
    case adam_wd: cfg.weight_decay = 0.01; break;
    case adam_clipped: cfg.lr = 1e-3; break;
    case rmsprop: cfg.kind = gt::OptimizerKind::rmsprop; cfg.lr = 5e-5; break;
    case rmsprop_momentum_wd: cfg.kind = gt::OptimizerKind::rmsprop; cfg.lr = 1e-4; cfg.momentum = 0.9; cfg.weight_decay = 1e-3; break;
    case sgd: cfg.kind = gt::OptimizerKind::sgd; cfg.lr = 0.01; break;
    case sgd_momentum_wd: cfg.kind = gt::OptimizerKind::sgd; cfg.lr = 0.01; cfg.momentum = 0.9; cfg.weight_decay = 5e-4; break;
    default: ADD_FAILURE() << "unknown optimizer variant " << variant;
  }
  return cfg;
}

// One tensor of the parameter list on both sides.
struct ParamPair {
  gt::Param cpu;
  DeviceBuffer<float> value, grad, state0, state1;
};

std::vector<std::unique_ptr<ParamPair>> make_params(const std::vector<int>& sizes, uint64_t seed, cudaStream_t s,
                                                    std::vector<std::vector<float>>& keep_alive) {
  std::vector<std::unique_ptr<ParamPair>> params;
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto p = std::make_unique<ParamPair>();
    const size_t n = static_cast<size_t>(sizes[i]);
    keep_alive.push_back(random_normal(n, seed + i, 0.f, 0.1f));
    std::string name = "p";  // appended, not "p" + ...: GCC 12 warns falsely (-Wrestrict) on that operator+
    name += std::to_string(i);
    p->cpu = gt::Param{name, gt::Tensor::from({static_cast<int64_t>(n)}, keep_alive.back()),
                       gt::Tensor({static_cast<int64_t>(n)})};
    p->value = to_device(keep_alive.back(), s);
    p->grad = DeviceBuffer<float>(n);
    p->state0 = DeviceBuffer<float>(n);
    p->state1 = DeviceBuffer<float>(n);
    p->state0.fill_bytes(0, s);  // optimizer state starts at zero, as on the CPU
    p->state1.fill_bytes(0, s);
    params.push_back(std::move(p));
  }
  return params;
}

// Fresh gradients of one step, the same on both sides.
void set_gradients(std::vector<std::unique_ptr<ParamPair>>& params, uint64_t seed, cudaStream_t s,
                   std::vector<std::vector<float>>& keep_alive) {
  for (size_t i = 0; i < params.size(); ++i) {
    ParamPair& p = *params[i];
    keep_alive.push_back(random_normal(static_cast<size_t>(p.cpu.grad.numel()), seed + 7919 * i, 0.f, 0.5f));
    std::memcpy(p.cpu.grad.f32(), keep_alive.back().data(), keep_alive.back().size() * sizeof(float));
    p.grad.upload(keep_alive.back().data(), keep_alive.back().size(), s);
  }
}

std::vector<float> tensor_values(const gt::Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

// dims: the tensor sizes; variant: OptimVariant. Three steps on both sides; parameters and states compared.
std::vector<Output> run_optimizer(const Case& c, Rig& rig, uint64_t seed) {
  const auto s = rig.stream();
  const gt::OptimConfig cfg = optim_config(c.variant);
  const bool clipped = c.variant == adam_clipped;
  const float max_norm = 1.f;  // gradients of norm ~0.5 * sqrt(size): clipping applies
  std::vector<std::vector<float>> keep_alive;
  auto params = make_params(c.dims, seed, s, keep_alive);
  std::vector<gt::NamedParam> named;
  std::vector<gt::cuda::TensorRef> refs;
  const bool has_state1 = (cfg.kind == gt::OptimizerKind::adam) || (cfg.kind == gt::OptimizerKind::rmsprop && cfg.momentum > 0);
  const bool has_state0 = cfg.kind != gt::OptimizerKind::sgd || cfg.momentum != 0;
  for (auto& p : params) {
    named.push_back({p->cpu.name, &p->cpu});
    refs.push_back({p->value.data(), p->grad.data(), has_state0 ? p->state0.data() : nullptr,
                    has_state1 ? p->state1.data() : nullptr, p->cpu.value.numel()});
  }
  auto optimizer = gt::make_optimizer(cfg, named);
  gt::cuda::MultiTensorList list(refs, s);
  DeviceBuffer<double> partial(static_cast<size_t>(list.chunks()));
  auto gnorm = poisoned(1, s), gcoef = poisoned(1, s);
  std::vector<float> norms_cpu, norms_gpu;
  const int steps = 3;
  for (int step = 1; step <= steps; ++step) {
    set_gradients(params, seed + 100 * step, s, keep_alive);
    if (clipped) {
      norms_cpu.push_back(gt::clip_grad_norm(named, max_norm));
      gt::cuda::grad_global_norm(gnorm.data(), gcoef.data(), list.view(), max_norm, partial.data(), s);
      norms_gpu.push_back(to_host(gnorm, s)[0]);
    }
    optimizer->step();
    const float* scale = clipped ? gcoef.data() : nullptr;
    if (cfg.kind == gt::OptimizerKind::adam)
      gt::cuda::adam_update(list.view(), gt::adam_coefficients(cfg, step), scale, s);
    else if (cfg.kind == gt::OptimizerKind::rmsprop)
      gt::cuda::rmsprop_update(list.view(), gt::rmsprop_coefficients(cfg), scale, s);
    else
      gt::cuda::sgd_update(list.view(), gt::sgd_coefficients(cfg, step == 1), scale, s);
    rig.ctx.synchronize();  // the next step's uploads reuse nothing, but keep steps separate for errors
  }
  std::vector<Output> outputs;
  if (clipped) outputs.push_back({"norm", norms_cpu, norms_gpu});
  for (auto& p : params) outputs.push_back({p->cpu.name, tensor_values(p->cpu.value), to_host(p->value, s)});
  // optimizer->state() names end in the state's role; map each to its GPU slot.
  size_t index = 0;
  for (const gt::NamedState& st : optimizer->state()) {
    const std::string& name = st.name;
    while (index < params.size() && name.rfind(params[index]->cpu.name + "/", 0) != 0) ++index;
    EXPECT_LT(index, params.size()) << "state " << name << " matches no parameter";
    if (index >= params.size()) break;
    ParamPair& p = *params[index];
    const bool second = name.find("exp_avg_sq") != std::string::npos ||
                        (cfg.kind == gt::OptimizerKind::rmsprop && name.find("momentum_buffer") != std::string::npos);
    outputs.push_back({name, tensor_values(*st.tensor), to_host(second ? p.state1 : p.state0, s)});
  }
  return outputs;
}

// dims: tensor sizes. clip_grad_norm in place, with a max norm that clips.
std::vector<Output> run_clip_grad_norm(const Case& c, Rig& rig, uint64_t seed) {
  const auto s = rig.stream();
  std::vector<std::vector<float>> keep_alive;
  auto params = make_params(c.dims, seed, s, keep_alive);
  set_gradients(params, seed + 1, s, keep_alive);
  std::vector<gt::NamedParam> named;
  std::vector<gt::cuda::TensorRef> refs;
  for (auto& p : params) {
    named.push_back({p->cpu.name, &p->cpu});
    refs.push_back({p->value.data(), p->grad.data(), nullptr, nullptr, p->cpu.value.numel()});
  }
  gt::cuda::MultiTensorList list(refs, s);
  DeviceBuffer<double> partial(static_cast<size_t>(list.chunks()));
  auto gnorm = poisoned(1, s), gcoef = poisoned(1, s);
  const float max_norm = 0.75f;
  const float norm = gt::clip_grad_norm(named, max_norm);
  gt::cuda::grad_global_norm(gnorm.data(), gcoef.data(), list.view(), max_norm, partial.data(), s);
  gt::cuda::scale_grads_below_one(list.view(), gcoef.data(), s);
  std::vector<Output> outputs{{"norm", {norm}, to_host(gnorm, s)}};
  for (auto& p : params) outputs.push_back({p->cpu.name + ".grad", tensor_values(p->cpu.grad), to_host(p->grad, s)});
  return outputs;
}

// dims: tensor sizes. EMA (decay 0.999) and weight clipping (0.01), against their formulas in float.
std::vector<Output> run_ema_and_weight_clip(const Case& c, Rig& rig, uint64_t seed) {
  const auto s = rig.stream();
  const float decay = 0.999f, limit = 0.01f;
  std::vector<std::vector<float>> keep_alive;
  auto params = make_params(c.dims, seed, s, keep_alive);
  std::vector<gt::cuda::TensorRef> refs;
  std::vector<std::vector<float>> averages;
  for (size_t i = 0; i < params.size(); ++i) {
    ParamPair& p = *params[i];
    averages.push_back(random_normal(static_cast<size_t>(p.cpu.value.numel()), seed + 50 + i, 0.f, 0.1f));
    p.state0.upload(averages.back().data(), averages.back().size(), s);
    refs.push_back({p.value.data(), nullptr, p.state0.data(), nullptr, p.cpu.value.numel()});
  }
  gt::cuda::MultiTensorList list(refs, s);
  gt::cuda::ema_update(list.view(), 1.f - decay, s);
  gt::cuda::clip_weights(list.view(), limit, s);
  std::vector<Output> outputs;
  for (size_t i = 0; i < params.size(); ++i) {
    ParamPair& p = *params[i];
    std::vector<float> average = averages[i], clipped = tensor_values(p.cpu.value);
    const float one_minus_decay = 1.f - decay;
    for (size_t k = 0; k < average.size(); ++k) {
      average[k] = gt::optim_math::ema_value(average[k], clipped[k], one_minus_decay);
      clipped[k] = gt::optim_math::clip_weight(clipped[k], limit);
    }
    outputs.push_back({p.cpu.name + ".ema", average, to_host(p.state0, s)});
    outputs.push_back({p.cpu.name + ".clipped", clipped, to_host(p.value, s)});
  }
  return outputs;
}

// ---- convolutions and dense layers ------------------------------------------------------------------

// dims {N, C, H, OC, K, stride, pad}; variant 1: with bias. Square images.
gt::cpu::ConvGeometry conv_geometry(const Case& c, bool transposed) {
  gt::cpu::ConvGeometry g;
  g.batch = c.dims[0];
  g.in_channels = c.dims[1];
  g.in_h = g.in_w = c.dims[2];
  g.out_channels = c.dims[3];
  g.kernel = c.dims[4];
  g.stride = c.dims[5];
  g.padding = c.dims[6];
  g.out_h = g.out_w = transposed ? gt::cpu::conv_transpose_out_size(g.in_h, g.kernel, g.stride, g.padding)
                                 : gt::cpu::conv_out_size(g.in_h, g.kernel, g.stride, g.padding);
  return g;
}

// The equalized-learning-rate weight scale of the *_scaled rows: any value not a power of two.
constexpr float kWeightScale = 0.37f;

// Forward, then backward with dweight/dbias accumulating onto random starts, for Conv2d or ConvTranspose2d,
// with the geometry's weight_scale (cuDNN's alpha on the GPU, the GEMMs' alpha on the CPU).
std::vector<Output> run_conv(const Case& c, Rig& rig, uint64_t seed, bool transposed, float scale = 1.f) {
  gt::cpu::ConvGeometry g = conv_geometry(c, transposed);
  g.weight_scale = scale;
  const bool with_bias = c.variant == 1;
  const auto s = rig.stream();
  const size_t in_size = static_cast<size_t>(g.batch) * g.in_channels * g.in_h * g.in_w;
  const size_t out_size = static_cast<size_t>(g.batch) * g.out_channels * g.out_h * g.out_w;
  const size_t w_size = static_cast<size_t>(g.in_channels) * g.out_channels * g.kernel * g.kernel;
  const std::vector<float> in = random_normal(in_size, seed), w = random_normal(w_size, seed + 1, 0.f, 0.05f);
  const std::vector<float> bias = random_normal(g.out_channels, seed + 2), dout = random_normal(out_size, seed + 3);
  std::vector<float> dw = random_normal(w_size, seed + 4), db = random_normal(g.out_channels, seed + 5);
  auto gdw = to_device(dw, s), gdb = to_device(db, s);

  std::vector<float> out(out_size), dinp(in_size);
  const size_t ws_floats = transposed ? gt::cpu::conv_transpose2d_workspace_floats(g) : gt::cpu::conv2d_workspace_floats(g);
  std::vector<float> ws(ws_floats);
  const float* b = with_bias ? bias.data() : nullptr;
  float* dbp = with_bias ? db.data() : nullptr;
  if (transposed) {
    gt::cpu::conv_transpose2d_forward(out.data(), in.data(), w.data(), b, g, ws.data(), ws_floats);
    gt::cpu::conv_transpose2d_backward(dinp.data(), dw.data(), dbp, dout.data(), in.data(), w.data(), g, ws.data(),
                                       ws_floats);
  } else {
    gt::cpu::conv2d_forward(out.data(), in.data(), w.data(), b, g, ws.data(), ws_floats);
    gt::cpu::conv2d_backward(dinp.data(), dw.data(), dbp, dout.data(), in.data(), w.data(), g, ws.data(), ws_floats);
  }

  auto gin = to_device(in, s), gw = to_device(w, s), gbias = to_device(bias, s), gdout = to_device(dout, s);
  auto gout = poisoned(out_size, s), gdinp = poisoned(in_size, s);
  const float* gb = with_bias ? gbias.data() : nullptr;
  float* gdbp = with_bias ? gdb.data() : nullptr;
  if (transposed) {
    rig.conv.conv_transpose2d_forward(gout.data(), gin.data(), gw.data(), gb, g);
    rig.conv.conv_transpose2d_backward(gdinp.data(), gdw.data(), gdbp, gdout.data(), gin.data(), gw.data(), g);
  } else {
    rig.conv.conv2d_forward(gout.data(), gin.data(), gw.data(), gb, g);
    rig.conv.conv2d_backward(gdinp.data(), gdw.data(), gdbp, gdout.data(), gin.data(), gw.data(), g);
  }
  std::vector<Output> outputs{{"out", out, to_host(gout, s)}, {"dinp", dinp, to_host(gdinp, s)},
                              {"dweight", dw, to_host(gdw, s)}};
  if (with_bias) outputs.push_back({"dbias", db, to_host(gdb, s)});
  std::cout << rig.conv.describe();
  return outputs;
}
std::vector<Output> run_conv2d(const Case& c, Rig& rig, uint64_t seed) { return run_conv(c, rig, seed, false); }
std::vector<Output> run_conv_transpose2d(const Case& c, Rig& rig, uint64_t seed) { return run_conv(c, rig, seed, true); }
std::vector<Output> run_conv2d_scaled(const Case& c, Rig& rig, uint64_t seed) {
  return run_conv(c, rig, seed, false, kWeightScale);
}
std::vector<Output> run_conv_transpose2d_scaled(const Case& c, Rig& rig, uint64_t seed) {
  return run_conv(c, rig, seed, true, kWeightScale);
}

// Conv2d / ConvTranspose2d in the row's storage format: inputs, weights and output gradients rounded to
// the storage type for the CPU; weights packed on the device (pack_conv_weight); the packed weight
// gradient written fresh (accumulate_dweight false) and added to a random f32 start with
// accumulate_conv_weight_grad, as the GPU network does.
std::vector<Output> run_conv_typed(const Case& c, Rig& rig, uint64_t seed, bool transposed, float scale = 1.f) {
  gt::cpu::ConvGeometry g = conv_geometry(c, transposed);
  g.weight_scale = scale;
  const ActFormat f = c.format;
  const bool with_bias = c.variant == 1;
  const auto s = rig.stream();
  const int in_hw = g.in_h * g.in_w, out_hw = g.out_h * g.out_w;
  const size_t in_size = static_cast<size_t>(g.batch) * g.in_channels * in_hw;
  const size_t out_size = static_cast<size_t>(g.batch) * g.out_channels * out_hw;
  // PyTorch's weight [K, C, R, S]: Conv2d [out, in, k, k], ConvTranspose2d [in, out, k, k].
  const int wk = transposed ? g.in_channels : g.out_channels, wc = transposed ? g.out_channels : g.in_channels;
  const size_t w_size = static_cast<size_t>(wk) * wc * g.kernel * g.kernel;
  const std::vector<float> in = rounded(random_normal(in_size, seed), f.type);
  const std::vector<float> w = rounded(random_normal(w_size, seed + 1, 0.f, 0.05f), f.type);
  const std::vector<float> bias = random_normal(g.out_channels, seed + 2);
  const std::vector<float> dout = rounded(random_normal(out_size, seed + 3), f.type);
  std::vector<float> dw = random_normal(w_size, seed + 4), db = random_normal(g.out_channels, seed + 5);
  auto gdw = to_device(dw, s), gdb = to_device(db, s);

  std::vector<float> out(out_size), dinp(in_size);
  const size_t ws_floats =
      transposed ? gt::cpu::conv_transpose2d_workspace_floats(g) : gt::cpu::conv2d_workspace_floats(g);
  std::vector<float> ws(ws_floats);
  const float* b = with_bias ? bias.data() : nullptr;
  float* dbp = with_bias ? db.data() : nullptr;
  if (transposed) {
    gt::cpu::conv_transpose2d_forward(out.data(), in.data(), w.data(), b, g, ws.data(), ws_floats);
    gt::cpu::conv_transpose2d_backward(dinp.data(), dw.data(), dbp, dout.data(), in.data(), w.data(), g, ws.data(),
                                       ws_floats);
  } else {
    gt::cpu::conv2d_forward(out.data(), in.data(), w.data(), b, g, ws.data(), ws_floats);
    gt::cpu::conv2d_backward(dinp.data(), dw.data(), dbp, dout.data(), in.data(), w.data(), g, ws.data(), ws_floats);
  }

  TypedBuffer gin = typed_device(to_layout(in, g.batch, g.in_channels, in_hw, f.layout), f.type, s);
  TypedBuffer gdout = typed_device(to_layout(dout, g.batch, g.out_channels, out_hw, f.layout), f.type, s);
  TypedBuffer gout = typed_poisoned(out_size, f.type, s), gdinp = typed_poisoned(in_size, f.type, s);
  TypedBuffer gw = typed_poisoned(w_size, f.type, s), gdw_packed = typed_poisoned(w_size, f.type, s);
  auto gw32 = to_device(w, s), gbias = to_device(bias, s);
  gt::cuda::pack_conv_weight(gw.data(), gw32.data(), wk, wc, g.kernel, g.kernel, f, s);
  const float* gb = with_bias ? gbias.data() : nullptr;
  float* gdbp = with_bias ? gdb.data() : nullptr;
  gt::cuda::ConvEngine& engine = rig.conv_for(f);
  if (transposed) {
    engine.conv_transpose2d_forward(gout.data(), gin.data(), gw.data(), gb, g);
    engine.conv_transpose2d_backward(gdinp.data(), gdw_packed.data(), gdbp, gdout.data(), gin.data(), gw.data(), g,
                                     false);
  } else {
    engine.conv2d_forward(gout.data(), gin.data(), gw.data(), gb, g);
    engine.conv2d_backward(gdinp.data(), gdw_packed.data(), gdbp, gdout.data(), gin.data(), gw.data(), g, false);
  }
  gt::cuda::accumulate_conv_weight_grad(gdw.data(), gdw_packed.data(), wk, wc, g.kernel, g.kernel, f, s);
  std::vector<Output> outputs{
      {"out", out, from_layout(gout.download(s), g.batch, g.out_channels, out_hw, f.layout)},
      {"dinp", dinp, from_layout(gdinp.download(s), g.batch, g.in_channels, in_hw, f.layout)},
      {"dweight", dw, to_host(gdw, s)}};
  if (with_bias) outputs.push_back({"dbias", db, to_host(gdb, s)});
  std::cout << engine.describe();
  return outputs;
}
std::vector<Output> run_conv2d_typed(const Case& c, Rig& rig, uint64_t seed) {
  return run_conv_typed(c, rig, seed, false);
}
std::vector<Output> run_conv_transpose2d_typed(const Case& c, Rig& rig, uint64_t seed) {
  return run_conv_typed(c, rig, seed, true);
}
std::vector<Output> run_conv2d_scaled_typed(const Case& c, Rig& rig, uint64_t seed) {
  return run_conv_typed(c, rig, seed, false, kWeightScale);
}
std::vector<Output> run_conv_transpose2d_scaled_typed(const Case& c, Rig& rig, uint64_t seed) {
  return run_conv_typed(c, rig, seed, true, kWeightScale);
}

// dims {N, IN, OUT}; variant 1: with bias. scale: the weight scale (cuBLAS's alpha; the bias unscaled).
std::vector<Output> run_linear(const Case& c, Rig& rig, uint64_t seed, float scale) {
  const int N = c.dims[0], IN = c.dims[1], OUT = c.dims[2];
  const bool with_bias = c.variant == 1;
  const auto s = rig.stream();
  const std::vector<float> in = random_normal(static_cast<size_t>(N) * IN, seed);
  const std::vector<float> w = random_normal(static_cast<size_t>(OUT) * IN, seed + 1, 0.f, 0.05f);
  const std::vector<float> bias = random_normal(OUT, seed + 2), dout = random_normal(static_cast<size_t>(N) * OUT, seed + 3);
  std::vector<float> dw = random_normal(w.size(), seed + 4), db = random_normal(OUT, seed + 5);
  auto gdw = to_device(dw, s), gdb = to_device(db, s);
  std::vector<float> out(dout.size()), dinp(in.size());
  gt::cpu::linear_forward(out.data(), in.data(), w.data(), with_bias ? bias.data() : nullptr, N, IN, OUT, scale);
  gt::cpu::linear_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(), in.data(), w.data(),
                           N, IN, OUT, scale);
  auto gin = to_device(in, s), gw = to_device(w, s), gbias = to_device(bias, s), gdout = to_device(dout, s);
  auto gout = poisoned(out.size(), s), gdinp = poisoned(in.size(), s);
  gt::cuda::linear_forward(rig.ctx, gout.data(), gin.data(), gw.data(), with_bias ? gbias.data() : nullptr, N, IN, OUT,
                           scale);
  gt::cuda::linear_backward(rig.ctx, gdinp.data(), gdw.data(), with_bias ? gdb.data() : nullptr, gdout.data(),
                            gin.data(), gw.data(), N, IN, OUT, scale);
  std::vector<Output> outputs{{"out", out, to_host(gout, s)}, {"dinp", dinp, to_host(gdinp, s)},
                              {"dweight", dw, to_host(gdw, s)}};
  if (with_bias) outputs.push_back({"dbias", db, to_host(gdb, s)});
  return outputs;
}
std::vector<Output> run_linear(const Case& c, Rig& rig, uint64_t seed) { return run_linear(c, rig, seed, 1.f); }
std::vector<Output> run_linear_scaled(const Case& c, Rig& rig, uint64_t seed) {
  return run_linear(c, rig, seed, kWeightScale);
}

// ---- storage formats (kernels_typed.h) --------------------------------------------------------------------
// format.type is the storage type (bf16 inputs are rounded on the host before the CPU reference sees them);
// format.layout is the GPU tensor's layout, converted back to NCHW on the host for the comparison.

std::vector<float> nchw_to(const Case& c, const std::vector<float>& v, int N, int C, int HW) {
  return to_layout(v, N, C, HW, c.format.layout);
}
std::vector<float> download_nchw(const Case& c, const TypedBuffer& b, int N, int C, int HW, cudaStream_t s) {
  return from_layout(b.download(s), N, C, HW, c.format.layout);
}

// dims {n}: f32 -> format.type -> f32, and accumulate_f32 from the converted copy onto a random start.
std::vector<Output> run_convert(const Case& c, Rig& rig, uint64_t seed) {
  const int64_t n = c.dims[0];
  const DataType t = c.format.type;
  const auto s = rig.stream();
  const std::vector<float> x = random_normal(static_cast<size_t>(n), seed, 0.f, 10.f);
  const std::vector<float> start = random_normal(x.size(), seed + 1);
  const std::vector<float> held = rounded(x, t);
  std::vector<float> sum(x.size());
  for (size_t i = 0; i < x.size(); ++i) sum[i] = start[i] + held[i];
  auto gx = to_device(x, s), gsum = to_device(start, s);
  TypedBuffer gt_copy = typed_poisoned(x.size(), t, s);
  auto gback = poisoned(x.size(), s);
  gt::cuda::convert(gt_copy.data(), t, gx.data(), DataType::f32, n, s);
  gt::cuda::convert(gback.data(), DataType::f32, gt_copy.data(), t, n, s);
  gt::cuda::accumulate_f32(gsum.data(), gt_copy.data(), t, n, s);
  return {{"converted", held, gt_copy.download(s)}, {"back_to_f32", held, to_host(gback, s)},
          {"accumulated", sum, to_host(gsum, s)}};
}

// dims {N, C, H, W}: f32 NCHW -> format, -> the format's other layout, -> f32 NCHW.
std::vector<Output> run_convert_activations(const Case& c, Rig& rig, uint64_t seed) {
  const BnShape b = bn_shape(c);
  const ActFormat to = c.format, f32_nchw{};
  const ActFormat other{to.type, to.layout == Layout::nhwc ? Layout::nchw : Layout::nhwc};
  const auto s = rig.stream();
  const std::vector<float> x = random_normal(b.size(), seed, 0.f, 5.f);
  const std::vector<float> held = rounded(x, to.type);
  auto gx = to_device(x, s);
  TypedBuffer gto = typed_poisoned(b.size(), to.type, s), gother = typed_poisoned(b.size(), to.type, s);
  auto gback = poisoned(b.size(), s);
  gt::cuda::convert_activations(gto.data(), to, gx.data(), f32_nchw, b.N, b.C, b.H, b.W, s);
  gt::cuda::convert_activations(gother.data(), other, gto.data(), to, b.N, b.C, b.H, b.W, s);
  gt::cuda::convert_activations(gback.data(), f32_nchw, gother.data(), other, b.N, b.C, b.H, b.W, s);
  return {{"converted", to_layout(held, b.N, b.C, b.HW(), to.layout), gto.download(s)},
          {"other_layout", to_layout(held, b.N, b.C, b.HW(), other.layout), gother.download(s)},
          {"back_to_f32_nchw", held, to_host(gback, s)}};
}

// dims {K, C, R, S}: pack_conv_weight, then accumulate_conv_weight_grad of the packed copy onto a random start.
std::vector<Output> run_pack_conv_weight(const Case& c, Rig& rig, uint64_t seed) {
  const int K = c.dims[0], C = c.dims[1], R = c.dims[2], S = c.dims[3];
  const size_t n = static_cast<size_t>(K) * C * R * S;
  const auto s = rig.stream();
  const std::vector<float> w = random_normal(n, seed, 0.f, 0.05f), start = random_normal(n, seed + 1);
  const std::vector<float> held = rounded(w, c.format.type);
  std::vector<float> sum(n);
  for (size_t i = 0; i < n; ++i) sum[i] = start[i] + held[i];
  auto gw = to_device(w, s), gsum = to_device(start, s);
  TypedBuffer packed = typed_poisoned(n, c.format.type, s);
  gt::cuda::pack_conv_weight(packed.data(), gw.data(), K, C, R, S, c.format, s);
  gt::cuda::accumulate_conv_weight_grad(gsum.data(), packed.data(), K, C, R, S, c.format, s);
  return {{"packed", to_layout(held, K, C, R * S, c.format.layout), packed.download(s)},
          {"accumulated", sum, to_host(gsum, s)}};
}

// dims {N, C, H, W}: add_channel_bias, and accumulate_channel_bias_grad onto a random start.
std::vector<Output> run_channel_bias(const Case& c, Rig& rig, uint64_t seed) {
  const BnShape b = bn_shape(c);
  const DataType t = c.format.type;
  const auto s = rig.stream();
  const std::vector<float> out = rounded(random_normal(b.size(), seed), t), bias = random_normal(b.C, seed + 1);
  const std::vector<float> dout = rounded(random_normal(b.size(), seed + 2), t);
  std::vector<float> dbias = random_normal(b.C, seed + 3);
  auto gbias = to_device(bias, s), gdbias = to_device(dbias, s);
  std::vector<float> biased(b.size());
  std::vector<double> sums(b.C, 0.0);
  for (size_t i = 0; i < b.size(); ++i) {
    const size_t ch = (i / static_cast<size_t>(b.HW())) % static_cast<size_t>(b.C);
    biased[i] = out[i] + bias[ch];
    sums[ch] += dout[i];
  }
  biased = rounded(biased, t);
  for (int ch = 0; ch < b.C; ++ch) dbias[ch] += static_cast<float>(sums[ch]);
  TypedBuffer gout = typed_device(nchw_to(c, out, b.N, b.C, b.HW()), t, s);
  TypedBuffer gdout = typed_device(nchw_to(c, dout, b.N, b.C, b.HW()), t, s);
  DeviceBuffer<double> ws(gt::cuda::batchnorm_workspace_doubles(b.N, b.C, b.HW()));
  gt::cuda::add_channel_bias(gout.data(), gbias.data(), b.N, b.C, b.HW(), c.format, s);
  gt::cuda::accumulate_channel_bias_grad(gdbias.data(), gdout.data(), b.N, b.C, b.HW(), c.format, ws.data(), s);
  return {{"biased", biased, download_nchw(c, gout, b.N, b.C, b.HW(), s)}, {"dbias", dbias, to_host(gdbias, s)}};
}

// uint8 NHWC to an image in the row's format, with random flips.
std::vector<Output> run_u8_to_image(const Case& c, Rig& rig, uint64_t seed) {
  const auto s = rig.stream();
  const U8Images u = random_u8_images(c, seed);
  auto gpixels = to_device(u.pixels, s);
  auto gflips = to_device(u.flips, s);
  TypedBuffer gout = typed_poisoned(u.reference.size(), c.format.type, s);
  gt::cuda::u8_nhwc_to_image(gout.data(), c.format, gpixels.data(), gflips.data(), u.N, u.H, u.W, u.cin, u.cout,
                             127.5f, -1.f, s);
  return {{"images", rounded(u.reference, c.format.type), download_nchw(c, gout, u.N, u.cout, u.H * u.W, s)}};
}

// dims {n}; variant: the activation. The CPU runs on the stored (rounded) inputs in float.
std::vector<Output> run_activation_typed(const Case& c, Rig& rig, uint64_t seed) {
  const auto act = static_cast<Activation>(c.variant);
  const DataType t = c.format.type;
  const int64_t n = c.dims[0];
  const auto s = rig.stream();
  const std::vector<float> x = rounded(random_normal(static_cast<size_t>(n), seed, 0.f, 3.f), t);
  const std::vector<float> dy = rounded(random_normal(static_cast<size_t>(n), seed + 1), t);
  std::vector<float> y(x.size()), dx(x.size());
  cpu_activation_forward(act, y.data(), x.data(), n);
  // The backward's saved tensor as the GPU network would hold it: stored in t.
  const std::vector<float> saved = act == Activation::leaky_relu ? x : rounded(y, t);
  cpu_activation_backward(act, dx.data(), dy.data(), saved.data(), n);
  TypedBuffer gx = typed_device(x, t, s), gdy = typed_device(dy, t, s), gsaved = typed_device(saved, t, s);
  TypedBuffer gy = typed_poisoned(x.size(), t, s), gdx = typed_poisoned(x.size(), t, s);
  gt::cuda::activation_forward(gy.data(), gx.data(), n, act, kSlope, t, s);
  gt::cuda::activation_backward(gdx.data(), gdy.data(), gsaved.data(), n, act, kSlope, t, s);
  return {{"forward", y, gy.download(s)}, {"backward", dx, gdx.download(s)}};
}

// dims {N, C, H, W}; variant: the fused activation. Train-mode forward through the typed steps.
std::vector<Output> run_batchnorm_forward_typed(const Case& c, Rig& rig, uint64_t seed) {
  const auto act = static_cast<Activation>(c.variant);
  const BnShape b = bn_shape(c);
  const DataType t = c.format.type;
  const auto s = rig.stream();
  const std::vector<float> x = rounded(random_normal(b.size(), seed, 3.f, 2.f), t);
  const std::vector<float> w = random_normal(b.C, seed + 1, 1.f, 0.5f), bias = random_normal(b.C, seed + 2);
  std::vector<float> y(b.size()), mean(b.C), rstd(b.C), var(b.C);
  gt::cpu::batchnorm2d_forward_train(y.data(), mean.data(), rstd.data(), var.data(), x.data(), w.data(), bias.data(),
                                     b.N, b.C, b.HW(), kEps);
  cpu_activation_forward(act, y.data(), y.data(), static_cast<int64_t>(y.size()));

  TypedBuffer gx = typed_device(nchw_to(c, x, b.N, b.C, b.HW()), t, s), gy = typed_poisoned(b.size(), t, s);
  auto gw = to_device(w, s), gb = to_device(bias, s);
  auto gmean = poisoned(b.C, s), grstd = poisoned(b.C, s), gvar = poisoned(b.C, s);
  DeviceBuffer<double> ws(gt::cuda::batchnorm_workspace_doubles(b.N, b.C, b.HW())), sums(2 * b.C);
  const double count = static_cast<double>(b.N) * b.HW();
  gt::cuda::batchnorm_channel_sums(sums.data(), gx.data(), b.N, b.C, b.HW(), c.format, ws.data(), s);
  gt::cuda::batchnorm_mean_from_sums(gmean.data(), sums.data(), b.C, count, s);
  gt::cuda::batchnorm_channel_sq_dev(sums.data() + b.C, gx.data(), gmean.data(), b.N, b.C, b.HW(), c.format, ws.data(),
                                     s);
  gt::cuda::batchnorm_stats_from_sq(grstd.data(), gvar.data(), sums.data() + b.C, b.C, count, kEps, s);
  gt::cuda::batchnorm_apply(gy.data(), gx.data(), gmean.data(), grstd.data(), gw.data(), gb.data(), b.N, b.C, b.HW(),
                            act, kSlope, c.format, s);
  return {{"out", y, download_nchw(c, gy, b.N, b.C, b.HW(), s)},
          {"mean", mean, to_host(gmean, s)},
          {"rstd", rstd, to_host(grstd, s)},
          {"var", var, to_host(gvar, s)}};
}

// dims {N, C, H, W}; variant: the fused activation. Train-mode backward from the CPU forward's statistics.
std::vector<Output> run_batchnorm_backward_typed(const Case& c, Rig& rig, uint64_t seed) {
  const auto act = static_cast<Activation>(c.variant);
  const BnShape b = bn_shape(c);
  const DataType t = c.format.type;
  const int64_t n = static_cast<int64_t>(b.size());
  const auto s = rig.stream();
  const std::vector<float> x = rounded(random_normal(b.size(), seed, -1.f, 2.f), t);
  const std::vector<float> dy = rounded(random_normal(b.size(), seed + 1), t);
  const std::vector<float> w = random_normal(b.C, seed + 2, 1.f, 0.5f), bias = random_normal(b.C, seed + 3);
  std::vector<float> dw = random_normal(b.C, seed + 4), db = random_normal(b.C, seed + 5);
  auto gdw = to_device(dw, s), gdb = to_device(db, s);

  std::vector<float> pre(b.size()), y(b.size()), g(b.size()), dx(b.size()), mean(b.C), rstd(b.C);
  gt::cpu::batchnorm2d_forward_train(pre.data(), mean.data(), rstd.data(), nullptr, x.data(), w.data(), bias.data(),
                                     b.N, b.C, b.HW(), kEps);
  cpu_activation_forward(act, y.data(), pre.data(), n);
  cpu_activation_backward(act, g.data(), dy.data(), act == Activation::leaky_relu ? pre.data() : y.data(), n);
  gt::cpu::batchnorm2d_backward_train(dx.data(), dw.data(), db.data(), g.data(), x.data(), mean.data(), rstd.data(),
                                      w.data(), b.N, b.C, b.HW());

  TypedBuffer gx = typed_device(nchw_to(c, x, b.N, b.C, b.HW()), t, s);
  TypedBuffer gdy = typed_device(nchw_to(c, dy, b.N, b.C, b.HW()), t, s), gdx = typed_poisoned(b.size(), t, s);
  auto gw = to_device(w, s), gb = to_device(bias, s), gmean = to_device(mean, s), grstd = to_device(rstd, s);
  DeviceBuffer<double> ws(gt::cuda::batchnorm_workspace_doubles(b.N, b.C, b.HW())), sums(2 * b.C);
  gt::cuda::batchnorm_backward_sums(sums.data(), sums.data() + b.C, gdy.data(), gx.data(), gmean.data(), grstd.data(),
                                    gw.data(), gb.data(), b.N, b.C, b.HW(), act, kSlope, c.format, ws.data(), s);
  gt::cuda::batchnorm_backward_apply(gdx.data(), gdw.data(), gdb.data(), sums.data(), sums.data() + b.C,
                                     static_cast<double>(b.N) * b.HW(), gdy.data(), gx.data(), gmean.data(),
                                     grstd.data(), gw.data(), gb.data(), b.N, b.C, b.HW(), act, kSlope, c.format,
                                     ws.data(), s);
  return {{"dinp", dx, download_nchw(c, gdx, b.N, b.C, b.HW(), s)},
          {"dweight", dw, to_host(gdw, s)},
          {"dbias", db, to_host(gdb, s)}};
}

// dims {N, C, H, W}; variant: the fused activation. Eval-mode forward.
std::vector<Output> run_batchnorm_eval_typed(const Case& c, Rig& rig, uint64_t seed) {
  const auto act = static_cast<Activation>(c.variant);
  const BnShape b = bn_shape(c);
  const DataType t = c.format.type;
  const auto s = rig.stream();
  const std::vector<float> x = rounded(random_normal(b.size(), seed, 1.f, 2.f), t);
  const std::vector<float> w = random_normal(b.C, seed + 2, 1.f, 0.5f), bias = random_normal(b.C, seed + 3);
  const std::vector<float> rm = random_normal(b.C, seed + 4), rv = random_positive(b.C, seed + 5, 0.5f, 4.f);
  std::vector<float> y(b.size());
  gt::cpu::batchnorm2d_forward_eval(y.data(), x.data(), w.data(), bias.data(), rm.data(), rv.data(), b.N, b.C, b.HW(),
                                    kEps);
  cpu_activation_forward(act, y.data(), y.data(), static_cast<int64_t>(y.size()));
  TypedBuffer gx = typed_device(nchw_to(c, x, b.N, b.C, b.HW()), t, s), gy = typed_poisoned(b.size(), t, s);
  auto gw = to_device(w, s), gb = to_device(bias, s), grm = to_device(rm, s), grv = to_device(rv, s);
  gt::cuda::batchnorm_forward_eval(gy.data(), gx.data(), gw.data(), gb.data(), grm.data(), grv.data(), b.N, b.C,
                                   b.HW(), kEps, act, kSlope, c.format, s);
  return {{"out", y, download_nchw(c, gy, b.N, b.C, b.HW(), s)}};
}

// dims {n}; variant: the target (0 or 1). Loss, dlogits in the storage type, and the mean probability
// (train/gan_step.cpp's mean_sigmoid).
std::vector<Output> run_bce_typed(const Case& c, Rig& rig, uint64_t seed) {
  const int64_t n = c.dims[0];
  const float target = static_cast<float>(c.variant), scale = 0.5f;
  const DataType t = c.format.type;
  const auto s = rig.stream();
  const std::vector<float> logits = rounded(random_normal(static_cast<size_t>(n), seed, 0.f, 4.f), t);
  std::vector<float> dlogits(logits.size());
  const float loss = gt::bce_with_logits(logits.data(), n, target, dlogits.data(), scale);
  double sigmoid_sum = 0;
  for (float x : logits) sigmoid_sum += 1.0 / (1.0 + std::exp(-static_cast<double>(x)));
  const float mean_prob = static_cast<float>(sigmoid_sum / static_cast<double>(n));
  TypedBuffer glogits = typed_device(logits, t, s), gd = typed_poisoned(logits.size(), t, s);
  auto gloss = poisoned(1, s), gprob = poisoned(1, s);
  gt::cuda::bce_with_logits(gloss.data(), gprob.data(), gd.data(), glogits.data(), n, target, scale, t, s);
  return {{"loss", {loss}, to_host(gloss, s)},
          {"mean_prob", {mean_prob}, to_host(gprob, s)},
          {"dlogits", dlogits, gd.download(s)}};
}

// dims {n}; variant = 3 * kind + role (core/loss_math.h LossKind, LossRole), with drift 0.3 on d_real: one
// term of a GAN objective (the step's loss kernel) against train/loss.cpp's gan_loss.
std::vector<Output> run_gan_loss_typed(const Case& c, Rig& rig, uint64_t seed) {
  const int64_t n = c.dims[0];
  gt::LossTerm term;
  term.kind = static_cast<gt::LossKind>(c.variant / 3);
  term.role = static_cast<gt::LossRole>(c.variant % 3);
  term.drift = term.role == gt::LossRole::d_real ? 0.3f : 0.f;
  const float scale = 0.5f;
  const DataType t = c.format.type;
  const auto s = rig.stream();
  // Spread over [-4, 4], so hinge terms see both sides of their kinks.
  const std::vector<float> logits = rounded(random_normal(static_cast<size_t>(n), seed, 0.f, 2.f), t);
  std::vector<float> dlogits(logits.size());
  double reported = 0;
  const float loss = gt::gan_loss(logits.data(), n, term, dlogits.data(), scale, &reported);
  TypedBuffer glogits = typed_device(logits, t, s), gd = typed_poisoned(logits.size(), t, s);
  auto gloss = poisoned(1, s), greported = poisoned(1, s);
  gt::cuda::gan_loss(gloss.data(), greported.data(), gd.data(), glogits.data(), n, term, scale, t, s);
  return {{"loss", {loss}, to_host(gloss, s)},
          {"reported", {static_cast<float>(reported)}, to_host(greported, s)},
          {"dlogits", dlogits, gd.download(s)}};
}

// ---- the gradient penalty (cuda/penalty.cu) --------------------------------------------------------------

// dims {N, C, H, W}: LayerNorm2d's forward, backward, tangent and double-backward curvature term, each from
// the CPU forward's statistics (so each kernel is compared on its own), in any format.
std::vector<Output> run_layernorm_typed(const Case& c, Rig& rig, uint64_t seed) {
  const int N = c.dims[0], C = c.dims[1], HW = c.dims[2] * c.dims[3];
  const size_t n = static_cast<size_t>(N) * C * HW;
  const DataType t = c.format.type;
  const auto s = rig.stream();
  const std::vector<float> x = rounded(random_normal(n, seed, 1.f, 2.f), t);
  const std::vector<float> dy = rounded(random_normal(n, seed + 1), t), tan = rounded(random_normal(n, seed + 2), t);
  const std::vector<float> delta = rounded(random_normal(n, seed + 3), t);
  const std::vector<float> w = random_normal(C, seed + 4, 1.f, 0.3f), b = random_normal(C, seed + 5);
  std::vector<float> y(n), mean(N), rstd(N), dx(n), tangent(n), second(n);
  std::vector<float> dw(C, 0.25f), db(C, -0.5f), dw2(C, 0.125f);
  gt::cpu::layernorm2d_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, HW, kEps);
  gt::cpu::layernorm2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), mean.data(), rstd.data(), w.data(),
                                N, C, HW);
  gt::cpu::layernorm2d_tangent(tangent.data(), tan.data(), x.data(), mean.data(), rstd.data(), w.data(), N, C, HW);
  gt::cpu::layernorm2d_second(second.data(), dw2.data(), delta.data(), tan.data(), x.data(), mean.data(), rstd.data(),
                              w.data(), N, C, HW);

  TypedBuffer gx = typed_device(nchw_to(c, x, N, C, HW), t, s), gdy = typed_device(nchw_to(c, dy, N, C, HW), t, s);
  TypedBuffer gt_ = typed_device(nchw_to(c, tan, N, C, HW), t, s), gdelta = typed_device(nchw_to(c, delta, N, C, HW), t, s);
  TypedBuffer gy = typed_poisoned(n, t, s), gdx = typed_poisoned(n, t, s), gtan = typed_poisoned(n, t, s),
              gsecond = typed_poisoned(n, t, s);
  auto gw = to_device(w, s), gb = to_device(b, s), gmean = poisoned(N, s), grstd = poisoned(N, s);
  auto cmean = to_device(mean, s), crstd = to_device(rstd, s);
  auto gdw = to_device(std::vector<float>(C, 0.25f), s), gdb = to_device(std::vector<float>(C, -0.5f), s);
  auto gdw2 = to_device(std::vector<float>(C, 0.125f), s);
  DeviceBuffer<float> ws(2 * static_cast<size_t>(N));
  gt::cuda::layernorm_forward(gy.data(), gmean.data(), grstd.data(), gx.data(), gw.data(), gb.data(), N, C, HW, kEps,
                              c.format, s);
  gt::cuda::layernorm_backward(gdx.data(), gdw.data(), gdb.data(), gdy.data(), gx.data(), cmean.data(), crstd.data(),
                               gw.data(), N, C, HW, c.format, s);
  gt::cuda::layernorm_tangent(gtan.data(), gt_.data(), gx.data(), cmean.data(), crstd.data(), gw.data(), N, C, HW,
                              c.format, s);
  gt::cuda::layernorm_second(gsecond.data(), gdw2.data(), gdelta.data(), gt_.data(), gx.data(), cmean.data(),
                             crstd.data(), gw.data(), N, C, HW, c.format, ws.data(), s);
  return {{"forward", y, download_nchw(c, gy, N, C, HW, s)},
          {"mean", mean, to_host(gmean, s)},
          {"rstd", rstd, to_host(grstd, s)},
          {"backward dx", dx, download_nchw(c, gdx, N, C, HW, s)},
          {"backward dweight", dw, to_host(gdw, s)},
          {"backward dbias", db, to_host(gdb, s)},
          {"tangent", tangent, download_nchw(c, gtan, N, C, HW, s)},
          {"second dx", second, download_nchw(c, gsecond, N, C, HW, s)},
          {"second dweight", dw2, to_host(gdw2, s)}};
}

// dims {n, per}: the interpolation weights (bit for bit the host's draws), the interpolates, and the
// penalty with its gradient (one zero row: its gradient is 0), in the format's type.
std::vector<Output> run_penalty_typed(const Case& c, Rig& rig, uint64_t seed) {
  const int64_t n = c.dims[0], per = c.dims[1];
  const size_t total = static_cast<size_t>(n * per);
  const DataType t = c.format.type;
  const auto s = rig.stream();
  std::vector<float> mix(static_cast<size_t>(n));
  gt::fill_penalty_mix(mix.data(), n, seed, 7, 3);
  auto gmix = poisoned(static_cast<size_t>(n), s);
  gt::cuda::fill_penalty_mix(gmix.data(), n, seed, 7, 3, s);
  const std::vector<float> real = rounded(random_normal(total, seed + 1), t), fake = rounded(random_normal(total, seed + 2), t);
  std::vector<float> mixed(total);
  for (size_t i = 0; i < total; ++i) mixed[i] = gt::penalty_math::mix(real[i], fake[i], mix[i / per]);
  TypedBuffer greal = typed_device(real, t, s), gfake = typed_device(fake, t, s), gmixed = typed_poisoned(total, t, s);
  auto cmix = to_device(mix, s);
  gt::cuda::penalty_interpolate(gmixed.data(), greal.data(), gfake.data(), cmix.data(), n, per, t, s);
  // The penalty on rows of norms around 1, one of them all zero.
  std::vector<float> g = rounded(random_normal(total, seed + 3, 0.f, 1.f / std::sqrt(static_cast<float>(per))), t);
  std::fill(g.begin(), g.begin() + per, 0.f);
  gt::CpuStepOps ops;
  gt::Tensor gh = gt::Tensor::from({n, per}, g), dg({n, per});
  ops.gradient_penalty(gh, 10.f, 0.5f, dg, gt::StepScalar::penalty, {});
  const float loss = static_cast<float>(ops.scalars()[static_cast<int>(gt::StepScalar::penalty)]);
  TypedBuffer gg = typed_device(g, t, s), gdg = typed_poisoned(total, t, s);
  auto gloss = poisoned(1, s);
  DeviceBuffer<std::byte> ws(gt::cuda::gradient_penalty_workspace_bytes(n));
  gt::cuda::gradient_penalty(gloss.data(), gdg.data(), gg.data(), n, per, 10.f, 0.5f, t, ws.data(), s);
  return {{"mix", mix, to_host(gmix, s)},
          {"interpolate", rounded(mixed, t), gmixed.download(s)},
          {"penalty", {loss}, to_host(gloss, s)},
          {"dg", rounded(std::vector<float>(dg.f32(), dg.f32() + dg.numel()), t), gdg.download(s)}};
}

// dims {n}; variant: tanh or sigmoid. The curvature term dinp += delta * t * f''(x) from the saved output.
std::vector<Output> run_activation_second_typed(const Case& c, Rig& rig, uint64_t seed) {
  const auto act = static_cast<Activation>(c.variant);
  const DataType t = c.format.type;
  const int64_t n = c.dims[0];
  const auto s = rig.stream();
  std::vector<float> y = random_normal(static_cast<size_t>(n), seed, 0.f, 2.f);
  cpu_activation_forward(act, y.data(), y.data(), n);
  y = rounded(y, t);
  const std::vector<float> delta = rounded(random_normal(static_cast<size_t>(n), seed + 1), t);
  const std::vector<float> tan = rounded(random_normal(static_cast<size_t>(n), seed + 2), t);
  const std::vector<float> start = rounded(random_normal(static_cast<size_t>(n), seed + 3), t);
  std::vector<float> dx = start;
  if (act == Activation::tanh) gt::cpu::tanh_second(dx.data(), delta.data(), tan.data(), y.data(), n);
  else gt::cpu::sigmoid_second(dx.data(), delta.data(), tan.data(), y.data(), n);
  TypedBuffer gdx = typed_device(start, t, s), gdelta = typed_device(delta, t, s), gtan = typed_device(tan, t, s),
              gy = typed_device(y, t, s);
  gt::cuda::activation_second(gdx.data(), gdelta.data(), gtan.data(), gy.data(), n, act, t, s);
  return {{"second", rounded(dx, t), gdx.download(s)}};
}

// ---- the Progressive GAN layers (cuda/progan.cu) --------------------------------------------------------------

constexpr float kPixelNormEps = 1e-8f;

// dims {N, C, H, W}: PixelNorm's forward (output and rnorm), its Jacobian as the backward (of dy) and the
// tangent (of t), and the double backward's curvature term, each from the CPU forward's rnorm (so each kernel
// is compared on its own).
std::vector<Output> run_pixelnorm(const Case& c, Rig& rig, uint64_t seed) {
  const int N = c.dims[0], C = c.dims[1], HW = c.dims[2] * c.dims[3];
  const size_t n = static_cast<size_t>(N) * C * HW, positions = static_cast<size_t>(N) * HW;
  const auto s = rig.stream();
  const std::vector<float> x = random_normal(n, seed, 0.5f, 2.f), dy = random_normal(n, seed + 1);
  const std::vector<float> tan = random_normal(n, seed + 2), delta = random_normal(n, seed + 3);
  std::vector<float> y(n), rnorm(positions), dx(n), tangent(n), second(n);
  gt::cpu::pixelnorm_forward(y.data(), rnorm.data(), x.data(), N, C, HW, kPixelNormEps);
  gt::cpu::pixelnorm_jacobian(dx.data(), dy.data(), x.data(), rnorm.data(), N, C, HW);
  gt::cpu::pixelnorm_jacobian(tangent.data(), tan.data(), x.data(), rnorm.data(), N, C, HW);
  gt::cpu::pixelnorm_second(second.data(), delta.data(), tan.data(), x.data(), rnorm.data(), N, C, HW);

  auto gx = to_device(x, s), gdy = to_device(dy, s), gtan_in = to_device(tan, s), gdelta = to_device(delta, s);
  auto crnorm = to_device(rnorm, s);
  auto gy = poisoned(n, s), grnorm = poisoned(positions, s), gdx = poisoned(n, s), gtan = poisoned(n, s),
       gsecond = poisoned(n, s);
  gt::cuda::pixelnorm_forward(gy.data(), grnorm.data(), gx.data(), N, C, HW, kPixelNormEps, s);
  gt::cuda::pixelnorm_jacobian(gdx.data(), gdy.data(), gx.data(), crnorm.data(), N, C, HW, s);
  gt::cuda::pixelnorm_jacobian(gtan.data(), gtan_in.data(), gx.data(), crnorm.data(), N, C, HW, s);
  gt::cuda::pixelnorm_second(gsecond.data(), gdelta.data(), gtan_in.data(), gx.data(), crnorm.data(), N, C, HW, s);
  return {{"forward", y, to_host(gy, s)},
          {"rnorm", rnorm, to_host(grnorm, s)},
          {"backward", dx, to_host(gdx, s)},
          {"tangent", tangent, to_host(gtan, s)},
          {"second", second, to_host(gsecond, s)}};
}

// dims {N, C, H, W}; variant 0: Upsample2x, 1: AvgPool2x (H, W even). Forward and backward.
std::vector<Output> run_resample2x(const Case& c, Rig& rig, uint64_t seed) {
  const int NC = c.dims[0] * c.dims[1], H = c.dims[2], W = c.dims[3];
  const bool up = c.variant == 0;
  const size_t in_n = static_cast<size_t>(NC) * H * W;
  const size_t out_n = up ? 4 * in_n : static_cast<size_t>(NC) * (H / 2) * (W / 2);
  const auto s = rig.stream();
  const std::vector<float> x = random_normal(in_n, seed), dy = random_normal(out_n, seed + 1);
  std::vector<float> y(out_n), dx(in_n);
  auto gx = to_device(x, s), gdy = to_device(dy, s);
  auto gy = poisoned(out_n, s), gdx = poisoned(in_n, s);
  if (up) {
    gt::cpu::upsample2x_forward(y.data(), x.data(), NC, H, W);
    gt::cpu::upsample2x_backward(dx.data(), dy.data(), NC, H, W);
    gt::cuda::upsample2x_forward(gy.data(), gx.data(), NC, H, W, s);
    gt::cuda::upsample2x_backward(gdx.data(), gdy.data(), NC, H, W, s);
  } else {
    gt::cpu::avgpool2x_forward(y.data(), x.data(), NC, H, W);
    gt::cpu::avgpool2x_backward(dx.data(), dy.data(), NC, H, W);
    gt::cuda::avgpool2x_forward(gy.data(), gx.data(), NC, H, W, s);
    gt::cuda::avgpool2x_backward(gdx.data(), gdy.data(), NC, H, W, s);
  }
  return {{"forward", y, to_host(gy, s)}, {"backward", dx, to_host(gdx, s)}};
}

// dims {N, C, H, W, group}: MinibatchStddev's forward (output, mean, sigma), backward, tangent and
// double-backward curvature term, the last three from the CPU forward's statistics.
std::vector<Output> run_mbstd(const Case& c, Rig& rig, uint64_t seed) {
  const int N = c.dims[0], C = c.dims[1], HW = c.dims[2] * c.dims[3], group = c.dims[4];
  const float eps = 1e-8f;
  const size_t n = static_cast<size_t>(N) * C * HW, n_out = static_cast<size_t>(N) * (C + 1) * HW;
  const size_t stats = static_cast<size_t>(N / group) * C * HW;
  const auto s = rig.stream();
  const std::vector<float> x = random_normal(n, seed, 0.3f, 1.5f), dy = random_normal(n_out, seed + 1);
  const std::vector<float> tan = random_normal(n, seed + 2), delta = random_normal(n_out, seed + 3);
  std::vector<float> y(n_out), mean(stats), sigma(stats), dx(n), tangent(n_out), second(n);
  gt::cpu::mbstd_forward(y.data(), mean.data(), sigma.data(), x.data(), N, C, HW, group, eps);
  gt::cpu::mbstd_backward(dx.data(), dy.data(), x.data(), mean.data(), sigma.data(), N, C, HW, group);
  gt::cpu::mbstd_tangent(tangent.data(), tan.data(), x.data(), mean.data(), sigma.data(), N, C, HW, group);
  gt::cpu::mbstd_second(second.data(), delta.data(), tan.data(), x.data(), mean.data(), sigma.data(), N, C, HW, group);

  auto gx = to_device(x, s), gdy = to_device(dy, s), gtan_in = to_device(tan, s), gdelta = to_device(delta, s);
  auto cmean = to_device(mean, s), csigma = to_device(sigma, s);
  auto gy = poisoned(n_out, s), gmean = poisoned(stats, s), gsigma = poisoned(stats, s), gdx = poisoned(n, s),
       gtan = poisoned(n_out, s), gsecond = poisoned(n, s);
  gt::cuda::mbstd_forward(gy.data(), gmean.data(), gsigma.data(), gx.data(), N, C, HW, group, eps, s);
  gt::cuda::mbstd_backward(gdx.data(), gdy.data(), gx.data(), cmean.data(), csigma.data(), N, C, HW, group, s);
  gt::cuda::mbstd_tangent(gtan.data(), gtan_in.data(), gx.data(), cmean.data(), csigma.data(), N, C, HW, group, s);
  gt::cuda::mbstd_second(gsecond.data(), gdelta.data(), gtan_in.data(), gx.data(), cmean.data(), csigma.data(), N, C,
                         HW, group, s);
  return {{"forward", y, to_host(gy, s)},       {"mean", mean, to_host(gmean, s)},
          {"sigma", sigma, to_host(gsigma, s)}, {"backward", dx, to_host(gdx, s)},
          {"tangent", tangent, to_host(gtan, s)}, {"second", second, to_host(gsecond, s)}};
}

// dims {n}: the fade mix a + alpha (b - a) at alpha 0.3 (and 0, 1: a and b exactly), alpha read from a device
// float, and fade_scale (a Fade branch's share of a gradient: (1 - alpha) x and alpha x) against the CPU
// Fade's float products; in the row's storage type (bf16: the CPU's float results on the rounded inputs).
std::vector<Output> run_fade_typed(const Case& c, Rig& rig, uint64_t seed) {
  const int64_t n = c.dims[0];
  const size_t count = static_cast<size_t>(n);
  const DataType t = c.format.type;
  const auto s = rig.stream();
  const std::vector<float> a = rounded(random_normal(count, seed), t), b = rounded(random_normal(count, seed + 1), t);
  TypedBuffer ga = typed_device(a, t, s), gb = typed_device(b, t, s);
  std::vector<Output> outputs;
  for (float alpha : {0.3f, 0.f, 1.f}) {
    std::vector<float> out(count);
    gt::cpu::lerp_forward(out.data(), a.data(), b.data(), alpha, n);
    const std::vector<float> alpha_host{alpha};  // lives until the downloads below synchronize
    auto galpha = to_device(alpha_host, s);
    TypedBuffer gout = typed_poisoned(count, t, s);
    gt::cuda::lerp_forward(gout.data(), ga.data(), gb.data(), galpha.data(), n, t, s);
    outputs.push_back({"lerp " + std::to_string(alpha), rounded(out, t), gout.download(s)});
    for (int branch : {0, 1}) {
      const float k = branch == 0 ? 1.f - alpha : alpha;
      std::vector<float> scaled(count);
      for (size_t i = 0; i < count; ++i) scaled[i] = k * a[i];
      TypedBuffer gscaled = typed_poisoned(count, t, s);
      gt::cuda::fade_scale(gscaled.data(), ga.data(), galpha.data(), branch, n, t, s);
      outputs.push_back({"fade_scale " + std::to_string(alpha) + " branch " + std::to_string(branch),
                         rounded(scaled, t), gscaled.download(s)});
    }
  }
  return outputs;
}

// ---- the table ------------------------------------------------------------------------------------------

// Tolerances (normalized error): 0 where the GPU performs the CPU's float operations in the CPU's order;
// 1e-6 where a device libm function (tanhf, expf, exp, log1p) differs from glibc's by an ulp or two;
// 1e-5 where sums are added in another order; fp32 convolutions 5e-5 (cuDNN's FFT and Winograd
// algorithms round differently), TF32 ones 3e-3 (10-bit mantissas: expect about 3e-4 to 5e-4, so an
// fp32 row failing near 3e-4 means TF32 crept in).
std::vector<Case> cases() {
  const Precision f32 = Precision::fp32, t32 = Precision::tf32, b16 = Precision::bf16;
  std::vector<Case> t;
  const int big = (1 << 20) + 3;  // the 16-byte path plus a tail
  for (Activation a : {Activation::relu, Activation::leaky_relu})
    for (int n : {big, 5}) t.push_back({"activation", run_activation, {n}, f32, 0.0, static_cast<int>(a)});
  // tanh and sigmoid forward use the device's tanhf/expf; their backward is exact (compared separately
  // below only through this tolerance, which also bounds it).
  for (Activation a : {Activation::tanh, Activation::sigmoid})
    for (int n : {big, 5}) t.push_back({"activation", run_activation, {n}, f32, 1e-6, static_cast<int>(a)});

  for (Activation a : {Activation::none, Activation::relu, Activation::leaky_relu, Activation::tanh}) {
    const int v = static_cast<int>(a);
    t.push_back({"batchnorm_train_forward", run_batchnorm_train_forward, {8, 64, 16, 16}, f32, 1e-5, v});
    t.push_back({"batchnorm_train_backward", run_batchnorm_train_backward, {8, 64, 16, 16}, f32, 1e-5, v});
    t.push_back({"batchnorm_eval", run_batchnorm_eval, {8, 64, 16, 16}, f32, 1e-5, v});
  }
  t.push_back({"batchnorm_train_forward", run_batchnorm_train_forward, {5, 3, 7, 7}, f32, 1e-5, 0});
  t.push_back({"batchnorm_train_forward", run_batchnorm_train_forward, {64, 512, 4, 4}, f32, 1e-5, 1});
  t.push_back({"batchnorm_train_backward", run_batchnorm_train_backward, {5, 3, 7, 7}, f32, 1e-5, 2});
  t.push_back({"batchnorm_train_backward", run_batchnorm_train_backward, {64, 512, 4, 4}, f32, 1e-5, 1});
  t.push_back({"batchnorm_train_backward", run_batchnorm_train_backward, {16, 8, 64, 64}, f32, 1e-5, 2});
  t.push_back({"batchnorm_eval", run_batchnorm_eval, {3, 5, 5, 3}, f32, 1e-5, 2});
  t.push_back({"batchnorm_running", run_batchnorm_running, {77}, f32, 0.0});

  t.push_back({"bce_with_logits", run_bce, {1024}, f32, 1e-6, 1});
  t.push_back({"bce_with_logits", run_bce, {1000}, f32, 1e-6, 0});
  t.push_back({"bce_with_logits", run_bce, {3}, f32, 1e-6, 1});

  t.push_back({"u8_to_f32", run_u8_to_f32, {4, 13, 11, 3, 3}, f32, 0.0});
  t.push_back({"u8_to_f32", run_u8_to_f32, {3, 8, 8, 1, 1}, f32, 0.0});
  t.push_back({"u8_to_f32", run_u8_to_f32, {2, 9, 7, 1, 3}, f32, 0.0});
  t.push_back({"flips", run_flips, {1000, 12345, 77}, f32, 0.0});
  t.push_back({"noise", run_noise, {37, 100}, f32, 0.0});
  t.push_back({"noise", run_noise, {1024, 128}, f32, 0.0});
  t.push_back({"noise", run_noise, {3, 1}, f32, 0.0});

  // Sizes: a scalar, a tensor one past a chunk, a large one, a middling odd one.
  const std::vector<int> sizes{1, 8193, 262144 + 17, 3001};
  for (int v : {adam, adam_wd, rmsprop, rmsprop_momentum_wd, sgd, sgd_momentum_wd})
    t.push_back({"optimizer", run_optimizer, sizes, f32, 0.0, v});
  // The norm is summed in another order (in double): the clip coefficient may differ in its last bit.
  t.push_back({"optimizer", run_optimizer, sizes, f32, 1e-6, adam_clipped});
  t.push_back({"clip_grad_norm", run_clip_grad_norm, sizes, f32, 1e-6});
  t.push_back({"ema_weight_clip", run_ema_and_weight_clip, sizes, f32, 0.0});

  // DCGAN-64 layers at batch 8 (G: transposed convolutions, D: convolutions), and odd shapes with bias.
  struct ConvRow {
    std::vector<int> dims;
    int bias;
  };
  const std::vector<ConvRow> d_layers{{{8, 3, 64, 64, 4, 2, 1}, 0},   {{8, 64, 32, 128, 4, 2, 1}, 0},
                                      {{8, 256, 8, 512, 4, 2, 1}, 0}, {{8, 512, 4, 1, 4, 1, 0}, 0},
                                      {{3, 5, 9, 7, 5, 2, 2}, 1},     {{2, 4, 7, 6, 3, 1, 1}, 1}};
  const std::vector<ConvRow> g_layers{{{8, 100, 1, 512, 4, 1, 0}, 0}, {{8, 512, 4, 256, 4, 2, 1}, 0},
                                      {{8, 128, 16, 64, 4, 2, 1}, 0}, {{8, 64, 32, 3, 4, 2, 1}, 0},
                                      {{3, 5, 6, 7, 3, 2, 1}, 1},     {{2, 4, 5, 6, 3, 1, 1}, 1}};
  for (Precision p : {f32, t32}) {
    const double tol = p == f32 ? 5e-5 : 3e-3;
    for (const ConvRow& r : d_layers) t.push_back({"conv2d", run_conv2d, r.dims, p, tol, r.bias});
    for (const ConvRow& r : g_layers) t.push_back({"conv_transpose2d", run_conv_transpose2d, r.dims, p, tol, r.bias});
    t.push_back({"linear", run_linear, {64, 100, 300}, p, p == f32 ? 1e-5 : 3e-3, 1});
    t.push_back({"linear", run_linear, {7, 33, 5}, p, p == f32 ? 1e-5 : 3e-3, 0});
  }
  // bf16 precision keeps dense layers in f32 with TF32 products.
  t.push_back({"linear", run_linear, {64, 100, 300}, b16, 3e-3, 1});
  // Equalized learning rate: weight_scale kWeightScale in every direction (forward, backward data, backward
  // filter; the bias unscaled), on a few of the layers above, and the scaled Linear.
  for (Precision p : {f32, t32}) {
    const double tol = p == f32 ? 5e-5 : 3e-3;
    for (size_t i : {size_t{1}, size_t{3}, size_t{4}}) {
      t.push_back({"conv2d_scaled", run_conv2d_scaled, d_layers[i].dims, p, tol, d_layers[i].bias});
      t.push_back({"conv_transpose2d_scaled", run_conv_transpose2d_scaled, g_layers[i - 1].dims, p, tol,
                   g_layers[i - 1].bias});
    }
    t.push_back({"conv_transpose2d_scaled", run_conv_transpose2d_scaled, g_layers[4].dims, p, tol, g_layers[4].bias});
    t.push_back({"linear_scaled", run_linear_scaled, {64, 100, 300}, p, p == f32 ? 1e-5 : 3e-3, 1});
    t.push_back({"linear_scaled", run_linear_scaled, {7, 33, 5}, p, p == f32 ? 1e-5 : 3e-3, 0});
  }

  // The Progressive GAN layers: one thread per position (PixelNorm) or value (the rest) with the CPU's
  // loops and expressions, so bit-identical; MinibatchStddev's group-wide sums are added in double by a
  // block in another order (1e-6: a last-bit difference after the rounding to float at most).
  for (const std::vector<int>& d : std::vector<std::vector<int>>{{4, 16, 8, 8}, {3, 5, 3, 7}, {8, 512, 4, 4},
                                                                  {2, 1, 1, 1}})
    t.push_back({"pixelnorm", run_pixelnorm, d, f32, 0.0});
  for (const std::vector<int>& d : std::vector<std::vector<int>>{{4, 16, 8, 8}, {2, 3, 5, 7}, {8, 64, 32, 32},
                                                                  {1, 1, 1, 1}})
    t.push_back({"upsample2x", run_resample2x, d, f32, 0.0, 0});
  for (const std::vector<int>& d : std::vector<std::vector<int>>{{4, 16, 8, 8}, {2, 3, 6, 10}, {8, 64, 32, 32},
                                                                  {1, 1, 2, 2}})
    t.push_back({"avgpool2x", run_resample2x, d, f32, 0.0, 1});
  for (const std::vector<int>& d : std::vector<std::vector<int>>{
           {8, 16, 4, 4, 4}, {8, 512, 4, 4, 4}, {6, 3, 5, 7, 3}, {4, 8, 8, 8, 2}, {4, 5, 3, 3, 4}, {3, 4, 2, 2, 1}})
    t.push_back({"mbstd", run_mbstd, d, f32, 1e-6});

  // ---- storage formats (kernels_typed.h) ----
  // f32 NHWC rows take the f32 rows' tolerances (the same float math; only sums run in another order);
  // bf16 rows compare bf16 outputs with the CPU's float results on the same rounded inputs: 1e-2
  // covers the output rounding (2^-9 relative) and the bf16 intermediates of multi-step kernels.
  // Conversions, packing and bias addition are exact in every format.
  const ActFormat f32_nhwc{DataType::f32, Layout::nhwc}, bf16_nchw{DataType::bf16, Layout::nchw},
      bf16_nhwc{DataType::bf16, Layout::nhwc};
  struct FormatRow {
    Precision precision;
    ActFormat format;
  };
  const std::vector<FormatRow> formats{{f32, f32_nhwc}, {b16, bf16_nchw}, {b16, bf16_nhwc}};
  for (int n : {1, 4099, big}) {
    t.push_back({"convert", run_convert, {n}, f32, 0.0, 0, ActFormat{}});
    t.push_back({"convert", run_convert, {n}, b16, 0.0, 0, bf16_nchw});
  }
  for (const FormatRow& fr : formats) {
    const Precision p = fr.precision;
    const ActFormat f = fr.format;
    const bool bf = f.type == DataType::bf16;
    for (const std::vector<int>& d : std::vector<std::vector<int>>{{3, 5, 7, 9}, {8, 64, 16, 16}, {2, 3, 64, 64},
                                                                    {4, 100, 1, 1}, {2, 33, 31, 35}})
      t.push_back({"convert_activations", run_convert_activations, d, p, 0.0, 0, f});
    for (const std::vector<int>& d : std::vector<std::vector<int>>{{64, 3, 4, 4}, {100, 512, 4, 4}, {5, 7, 3, 3}})
      t.push_back({"pack_conv_weight", run_pack_conv_weight, d, p, 0.0, 0, f});
    for (const std::vector<int>& d : std::vector<std::vector<int>>{{8, 64, 16, 16}, {3, 5, 7, 9}, {2, 3, 64, 64},
                                                                    {4, 70, 3, 3}})
      t.push_back({"channel_bias", run_channel_bias, d, p, 1e-6, 0, f});
    t.push_back({"u8_to_image", run_u8_to_image, {4, 13, 11, 3, 3}, p, 0.0, 0, f});
    t.push_back({"u8_to_image", run_u8_to_image, {2, 9, 7, 1, 3}, p, 0.0, 0, f});
    for (Activation a : {Activation::relu, Activation::leaky_relu, Activation::tanh, Activation::sigmoid}) {
      const int v = static_cast<int>(a);
      const bool exact = a == Activation::relu || a == Activation::leaky_relu;
      const double tol = bf ? 1e-2 : (exact ? 0.0 : 1e-6);
      for (int n : {big, 5}) t.push_back({"activation_typed", run_activation_typed, {n}, p, tol, v, f});
    }
    const double bn_tol = bf ? 1e-2 : 1e-5;
    for (Activation a : {Activation::none, Activation::relu, Activation::leaky_relu, Activation::tanh}) {
      const int v = static_cast<int>(a);
      t.push_back({"batchnorm_forward_typed", run_batchnorm_forward_typed, {8, 64, 16, 16}, p, bn_tol, v, f});
      t.push_back({"batchnorm_backward_typed", run_batchnorm_backward_typed, {8, 64, 16, 16}, p, bn_tol, v, f});
      t.push_back({"batchnorm_eval_typed", run_batchnorm_eval_typed, {8, 64, 16, 16}, p, bn_tol, v, f});
    }
    // Odd channel counts (NHWC: a partial group of 32 lanes), many rows per channel, many channels.
    t.push_back({"batchnorm_forward_typed", run_batchnorm_forward_typed, {5, 3, 7, 7}, p, bn_tol, 0, f});
    t.push_back({"batchnorm_forward_typed", run_batchnorm_forward_typed, {64, 512, 4, 4}, p, bn_tol, 1, f});
    t.push_back({"batchnorm_forward_typed", run_batchnorm_forward_typed, {16, 37, 32, 32}, p, bn_tol, 2, f});
    t.push_back({"batchnorm_backward_typed", run_batchnorm_backward_typed, {5, 3, 7, 7}, p, bn_tol, 2, f});
    t.push_back({"batchnorm_backward_typed", run_batchnorm_backward_typed, {64, 512, 4, 4}, p, bn_tol, 1, f});
    t.push_back({"batchnorm_backward_typed", run_batchnorm_backward_typed, {16, 8, 64, 64}, p, bn_tol, 2, f});
    t.push_back({"batchnorm_eval_typed", run_batchnorm_eval_typed, {3, 5, 5, 3}, p, bn_tol, 2, f});
  }
  // The layout does not matter to the loss: f32 and bf16 logits.
  t.push_back({"bce_typed", run_bce_typed, {1024}, f32, 1e-6, 1, ActFormat{}});
  t.push_back({"bce_typed", run_bce_typed, {1000}, f32, 1e-6, 0, ActFormat{}});
  t.push_back({"bce_typed", run_bce_typed, {3}, f32, 1e-6, 1, ActFormat{}});
  t.push_back({"bce_typed", run_bce_typed, {1024}, b16, 1e-2, 1, bf16_nchw});
  // Every objective's three terms (kind x role), in fp32 (the same float expressions: libm ulps at most) and
  // bf16 storage (the gradient rounded when stored).
  for (int v = 0; v < 9; ++v) {
    t.push_back({"gan_loss", run_gan_loss_typed, {1000}, f32, 1e-6, v, ActFormat{}});
    t.push_back({"gan_loss", run_gan_loss_typed, {1024}, b16, 1e-2, v, bf16_nchw});
  }
  // The gradient penalty's kernels: layer norm in every format (sums in another order: 1e-5 in f32; bf16
  // storage 2e-2), the interpolation weights bit for bit, interpolates (the same fmaf) and the penalty.
  for (const ActFormat& f : {ActFormat{}, f32_nhwc})
    for (const std::vector<int>& d : {std::vector<int>{4, 16, 8, 8}, std::vector<int>{3, 5, 3, 7}})
      t.push_back({"layernorm", run_layernorm_typed, d, f32, 1e-5, 0, f});
  t.push_back({"layernorm", run_layernorm_typed, {4, 16, 8, 8}, b16, 2e-2, 0, bf16_nhwc});
  t.push_back({"penalty", run_penalty_typed, {12, 3 * 32 * 32}, f32, 1e-6, 0, ActFormat{}});
  t.push_back({"penalty", run_penalty_typed, {5, 77}, f32, 1e-6, 0, ActFormat{}});
  t.push_back({"penalty", run_penalty_typed, {12, 3 * 32 * 32}, b16, 1e-2, 0, bf16_nchw});
  for (Activation a : {Activation::tanh, Activation::sigmoid}) {
    t.push_back({"activation_second", run_activation_second_typed, {1000}, f32, 1e-6, static_cast<int>(a), ActFormat{}});
    t.push_back({"activation_second", run_activation_second_typed, {1000}, b16, 1e-2, static_cast<int>(a), bf16_nchw});
  }
  t.push_back({"bce_typed", run_bce_typed, {1000}, b16, 1e-2, 0, bf16_nchw});
  t.push_back({"bce_typed", run_bce_typed, {2500}, b16, 1e-2, 1, bf16_nchw});
  // The Fade's mix and branch shares (progan.cu): the CPU's float operations, then one rounding in bf16.
  for (int n : {1, 4099, big}) {
    t.push_back({"fade", run_fade_typed, {n}, f32, 0.0, 0, ActFormat{}});
    t.push_back({"fade", run_fade_typed, {n}, b16, 0.0, 0, bf16_nchw});
  }

  // Convolutions in every format: f32 NHWC at fp32 (FMA only), tf32 NHWC, bf16 NCHW and NHWC. The same
  // layers as above; bf16 2e-2 (bf16 inputs are exact for the CPU, so this is output rounding plus
  // the products' accumulation order), tf32 5e-3.
  const std::vector<FormatRow> conv_formats{
      {f32, f32_nhwc}, {t32, f32_nhwc}, {b16, bf16_nchw}, {b16, bf16_nhwc}};
  for (const FormatRow& fr : conv_formats) {
    const double tol = fr.format.type == DataType::bf16 ? 2e-2 : (fr.precision == t32 ? 5e-3 : 5e-5);
    for (const ConvRow& r : d_layers)
      t.push_back({"conv2d", run_conv2d_typed, r.dims, fr.precision, tol, r.bias, fr.format});
    for (const ConvRow& r : g_layers)
      t.push_back({"conv_transpose2d", run_conv_transpose2d_typed, r.dims, fr.precision, tol, r.bias, fr.format});
    t.push_back({"conv2d_scaled", run_conv2d_scaled_typed, d_layers[1].dims, fr.precision, tol, 0, fr.format});
    t.push_back({"conv2d_scaled", run_conv2d_scaled_typed, d_layers[4].dims, fr.precision, tol, 1, fr.format});
    t.push_back({"conv_transpose2d_scaled", run_conv_transpose2d_scaled_typed, g_layers[1].dims, fr.precision, tol, 0,
                 fr.format});
    t.push_back({"conv_transpose2d_scaled", run_conv_transpose2d_scaled_typed, g_layers[4].dims, fr.precision, tol, 1,
                 fr.format});
  }
  return t;
}

std::string case_name(const Case& c) {
  std::string s = c.kernel;
  size_t shown = 0;
  for (int d : c.dims) {
    if (++shown > 7) break;
    s += shown == 1 ? '_' : 'x';
    s += std::to_string(d);
  }
  s += std::string("_") + gt::cuda::precision_name(c.precision);
  // The storage format where it is not the precision's own NCHW: "_nhwc", and the type if it differs.
  if (c.format.type != gt::cuda::storage_type(c.precision))
    s += std::string("_") + gt::cuda::data_type_name(c.format.type);
  if (c.format.layout == Layout::nhwc) s += "_nhwc";
  const std::string k = c.kernel;
  if (k.rfind("activation", 0) == 0 || k.rfind("batchnorm", 0) == 0)
    s += std::string("_") + activation_name(static_cast<Activation>(c.variant));
  else if (k == "optimizer")
    s += "_v" + std::to_string(c.variant);
  else if (c.variant)
    s += "_v" + std::to_string(c.variant);
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

// gtest prints each row by its name rather than its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c) << " (tolerance " << c.tolerance << ")"; }

// ---- comparison ------------------------------------------------------------------------------------------

struct Error {
  double normalized = 0, max_abs = 0;
  int64_t mismatches = 0;  // bitwise differences
  int64_t unexpected_nan = 0;
};

Error compare(const std::vector<float>& cpu, const std::vector<float>& gpu) {
  Error e;
  double diff2 = 0, ref2 = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double c = cpu[i], g = gpu[i];
    if (std::isnan(g) && !std::isnan(c)) {
      ++e.unexpected_nan;
      continue;
    }
    if (std::memcmp(&cpu[i], &gpu[i], sizeof(float)) != 0) ++e.mismatches;
    if (std::isnan(c)) continue;
    diff2 += (g - c) * (g - c);
    ref2 += c * c;
    e.max_abs = std::max(e.max_abs, std::fabs(g - c));
  }
  e.normalized = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  return e;
}

uint64_t run_seed() {
  if (const char* env = std::getenv("GT_PARITY_SEED")) return std::strtoull(env, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) | rd();
}

class Parity : public ::testing::TestWithParam<Case> {
 public:
  static void TearDownTestSuite() { rigs().clear(); }  // handles go before the CUDA runtime shuts down

 protected:
  void SetUp() override {
    GT_REQUIRE_GPU();
  }

  static std::map<Precision, std::unique_ptr<Rig>>& rigs() {
    static std::map<Precision, std::unique_ptr<Rig>> all;
    return all;
  }
  static Rig& rig(Precision p) {
    auto& slot = rigs()[p];
    if (!slot) slot = std::make_unique<Rig>(p);
    return *slot;
  }
};

TEST_P(Parity, GpuMatchesCpu) {
  const Case& c = GetParam();
  const uint64_t seed = run_seed();
  Rig& r = rig(c.precision);
  const std::vector<Output> outputs = c.run(c, r, seed);
  r.ctx.synchronize();
  ASSERT_FALSE(outputs.empty());
  for (const Output& o : outputs) {
    ASSERT_EQ(o.cpu.size(), o.gpu.size()) << o.name;
    const Error e = compare(o.cpu, o.gpu);
    std::cout << case_name(c) << " " << o.name << ": normalized error " << e.normalized << " (tolerance "
              << c.tolerance << "), max abs " << e.max_abs << ", " << e.mismatches << " of " << o.cpu.size()
              << " values differ in bits\n";
    EXPECT_EQ(e.unexpected_nan, 0) << o.name << ": NaN where the CPU has a number (an unwritten element?); seed "
                                   << seed;
    if (c.tolerance == 0)
      EXPECT_EQ(e.mismatches, 0) << o.name << " should be bit-identical; normalized error " << e.normalized
                                 << "; seed " << seed;
    else
      EXPECT_LE(e.normalized, c.tolerance) << o.name << "; seed " << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(Table, Parity, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return case_name(info.param); });

}  // namespace

#else
TEST(GpuParity, NotBuilt) { GTEST_SKIP() << "built without CUDA (GANTRAIN_CUDA=OFF)"; }
#endif
