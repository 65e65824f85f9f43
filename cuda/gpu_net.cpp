// GpuNet: the ops of a mirrored Sequential, their forward and backward on the device, and host <-> device copies of its state.
#include "cuda/gpu_net.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>

#include "cuda/check.h"
#include "core/error.h"
#include "cuda/buffer_plan.h"
#include "cuda/dense.h"
#include "cuda/kernels.h"
#include "cuda/kernels_typed.h"
#include "nn/layers.h"  // Fade

namespace gt::cuda {
namespace {

// pixelnorm, upsample, avgpool, mbstd: the Progressive GAN layers (their kernels take f32 NCHW; other formats
// convert around them).
// fade: a Fade, whose two branches are op lists of their own.
enum class OpKind { conv, conv_t, bn, ln, act, linear, reshape, pixelnorm, upsample, avgpool, mbstd, fade };

Activation activation_of(const std::string& kind) {
  if (kind == "ReLU") return Activation::relu;
  if (kind == "LeakyReLU") return Activation::leaky_relu;
  if (kind == "Tanh") return Activation::tanh;
  if (kind == "Sigmoid") return Activation::sigmoid;
  return Activation::none;
}

size_t aligned(size_t bytes) {
  const size_t a = DeviceArena::kAlignment;
  return (bytes + a - 1) / a * a;
}

// A per-sample shape as [C, H, W] (2-D tensors [F] are [F, 1, 1]).
struct Chw {
  int c = 1, h = 1, w = 1;
};
Chw chw_of(const Shape& per_sample) {
  Chw r;
  if (!per_sample.empty()) r.c = static_cast<int>(per_sample[0]);
  if (per_sample.size() >= 3) {
    r.h = static_cast<int>(per_sample[1]);
    r.w = static_cast<int>(per_sample[2]);
  } else if (per_sample.size() == 2) {
    r.h = static_cast<int>(per_sample[1]);
  }
  return r;
}

// The Progressive GAN ops' kernels (kernels.h) read and write f32 NCHW: in the engine's own f32 NCHW the
// activations are used as they are, in any other format through f32 NCHW copies from the arena (the caller
// marks and rewinds it around the op).
struct F32Nchw {
  const ActFormat& fmt;
  DeviceArena& arena;
  cudaStream_t stream;

  bool native() const { return fmt == ActFormat{}; }
  // src (per-sample shape `shape`, N samples) as f32 NCHW.
  const float* in(const void* src, int N, const Shape& shape) const {
    if (native()) return static_cast<const float*>(src);
    const Chw c = chw_of(shape);
    float* d = arena.allocate<float>(static_cast<size_t>(N) * shape_numel(shape));
    convert_activations(d, ActFormat{}, src, fmt, N, c.c, c.h, c.w, stream);
    return d;
  }
  // Where to write a result bound for dst: dst itself, or an f32 NCHW copy that store() converts into dst.
  float* out(void* dst, int N, const Shape& shape) const {
    if (native()) return static_cast<float*>(dst);
    return arena.allocate<float>(static_cast<size_t>(N) * shape_numel(shape));
  }
  void store(void* dst, const float* v, int N, const Shape& shape) const {
    if (native()) return;
    const Chw c = chw_of(shape);
    convert_activations(dst, fmt, v, ActFormat{}, N, c.c, c.h, c.w, stream);
  }
};

}  // namespace

struct GpuNet::Op {
  OpKind kind = OpKind::act;
  size_t first_layer = 0, last_layer = 0;
  std::string label;
  LayerAttrs a;
  Activation act = Activation::none;
  float slope = 0.f;
  bool saves_input = false;  // the activation's backward needs its input (leaky ReLU), else its output
  bool in_place = false;     // the output is the input's buffer: a view, or an activation run in place
  Shape in, out;             // per sample
  int64_t w_off = -1, b_off = -1, w_numel = 0;
  size_t packed_off = 0;     // bytes into the packed weight buffers (conv, when packing)
  int64_t lowest_final_offset = 0;  // after this op's backward, gradients from here up are final
  // BatchNorm2d state: running statistics and the last training forward's.
  Buffer* running_mean_host = nullptr;
  Buffer* running_var_host = nullptr;
  Buffer* tracked_host = nullptr;
  int64_t tracked_at_upload = 0;
  DeviceBuffer<float> running_mean, running_var, mean, rstd, var;
  DeviceBuffer<double> sums;  // 4C: this rank's backward sums (g, g*xmu), then their all-reduced copies
  float* ln_mean = nullptr;   // LayerNorm2d: the last forward's per-sample statistics (arena memory)
  float* ln_rstd = nullptr;
  // PixelNorm: the last forward's rnorm [N*HW]; MinibatchStddev: its mean and sigma [N/group, C*HW] (arena memory).
  float* saved0 = nullptr;
  float* saved1 = nullptr;
  // Fade: the branches (0 the old path, 1 the new block), and its weights in device memory: [0] for the next
  // forward (set_fade_alpha), [1] the last forward's, which its backward, tangent and double backward use (as
  // the CPU layer's used_alpha_). Kernels read them when they run, so a replayed CUDA graph follows them.
  std::array<std::vector<std::unique_ptr<Op>>, 2> branch;
  Fade* fade_host = nullptr;
  DeviceBuffer<float> fade_alpha;
  // An op inside a Fade branch: its output gradient in the last backward and its input-side tangent in the
  // last tangent pass (what the top-level ops keep in deltas_ and backward_of_input_grad's list).
  const void* kept_delta = nullptr;
  const void* kept_tangent = nullptr;
  bool trained = false;       // the last forward was in train mode
  // Saved by forward for backward.
  const void* x = nullptr;
  void* y = nullptr;

  ConvGeometry geometry(int N) const {
    ConvGeometry g;
    g.batch = N;
    g.in_channels = static_cast<int>(in[0]);
    g.in_h = static_cast<int>(in[1]);
    g.in_w = static_cast<int>(in[2]);
    g.out_channels = static_cast<int>(out[0]);
    g.out_h = static_cast<int>(out[1]);
    g.out_w = static_cast<int>(out[2]);
    g.kernel = a.kernel;
    g.stride = a.stride;
    g.padding = a.padding;
    g.weight_scale = a.weight_scale;
    return g;
  }
};

GpuNet::GpuNet(Sequential& host, const Shape& per_sample_in, GpuContext& ctx, ConvEngine& conv, const ActFormat& fmt)
    : host_(host), ctx_(ctx), conv_(conv), fmt_(fmt), in_shape_(per_sample_in) {
  GT_CHECK(conv.format() == fmt, "GpuNet format {} {} differs from its ConvEngine's", data_type_name(fmt.type),
           layout_name(fmt.layout));
  // Flat parameter offsets in named_params() order (the checkpoint's and the optimizer's order).
  std::vector<NamedParam> named = host.named_params();
  for (const NamedParam& np : named) {
    slots_.push_back({np.name, param_count_, np.param->value.numel()});
    param_count_ += np.param->value.numel();
  }
  auto offset_of = [&](const Param* p) -> int64_t {
    for (size_t i = 0; i < named.size(); ++i)
      if (named[i].param == p) return slots_[i].offset;
    return -1;
  };

  size_t packed_bytes = 0;
  Shape shape{1};
  shape.insert(shape.end(), per_sample_in.begin(), per_sample_in.end());
  build_ops(ops_, host.size(), [&](size_t i) -> Layer& { return host.layer(i); }, shape, offset_of, packed_bytes);
  // The lowest gradient offset that is final once an op's backward is done: that of the first parameter
  // at or after the op (backward runs from the last op down; a Fade's parameters are all final after it).
  int64_t lowest = param_count_;
  for (size_t k = ops_.size(); k-- > 0;) {
    Op& op = *ops_[k];
    lowest = std::min(lowest, lowest_param_offset(op));
    op.lowest_final_offset = lowest;
  }
  param_buf_ = DeviceBuffer<float>(static_cast<size_t>(std::max<int64_t>(param_count_, 1)));
  grad_buf_ = DeviceBuffer<float>(static_cast<size_t>(std::max<int64_t>(param_count_, 1)));
  params_ = param_buf_.data();
  grads_ = grad_buf_.data();
  if (packed_bytes) {
    packed_buf_ = DeviceBuffer<std::byte>(packed_bytes);
    packed_grad_buf_ = DeviceBuffer<std::byte>(packed_bytes);
  }
  upload();
}

int64_t GpuNet::lowest_param_offset(const Op& op) const {
  int64_t lowest = param_count_;
  if (op.w_off >= 0) lowest = std::min(lowest, op.w_off);
  if (op.b_off >= 0) lowest = std::min(lowest, op.b_off);
  for (const auto& list : op.branch)
    for (const auto& inner : list) lowest = std::min(lowest, lowest_param_offset(*inner));
  return lowest;
}

void GpuNet::build_ops(std::vector<std::unique_ptr<Op>>& ops, size_t count,
                       const std::function<Layer&(size_t)>& layer_at, Shape& shape,
                       const std::function<int64_t(const Param*)>& offset_of, size_t& packed_bytes) {
  const ActFormat& fmt = fmt_;
  const bool packing = !(fmt.type == DataType::f32 && fmt.layout == Layout::nchw);
  for (size_t i = 0; i < count; ++i) {
    Layer& layer = layer_at(i);
    const std::string kind = layer.kind();
    auto op = std::make_unique<Op>();
    op->first_layer = op->last_layer = i;
    op->a = layer.attrs();
    op->in = Shape(shape.begin() + 1, shape.end());
    Shape next = layer.output_shape(shape);
    if (kind != "Fade") {  // a Fade's params() are its branches' (each inner op finds its own)
      for (Param* p : layer.params()) {
        if (p->name == "weight") {
          op->w_off = offset_of(p);
          op->w_numel = p->value.numel();
        } else if (p->name == "bias") {
          op->b_off = offset_of(p);
        }
      }
    }
    if (kind == "Conv2d" || kind == "ConvTranspose2d") {
      op->kind = kind == "Conv2d" ? OpKind::conv : OpKind::conv_t;
      if (packing) {
        op->packed_off = packed_bytes;
        packed_bytes += aligned(static_cast<size_t>(op->w_numel) * data_type_size(fmt.type));
      }
    } else if (kind == "BatchNorm2d") {
      op->kind = OpKind::bn;
      const int C = op->a.in_channels;
      for (Buffer* b : layer.buffers()) {
        if (b->name == "running_mean") op->running_mean_host = b;
        if (b->name == "running_var") op->running_var_host = b;
        if (b->name == "num_batches_tracked") op->tracked_host = b;
      }
      GT_CHECK(op->running_mean_host && op->running_var_host && op->tracked_host, "BatchNorm2d without its buffers");
      op->running_mean = DeviceBuffer<float>(C);
      op->running_var = DeviceBuffer<float>(C);
      op->mean = DeviceBuffer<float>(C);
      op->rstd = DeviceBuffer<float>(C);
      op->var = DeviceBuffer<float>(C);
      op->sums = DeviceBuffer<double>(4 * static_cast<size_t>(C));
      // Fused with the activation right after it.
      if (i + 1 < count && activation_of(layer_at(i + 1).kind()) != Activation::none) {
        op->act = activation_of(layer_at(i + 1).kind());
        op->slope = layer_at(i + 1).attrs().slope;
        op->last_layer = i + 1;
        ++i;
      }
    } else if (kind == "LayerNorm2d") {
      op->kind = OpKind::ln;
    } else if (activation_of(kind) != Activation::none) {
      op->kind = OpKind::act;
      op->act = activation_of(kind);
      op->slope = op->a.slope;
      op->saves_input = op->act == Activation::leaky_relu;
    } else if (kind == "Linear") {
      op->kind = OpKind::linear;
    } else if (kind == "Reshape") {
      op->kind = OpKind::reshape;
    } else if (kind == "PixelNorm") {
      op->kind = OpKind::pixelnorm;
    } else if (kind == "Upsample2x") {
      op->kind = OpKind::upsample;
    } else if (kind == "AvgPool2x") {
      op->kind = OpKind::avgpool;
    } else if (kind == "MinibatchStddev") {
      op->kind = OpKind::mbstd;
      if (op->a.group < 1) user_error("layer {} (MinibatchStddev) has a group size of {}", i, op->a.group);
    } else if (kind == "Fade") {
      op->kind = OpKind::fade;
      op->fade_host = dynamic_cast<Fade*>(&layer);
      GT_CHECK(op->fade_host != nullptr, "layer {} says it is a Fade but is not one", i);
      for (int b = 0; b < 2; ++b) {
        Fade& f = *op->fade_host;
        Shape branch_shape = shape;
        build_ops(op->branch[static_cast<size_t>(b)], f.branch_size(b),
                  [&f, b](size_t j) -> Layer& { return f.branch_layer(b, j); }, branch_shape, offset_of,
                  packed_bytes);
        GT_CHECK(branch_shape == next, "Fade branch {} makes {}, the layer {}", b, shape_str(branch_shape),
                 shape_str(next));
      }
      op->fade_alpha = DeviceBuffer<float>(2);  // filled by upload()
    } else {
      user_error("layer {} ({}) has no GPU implementation; use run.device: cpu", i, kind);
    }
    op->out = Shape(next.begin() + 1, next.end());
    op->label = kind;
    if (op->kind == OpKind::bn && op->act != Activation::none)
      op->label = fmt::format("{}+{}", kind, layer_at(op->last_layer).kind());
    shape = next;
    ops.push_back(std::move(op));
  }
  // Views and in-place activations (plan_in_place: never over a buffer an earlier op keeps for backward). A
  // Fade branch plans its own list: its input, which the other branch reads too, is the caller's.
  std::vector<BufferUse> uses;
  for (const auto& op : ops) {
    switch (op->kind) {
      case OpKind::act:
        uses.push_back(op->saves_input ? BufferUse::fresh_keeps_input : BufferUse::activation_keeps_output);
        break;
      case OpKind::reshape:
        uses.push_back(fmt.layout == Layout::nchw ? BufferUse::view : BufferUse::fresh);
        break;
      case OpKind::upsample:
      case OpKind::avgpool:  // linear maps: their backward needs nothing of the forward
        uses.push_back(BufferUse::fresh);
        break;
      default:  // conv, batch norm (fused with its activation or not), Linear, PixelNorm, MinibatchStddev keep
                // their input; a Fade's first inner ops keep it
        uses.push_back(BufferUse::fresh_keeps_input);
    }
  }
  const std::vector<bool> in_place = plan_in_place(uses);
  for (size_t k = 0; k < ops.size(); ++k) ops[k]->in_place = in_place[k];
}

void GpuNet::for_each_op(const std::function<void(Op&)>& f) {
  std::function<void(std::vector<std::unique_ptr<Op>>&)> walk = [&](std::vector<std::unique_ptr<Op>>& ops) {
    for (auto& op : ops) {
      f(*op);
      for (auto& list : op->branch) walk(list);
    }
  };
  walk(ops_);
}

void GpuNet::set_fade_alpha(float alpha) {
  if (!(alpha >= 0.f && alpha <= 1.f)) user_error("a fade-in weight must lie in [0, 1], got {}", alpha);
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(ctx_.stream(), &capturing));
  GT_CHECK(capturing == cudaStreamCaptureStatusNone,
           "GpuNet::set_fade_alpha while a step is captured: set it between steps");
  // The host layers too, so a later upload() (a reload from the host) keeps it.
  host_.set_fade_alpha(alpha);
  for_each_op([&](Op& op) {
    if (op.kind == OpKind::fade) fill_value(op.fade_alpha.data(), 1, alpha, DataType::f32, ctx_.stream());
  });
}

GpuNet::~GpuNet() = default;

void GpuNet::set_batch_stats_reducer(BatchStatsReducer reduce, int world) {
  reduce_ = std::move(reduce);
  world_ = reduce_ ? std::max(world, 1) : 1;
}

void GpuNet::upload() {
  std::vector<float> flat(static_cast<size_t>(param_count_));
  std::vector<NamedParam> named = host_.named_params();
  for (size_t i = 0; i < named.size(); ++i)
    std::memcpy(flat.data() + slots_[i].offset, named[i].param->value.f32(),
                static_cast<size_t>(slots_[i].numel) * sizeof(float));
  if (param_count_) param_buf_.upload(flat.data(), flat.size(), ctx_.stream());
  for_each_op([&](Op& op) {
    if (op.kind == OpKind::fade) {  // both weights: the host layer's
      const float alpha = op.fade_host->alpha();
      fill_value(op.fade_alpha.data(), 2, alpha, DataType::f32, ctx_.stream());
    }
    if (op.kind != OpKind::bn) return;
    const size_t C = static_cast<size_t>(op.a.in_channels);
    op.running_mean.upload(op.running_mean_host->value.f32(), C, ctx_.stream());
    op.running_var.upload(op.running_var_host->value.f32(), C, ctx_.stream());
    op.tracked_at_upload = op.tracked_host->value.i64()[0];
  });
  train_forwards_ = 0;
  refresh_packed_weights();
  zero_grad();
  ctx_.synchronize();  // the host vectors go away
}

void GpuNet::download() {
  std::vector<float> flat(static_cast<size_t>(param_count_));
  if (param_count_) param_buf_.download(flat.data(), flat.size(), ctx_.stream());
  std::vector<NamedParam> named = host_.named_params();
  for (size_t i = 0; i < named.size(); ++i)
    std::memcpy(named[i].param->value.f32(), flat.data() + slots_[i].offset,
                static_cast<size_t>(slots_[i].numel) * sizeof(float));
  // num_batches_tracked: every BatchNorm2d counts each train-mode forward of its network.
  for_each_op([&](Op& op) {
    if (op.kind != OpKind::bn) return;
    const size_t C = static_cast<size_t>(op.a.in_channels);
    op.running_mean.download(op.running_mean_host->value.f32(), C, ctx_.stream());
    op.running_var.download(op.running_var_host->value.f32(), C, ctx_.stream());
    op.tracked_host->value.i64()[0] = op.tracked_at_upload + train_forwards_;
  });
}

void GpuNet::refresh_packed_weights() {
  if (!packed_buf_.data()) return;
  for_each_op([&](Op& op) {
    if (op.kind != OpKind::conv && op.kind != OpKind::conv_t) return;
    const int K = static_cast<int>(op.kind == OpKind::conv ? op.a.out_channels : op.a.in_channels);
    const int C = static_cast<int>(op.kind == OpKind::conv ? op.a.in_channels : op.a.out_channels);
    pack_conv_weight(packed_buf_.data() + op.packed_off, params_ + op.w_off, K, C, op.a.kernel, op.a.kernel, fmt_,
                     ctx_.stream());
  });
}

const void* GpuNet::conv_weight(const Op& op) const {
  return packed_buf_.data() ? static_cast<const void*>(packed_buf_.data() + op.packed_off) : params_ + op.w_off;
}

void GpuNet::zero_grad() {
  if (param_count_) CUDA_CHECK(cudaMemsetAsync(grads_, 0, static_cast<size_t>(param_count_) * sizeof(float), ctx_.stream()));
}

void* GpuNet::alloc(DeviceArena& arena, int64_t elems, DataType t) const {
  return arena.allocate_bytes(static_cast<size_t>(elems) * data_type_size(t));
}

Shape GpuNet::output_shape(int N) const {
  Shape s{N};
  const Shape& o = ops_.empty() ? in_shape_ : ops_.back()->out;
  s.insert(s.end(), o.begin(), o.end());
  return s;
}

int64_t GpuNet::input_numel_per_sample() const { return shape_numel(in_shape_); }
int64_t GpuNet::output_numel_per_sample() const {
  return ops_.empty() ? input_numel_per_sample() : shape_numel(ops_.back()->out);
}

// Arena bytes of the statistics a Progressive GAN op keeps from its forward: PixelNorm's rnorm, MinibatchStddev's
// mean and sigma.
size_t GpuNet::saved_bytes(const Op& op, int N) const {
  const Chw d = chw_of(op.in);
  if (op.kind == OpKind::pixelnorm) return aligned(static_cast<size_t>(N) * d.h * d.w * sizeof(float));
  if (op.kind == OpKind::mbstd && op.a.group > 0)
    return 2 * aligned(static_cast<size_t>(N / op.a.group) * d.c * d.h * d.w * sizeof(float));
  return 0;
}

// Arena bytes an op takes for the time of its call: a batch-norm workspace, or the f32 / NCHW copies
// that Linear in bf16, Reshape in NHWC and the Progressive GAN ops in formats other than f32 NCHW convert
// through (`copies` of them at most).
size_t GpuNet::op_temp_bytes(const Op& op, int N, int copies) const {
  const Chw in = chw_of(op.in);
  const size_t ws = aligned(batchnorm_workspace_doubles(N, in.c, in.h * in.w) * sizeof(double));
  const size_t conv = aligned(static_cast<size_t>(N) * (shape_numel(op.in) + shape_numel(op.out)) * 4);
  return std::max(ws, static_cast<size_t>(copies) * conv);
}

// Kept and temporary arena bytes of an op list's forward (a Fade's branches keep their activations too).
std::pair<size_t, size_t> GpuNet::forward_use(const std::vector<std::unique_ptr<Op>>& ops, int N) const {
  const size_t e = data_type_size(fmt_.type);
  size_t kept = 0, temp = 0;
  for (const auto& op : ops) {
    kept += aligned(static_cast<size_t>(N) * shape_numel(op->out) * e);
    if (op->kind == OpKind::ln) kept += 2 * aligned(static_cast<size_t>(N) * sizeof(float));
    kept += saved_bytes(*op, N);
    temp = std::max(temp, op_temp_bytes(*op, N, 2));
    for (const auto& list : op->branch) {
      const auto [k, t] = forward_use(list, N);
      kept += k;
      temp = std::max(temp, t);
    }
  }
  return {kept, temp};
}

// The same for a backward: each op's input-side gradient; a Fade's branches also take their share of dy
// and, for the new block's, one more input-side buffer (added into dx).
std::pair<size_t, size_t> GpuNet::backward_use(const std::vector<std::unique_ptr<Op>>& ops, int N) const {
  const size_t e = data_type_size(fmt_.type);
  size_t grads = 0, temp = 0;
  for (const auto& op : ops) {
    grads += aligned(static_cast<size_t>(N) * shape_numel(op->in) * e);
    temp = std::max(temp, op_temp_bytes(*op, N, 3));
    if (op->kind != OpKind::fade) continue;
    grads += aligned(static_cast<size_t>(N) * shape_numel(op->in) * e);
    for (const auto& list : op->branch) {
      const auto [g, t] = backward_use(list, N);
      grads += g + aligned(static_cast<size_t>(N) * shape_numel(op->out) * e);
      temp = std::max(temp, t);
    }
  }
  return {grads, temp};
}

// The tangents' outputs: every op's (a Fade's inner ops' too).
size_t GpuNet::tangent_use(const std::vector<std::unique_ptr<Op>>& ops, int N) const {
  const size_t e = data_type_size(fmt_.type);
  size_t bytes = 0;
  for (const auto& op : ops) {
    bytes += aligned(static_cast<size_t>(N) * shape_numel(op->out) * e);
    for (const auto& list : op->branch) bytes += tangent_use(list, N);
  }
  return bytes;
}

size_t GpuNet::forward_bytes(int N) const {
  const auto [kept, temp] = forward_use(ops_, N);
  return kept + temp;
}

size_t GpuNet::backward_bytes(int N) const {
  const auto [grads, temp] = backward_use(ops_, N);
  return grads + temp;
}

size_t GpuNet::penalty_bytes(int N) const {
  // The second pass keeps each op's input-side result, and a layer norm's one more (its two parts).
  return forward_bytes(N) + 3 * backward_bytes(N) + tangent_use(ops_, N) +
         aligned(static_cast<size_t>(2 * N) * sizeof(float));
}

namespace {
template <class Ops>
void describe_ops(std::string& s, const Ops& ops, const std::string& indent) {
  for (const auto& op : ops) {
    s += fmt::format("{}layers {}-{}: {} {} -> {}\n", indent, op->first_layer, op->last_layer, op->label,
                     shape_str(op->in), shape_str(op->out));
    for (size_t b = 0; b < op->branch.size(); ++b) {
      if (op->branch[b].empty()) continue;
      s += fmt::format("{}  {}:\n", indent, b == 0 ? "old path" : "new block");
      describe_ops(s, op->branch[b], indent + "    ");
    }
  }
}
}  // namespace

std::string GpuNet::describe() const {
  std::string s;
  describe_ops(s, ops_, "  ");
  return s;
}

void* GpuNet::forward(const void* x, int N, Mode mode, DeviceArena& arena) {
  last_n_ = N;
  deltas_.clear();
  const void* cur = x;
  for (auto& op : ops_) {
    // Views and in-place activations as planned at construction (plan_in_place).
    void* y = op->in_place ? const_cast<void*>(cur) : alloc(arena, N * shape_numel(op->out), fmt_.type);
    forward_op(*op, cur, y, N, mode, arena);
    cur = y;
  }
  if (mode == Mode::train) ctx_.recorder().host([this] { ++train_forwards_; });
  return const_cast<void*>(cur);
}

Tensor GpuNet::forward(const Tensor& x, Mode mode) {
  GT_CHECK(arena_ != nullptr, "GpuNet::forward without an arena");
  GT_CHECK(x.device() == Device::cuda && x.dtype() == storage_dtype() && x.ndim() >= 1 &&
               x.numel() == x.dim(0) * input_numel_per_sample(),
           "GpuNet input {} (on the {}), the network takes {} [N, {}] on the GPU", x.str(),
           x.device() == Device::cuda ? "GPU" : "CPU", dtype_name(storage_dtype()), shape_str(in_shape_));
  const int N = static_cast<int>(x.dim(0));
  void* y = forward(x.raw(), N, mode, *arena_);
  return Tensor::borrow(output_shape(N), storage_dtype(), Device::cuda, y);
}

Tensor GpuNet::backward(const Tensor& dy, const BackwardOptions& options) {
  GT_CHECK(arena_ != nullptr, "GpuNet::backward without an arena");
  GT_CHECK(dy.device() == Device::cuda && dy.shape() == output_shape(last_n_), "GpuNet backward of {}, forward gave {}",
           dy.str(), shape_str(output_shape(last_n_)));
  Tensor dx;
  if (options.input_grad) {
    Shape in{last_n_};
    in.insert(in.end(), in_shape_.begin(), in_shape_.end());
    dx = Tensor::borrow(in, storage_dtype(), Device::cuda, alloc(*arena_, shape_numel(in), fmt_.type));
  }
  backward(dy.raw(), options.input_grad ? dx.raw() : nullptr, options.param_grads, *arena_, options.on_final,
           options.create_graph);
  return dx;
}

void GpuNet::backward_of_input_grad(const Tensor& v, const BackwardOptions& options) {
  GT_CHECK(arena_ != nullptr, "GpuNet::backward_of_input_grad without an arena");
  GT_CHECK(deltas_.size() == ops_.size(), "backward_of_input_grad without a backward with create_graph");
  const int N = last_n_;
  GT_CHECK(v.device() == Device::cuda && v.numel() == N * input_numel_per_sample(),
           "backward_of_input_grad of {}, the last forward took {} samples", v.str(), N);
  DeviceArena& arena = *arena_;
  std::vector<const void*> tangents(ops_.size());
  const void* t = v.raw();
  for (size_t k = 0; k < ops_.size(); ++k) {
    tangents[k] = t;
    if (k + 1 < ops_.size()) t = tangent_op(*ops_[k], t, alloc(arena, N * shape_numel(ops_[k]->out), fmt_.type), N, arena);
  }
  const void* adjoint = nullptr;  // zero until an op with curvature writes one
  for (size_t k = ops_.size(); k-- > 0;) {
    Op& op = *ops_[k];
    void* dst = k > 0 ? alloc(arena, N * shape_numel(op.in), fmt_.type) : nullptr;
    adjoint = second_op(op, adjoint, tangents[k], deltas_[k], dst, N, arena) ? dst : nullptr;
    if (options.on_final) options.on_final(op.lowest_final_offset);
  }
  deltas_.clear();
}

void GpuNet::conv_weight_grad(Op& op, const void* dy, const void* x, int N) {
  const bool packing = packed_buf_.data() != nullptr;
  void* dw = packing ? static_cast<void*>(packed_grad_buf_.data() + op.packed_off) : grads_ + op.w_off;
  if (op.kind == OpKind::conv)
    conv_.conv2d_backward(nullptr, dw, nullptr, dy, x, nullptr, op.geometry(N), /*accumulate_dweight=*/!packing);
  else
    conv_.conv_transpose2d_backward(nullptr, dw, nullptr, dy, x, nullptr, op.geometry(N), !packing);
  if (packing) {
    const int K = static_cast<int>(op.kind == OpKind::conv ? op.a.out_channels : op.a.in_channels);
    const int C = static_cast<int>(op.kind == OpKind::conv ? op.a.in_channels : op.a.out_channels);
    accumulate_conv_weight_grad(grads_ + op.w_off, dw, K, C, op.a.kernel, op.a.kernel, fmt_, ctx_.stream());
  }
}

const void* GpuNet::tangent_op(Op& op, const void* t, void* out, int N, DeviceArena& arena) {
  cudaStream_t s = ctx_.stream();
  switch (op.kind) {
    case OpKind::conv:
    case OpKind::conv_t: {
      const void* w = conv_weight(op);
      if (op.kind == OpKind::conv)
        conv_.conv2d_forward(out, t, w, nullptr, op.geometry(N));
      else
        conv_.conv_transpose2d_forward(out, t, w, nullptr, op.geometry(N));
      return out;
    }
    case OpKind::bn:
      user_error("{} has no double backward: a critic with a gradient penalty (loss.gp_weight) cannot hold it (batch "
                 "norm mixes the samples; use model.d_norm: layer or none)",
                 op.label);
    case OpKind::ln: {
      const Chw d = chw_of(op.in);
      layernorm_tangent(out, t, op.x, op.ln_mean, op.ln_rstd, params_ + op.w_off, N, d.c, d.h * d.w, fmt_, s);
      return out;
    }
    case OpKind::act:
      activation_backward(out, t, op.saves_input ? op.x : op.y, N * shape_numel(op.in), op.act, op.slope, fmt_.type, s);
      return out;
    case OpKind::linear:
      if (fmt_.type != DataType::f32)
        user_error("Linear has no double backward in {} on the GPU: a gradient penalty with this critic needs "
                   "run.precision fp32 or tf32",
                   data_type_name(fmt_.type));
      linear_forward(ctx_, static_cast<float*>(out), static_cast<const float*>(t), params_ + op.w_off, nullptr, N,
                     op.a.in_channels, op.a.out_channels, op.a.weight_scale);
      return out;
    case OpKind::pixelnorm:
    case OpKind::upsample:
    case OpKind::avgpool:
    case OpKind::mbstd:
      progan_jacobian(op, t, out, true, N, arena);
      return out;
    case OpKind::fade:
      fade_tangent(op, t, out, N, arena);
      return out;
    case OpKind::reshape: {
      if (fmt_.layout == Layout::nchw) return t;  // a view
      const Chw in = chw_of(op.in), o = chw_of(op.out);
      const size_t mark = arena.mark();
      void* tmp = alloc(arena, N * shape_numel(op.in), fmt_.type);
      convert_activations(tmp, {fmt_.type, Layout::nchw}, t, fmt_, N, in.c, in.h, in.w, s);
      convert_activations(out, fmt_, tmp, {fmt_.type, Layout::nchw}, N, o.c, o.h, o.w, s);
      arena.rewind(mark);
      return out;
    }
  }
  return out;
}

bool GpuNet::second_op(Op& op, const void* adjoint, const void* t, const void* delta, void* dx, int N,
                       DeviceArena& arena) {
  cudaStream_t s = ctx_.stream();
  switch (op.kind) {
    case OpKind::conv:
    case OpKind::conv_t:
      conv_weight_grad(op, delta, t, N);  // d(delta . conv(t; W))/dW; the bias has no part in J t
      if (!adjoint) return false;
      backward_op(op, adjoint, dx, N, true, arena);
      return dx != nullptr;
    case OpKind::bn:
      tangent_op(op, t, nullptr, N, arena);  // refuses by name
      return false;
    case OpKind::ln: {
      const Chw d = chw_of(op.in);
      const int C = d.c, HW = d.h * d.w;
      const int64_t n = static_cast<int64_t>(N) * shape_numel(op.in);
      const size_t mark = arena.mark();
      void* out = dx ? dx : alloc(arena, n, fmt_.type);
      float* ws = arena.allocate<float>(2 * static_cast<size_t>(N));
      layernorm_second(out, grads_ + op.w_off, delta, t, op.x, op.ln_mean, op.ln_rstd, params_ + op.w_off, N, C, HW,
                       fmt_, ws, s);
      if (adjoint) {
        void* plain = alloc(arena, n, fmt_.type);
        layernorm_backward(plain, grads_ + op.w_off, grads_ + op.b_off, adjoint, op.x, op.ln_mean, op.ln_rstd,
                           params_ + op.w_off, N, C, HW, fmt_, s);
        add_values(out, plain, n, fmt_.type, s);
      }
      arena.rewind(mark);  // dx, when given, was taken before the mark
      return dx != nullptr;
    }
    case OpKind::act: {
      const bool curved = op.act == Activation::tanh || op.act == Activation::sigmoid;
      if (!dx || (!adjoint && !curved)) return false;
      const int64_t n = static_cast<int64_t>(N) * shape_numel(op.in);
      if (adjoint)
        activation_backward(dx, adjoint, op.saves_input ? op.x : op.y, n, op.act, op.slope, fmt_.type, s);
      else
        fill_value(dx, n, 0.f, fmt_.type, s);
      if (curved) activation_second(dx, delta, t, op.y, n, op.act, fmt_.type, s);
      return true;
    }
    case OpKind::linear:
      linear_backward(ctx_, nullptr, grads_ + op.w_off, nullptr, static_cast<const float*>(delta),
                      static_cast<const float*>(t), params_ + op.w_off, N, op.a.in_channels, op.a.out_channels,
                      op.a.weight_scale);
      if (!adjoint) return false;
      backward_op(op, adjoint, dx, N, true, arena);
      return dx != nullptr;
    case OpKind::reshape:
    case OpKind::upsample:
    case OpKind::avgpool:  // constant Jacobians: only the adjoint passes down
      if (!adjoint || !dx) return false;
      backward_op(op, adjoint, dx, N, false, arena);
      return true;
    case OpKind::pixelnorm:
    case OpKind::mbstd:
      if (!dx) return false;  // no parameters: nothing else to do
      progan_second(op, adjoint, t, delta, dx, N, arena);
      return true;
    case OpKind::fade:
      return fade_second(op, adjoint, dx, N, arena);
  }
  return false;
}

// ---- Fade: two branches of ops on the same input, out = a + alpha (b - a) (the CPU's FadeLayer) ------------------

void GpuNet::fade_forward(Op& op, const void* x, void* y, int N, Mode mode, DeviceArena& arena) {
  cudaStream_t s = ctx_.stream();
  const void* out[2];
  for (size_t b = 0; b < 2; ++b) {
    const void* cur = x;
    for (auto& inner : op.branch[b]) {
      // The branch's activations stay with the forward's (its ops' backward reads them).
      void* dst = inner->in_place ? const_cast<void*>(cur) : alloc(arena, N * shape_numel(inner->out), fmt_.type);
      forward_op(*inner, cur, dst, N, mode, arena);
      cur = dst;
    }
    out[b] = cur;
  }
  // This forward's weight, for its backward and tangents (the CPU's used_alpha_).
  CUDA_CHECK(cudaMemcpyAsync(op.fade_alpha.data() + 1, op.fade_alpha.data(), sizeof(float), cudaMemcpyDeviceToDevice,
                             s));
  lerp_forward(y, out[0], out[1], op.fade_alpha.data() + 1, N * shape_numel(op.out), fmt_.type, s);
}

// Each branch's backward from its share of dy ((1 - alpha) dy, alpha dy); the inner output gradients are kept
// (kept_delta) for the double backward; the branches' input gradients add up into dx.
void GpuNet::fade_backward(Op& op, const void* dy, void* dx, int N, bool param_grads, DeviceArena& arena) {
  cudaStream_t s = ctx_.stream();
  const int64_t n_out = static_cast<int64_t>(N) * shape_numel(op.out);
  const int64_t n_in = static_cast<int64_t>(N) * shape_numel(op.in);
  for (int b = 0; b < 2; ++b) {
    auto& list = op.branch[static_cast<size_t>(b)];
    void* share = alloc(arena, n_out, fmt_.type);
    fade_scale(share, dy, op.fade_alpha.data() + 1, b, n_out, fmt_.type, s);
    const void* g = share;
    for (size_t k = list.size(); k-- > 0;) {
      Op& inner = *list[k];
      inner.kept_delta = g;
      void* dst = nullptr;
      if (k > 0) dst = alloc(arena, N * shape_numel(inner.in), fmt_.type);
      else if (dx) dst = b == 0 ? dx : alloc(arena, n_in, fmt_.type);
      backward_op(inner, g, dst, N, param_grads, arena);
      g = dst;
    }
    if (b == 1 && dx) add_values(dx, g, n_in, fmt_.type, s);
  }
}

// J t: each branch's tangents in order (each inner op's input-side tangent kept in kept_tangent), mixed with the
// last forward's weight.
void GpuNet::fade_tangent(Op& op, const void* t, void* out, int N, DeviceArena& arena) {
  const void* y[2];
  for (size_t b = 0; b < 2; ++b) {
    const void* h = t;
    for (auto& inner : op.branch[b]) {
      inner->kept_tangent = h;
      h = tangent_op(*inner, h, alloc(arena, N * shape_numel(inner->out), fmt_.type), N, arena);
    }
    y[b] = h;
  }
  lerp_forward(out, y[0], y[1], op.fade_alpha.data() + 1, N * shape_numel(op.out), fmt_.type, ctx_.stream());
}

// Sequential's rule inside each branch, from the branch's share of the adjoint coming down (none: zero): each
// inner op adds its weight gradient of delta . J t and passes its adjoint down; the branches' input-side
// adjoints add up into dx. Returns whether dx was written.
bool GpuNet::fade_second(Op& op, const void* adjoint, void* dx, int N, DeviceArena& arena) {
  cudaStream_t s = ctx_.stream();
  const int64_t n_out = static_cast<int64_t>(N) * shape_numel(op.out);
  const int64_t n_in = static_cast<int64_t>(N) * shape_numel(op.in);
  bool wrote = false;
  for (int b = 0; b < 2; ++b) {
    auto& list = op.branch[static_cast<size_t>(b)];
    const void* adj = nullptr;
    if (adjoint) {
      void* share = alloc(arena, n_out, fmt_.type);
      fade_scale(share, adjoint, op.fade_alpha.data() + 1, b, n_out, fmt_.type, s);
      adj = share;
    }
    for (size_t k = list.size(); k-- > 0;) {
      Op& inner = *list[k];
      GT_CHECK(inner.kept_delta && inner.kept_tangent, "Fade double backward without a backward and a tangent");
      void* dst = nullptr;
      if (k > 0) dst = alloc(arena, N * shape_numel(inner.in), fmt_.type);
      else if (dx) dst = b == 0 || !wrote ? dx : alloc(arena, n_in, fmt_.type);
      const bool written = second_op(inner, adj, inner.kept_tangent, inner.kept_delta, dst, N, arena);
      adj = written ? dst : nullptr;
      if (k == 0 && written) {
        if (dst != dx) add_values(dx, dst, n_in, fmt_.type, s);
        wrote = true;
      }
    }
  }
  for (int b = 0; b < 2; ++b)
    for (auto& inner : op.branch[static_cast<size_t>(b)]) inner->kept_delta = inner->kept_tangent = nullptr;
  return wrote;
}

// ---- the Progressive GAN ops (kernels in progan.cu, f32 NCHW: F32Nchw converts other formats) -----------------

void GpuNet::progan_forward(Op& op, const void* x, void* y, int N, DeviceArena& arena) {
  const Chw d = chw_of(op.in);
  const int C = d.c, H = d.h, W = d.w, HW = d.h * d.w;
  cudaStream_t s = ctx_.stream();
  if (op.kind == OpKind::pixelnorm) {
    op.saved0 = arena.allocate<float>(static_cast<size_t>(N) * HW);  // kept with the activations
  } else if (op.kind == OpKind::mbstd) {
    if (N % op.a.group)
      user_error("MinibatchStddev with groups of {} cannot take a batch of {} samples: each rank's (micro-)batch must "
                 "be a multiple of model.mbstd_group",
                 op.a.group, N);
    const size_t stats = static_cast<size_t>(N / op.a.group) * C * HW;
    op.saved0 = arena.allocate<float>(stats);
    op.saved1 = arena.allocate<float>(stats);
  }
  const size_t mark = arena.mark();
  const F32Nchw io{fmt_, arena, s};
  const float* xf = io.in(x, N, op.in);
  float* yf = io.out(y, N, op.out);
  switch (op.kind) {
    case OpKind::pixelnorm: pixelnorm_forward(yf, op.saved0, xf, N, C, HW, op.a.eps, s); break;
    case OpKind::upsample: upsample2x_forward(yf, xf, N * C, H, W, s); break;
    case OpKind::avgpool: avgpool2x_forward(yf, xf, N * C, H, W, s); break;
    case OpKind::mbstd: mbstd_forward(yf, op.saved0, op.saved1, xf, N, C, HW, op.a.group, op.a.eps, s); break;
    default: GT_CHECK(false, "progan_forward of {}", op.label);
  }
  io.store(y, yf, N, op.out);
  arena.rewind(mark);
}

// J v of the last forward: the backward (v = dy on the output side, the result on the input side) or, with
// tangent, J t (v on the input side, the result on the output side). PixelNorm's Jacobian is symmetric; the
// resamplings' tangent is their forward.
void GpuNet::progan_jacobian(Op& op, const void* v, void* result, bool tangent, int N, DeviceArena& arena) {
  const Chw d = chw_of(op.in);
  const int C = d.c, H = d.h, W = d.w, HW = d.h * d.w;
  cudaStream_t s = ctx_.stream();
  const Shape& v_shape = tangent ? op.in : op.out;
  const Shape& r_shape = tangent ? op.out : op.in;
  const size_t mark = arena.mark();
  const F32Nchw io{fmt_, arena, s};
  const float* vf = io.in(v, N, v_shape);
  float* rf = io.out(result, N, r_shape);
  const bool needs_x = op.kind == OpKind::pixelnorm || op.kind == OpKind::mbstd;
  const float* xf = needs_x ? io.in(op.x, N, op.in) : nullptr;
  switch (op.kind) {
    case OpKind::pixelnorm: pixelnorm_jacobian(rf, vf, xf, op.saved0, N, C, HW, s); break;
    case OpKind::upsample:
      if (tangent)
        upsample2x_forward(rf, vf, N * C, H, W, s);
      else
        upsample2x_backward(rf, vf, N * C, H, W, s);
      break;
    case OpKind::avgpool:
      if (tangent)
        avgpool2x_forward(rf, vf, N * C, H, W, s);
      else
        avgpool2x_backward(rf, vf, N * C, H, W, s);
      break;
    case OpKind::mbstd:
      if (tangent)
        mbstd_tangent(rf, vf, xf, op.saved0, op.saved1, N, C, HW, op.a.group, s);
      else
        mbstd_backward(rf, vf, xf, op.saved0, op.saved1, N, C, HW, op.a.group, s);
      break;
    default: GT_CHECK(false, "progan_jacobian of {}", op.label);
  }
  io.store(result, rf, N, r_shape);
  arena.rewind(mark);
}

// PixelNorm's and MinibatchStddev's backward_second: dx = d(delta . J t)/dx + J^T adjoint (adjoint may be null).
void GpuNet::progan_second(Op& op, const void* adjoint, const void* t, const void* delta, void* dx, int N,
                           DeviceArena& arena) {
  const Chw d = chw_of(op.in);
  const int C = d.c, HW = d.h * d.w;
  const int64_t n = static_cast<int64_t>(N) * shape_numel(op.in);
  cudaStream_t s = ctx_.stream();
  const size_t mark = arena.mark();
  const F32Nchw io{fmt_, arena, s};
  const float* tf = io.in(t, N, op.in);
  const float* deltaf = io.in(delta, N, op.out);
  const float* xf = io.in(op.x, N, op.in);
  float* dxf = io.out(dx, N, op.in);
  if (op.kind == OpKind::pixelnorm)
    pixelnorm_second(dxf, deltaf, tf, xf, op.saved0, N, C, HW, s);
  else
    mbstd_second(dxf, deltaf, tf, xf, op.saved0, op.saved1, N, C, HW, op.a.group, s);
  if (adjoint) {
    const float* af = io.in(adjoint, N, op.out);
    float* plain = arena.allocate<float>(static_cast<size_t>(n));
    if (op.kind == OpKind::pixelnorm)
      pixelnorm_jacobian(plain, af, xf, op.saved0, N, C, HW, s);
    else
      mbstd_backward(plain, af, xf, op.saved0, op.saved1, N, C, HW, op.a.group, s);
    add_values(dxf, plain, n, DataType::f32, s);
  }
  io.store(dx, dxf, N, op.in);
  arena.rewind(mark);
}


void GpuNet::forward_op(Op& op, const void* x, void* y, int N, Mode mode, DeviceArena& arena) {
  cudaStream_t s = ctx_.stream();
  op.x = x;
  op.y = y;
  op.trained = mode == Mode::train;
  switch (op.kind) {
    case OpKind::conv:
    case OpKind::conv_t: {
      const void* w = conv_weight(op);
      const float* b = op.b_off >= 0 ? params_ + op.b_off : nullptr;
      if (op.kind == OpKind::conv)
        conv_.conv2d_forward(y, x, w, b, op.geometry(N));
      else
        conv_.conv_transpose2d_forward(y, x, w, b, op.geometry(N));
      return;
    }
    case OpKind::bn: {
      const Chw d = chw_of(op.in);
      const int C = d.c, HW = d.h * d.w;
      const float* w = op.w_off >= 0 ? params_ + op.w_off : nullptr;
      const float* b = op.b_off >= 0 ? params_ + op.b_off : nullptr;
      if (mode == Mode::eval) {
        batchnorm_forward_eval(y, x, w, b, op.running_mean.data(), op.running_var.data(), N, C, HW, op.a.eps, op.act,
                               op.slope, fmt_, s);
        return;
      }
      const size_t mark = arena.mark();
      double* ws = arena.allocate<double>(batchnorm_workspace_doubles(N, C, HW));
      double* sum = op.sums.data();  // the forward borrows the backward's sums buffer
      const int64_t count = static_cast<int64_t>(N) * HW * world_;
      batchnorm_channel_sums(sum, x, N, C, HW, fmt_, ws, s);
      if (reduce_) reduce_(sum, C);
      batchnorm_mean_from_sums(op.mean.data(), sum, C, static_cast<double>(count), s);
      batchnorm_channel_sq_dev(sum, x, op.mean.data(), N, C, HW, fmt_, ws, s);
      if (reduce_) reduce_(sum, C);
      batchnorm_stats_from_sq(op.rstd.data(), op.var.data(), sum, C, static_cast<double>(count), op.a.eps, s);
      batchnorm_apply(y, x, op.mean.data(), op.rstd.data(), w, b, N, C, HW, op.act, op.slope, fmt_, s);
      batchnorm_update_running(op.running_mean.data(), op.running_var.data(), op.mean.data(), op.var.data(), C, count,
                               op.a.momentum, s);
      arena.rewind(mark);
      return;
    }
    case OpKind::ln: {
      const Chw d = chw_of(op.in);
      op.ln_mean = arena.allocate<float>(static_cast<size_t>(N));  // kept with the activations
      op.ln_rstd = arena.allocate<float>(static_cast<size_t>(N));
      layernorm_forward(y, op.ln_mean, op.ln_rstd, x, params_ + op.w_off, params_ + op.b_off, N, d.c, d.h * d.w,
                        op.a.eps, fmt_, s);
      return;
    }
    case OpKind::act:
      activation_forward(y, x, N * shape_numel(op.in), op.act, op.slope, fmt_.type, s);
      return;
    case OpKind::linear: {
      const int IN = op.a.in_channels, OUT = op.a.out_channels;
      const float* w = params_ + op.w_off;
      const float* b = op.b_off >= 0 ? params_ + op.b_off : nullptr;
      if (fmt_.type == DataType::f32) {
        linear_forward(ctx_, static_cast<float*>(y), static_cast<const float*>(x), w, b, N, IN, OUT, op.a.weight_scale);
        return;
      }
      // bf16 storage: the GEMM in f32 between conversions (no DCGAN layer is Linear).
      const size_t mark = arena.mark();
      float* xf = arena.allocate<float>(static_cast<size_t>(N) * IN);
      float* yf = arena.allocate<float>(static_cast<size_t>(N) * OUT);
      convert(xf, DataType::f32, x, fmt_.type, static_cast<int64_t>(N) * IN, s);
      linear_forward(ctx_, yf, xf, w, b, N, IN, OUT, op.a.weight_scale);
      convert(y, fmt_.type, yf, DataType::f32, static_cast<int64_t>(N) * OUT, s);
      arena.rewind(mark);
      return;
    }
    case OpKind::pixelnorm:
    case OpKind::upsample:
    case OpKind::avgpool:
    case OpKind::mbstd:
      progan_forward(op, x, y, N, arena);
      return;
    case OpKind::fade:
      fade_forward(op, x, y, N, mode, arena);
      return;
    case OpKind::reshape: {
      if (fmt_.layout == Layout::nchw) return;  // a view: y == x
      // NHWC: the per-sample order changes with the shape; go through PyTorch's (NCHW) order.
      const Chw in = chw_of(op.in), out = chw_of(op.out);
      const size_t mark = arena.mark();
      void* t = alloc(arena, N * shape_numel(op.in), fmt_.type);
      convert_activations(t, {fmt_.type, Layout::nchw}, x, fmt_, N, in.c, in.h, in.w, s);
      convert_activations(y, fmt_, t, {fmt_.type, Layout::nchw}, N, out.c, out.h, out.w, s);
      arena.rewind(mark);
      return;
    }
  }
}

void GpuNet::backward(const void* dy, void* dx, bool param_grads, DeviceArena& arena,
                      const std::function<void(int64_t)>& hook, bool create_graph) {
  GT_CHECK(last_n_ > 0, "GpuNet backward called before forward");
  const int N = last_n_;
  const size_t mark = arena.mark();
  deltas_.clear();
  if (create_graph) deltas_.resize(ops_.size());
  const void* g = dy;
  for (size_t k = ops_.size(); k-- > 0;) {
    Op& op = *ops_[k];
    if (create_graph) deltas_[k] = g;
    void* dst = k == 0 ? dx : alloc(arena, N * shape_numel(op.in), fmt_.type);
    backward_op(op, g, dst, N, param_grads, arena);
    if (hook && param_grads) hook(op.lowest_final_offset);
    g = dst;
  }
  if (!create_graph) arena.rewind(mark);
}

void GpuNet::backward_op(Op& op, const void* dy, void* dx, int N, bool param_grads, DeviceArena& arena) {
  cudaStream_t s = ctx_.stream();
  const bool packing = packed_buf_.data() != nullptr;
  switch (op.kind) {
    case OpKind::conv:
    case OpKind::conv_t: {
      const void* w = conv_weight(op);
      // f32 NCHW accumulates straight into the master gradient; other formats write the packed gradient
      // and add it, unpacked, into the f32 one.
      void* dw = nullptr;
      if (param_grads) dw = packing ? static_cast<void*>(packed_grad_buf_.data() + op.packed_off) : grads_ + op.w_off;
      float* db = param_grads && op.b_off >= 0 ? grads_ + op.b_off : nullptr;
      if (op.kind == OpKind::conv)
        conv_.conv2d_backward(dx, dw, db, dy, op.x, w, op.geometry(N), /*accumulate_dweight=*/!packing);
      else
        conv_.conv_transpose2d_backward(dx, dw, db, dy, op.x, w, op.geometry(N), /*accumulate_dweight=*/!packing);
      if (param_grads && packing) {
        const int K = static_cast<int>(op.kind == OpKind::conv ? op.a.out_channels : op.a.in_channels);
        const int C = static_cast<int>(op.kind == OpKind::conv ? op.a.in_channels : op.a.out_channels);
        accumulate_conv_weight_grad(grads_ + op.w_off, dw, K, C, op.a.kernel, op.a.kernel, fmt_, s);
      }
      return;
    }
    case OpKind::bn: {
      GT_CHECK(op.trained, "BatchNorm2d backward after an eval-mode forward is not supported on the GPU");
      const Chw d = chw_of(op.in);
      const int C = d.c, HW = d.h * d.w;
      const float* w = op.w_off >= 0 ? params_ + op.w_off : nullptr;
      const float* b = op.b_off >= 0 ? params_ + op.b_off : nullptr;
      float* dw = param_grads && op.w_off >= 0 ? grads_ + op.w_off : nullptr;
      float* db = param_grads && op.b_off >= 0 ? grads_ + op.b_off : nullptr;
      const size_t mark = arena.mark();
      double* ws = arena.allocate<double>(batchnorm_workspace_doubles(N, C, HW));
      double* local = op.sums.data();  // [sum_g | sum_g_xmu] of this rank
      const double count = static_cast<double>(N) * HW * world_;
      batchnorm_backward_sums(local, local + C, dy, op.x, op.mean.data(), op.rstd.data(), w, b, N, C, HW, op.act,
                              op.slope, fmt_, ws, s);
      if (reduce_) {
        // The input gradient needs the global batch's sums; the parameter gradients stay this rank's
        // share (the gradient all-reduce adds the ranks' shares), as the CPU's synchronized layer does.
        double* global = local + 2 * C;
        CUDA_CHECK(cudaMemcpyAsync(global, local, 2 * static_cast<size_t>(C) * sizeof(double),
                                   cudaMemcpyDeviceToDevice, s));
        reduce_(global, 2 * static_cast<int64_t>(C));
        if (dw || db)
          batchnorm_backward_apply(nullptr, dw, db, local, local + C, count, dy, op.x, op.mean.data(), op.rstd.data(),
                                   w, b, N, C, HW, op.act, op.slope, fmt_, ws, s);
        if (dx)
          batchnorm_backward_apply(dx, nullptr, nullptr, global, global + C, count, dy, op.x, op.mean.data(),
                                   op.rstd.data(), w, b, N, C, HW, op.act, op.slope, fmt_, ws, s);
      } else {
        batchnorm_backward_apply(dx, dw, db, local, local + C, count, dy, op.x, op.mean.data(), op.rstd.data(), w, b,
                                 N, C, HW, op.act, op.slope, fmt_, ws, s);
      }
      arena.rewind(mark);
      return;
    }
    case OpKind::ln: {
      const Chw d = chw_of(op.in);
      layernorm_backward(dx, param_grads ? grads_ + op.w_off : nullptr, param_grads ? grads_ + op.b_off : nullptr, dy,
                         op.x, op.ln_mean, op.ln_rstd, params_ + op.w_off, N, d.c, d.h * d.w, fmt_, s);
      return;
    }
    case OpKind::act:
      if (dx)
        activation_backward(dx, dy, op.saves_input ? op.x : op.y, N * shape_numel(op.in), op.act, op.slope, fmt_.type,
                            s);
      return;
    case OpKind::linear: {
      const int IN = op.a.in_channels, OUT = op.a.out_channels;
      const float* w = params_ + op.w_off;
      float* dw = param_grads ? grads_ + op.w_off : nullptr;
      float* db = param_grads && op.b_off >= 0 ? grads_ + op.b_off : nullptr;
      if (fmt_.type == DataType::f32) {
        linear_backward(ctx_, static_cast<float*>(dx), dw, db, static_cast<const float*>(dy),
                        static_cast<const float*>(op.x), w, N, IN, OUT, op.a.weight_scale);
        return;
      }
      const size_t mark = arena.mark();
      float* xf = arena.allocate<float>(static_cast<size_t>(N) * IN);
      float* dyf = arena.allocate<float>(static_cast<size_t>(N) * OUT);
      float* dxf = dx ? arena.allocate<float>(static_cast<size_t>(N) * IN) : nullptr;
      convert(xf, DataType::f32, op.x, fmt_.type, static_cast<int64_t>(N) * IN, s);
      convert(dyf, DataType::f32, dy, fmt_.type, static_cast<int64_t>(N) * OUT, s);
      linear_backward(ctx_, dxf, dw, db, dyf, xf, w, N, IN, OUT, op.a.weight_scale);
      if (dx) convert(dx, fmt_.type, dxf, DataType::f32, static_cast<int64_t>(N) * IN, s);
      arena.rewind(mark);
      return;
    }
    case OpKind::pixelnorm:
    case OpKind::upsample:
    case OpKind::avgpool:
    case OpKind::mbstd:
      if (dx) progan_jacobian(op, dy, dx, false, N, arena);
      return;
    case OpKind::fade:
      fade_backward(op, dy, dx, N, param_grads, arena);
      return;
    case OpKind::reshape: {
      if (!dx) return;
      const Chw in = chw_of(op.in), out = chw_of(op.out);
      if (fmt_.layout == Layout::nchw) {
        CUDA_CHECK(cudaMemcpyAsync(dx, dy, static_cast<size_t>(N) * shape_numel(op.in) * data_type_size(fmt_.type),
                                   cudaMemcpyDeviceToDevice, s));
        return;
      }
      const size_t mark = arena.mark();
      void* t = alloc(arena, N * shape_numel(op.in), fmt_.type);
      convert_activations(t, {fmt_.type, Layout::nchw}, dy, fmt_, N, out.c, out.h, out.w, s);
      convert_activations(dx, fmt_, t, {fmt_.type, Layout::nchw}, N, in.c, in.h, in.w, s);
      arena.rewind(mark);
      return;
    }
  }
}

}  // namespace gt::cuda
