// cuDNN convolutions: descriptors and algorithm choices cached per shape, one workspace grown only while shapes are new.
#include "cuda/conv.h"

#include <array>
#include <cstdio>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "cuda/check.h"
#include "cuda/conv_choice.h"
#include "core/error.h"
#include "cuda/kernels_typed.h"

namespace gt::cuda {
namespace {

enum class Direction { forward = 0, backward_data = 1, backward_filter = 2 };
const char* direction_name(Direction d) {
  switch (d) {
    case Direction::forward: return "forward";
    case Direction::backward_data: return "backward-data";
    case Direction::backward_filter: return "backward-filter";
  }
  return "?";
}

// The chosen algorithm of one direction of one shape.
struct Choice {
  bool found = false;
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t workspace = 0;
  float milliseconds = 0.f;
};

// cuDNN's view of a layer: x is the convolution's input side and y its output side. A Conv2d maps its
// input (x) to its output (y); a ConvTranspose2d runs the convolution that maps its output (x, the
// large side) to its input (y), backwards. The filter is [y channels, x channels, K, K] in both
// cases, which is each layer's PyTorch weight layout.
struct Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  std::array<Choice, 3> choice;
  std::string label;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (bias) cudnnDestroyTensorDescriptor(bias);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
};

using Key = std::array<int, 11>;
Key key_of(bool transposed, const ConvGeometry& g) {
  return {transposed ? 1 : 0, g.batch,    g.in_channels, g.in_h,   g.in_w,   g.out_channels,
          g.out_h,            g.out_w,    g.kernel,      g.stride, g.padding};
}

template <class Perf>
std::string rejected_list(const std::vector<Perf>& perfs) {
  std::string s;
  for (const Perf& p : perfs)
    s += fmt::format(" [algo {} status {} memory {} deterministic {} math {}]", static_cast<int>(p.algo),
                     static_cast<int>(p.status), p.memory, p.determinism == CUDNN_DETERMINISTIC ? 1 : 0,
                     static_cast<int>(p.mathType));
  return s;
}

ConvMath conv_math(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_TENSOR_OP_MATH: return ConvMath::tensor_op;
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return ConvMath::tensor_op_allow_conversion;
    case CUDNN_FMA_MATH: return ConvMath::fma;
    default: return ConvMath::default_math;
  }
}

cudnnDataType_t cudnn_type(DataType t) { return t == DataType::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT; }
cudnnTensorFormat_t cudnn_layout(Layout l) { return l == Layout::nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW; }

}  // namespace

struct ConvEngine::Impl {
  GpuContext& ctx;
  ActFormat storage;  // the format of data and filters
  std::map<Key, std::unique_ptr<Plan>> plans;
  DeviceBuffer<std::byte> workspace;
  // The bias-gradient sums of formats other than f32 NCHW (accumulate_channel_bias_grad's workspace).
  DeviceBuffer<double> bias_workspace;

  Impl(GpuContext& c, ActFormat f) : ctx(c), storage(f) {}

  // FMA units only: f32 data at fp32 precision. f32 data at tf32 or bf16 precision may use TF32 tensor
  // cores; bf16 data always runs on tensor cores (float accumulation: the descriptor's compute type).
  bool fp32() const { return storage.type == DataType::f32 && ctx.precision() == Precision::fp32; }
  // f32 NCHW keeps cuDNN's own bias calls (the fp32 parity path); other formats use our kernels.
  bool cudnn_bias() const { return storage == ActFormat{}; }

  void reserve_bias_workspace(const ConvGeometry& g) {
    if (cudnn_bias()) return;
    const size_t need = batchnorm_workspace_doubles(g.batch, g.out_channels, g.out_h * g.out_w);
    if (need <= bias_workspace.size()) return;
    CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));  // queued work may still read the old one
    bias_workspace = DeviceBuffer<double>();
    bias_workspace = DeviceBuffer<double>(need);
  }

  Plan& plan(bool transposed, const ConvGeometry& g) {
    const Key key = key_of(transposed, g);
    auto it = plans.find(key);
    if (it != plans.end()) return *it->second;
    auto p = std::make_unique<Plan>();
    // Conv2d: x = its input [N, C, H, W], y = its output. ConvTranspose2d: x = its output, y = its input.
    const int xc = transposed ? g.out_channels : g.in_channels, yc = transposed ? g.in_channels : g.out_channels;
    const int xh = transposed ? g.out_h : g.in_h, xw = transposed ? g.out_w : g.in_w;
    const int yh = transposed ? g.in_h : g.out_h, yw = transposed ? g.in_w : g.out_w;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->bias));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv));
    // The data and filter in the engine's format (the filter NHWC means KRSC); the bias, used only by
    // cuDNN's f32 NCHW calls, is f32. The compute type is float in every format.
    const cudnnDataType_t type = cudnn_type(storage.type);
    const cudnnTensorFormat_t layout = cudnn_layout(storage.layout);
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x, layout, type, g.batch, xc, xh, xw));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y, layout, type, g.batch, yc, yh, yw));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, g.out_channels, 1, 1));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w, type, layout, yc, xc, g.kernel, g.kernel));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv, g.padding, g.padding, g.stride, g.stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    int n = 0, c = 0, h = 0, w = 0;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &c, &h, &w));
    GT_CHECK(n == g.batch && c == yc && h == yh && w == yw,
             "convolution geometry is inconsistent: cuDNN computes [{}, {}, {}, {}] where [{}, {}, {}, {}] was given",
             n, c, h, w, g.batch, yc, yh, yw);
    p->label = fmt::format("{} N{} {}x{}x{} -> {}x{}x{} k{} s{} p{} {} {}", transposed ? "conv_transpose2d" : "conv2d",
                           g.batch, g.in_channels, g.in_h, g.in_w, g.out_channels, g.out_h, g.out_w, g.kernel,
                           g.stride, g.padding, data_type_name(storage.type), layout_name(storage.layout));
    reserve_bias_workspace(g);
    return *plans.emplace(key, std::move(p)).first->second;
  }

  // Picks among cudnnFind's candidates by choose_conv_candidate's rules (conv_choice.h). With
  // deterministic convolutions asked for, a direction that has only non-deterministic candidates (likely
  // for 3-channel NHWC layers and nz = 100 channels in bf16) takes the fastest of them and says so in one
  // line, rather than ending the run.
  template <class Perf>
  Choice pick(const std::vector<Perf>& perfs, int returned, const Plan& p, Direction d) const {
    const GpuOptions& o = ctx.options();
    std::vector<ConvCandidate> candidates;
    for (int i = 0; i < returned; ++i) {
      const Perf& r = perfs[static_cast<size_t>(i)];
      candidates.push_back({static_cast<int>(r.algo), r.status == CUDNN_STATUS_SUCCESS, r.memory,
                            r.determinism == CUDNN_DETERMINISTIC, conv_math(r.mathType), r.time});
    }
    const ConvChoiceResult chosen =
        choose_conv_candidate(candidates, ConvChoicePolicy{o.deterministic, fp32(), o.conv_workspace_limit});
    if (chosen.index < 0)
      runtime_error("cuDNN has no usable {} algorithm for {} ({}, workspace limit {} bytes); candidates:{}",
                    direction_name(d), p.label, precision_name(ctx.precision()), o.conv_workspace_limit,
                    rejected_list(std::vector<Perf>(perfs.begin(), perfs.begin() + returned)));
    const Perf& r = perfs[static_cast<size_t>(chosen.index)];
    if (chosen.nondeterministic_fallback)
      std::fprintf(stderr,
                   "gantrain: warning: cuDNN has no deterministic %s algorithm for %s (%s); using the fastest "
                   "non-deterministic one (algo %d): this layer's results may differ in the last bits from run to run\n",
                   direction_name(d), p.label.c_str(), precision_name(ctx.precision()), static_cast<int>(r.algo));
    return Choice{true, static_cast<int>(r.algo), r.mathType, r.memory, r.time};
  }

  const Choice& choose(Plan& p, Direction d) {
    Choice& c = p.choice[static_cast<size_t>(d)];
    if (c.found) return c;
    cudnnHandle_t h = ctx.cudnn();
    // The math type to search with, set afresh for each direction: the previous direction's launch left its
    // chosen algorithm's math on the descriptor, which would narrow this search. fp32: FMA kernels only
    // (cuDNN's default math lets float convolutions use TF32 tensor cores).
    CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, fp32() ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
    int returned = 0;
    if (d == Direction::forward) {
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perfs(CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
      CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(h, p.x, p.w, p.conv, p.y, static_cast<int>(perfs.size()),
                                                       &returned, perfs.data()));
      c = pick(perfs, returned, p, d);
    } else if (d == Direction::backward_data) {
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perfs(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
      CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(h, p.w, p.y, p.conv, p.x, static_cast<int>(perfs.size()),
                                                            &returned, perfs.data()));
      c = pick(perfs, returned, p, d);
    } else {
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perfs(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
      CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(h, p.x, p.y, p.conv, p.w,
                                                              static_cast<int>(perfs.size()), &returned, perfs.data()));
      c = pick(perfs, returned, p, d);
    }
    if (c.workspace > workspace.size()) {
      // Only while shapes are new: the old workspace may still be in use by queued work.
      CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
      workspace = DeviceBuffer<std::byte>();
      workspace = DeviceBuffer<std::byte>(c.workspace);
    }
    return c;
  }

  // The math type the chosen algorithm was timed with (fp32 stays FMA-only).
  void set_math(const Plan& p, const Choice& c) const {
    CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, fp32() ? CUDNN_FMA_MATH : c.math));
  }

  // y = conv(x, w) * scale + y * beta (alpha and beta are float for float and bf16 data alike). scale is the
  // layer's weight_scale (equalized learning rate): cuDNN's alpha, as the CPU passes it as its GEMMs' alpha.
  void forward(Plan& p, const void* x, const void* w, void* y, float beta, float scale) {
    const Choice& c = choose(p, Direction::forward);
    set_math(p, c);
    CUDNN_CHECK(cudnnConvolutionForward(ctx.cudnn(), &scale, p.x, x, p.w, w, p.conv,
                                        static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), workspace.data(), c.workspace,
                                        &beta, p.y, y));
  }

  // dx = conv^T(dy, w) * scale + dx * beta
  void backward_data(Plan& p, const void* w, const void* dy, void* dx, float beta, float scale) {
    const Choice& c = choose(p, Direction::backward_data);
    set_math(p, c);
    CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.cudnn(), &scale, p.w, w, p.y, dy, p.conv,
                                             static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), workspace.data(),
                                             c.workspace, &beta, p.x, dx));
  }

  // dw = correlation of x with dy * scale + dw * (accumulate ? 1 : 0): the gradient of the stored weight
  void backward_filter(Plan& p, const void* x, const void* dy, void* dw, bool accumulate, float scale) {
    const Choice& c = choose(p, Direction::backward_filter);
    set_math(p, c);
    const float beta = accumulate ? 1.f : 0.f;
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.cudnn(), &scale, p.x, x, p.y, dy, p.conv,
                                               static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), workspace.data(),
                                               c.workspace, &beta, p.w, dw));
  }

  // out [N, OC, OH, OW] += bias (the layer's output: y of a Conv2d, x of a ConvTranspose2d).
  void add_bias(const Plan& p, cudnnTensorDescriptor_t out_desc, void* out, const float* bias,
                const ConvGeometry& g) {
    if (cudnn_bias()) {
      const float one = 1.f;
      CUDNN_CHECK(cudnnAddTensor(ctx.cudnn(), &one, p.bias, bias, &one, out_desc, out));
    } else {
      add_channel_bias(out, bias, g.batch, g.out_channels, g.out_h * g.out_w, storage, ctx.stream());
    }
  }

  void accumulate_bias_grad(const Plan& p, cudnnTensorDescriptor_t out_desc, const void* dout, float* dbias,
                            const ConvGeometry& g) {
    if (cudnn_bias()) {
      const float one = 1.f;
      CUDNN_CHECK(cudnnConvolutionBackwardBias(ctx.cudnn(), &one, out_desc, dout, &one, p.bias, dbias));
    } else {
      accumulate_channel_bias_grad(dbias, dout, g.batch, g.out_channels, g.out_h * g.out_w, storage,
                                   bias_workspace.data(), ctx.stream());
    }
  }
};

ConvEngine::ConvEngine(GpuContext& ctx, ActFormat fmt) : impl_(std::make_unique<Impl>(ctx, fmt)) {}
ConvEngine::~ConvEngine() = default;

const ActFormat& ConvEngine::format() const { return impl_->storage; }

void ConvEngine::conv2d_forward(void* out, const void* in, const void* weight, const float* bias,
                                const ConvGeometry& g) {
  Plan& p = impl_->plan(false, g);
  impl_->forward(p, in, weight, out, 0.f, g.weight_scale);
  if (bias) impl_->add_bias(p, p.y, out, bias, g);
}

void ConvEngine::conv2d_backward(void* dinp, void* dweight, float* dbias, const void* dout, const void* in,
                                 const void* weight, const ConvGeometry& g, bool accumulate_dweight) {
  Plan& p = impl_->plan(false, g);
  if (dweight) impl_->backward_filter(p, in, dout, dweight, accumulate_dweight, g.weight_scale);
  if (dbias) impl_->accumulate_bias_grad(p, p.y, dout, dbias, g);
  if (dinp) impl_->backward_data(p, weight, dout, dinp, 0.f, g.weight_scale);
}

void ConvEngine::conv_transpose2d_forward(void* out, const void* in, const void* weight, const float* bias,
                                          const ConvGeometry& g) {
  Plan& p = impl_->plan(true, g);
  impl_->backward_data(p, weight, in, out, 0.f, g.weight_scale);
  if (bias) impl_->add_bias(p, p.x, out, bias, g);
}

void ConvEngine::conv_transpose2d_backward(void* dinp, void* dweight, float* dbias, const void* dout, const void* in,
                                           const void* weight, const ConvGeometry& g, bool accumulate_dweight) {
  Plan& p = impl_->plan(true, g);
  if (dweight) impl_->backward_filter(p, dout, in, dweight, accumulate_dweight, g.weight_scale);
  if (dbias) impl_->accumulate_bias_grad(p, p.x, dout, dbias, g);
  if (dinp) impl_->forward(p, dout, weight, dinp, 0.f, g.weight_scale);
}

size_t ConvEngine::plans() const { return impl_->plans.size(); }
size_t ConvEngine::workspace_bytes() const { return impl_->workspace.bytes(); }

std::string ConvEngine::describe() const {
  std::string s;
  for (const auto& [key, p] : impl_->plans)
    for (int d = 0; d < 3; ++d) {
      const Choice& c = p->choice[static_cast<size_t>(d)];
      if (!c.found) continue;
      s += fmt::format("{} {}: algo {} math {} {:.3f} ms workspace {} B\n", p->label,
                       direction_name(static_cast<Direction>(d)), c.algo, static_cast<int>(c.math), c.milliseconds,
                       c.workspace);
    }
  return s;
}

}  // namespace gt::cuda
