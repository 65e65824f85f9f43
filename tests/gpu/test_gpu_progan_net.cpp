// GpuNet against the CPU Sequential on small networks of the Progressive GAN layers (PixelNorm, Upsample2x, AvgPool2x, MinibatchStddev, Fade, weight-scaled Conv2d/ConvTranspose2d/Linear): forward, input and parameter gradients, and the gradient penalty's double backward; skips without a GPU.
#include <gtest/gtest.h>

#ifdef GANTRAIN_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "common/require_gpu.h"
#include "core/rng.h"
#include "cuda/arena.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/conv.h"
#include "cuda/formats.h"
#include "cuda/gpu_net.h"
#include "cuda/kernels_typed.h"
#include "nn/layers.h"
#include "nn/sequential.h"

namespace gt {
namespace {

using cuda::ActFormat;
using cuda::DataType;
using cuda::DeviceBuffer;
using cuda::Layout;

constexpr int kN = 8;       // a multiple of the minibatch-stddev group
constexpr int kGroup = 4;
constexpr uint64_t kSeed = 4242;

Conv2dSpec conv_spec(int in, int out, int k, int pad, bool bias, float scale) {
  Conv2dSpec s;
  s.in_channels = in;
  s.out_channels = out;
  s.kernel = k;
  s.stride = 1;
  s.padding = pad;
  s.bias = bias;
  s.weight_scale = scale;
  return s;
}

void randomize(Sequential& s) {
  // Random parameters (the factories' initialization is not the point; the gaps between slots stay zero).
  for (const ParamSlot& slot : s.param_slots())
    fill_normal(s.flat_params() + slot.offset, slot.numel, 0.f, 0.3f, kSeed, RngStream::test, slot.offset);
}

// [N, 4, 4, 4] -> [N, 1]: every new layer, weight-scaled convolutions (both kinds) and Linear, a tanh for
// the activations' curvature term.
Sequential make_plain_net() {
  Sequential s("net");
  s.add(make_pixel_norm());
  s.add(make_upsample2x());                                  // [4, 8, 8]
  s.add(make_conv2d(conv_spec(4, 8, 3, 1, true, 0.37f)));    // [8, 8, 8]
  s.add(make_leaky_relu(0.2f));
  s.add(make_conv_transpose2d(conv_spec(8, 8, 3, 1, false, 0.6f)));
  s.add(make_tanh());
  s.add(make_pixel_norm());
  s.add(make_avg_pool2x());                                  // [8, 4, 4]
  s.add(make_minibatch_stddev(kGroup));                      // [9, 4, 4]
  s.add(make_conv2d(conv_spec(9, 8, 3, 1, true, 0.29f)));    // [8, 4, 4]
  s.add(make_leaky_relu(0.2f));
  s.add(make_reshape({8 * 4 * 4}));
  s.add(make_linear(8 * 4 * 4, 1, true, 0.5f));
  randomize(s);
  return s;
}

// [N, 4, 8, 8] -> [N, 1]: a Progressive GAN critic in a transition, its first block fading in (named layers,
// as make_progan_discriminator names them), a batch norm inside the new block to check its fused op and
// buffers there (no penalty then: batch norm has no double backward).
Sequential make_fade_net(bool with_bn) {
  Sequential s("net");
  std::vector<NamedLayer> old_path, new_block;
  old_path.push_back({"", make_avg_pool2x()});                                        // [4, 4, 4]
  old_path.push_back({"from_rgb4", make_conv2d(conv_spec(4, 8, 1, 0, true, 0.7f))});  // [8, 4, 4]
  old_path.push_back({"", make_leaky_relu(0.2f)});
  new_block.push_back({"from_rgb8", make_conv2d(conv_spec(4, 6, 1, 0, true, 0.7f))});  // [6, 8, 8]
  new_block.push_back({"", make_leaky_relu(0.2f)});
  new_block.push_back({"block8.conv", make_conv2d(conv_spec(6, 8, 3, 1, !with_bn, 0.24f))});  // [8, 8, 8]
  if (with_bn) new_block.push_back({"block8.bn", make_batchnorm2d(8)});
  new_block.push_back({"", make_leaky_relu(0.2f)});
  new_block.push_back({"", make_pixel_norm()});
  new_block.push_back({"", make_avg_pool2x()});  // [8, 4, 4]
  s.add(make_fade(std::move(old_path), std::move(new_block)), "");
  s.add(make_minibatch_stddev(kGroup), "mbstd");  // [9, 4, 4]
  s.add(make_conv2d(conv_spec(9, 8, 3, 1, true, 0.29f)), "block4.conv");
  s.add(make_leaky_relu(0.2f), "act");
  s.add(make_reshape({8 * 4 * 4}), "flat");
  s.add(make_linear(8 * 4 * 4, 1, true, 0.5f), "out");
  randomize(s);
  return s;
}

std::vector<float> random_normal(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  fill_normal(v.data(), static_cast<int64_t>(n), 0.f, 1.f, seed, RngStream::test, 0);
  return v;
}

double rel_error(const float* gpu, const float* cpu, int64_t n) {
  double d = 0, r = 0;
  for (int64_t i = 0; i < n; ++i) {
    d += (static_cast<double>(gpu[i]) - cpu[i]) * (static_cast<double>(gpu[i]) - cpu[i]);
    r += static_cast<double>(cpu[i]) * cpu[i];
  }
  return r > 0 ? std::sqrt(d / r) : std::sqrt(d);
}

// Host f32 NCHW values of an activation [kN, C, H, W] into device memory from `arena`, in fmt.
void* upload(cuda::GpuContext& ctx, cuda::DeviceArena& arena, const std::vector<float>& v, int C, int H, int W,
             const ActFormat& fmt) {
  float* f = arena.allocate<float>(v.size());
  CUDA_CHECK(cudaMemcpyAsync(f, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice, ctx.stream()));
  ctx.synchronize();  // v may go
  if (fmt == ActFormat{}) return f;
  void* d = arena.allocate_bytes(v.size() * cuda::data_type_size(fmt.type));
  cuda::convert_activations(d, fmt, f, ActFormat{}, kN, C, H, W, ctx.stream());
  return d;
}

// The reverse: an activation [kN, C, H, W] in fmt as host f32 NCHW values.
std::vector<float> download(cuda::GpuContext& ctx, cuda::DeviceArena& arena, const void* d, int C, int H, int W,
                            const ActFormat& fmt) {
  const size_t n = static_cast<size_t>(kN) * C * H * W;
  const size_t mark = arena.mark();
  const float* f = static_cast<const float*>(d);
  if (fmt != ActFormat{}) {
    float* t = arena.allocate<float>(n);
    cuda::convert_activations(t, ActFormat{}, d, fmt, kN, C, H, W, ctx.stream());
    f = t;
  }
  std::vector<float> v(n);
  CUDA_CHECK(cudaMemcpyAsync(v.data(), f, n * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.synchronize();
  arena.rewind(mark);
  return v;
}

std::vector<float> download_grads(cuda::GpuContext& ctx, cuda::GpuNet& net) {
  std::vector<float> v(static_cast<size_t>(net.flat_size()));
  CUDA_CHECK(cudaMemcpyAsync(v.data(), net.flat_grads(), v.size() * sizeof(float), cudaMemcpyDeviceToHost,
                             ctx.stream()));
  ctx.synchronize();
  return v;
}

struct FormatCase {
  std::string name;
  ActFormat fmt;
  double tol;    // normalized error of outputs and gradients
  bool penalty;  // the double backward (Linear has none in bf16 on the GPU)
  enum Net { plain, fade, fade_bn } net = plain;
};

class GpuProganNet : public ::testing::TestWithParam<FormatCase> {
 protected:
  void SetUp() override { GT_REQUIRE_GPU(); }
};

// Per parameter, the GPU's gradient (flat at its slot) against the CPU's.
void expect_grads_match(const std::vector<float>& gpu, const std::vector<ParamSlot>& gpu_slots, const float* cpu,
                        const std::vector<ParamSlot>& cpu_slots, double tol, const char* what) {
  ASSERT_EQ(gpu_slots.size(), cpu_slots.size());
  for (size_t i = 0; i < cpu_slots.size(); ++i) {
    ASSERT_EQ(gpu_slots[i].name, cpu_slots[i].name);
    ASSERT_EQ(gpu_slots[i].numel, cpu_slots[i].numel);
    const double e = rel_error(gpu.data() + gpu_slots[i].offset, cpu + cpu_slots[i].offset, cpu_slots[i].numel);
    std::cout << what << " " << cpu_slots[i].name << ": normalized error " << e << "\n";
    EXPECT_LE(e, tol) << what << " " << cpu_slots[i].name;
  }
}

// One training forward and backward (output, input gradient, parameter gradients), then a fresh forward, the
// penalty's first backward (input gradient kept with create_graph) and backward_of_input_grad (the parameter
// gradients of v . g), on both sides from the same parameters and inputs.
TEST_P(GpuProganNet, MatchesTheCpuSequential) {
  const FormatCase& fc = GetParam();
  const ActFormat fmt = fc.fmt;
  const bool fading = fc.net != FormatCase::plain;
  Sequential host = fading ? make_fade_net(fc.net == FormatCase::fade_bn) : make_plain_net();
  const int R = fading ? 8 : 4;  // the input [kN, 4, R, R]
  const Shape input{4, R, R};
  const float alpha = 0.3f;
  if (fading) host.set_fade_alpha(alpha);
  const int64_t n_in = static_cast<int64_t>(kN) * shape_numel(input);
  const std::vector<float> x = random_normal(static_cast<size_t>(n_in), kSeed + 1);
  const std::vector<float> dy = random_normal(kN, kSeed + 2), v = random_normal(static_cast<size_t>(n_in), kSeed + 3);

  // The CPU reference.
  Tensor xc({kN, 4, R, R}), dyc({kN, 1}), vc({kN, 4, R, R});
  std::copy(x.begin(), x.end(), xc.f32());
  std::copy(dy.begin(), dy.end(), dyc.f32());
  std::copy(v.begin(), v.end(), vc.f32());
  host.zero_grad();
  const Tensor yc = host.forward(xc, Mode::train).clone();
  BackwardOptions both;
  both.input_grad = true;
  const Tensor dxc = host.backward(dyc, both).clone();
  const std::vector<float> grads_c(host.flat_grads(), host.flat_grads() + host.flat_size());
  std::vector<float> penalty_grads_c, gc;
  if (fc.penalty) {
    host.zero_grad();
    host.forward(xc, Mode::train);
    BackwardOptions first;
    first.param_grads = false;
    first.input_grad = true;
    first.create_graph = true;
    const Tensor g = host.backward(dyc, first).clone();
    gc.assign(g.f32(), g.f32() + g.numel());
    host.backward_of_input_grad(vc, BackwardOptions{});
    penalty_grads_c.assign(host.flat_grads(), host.flat_grads() + host.flat_size());
  }

  // The GPU, from the same host parameters (GpuNet uploads them when made).
  cuda::GpuOptions o;
  o.precision = fmt.type == DataType::bf16 ? cuda::Precision::bf16 : cuda::Precision::fp32;
  cuda::GpuContext ctx(o);
  cuda::ConvEngine conv(ctx, fmt);
  cuda::GpuNet net(host, input, ctx, conv, fmt);
  if (fading) net.set_fade_alpha(alpha);  // the host's already: the device weights follow
  std::cout << net.describe();
  cuda::DeviceArena arena(net.forward_bytes(kN) + net.backward_bytes(kN) + net.penalty_bytes(kN) + (size_t{1} << 20));
  cuda::DeviceArena io(size_t{8} << 20);
  net.set_arena(&arena);
  void* xd = upload(ctx, io, x, 4, R, R, fmt);
  void* dyd = upload(ctx, io, dy, 1, 1, 1, fmt);
  void* vd = upload(ctx, io, v, 4, R, R, fmt);
  void* dxd = io.allocate_bytes(static_cast<size_t>(n_in) * cuda::data_type_size(fmt.type));

  net.zero_grad();
  void* yd = net.forward(xd, kN, Mode::train, arena);
  const std::vector<float> y = download(ctx, io, yd, 1, 1, 1, fmt);
  net.backward(dyd, dxd, true, arena);
  const std::vector<float> dx = download(ctx, io, dxd, 4, R, R, fmt);
  const std::vector<float> grads = download_grads(ctx, net);
  arena.reset();
  const double e_y = rel_error(y.data(), yc.f32(), yc.numel()), e_dx = rel_error(dx.data(), dxc.f32(), dxc.numel());
  std::cout << "forward: normalized error " << e_y << "\ninput gradient: normalized error " << e_dx << "\n";
  EXPECT_LE(e_y, fc.tol);
  EXPECT_LE(e_dx, fc.tol);
  expect_grads_match(grads, net.param_slots(), grads_c.data(), host.param_slots(), fc.tol, "gradient");

  if (fc.penalty) {
    net.zero_grad();
    net.forward(xd, kN, Mode::train, arena);
    net.backward(dyd, dxd, false, arena, {}, /*create_graph=*/true);
    const std::vector<float> g = download(ctx, io, dxd, 4, R, R, fmt);
    const double e_g = rel_error(g.data(), gc.data(), static_cast<int64_t>(gc.size()));
    std::cout << "penalty's input gradient: normalized error " << e_g << "\n";
    EXPECT_LE(e_g, fc.tol);
    const Tensor vt = Tensor::borrow({kN, 4, R, R}, net.storage_dtype(), Device::cuda, vd);
    net.backward_of_input_grad(vt, BackwardOptions{});
    const std::vector<float> pg = download_grads(ctx, net);
    arena.reset();
    expect_grads_match(pg, net.param_slots(), penalty_grads_c.data(), host.param_slots(), fc.tol,
                       "double-backward gradient");
  }
  ctx.synchronize();
}

// Tolerances: f32 differs from the CPU in the convolutions' and GEMMs' order of sums (fp32: FMA kernels
// only), the new layers' kernels being the CPU's own arithmetic; bf16 NHWC rounds every activation to bf16
// (first estimates, to be calibrated on a GPU).
INSTANTIATE_TEST_SUITE_P(
    Formats, GpuProganNet,
    ::testing::Values(FormatCase{"f32_nchw", ActFormat{}, 1e-4, true},
                      FormatCase{"f32_nhwc", ActFormat{DataType::f32, Layout::nhwc}, 1e-4, true},
                      FormatCase{"bf16_nhwc", ActFormat{DataType::bf16, Layout::nhwc}, 1e-1, false},
                      FormatCase{"fade_f32_nchw", ActFormat{}, 1e-4, true, FormatCase::fade},
                      FormatCase{"fade_f32_nhwc", ActFormat{DataType::f32, Layout::nhwc}, 1e-4, true, FormatCase::fade},
                      FormatCase{"fade_bn_f32_nchw", ActFormat{}, 1e-4, false, FormatCase::fade_bn},
                      FormatCase{"fade_bf16_nhwc", ActFormat{DataType::bf16, Layout::nhwc}, 1e-1, false,
                                 FormatCase::fade}),
    [](const ::testing::TestParamInfo<FormatCase>& i) { return i.param.name; });

}  // namespace
}  // namespace gt

#else
TEST(GpuProganNet, NotBuilt) { GTEST_SKIP() << "built without CUDA (GANTRAIN_CUDA=OFF)"; }
#endif
