// GPU-vs-CPU parity: one table of cases (kernel, shape, precision, tolerance); each runs the CUDA kernel and the CPU reference on the same fresh random inputs.
//
// Every row runs its GPU kernel and the CPU reference (nn/cpu/kernels.h, train/optim.cpp,
// train/loss.cpp, core/rng.h, data/image_source.h) on the same random inputs, drawn afresh each run
// (the seed is printed; GT_PARITY_SEED=<n> repeats a run), with every GPU output poisoned (NaN bytes)
// first so an element the kernel never wrote fails. Outputs are compared by normalized error
// ||gpu - cpu|| / ||cpu|| against the row's tolerance; tolerance 0 means bit-identical. A new kernel
// gets its test by adding rows to cases(). Without a usable GPU every row skips, saying why.
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

#include "arena.h"
#include "context.h"
#include "conv.h"
#include "core/rng.h"
#include "data/image_source.h"
#include "dense.h"
#include "device.h"
#include "kernels.h"
#include "nn/cpu/kernels.h"
#include "optim_gpu.h"
#include "train/loss.h"
#include "train/optim.h"

namespace {

using gt::cuda::Activation;
using gt::cuda::DeviceBuffer;
using gt::cuda::Precision;

// ---- the rig: one context and conv engine per precision, made on first use ------------------------------

struct Rig {
  explicit Rig(Precision p) : ctx(make_options(p)), conv(ctx) {}
  static gt::cuda::GpuOptions make_options(Precision p) {
    gt::cuda::GpuOptions o;
    o.precision = p;
    return o;
  }
  cudaStream_t stream() const { return ctx.stream(); }
  gt::cuda::GpuContext ctx;
  gt::cuda::ConvEngine conv;
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

// dims {N, H, W, in_channels, out_channels}: uint8 NHWC to float NCHW with random flips.
std::vector<Output> run_u8_to_f32(const Case& c, Rig& rig, uint64_t seed) {
  const int N = c.dims[0], H = c.dims[1], W = c.dims[2], cin = c.dims[3], cout = c.dims[4];
  const auto s = rig.stream();
  std::mt19937 gen(static_cast<uint32_t>(seed));
  std::vector<uint8_t> pixels(static_cast<size_t>(N) * H * W * cin), flips(N);
  for (auto& p : pixels) p = static_cast<uint8_t>(gen() & 0xFF);
  for (auto& f : flips) f = static_cast<uint8_t>(gen() & 1);
  const size_t per_image = static_cast<size_t>(cout) * H * W;
  std::vector<float> out(per_image * N);
  for (int i = 0; i < N; ++i)
    gt::hwc_u8_to_chw_f32(pixels.data() + static_cast<size_t>(i) * H * W * cin, H, W, cin, cout, flips[i] != 0,
                          out.data() + i * per_image);
  auto gpixels = to_device(pixels, s);
  auto gflips = to_device(flips, s);
  auto gout = poisoned(out.size(), s);
  gt::cuda::u8_nhwc_to_f32_nchw(gout.data(), gpixels.data(), gflips.data(), N, H, W, cin, cout, 127.5f, -1.f, s);
  return {{"images", out, to_host(gout, s)}};
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
    case rmsprop: cfg.name = "rmsprop"; cfg.lr = 5e-5; break;
    case rmsprop_momentum_wd: cfg.name = "rmsprop"; cfg.lr = 1e-4; cfg.momentum = 0.9; cfg.weight_decay = 1e-3; break;
    case sgd: cfg.name = "sgd"; cfg.lr = 0.01; break;
    case sgd_momentum_wd: cfg.name = "sgd"; cfg.lr = 0.01; cfg.momentum = 0.9; cfg.weight_decay = 5e-4; break;
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
    p->cpu = gt::Param{"p" + std::to_string(i), gt::Tensor::from({static_cast<int64_t>(n)}, keep_alive.back()),
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
  const bool has_state1 = (cfg.name == "adam") || (cfg.name == "rmsprop" && cfg.momentum > 0);
  const bool has_state0 = cfg.name != "sgd" || cfg.momentum != 0;
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
    if (cfg.name == "adam")
      gt::cuda::adam_update(list.view(), gt::cuda::adam_coefficients(cfg, step), scale, s);
    else if (cfg.name == "rmsprop")
      gt::cuda::rmsprop_update(list.view(), gt::cuda::rmsprop_coefficients(cfg), scale, s);
    else
      gt::cuda::sgd_update(list.view(), gt::cuda::sgd_coefficients(cfg, step == 1), scale, s);
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
                        (cfg.name == "rmsprop" && name.find("momentum_buffer") != std::string::npos);
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
  gt::cuda::ema_update(list.view(), decay, s);
  gt::cuda::clip_weights(list.view(), limit, s);
  std::vector<Output> outputs;
  for (size_t i = 0; i < params.size(); ++i) {
    ParamPair& p = *params[i];
    std::vector<float> average = averages[i], clipped = tensor_values(p.cpu.value);
    const float one_minus_decay = 1.f - decay;
    for (size_t k = 0; k < average.size(); ++k) {
      const float difference = clipped[k] - average[k];
      const float step = one_minus_decay * difference;
      average[k] = average[k] + step;
      clipped[k] = std::fmin(std::fmax(clipped[k], -limit), limit);
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

// Forward, then backward with dweight/dbias accumulating onto random starts, for Conv2d or ConvTranspose2d.
std::vector<Output> run_conv(const Case& c, Rig& rig, uint64_t seed, bool transposed) {
  const gt::cpu::ConvGeometry g = conv_geometry(c, transposed);
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

// dims {N, IN, OUT}; variant 1: with bias.
std::vector<Output> run_linear(const Case& c, Rig& rig, uint64_t seed) {
  const int N = c.dims[0], IN = c.dims[1], OUT = c.dims[2];
  const bool with_bias = c.variant == 1;
  const auto s = rig.stream();
  const std::vector<float> in = random_normal(static_cast<size_t>(N) * IN, seed);
  const std::vector<float> w = random_normal(static_cast<size_t>(OUT) * IN, seed + 1, 0.f, 0.05f);
  const std::vector<float> bias = random_normal(OUT, seed + 2), dout = random_normal(static_cast<size_t>(N) * OUT, seed + 3);
  std::vector<float> dw = random_normal(w.size(), seed + 4), db = random_normal(OUT, seed + 5);
  auto gdw = to_device(dw, s), gdb = to_device(db, s);
  std::vector<float> out(dout.size()), dinp(in.size());
  gt::cpu::linear_forward(out.data(), in.data(), w.data(), with_bias ? bias.data() : nullptr, N, IN, OUT);
  gt::cpu::linear_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(), in.data(), w.data(),
                           N, IN, OUT);
  auto gin = to_device(in, s), gw = to_device(w, s), gbias = to_device(bias, s), gdout = to_device(dout, s);
  auto gout = poisoned(out.size(), s), gdinp = poisoned(in.size(), s);
  gt::cuda::linear_forward(rig.ctx, gout.data(), gin.data(), gw.data(), with_bias ? gbias.data() : nullptr, N, IN, OUT);
  gt::cuda::linear_backward(rig.ctx, gdinp.data(), gdw.data(), with_bias ? gdb.data() : nullptr, gdout.data(),
                            gin.data(), gw.data(), N, IN, OUT);
  std::vector<Output> outputs{{"out", out, to_host(gout, s)}, {"dinp", dinp, to_host(gdinp, s)},
                              {"dweight", dw, to_host(gdw, s)}};
  if (with_bias) outputs.push_back({"dbias", db, to_host(gdb, s)});
  return outputs;
}

// ---- the table ------------------------------------------------------------------------------------------

// Tolerances (normalized error): 0 where the GPU performs the CPU's float operations in the CPU's order;
// 1e-6 where a device libm function (tanhf, expf, exp, log1p) differs from glibc's by an ulp or two;
// 1e-5 where sums are added in another order; fp32 convolutions 5e-5 (cuDNN's FFT and Winograd
// algorithms round differently), TF32 ones 3e-3 (10-bit mantissas: expect about 3e-4 to 5e-4, so an
// fp32 row failing near 3e-4 means TF32 crept in).
std::vector<Case> cases() {
  const Precision f32 = Precision::fp32, t32 = Precision::tf32;
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
  return t;
}

std::string case_name(const Case& c) {
  std::string s = c.kernel;
  size_t shown = 0;
  for (int d : c.dims) {
    if (++shown > 7) break;
    s += (shown == 1 ? "_" : "x") + std::to_string(d);
  }
  s += std::string("_") + gt::cuda::precision_name(c.precision);
  const std::string k = c.kernel;
  if (k == "activation" || k.rfind("batchnorm", 0) == 0)
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
    const gt::cuda::DeviceReport r = gt::cuda::query_devices();
    if (r.count == 0) GTEST_SKIP() << "no usable CUDA device: " << r.reason;
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
