// The CUDA step engine: device set-up, the step as two graph-capturable segments around the optimizer updates, gradient buckets over device collectives.
#include "train/cuda/gpu_engine.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>

#include <fmt/format.h>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/conv.h"
#include "core/error.h"
#include "cuda/device.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/device_map.h"
#include "parallel/gpu_placement.h"
#include "parallel/launch.h"
#include "cuda/kernels.h"
#include "cuda/kernels_typed.h"
#include "cuda/optim_gpu.h"
#include "cuda/staged_communicator.h"
#include "cuda/gpu_net.h"
#if GANTRAIN_HAVE_NCCL
#include "cuda/nccl_communicator.h"
#endif

namespace gt::cuda {
namespace {

// Page-locked host memory as a Tensor (asynchronous uploads need it).
Tensor pinned_tensor(const Shape& shape, DType dtype) {
  const size_t bytes = std::max<size_t>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), 1);
  void* p = nullptr;
  CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocDefault));
  return Tensor::adopt(shape, dtype, std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) {
                         cudaFreeHost(q);
                       }));
}

// run.layout auto: NHWC for bf16 (tensor cores read it directly), else NCHW.
Layout layout_of(LayoutChoice layout, Precision p) {
  switch (layout) {
    case LayoutChoice::nchw: return Layout::nchw;
    case LayoutChoice::nhwc: return Layout::nhwc;
    case LayoutChoice::automatic: break;
  }
  return p == Precision::bf16 ? Layout::nhwc : Layout::nchw;
}

// One network's optimizer on the device: its state in flat buffers laid out as the parameters, one
// multi-tensor launch per step with the host optimizer's own per-step constants.
class GpuOptimizer {
 public:
  GpuOptimizer(Optimizer& host, GpuNet& net, cudaStream_t stream) : host_(host), net_(net), stream_(stream) {
    const OptimConfig& c = host.config();
    const size_t n = static_cast<size_t>(std::max<int64_t>(net.param_count(), 1));
    if (c.kind == OptimizerKind::adam) {
      s0_ = DeviceBuffer<float>(n), s1_ = DeviceBuffer<float>(n);
      suffix0_ = "/exp_avg", suffix1_ = "/exp_avg_sq";
    } else if (c.kind == OptimizerKind::rmsprop) {
      s0_ = DeviceBuffer<float>(n);
      suffix0_ = "/square_avg";
      if (c.momentum > 0) s1_ = DeviceBuffer<float>(n), suffix1_ = "/momentum_buffer";
    } else if (c.kind == OptimizerKind::sgd) {
      if (c.momentum != 0) s0_ = DeviceBuffer<float>(n), suffix0_ = "/momentum_buffer";
    } else {
      user_error("optimizer '{}' has no GPU implementation", choice_name(c.kind));
    }
    std::vector<TensorRef> refs;
    for (const GpuNet::ParamSlot& s : net.param_slots())
      refs.push_back({net.params() + s.offset, net.grads() + s.offset, s0_.data() ? s0_.data() + s.offset : nullptr,
                      s1_.data() ? s1_.data() + s.offset : nullptr, s.numel});
    list_ = std::make_unique<MultiTensorList>(refs, stream);
    partial_ = DeviceBuffer<double>(static_cast<size_t>(std::max<int64_t>(list_->chunks(), 1)));
    norm_ = DeviceBuffer<float>(2);
    upload();
  }

  // Host state <-> device state, by name ("<param>/exp_avg").
  void upload() {
    steps_ = host_.step_count();
    copy_states(/*to_device=*/true);
  }
  void download() {
    copy_states(/*to_device=*/false);
    host_.set_step_count(steps_);
  }

  // Global-norm clipping of the gradients as torch computes its coefficient; the optimizer applies it.
  void clip(float max_norm) {
    grad_global_norm(norm_.data(), norm_.data() + 1, list_->view(), max_norm, partial_.data(), stream_);
  }

  void step(bool clipped) {
    const OptimConfig& c = host_.config();  // read each step: the learning rate may change
    const float* scale = clipped ? norm_.data() + 1 : nullptr;
    const bool first = steps_ == 0;
    ++steps_;
    if (c.kind == OptimizerKind::adam)
      adam_update(list_->view(), adam_coefficients(c, steps_), scale, stream_);
    else if (c.kind == OptimizerKind::rmsprop)
      rmsprop_update(list_->view(), rmsprop_coefficients(c), scale, stream_);
    else
      sgd_update(list_->view(), sgd_coefficients(c, first), scale, stream_);
  }

 private:
  void copy_states(bool to_device) {
    std::vector<NamedState> states = host_.state();
    auto find = [&](const std::string& name) -> Tensor* {
      for (NamedState& s : states)
        if (s.name == name) return s.tensor;
      runtime_error("optimizer state {} is missing on the host", name);
    };
    for (const GpuNet::ParamSlot& slot : net_.param_slots()) {
      const std::pair<DeviceBuffer<float>*, const std::string*> pairs[2] = {{&s0_, &suffix0_}, {&s1_, &suffix1_}};
      for (const auto& [buf, suffix] : pairs) {
        if (!buf->data()) continue;
        Tensor* t = find(slot.name + *suffix);
        GT_CHECK(t->numel() == slot.numel, "optimizer state {}{} has {} values, parameter {}", slot.name, *suffix,
                 t->numel(), slot.numel);
        const size_t bytes = static_cast<size_t>(slot.numel) * sizeof(float);
        if (to_device)
          copy_host_to_device(buf->data() + slot.offset, t->f32(), bytes, stream_);
        else
          copy_device_to_host(t->f32(), buf->data() + slot.offset, bytes, stream_);
      }
    }
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  Optimizer& host_;
  GpuNet& net_;
  cudaStream_t stream_;
  DeviceBuffer<float> s0_, s1_, norm_;
  DeviceBuffer<double> partial_;
  std::string suffix0_, suffix1_;
  std::unique_ptr<MultiTensorList> list_;
  int64_t steps_ = 0;
};

// Sums a network's flat gradients over the ranks in buckets of whole ranges from the top, each started
// as soon as backward has made it final (GpuNet's hook), so the collective overlaps the rest of backward.
class FlatGradReducer {
 public:
  FlatGradReducer(Communicator* comm, float* grads, int64_t count, int64_t bucket_elems) : comm_(comm), grads_(grads) {
    for (int64_t end = count; end > 0;) {
      const int64_t begin = std::max<int64_t>(end - std::max<int64_t>(bucket_elems, 1), 0);
      buckets_.push_back({begin, end});
      end = begin;
    }
  }
  bool active() const { return comm_ != nullptr && comm_->world_size() > 1; }
  void arm() {
    armed_ = active();
    next_ = 0;
  }
  void on_final(int64_t lowest) {
    if (!armed_) return;
    while (next_ < buckets_.size() && buckets_[next_].begin >= lowest) start(next_++);
  }
  void finish() {
    if (!armed_) return;
    while (next_ < buckets_.size()) start(next_++);
    // Host-side waits keep dist.timeout_s in force: a vanished peer is an error, never a hang.
    for (auto& p : pending_) p->wait();
    pending_.clear();
    armed_ = false;
  }

 private:
  struct Range {
    int64_t begin, end;
  };
  void start(size_t b) {
    const Range& r = buckets_[b];
    pending_.push_back(comm_->start_all_reduce(grads_ + r.begin, r.end - r.begin, ReduceOp::sum));
  }
  Communicator* comm_;
  float* grads_;
  std::vector<Range> buckets_;
  std::vector<std::unique_ptr<PendingCollective>> pending_;
  size_t next_ = 0;
  bool armed_ = false;
};

// Results of a step on the device, copied to page-locked host memory at its end.
enum Result { kLossReal, kLossFake, kLossG, kProbReal, kProbFake, kResults };

class GpuEngine final : public StepEngine {
 public:
  GpuEngine(const EngineOptions& opt, GanModels& host, Communicator& comm)
      : opt_(opt),
        host_(host),
        comm_(comm),
        share_(static_cast<double>(opt.local_batch) / static_cast<double>(opt.global_batch)) {
    const Precision precision = opt.precision;
    fmt_ = {storage_type(precision), layout_of(opt.layout, precision)};
    open_device(precision);
    conv_ = std::make_unique<ConvEngine>(*ctx_, fmt_);
    image_shape_ = d_input_shape();
    G_ = std::make_unique<GpuNet>(*host.G, Shape{opt.nz, 1, 1}, *ctx_, *conv_, fmt_);
    D_ = std::make_unique<GpuNet>(*host.D, image_shape_, *ctx_, *conv_, fmt_);
    // The loss is the mean over every logit, as the CPU's (one per image for a DCGAN D).
    n_logits_ = opt.local_batch * D_->output_numel_per_sample();
    if (dev_comm_ && opt.sync_bn) {
      auto reduce = [this](double* v, int64_t n) { dev_comm_->all_reduce(v, n, ReduceOp::sum); };
      G_->set_batch_stats_reducer(reduce, comm.world_size());
      D_->set_batch_stats_reducer(reduce, comm.world_size());
    }
    opt_g_ = std::make_unique<GpuOptimizer>(*host.opt_g, *G_, ctx_->stream());
    opt_d_ = std::make_unique<GpuOptimizer>(*host.opt_d, *D_, ctx_->stream());
    const int64_t bucket_elems = std::max<int64_t>(opt.bucket_bytes / 4, 1);
    reduce_g_ = std::make_unique<FlatGradReducer>(dev_comm_.get(), G_->grads(), G_->param_count(), bucket_elems);
    reduce_d_ = std::make_unique<FlatGradReducer>(dev_comm_.get(), D_->grads(), D_->param_count(), bucket_elems);

    const int64_t n = opt.local_batch;
    const int64_t image_numel = shape_numel(image_shape_);
    real_dev_ = DeviceBuffer<std::byte>(static_cast<size_t>(n * image_numel) * sizeof(float));
    flips_ = DeviceBuffer<uint8_t>(static_cast<size_t>(n));
    z_ = DeviceBuffer<float>(static_cast<size_t>(n * opt.nz));
    results_dev_ = DeviceBuffer<float>(kResults);
    results_host_ = pinned_tensor({kResults}, DType::f32);
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    // The arena: G's activations live through the step; each D pass (forward, backward) is given back.
    const int N = static_cast<int>(n);
    const size_t e = data_type_size(fmt_.type);
    const size_t need = G_->forward_bytes(N) + G_->backward_bytes(N) + 2 * D_->forward_bytes(N) +
                        D_->backward_bytes(N) + 4 * static_cast<size_t>(n) * (image_numel + opt.nz) * e +
                        (size_t{64} << 20);
    const size_t bytes = opt.arena_mb > 0 ? static_cast<size_t>(opt.arena_mb * 1048576.0) : need + need / 4;
    arena_ = std::make_unique<DeviceArena>(bytes);
    use_graphs_ = opt.cuda_graph && comm.world_size() == 1;
    ctx_->synchronize();
  }

  ~GpuEngine() override {
    if (graph_a_) cudaGraphExecDestroy(graph_a_);
    if (graph_b_) cudaGraphExecDestroy(graph_b_);
    if (done_) cudaEventDestroy(done_);
  }

  std::string describe() const override {
    cudaDeviceProp p{};
    cudaGetDeviceProperties(&p, device_);
    return fmt::format("cuda {} (sm_{}{}, device {}), {} {} ({}), {}{}", p.name, p.major, p.minor, device_,
                       precision_name(ctx_->precision()), layout_name(fmt_.layout), data_type_name(fmt_.type),
                       use_graphs_ ? "CUDA graphs" : "no CUDA graphs", comm_note_);
  }

  bool wants_u8_batches() const override { return true; }
  Tensor make_batch_buffer(const Shape& shape, DType dtype) override { return pinned_tensor(shape, dtype); }

  void submit(const Tensor& real, int64_t step) override {
    GT_CHECK(!submitted_, "submit() twice without wait()");
    cudaStream_t s = ctx_->stream();
    const int64_t n = opt_.local_batch;
    GT_CHECK(real.dim(0) == n, "batch of {} images, the engine was made for {}", real.dim(0), n);
    // The upload and the conversion take their sizes from the model: a batch of other images would
    // overrun real_dev_ or be read with the wrong strides.
    const int64_t C = image_shape_[0], H = image_shape_[1], W = image_shape_[2];
    if (real.dtype() == DType::u8)
      GT_CHECK(real.ndim() == 4 && real.dim(1) == H && real.dim(2) == W && (real.dim(3) == C || real.dim(3) == 1),
               "uint8 batch {}, the model takes [{}, {}, {}, {}] (NHWC)", real.str(), n, H, W, C);
    else
      GT_CHECK(real.dtype() == DType::f32 && real.shape() == (Shape{n, C, H, W}), "batch {}, the model takes f32 {}",
               real.str(), shape_str(Shape{n, C, H, W}));
    // Inputs of the step outside the graphs: they depend on the step number.
    CUDA_CHECK(cudaMemcpyAsync(real_dev_.data(), real.raw(), real.nbytes(), cudaMemcpyHostToDevice, s));
    // The captured graphs hold the conversion of the batch kind they were captured with.
    GT_CHECK(!graph_a_ || real_u8_ == (real.dtype() == DType::u8),
             "batch {} after CUDA graphs were captured for {} batches", real.str(), real_u8_ ? "uint8" : "f32");
    real_u8_ = real.dtype() == DType::u8;
    real_shape_ = real.shape();
    if (real_u8_ && opt_.flip) draw_flips(flips_.data(), n, opt_.seed, step, opt_.shard_first, s);
    fill_noise(z_.data(), n, opt_.nz, opt_.seed, static_cast<uint64_t>(step), opt_.shard_first, s);

    if (!use_graphs_ || steps_done_ == 0) {
      // Eager: the first step also finds every convolution's algorithm (which synchronizes).
      segment_a();
      opt_d_->step(opt_.clip_grad_norm > 0);
      segment_b();
      opt_g_->step(opt_.clip_grad_norm > 0);
    } else {
      if (!graph_a_) capture();
      CUDA_CHECK(cudaGraphLaunch(graph_a_, s));
      opt_d_->step(opt_.clip_grad_norm > 0);
      CUDA_CHECK(cudaGraphLaunch(graph_b_, s));
      opt_g_->step(opt_.clip_grad_norm > 0);
      G_->count_train_forwards(1);
      D_->count_train_forwards(3);
    }
    CUDA_CHECK(cudaMemcpyAsync(results_host_.raw(), results_dev_.data(), kResults * sizeof(float),
                               cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaEventRecord(done_, s));
    submitted_ = true;
    ++steps_done_;
  }

  StepResult wait() override {
    GT_CHECK(submitted_, "wait() without submit()");
    CUDA_CHECK(cudaEventSynchronize(done_));
    submitted_ = false;
    const float* r = results_host_.f32();
    StepResult out;
    out.d_loss = static_cast<double>(r[kLossReal]) * share_ + static_cast<double>(r[kLossFake]) * share_;
    out.g_loss = static_cast<double>(r[kLossG]) * share_;
    out.d_real = static_cast<double>(r[kProbReal]) * share_;
    out.d_fake = static_cast<double>(r[kProbFake]) * share_;
    return out;
  }

  Tensor generate(const Tensor& z) override {
    GT_CHECK(!submitted_, "generate() while a step is in flight");
    const int64_t n = z.dim(0), nz = z.dim(1);
    GT_CHECK(nz == opt_.nz, "generate got z of {} columns, the model takes {}", nz, opt_.nz);
    const Shape out_shape = G_->output_shape(static_cast<int>(n));
    Tensor out(out_shape);
    const Shape per = G_->output_shape(1);
    const int C = static_cast<int>(per[1]), H = static_cast<int>(per[2]), W = static_cast<int>(per[3]);
    const int64_t per_image = static_cast<int64_t>(C) * H * W;
    cudaStream_t s = ctx_->stream();
    // The convolutions read G's packed weights, refreshed only at the start of a step: the last step's
    // G update is not in them yet.
    G_->refresh_packed_weights();
    // In pieces of exactly the training batch (the last one padded with zero rows; eval mode treats
    // each sample alone): the training shapes' convolution plans serve, so no new plan can grow the
    // cuDNN workspace and free the one the captured graphs point at. The arena's size suffices too.
    const int B = static_cast<int>(opt_.local_batch);
    for (int64_t first = 0; first < n; first += B) {
      const int rows = static_cast<int>(std::min<int64_t>(B, n - first));
      const size_t mark = arena_->mark();
      float* zf = arena_->allocate<float>(static_cast<size_t>(B) * nz);
      if (rows < B)
        CUDA_CHECK(cudaMemsetAsync(zf, 0, static_cast<size_t>(B) * nz * sizeof(float), s));
      copy_host_to_device(zf, z.f32() + first * nz, static_cast<size_t>(rows * nz) * sizeof(float), s);
      void* zt = arena_->allocate_bytes(static_cast<size_t>(B) * nz * data_type_size(fmt_.type));
      convert(zt, fmt_.type, zf, DataType::f32, static_cast<int64_t>(B) * nz, s);
      void* y = G_->forward(zt, B, Mode::eval, *arena_);
      float* yf = arena_->allocate<float>(static_cast<size_t>(B) * per_image);
      convert_activations(yf, {DataType::f32, Layout::nchw}, y, fmt_, B, C, H, W, s);
      copy_device_to_host(out.f32() + first * per_image, yf, static_cast<size_t>(rows * per_image) * sizeof(float), s);
      arena_->rewind(mark);
    }
    return out;
  }

  void sync_to_host() override {
    GT_CHECK(!submitted_, "sync_to_host() while a step is in flight");
    G_->download();
    D_->download();
    opt_g_->download();
    opt_d_->download();
    ctx_->synchronize();
  }

  size_t device_bytes() const override { return arena_->high_water(); }

 private:
  Shape d_input_shape() const {
    const LayerAttrs a = host_.D->layer(0).attrs();
    GT_CHECK(a.in_channels > 0, "D's first layer ({}) does not take images", host_.D->layer(0).kind());
    // D takes G's output: [C, H, W] from G's per-sample output shape.
    Shape s = host_.G->output_shape({1, opt_.nz, 1, 1});
    return Shape(s.begin() + 1, s.end());
  }

  void open_device(Precision precision) {
    const DeviceReport report = query_devices();
    int ordinal = 0;
    run_agreed(comm_, [&] {
      if (report.count == 0)
        user_error("run.device is cuda, but {} has no usable GPU ({})", comm_.host(), report.reason);
    });
    const int P = comm_.world_size();
    GpuOptions go;
    go.precision = precision;
    go.deterministic = opt_.deterministic;
    if (P == 1) {
      go.device = 0;  // the first visible device (CUDA_VISIBLE_DEVICES is respected by the runtime)
      ctx_ = std::make_unique<GpuContext>(go);
      device_ = go.device;
      return;
    }
    RankDeviceView mine;
    mine.host = comm_.host();
    mine.process.local_rank = comm_.local_rank();
    mine.process.device_count = report.count;
    mine.process.visible = cuda_visible_devices(process_env());
    const std::vector<DeviceAssignment> placed = gather_and_place(comm_, mine, /*exclusive=*/false);
    int max_sharing = 1;
    for (const DeviceAssignment& a : placed) max_sharing = std::max(max_sharing, a.sharing);
    ordinal = placed[static_cast<size_t>(comm_.rank())].ordinal;
    if (choose_device_collectives(opt_.dist_backend, max_sharing, nccl_unavailable_reason()) ==
        DeviceCollectives::nccl) {
#if GANTRAIN_HAVE_NCCL
      std::unique_ptr<NcclCommunicator> nc = make_nccl_communicator(borrow_communicator(comm_), opt_.timeout_s);
      go.device = nc->device();
      ctx_ = std::make_unique<GpuContext>(go);
      nc->set_compute_stream(ctx_->stream());
      comm_note_ = ", " + nc->describe();
      dev_comm_ = std::move(nc);
      device_ = go.device;
      return;
#endif
    }
    go.device = ordinal;
    ctx_ = std::make_unique<GpuContext>(go);
    dev_comm_ = make_host_staged_communicator(borrow_communicator(comm_), ctx_->stream());
    comm_note_ = fmt::format(", collectives staged through {} host memory{}", comm_.backend(),
                             max_sharing > 1 ? fmt::format(" ({} ranks share a GPU)", max_sharing) : "");
    device_ = go.device;
  }

  // D step up to its clipped gradients: real and fake through D, gradients summed over the ranks.
  void segment_a() {
    cudaStream_t s = ctx_->stream();
    const int N = static_cast<int>(opt_.local_batch);
    const float scale = static_cast<float>(share_);
    const int C = static_cast<int>(image_shape_[0]), H = static_cast<int>(image_shape_[1]),
              W = static_cast<int>(image_shape_[2]);
    const DataType t = fmt_.type;
    float* res = results_dev_.data();
    arena_->reset();
    G_->refresh_packed_weights();  // after the previous step's G update
    void* real = arena_->allocate_bytes(static_cast<size_t>(N) * C * H * W * data_type_size(t));
    if (real_u8_) {
      const int in_c = static_cast<int>(real_shape_[3]);
      u8_nhwc_to_image(real, fmt_, reinterpret_cast<const uint8_t*>(real_dev_.data()),
                       opt_.flip ? flips_.data() : nullptr, N, H, W, in_c, C, 127.5f, -1.f, s);
    } else {
      convert_activations(real, fmt_, real_dev_.data(), {DataType::f32, Layout::nchw}, N, C, H, W, s);
    }
    void* z = arena_->allocate_bytes(static_cast<size_t>(N) * opt_.nz * data_type_size(t));
    convert(z, t, z_.data(), DataType::f32, static_cast<int64_t>(N) * opt_.nz, s);
    fake_ = G_->forward(z, N, Mode::train, *arena_);

    D_->zero_grads();
    const size_t mark = arena_->mark();
    void* dlogits = arena_->allocate_bytes(static_cast<size_t>(n_logits_) * data_type_size(t));
    void* logits = D_->forward(real, N, Mode::train, *arena_);
    bce_with_logits(res + kLossReal, res + kProbReal, dlogits, logits, n_logits_, 1.f, scale, t, s);
    D_->backward(dlogits, nullptr, true, *arena_);
    arena_->rewind(mark);
    dlogits = arena_->allocate_bytes(static_cast<size_t>(n_logits_) * data_type_size(t));
    logits = D_->forward(fake_, N, Mode::train, *arena_);
    bce_with_logits(res + kLossFake, res + kProbFake, dlogits, logits, n_logits_, 0.f, scale, t, s);
    reduce_d_->arm();
    D_->backward(dlogits, nullptr, true, *arena_, [this](int64_t lowest) { reduce_d_->on_final(lowest); });
    reduce_d_->finish();
    arena_->rewind(mark);
    if (opt_.clip_grad_norm > 0) opt_d_->clip(opt_.clip_grad_norm);
  }

  // G step up to its clipped gradients: the same fakes through the updated D, labelled real.
  void segment_b() {
    cudaStream_t s = ctx_->stream();
    const int N = static_cast<int>(opt_.local_batch);
    const float scale = static_cast<float>(share_);
    const DataType t = fmt_.type;
    D_->refresh_packed_weights();  // after this step's D update
    G_->zero_grads();
    const size_t mark = arena_->mark();
    void* dfake = arena_->allocate_bytes(static_cast<size_t>(N) * G_->output_numel_per_sample() * data_type_size(t));
    void* dlogits = arena_->allocate_bytes(static_cast<size_t>(n_logits_) * data_type_size(t));
    void* logits = D_->forward(fake_, N, Mode::train, *arena_);
    bce_with_logits(results_dev_.data() + kLossG, nullptr, dlogits, logits, n_logits_, 1.f, scale, t, s);
    // D's parameter gradients of this pass are never used (the CPU computes and then zeroes them).
    D_->backward(dlogits, dfake, /*param_grads=*/false, *arena_);
    reduce_g_->arm();
    G_->backward(dfake, nullptr, true, *arena_, [this](int64_t lowest) { reduce_g_->on_final(lowest); });
    reduce_g_->finish();
    arena_->rewind(mark);
    if (opt_.clip_grad_norm > 0) opt_g_->clip(opt_.clip_grad_norm);
  }

  // The two segments as CUDA graphs: every pointer and size in them is the same each step (the arena
  // hands out the same addresses in the same order); what changes per step (inputs, noise, flips,
  // optimizer constants) stays outside them. The forwards a replay runs are counted by hand.
  void capture() {
    cudaStream_t s = ctx_->stream();
    cudaGraph_t ga = nullptr, gb = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    segment_a();
    CUDA_CHECK(cudaStreamEndCapture(s, &ga));
    CUDA_CHECK(cudaGraphInstantiate(&graph_a_, ga, 0));
    CUDA_CHECK(cudaGraphDestroy(ga));
    // segment_b captured after segment_a without running either: their host bookkeeping ran once here.
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    segment_b();
    CUDA_CHECK(cudaStreamEndCapture(s, &gb));
    CUDA_CHECK(cudaGraphInstantiate(&graph_b_, gb, 0));
    CUDA_CHECK(cudaGraphDestroy(gb));
    // The capture ran the host side of one G and three D forwards that the replays count again.
    G_->count_train_forwards(-1);
    D_->count_train_forwards(-3);
  }

  EngineOptions opt_;
  GanModels& host_;
  Communicator& comm_;
  ActFormat fmt_;
  int device_ = 0;
  std::string comm_note_;
  std::unique_ptr<GpuContext> ctx_;
  std::unique_ptr<Communicator> dev_comm_;  // after ctx_: goes first, while its stream still exists
  std::unique_ptr<ConvEngine> conv_;
  std::unique_ptr<GpuNet> G_, D_;
  std::unique_ptr<GpuOptimizer> opt_g_, opt_d_;
  std::unique_ptr<FlatGradReducer> reduce_g_, reduce_d_;
  std::unique_ptr<DeviceArena> arena_;
  Shape image_shape_;  // [C, H, W]
  // This rank's share of the global batch (local / global): each loss and its gradient are the global
  // mean's share, as the CPU engine's StepOptions::loss_scale.
  double share_ = 1.0;
  int64_t n_logits_ = 0;  // D's outputs for one local batch
  DeviceBuffer<std::byte> real_dev_;
  DeviceBuffer<uint8_t> flips_;
  DeviceBuffer<float> z_, results_dev_;
  Tensor results_host_;
  cudaEvent_t done_ = nullptr;
  bool real_u8_ = false;
  Shape real_shape_;
  void* fake_ = nullptr;
  bool use_graphs_ = false, submitted_ = false;
  cudaGraphExec_t graph_a_ = nullptr, graph_b_ = nullptr;
  int64_t steps_done_ = 0;
};

}  // namespace

std::unique_ptr<StepEngine> make_gpu_engine(const EngineOptions& opt, GanModels& host, Communicator& comm) {
  return std::make_unique<GpuEngine>(opt, host, comm);
}

}  // namespace gt::cuda
