// The CUDA step engine: the device and its collectives, the inputs of each step, and the one GAN step (train/gan_step.h) on GpuNets, eager or replayed as CUDA graphs.
#include "train/cuda/gpu_engine.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/conv.h"
#include "cuda/device.h"
#include "cuda/gpu_net.h"
#include "cuda/kernels.h"
#include "cuda/kernels_typed.h"
#include "cuda/optim_gpu.h"
#include "cuda/staged_communicator.h"
#include "cuda/step_recorder.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/device_map.h"
#include "parallel/gpu_placement.h"
#include "parallel/launch.h"
#include "train/run_setup.h"
#include "train/step_parts.h"
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

// The step's StepOps on the device: buffers from the arena, the loss and its means into device floats
// (read back when the step completes).
class GpuStepOps final : public StepOps {
 public:
  GpuStepOps(DeviceArena& arena, cudaStream_t stream, StepRecorder& recorder, float* scalars, DataType type)
      : arena_(arena), stream_(stream), recorder_(recorder), scalars_(scalars), type_(type) {}
  ~GpuStepOps() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  Tensor buffer_like(const Tensor& t) override {
    return Tensor::borrow(t.shape(), t.dtype(), Device::cuda, arena_.allocate_bytes(t.nbytes()));
  }
  // bf16 packs in device memory (NCCL's, or the staged communicator's), converted on the step's stream in the
  // order of backward: a bucket is packed after the layers that made its gradients, unpacked after its
  // all-reduce (ordered on the stream with NCCL), before the optimizer reads it.
  GradientWire gradient_wire(int64_t n, ElemType type) override {
    GT_CHECK(type == ElemType::bf16, "the CUDA engine packs gradients as bfloat16, not {}", elem_type_name(type));
    wires_.emplace_back(static_cast<size_t>(n) * 2);
    GradientWire w;
    w.type = type;
    w.buffer = wires_.back().data();
    cudaStream_t s = stream_;
    w.pack = [s](const float* from, void* to, int64_t count) { convert(to, DataType::bf16, from, DataType::f32, count, s); };
    w.unpack = [s](const void* from, float* to, int64_t count) {
      convert(to, DataType::f32, from, DataType::bf16, count, s);
    };
    return w;
  }
  void grad_norm(Net& net, StepScalar slot) override {
    cuda::l2_norm(scalars_ + static_cast<int>(slot), net.flat_grads(), net.flat_size(), stream_);
  }
  Tensor interpolate(const Tensor& real, const Tensor& fake, const Tensor& mix) override {
    GT_CHECK(real.shape() == fake.shape() && mix.numel() == real.dim(0), "interpolate: real {}, fake {}, mix {}",
             real.str(), fake.str(), mix.str());
    Tensor out = buffer_like(real);
    const int64_t n = real.dim(0);
    cuda::penalty_interpolate(out.raw(), real.raw(), fake.raw(), mix.f32(), n, real.numel() / n, type_, stream_);
    return out;
  }
  void zero_scalar(StepScalar slot) override {
    CUDA_CHECK(cudaMemsetAsync(scalars_ + static_cast<int>(slot), 0, sizeof(float), stream_));
  }
  Tensor ones_like(const Tensor& t) override {
    Tensor out = buffer_like(t);
    cuda::fill_value(out.raw(), t.numel(), 1.f, type_, stream_);
    return out;
  }
  void gradient_penalty(const Tensor& g, float weight, float scale, Tensor& dg, StepScalar loss,
                        const ScalarWrite& write) override {
    const int64_t n = g.dim(0);
    void* ws = arena_.allocate_bytes(cuda::gradient_penalty_workspace_bytes(n));
    cuda::gradient_penalty(scalars_ + static_cast<int>(loss), dg.raw(), g.raw(), n, g.numel() / n, weight, scale,
                           type_, ws, stream_, {write.weight, write.accumulate});
  }
  size_t mark() override { return arena_.mark(); }
  void release(size_t mark) override { arena_.rewind(mark); }
  void gan_loss(const Tensor& logits, const LossTerm& term, float scale, Tensor& dlogits, StepScalar loss,
                const StepScalar* reported, const ScalarWrite& write) override {
    cuda::gan_loss(scalars_ + static_cast<int>(loss), reported ? scalars_ + static_cast<int>(*reported) : nullptr,
                   dlogits.raw(), logits.raw(), logits.numel(), term, scale, type_, stream_,
                   {write.weight, write.accumulate});
  }
  // The timing breakdown on the device: each mark records an event on the stream where the step enters
  // `phase`. Through the recorder, so a captured step records them at every replay, between its graphs
  // (a mark closes a graph segment: 9 more graph launches per step, microseconds).
  void phase(StepPhase phase) override {
    if (!timing_) return;
    const size_t k = marks_used_++;
    if (k == events_.size()) {
      cudaEvent_t e = nullptr;
      CUDA_CHECK(cudaEventCreate(&e));  // with timing
      events_.push_back(e);
    }
    if (k == marks_.size())
      marks_.push_back(phase);
    else
      marks_[k] = phase;
    cudaEvent_t e = events_[k];
    cudaStream_t s = stream_;
    recorder_.eager([e, s] { CUDA_CHECK(cudaEventRecord(e, s)); });
  }
  // Before the step's code runs (eagerly or captured): its marks start again. A replay repeats the
  // captured marks, so their count and phases stay.
  void start_step() { marks_used_ = 0; }
  // Once the step has completed: the time between consecutive marks added to the phase they open. An
  // event that cannot be read turns the device timing off for the run (the breakdown then counts the
  // engine's whole time as `other`) instead of failing the step.
  void add_phase_times() {
    if (!timing_) return;
    for (size_t k = 0; k + 1 < marks_used_; ++k) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, events_[k], events_[k + 1]) != cudaSuccess) {
        (void)cudaGetLastError();  // not sticky: clear it
        timing_ = false;
        return;
      }
      if (marks_[k] != StepPhase::other) seconds_[static_cast<int>(marks_[k])] += 1e-3 * ms;
    }
  }
  PhaseClock take_phase_seconds(double (&seconds)[kStepPhases]) {
    for (int p = 0; p < kStepPhases; ++p) seconds[p] = seconds_[p], seconds_[p] = 0;
    return timing_ ? PhaseClock::device : PhaseClock::none;
  }

 private:
  DeviceArena& arena_;
  cudaStream_t stream_;
  std::vector<DeviceBuffer<std::byte>> wires_;  // gradient_wire's buffers
  StepRecorder& recorder_;
  float* scalars_;
  DataType type_;
  bool timing_ = true;
  std::vector<cudaEvent_t> events_;
  std::vector<StepPhase> marks_;
  size_t marks_used_ = 0;
  double seconds_[kStepPhases] = {};
};

class GpuEngine final : public StepEngine {
 public:
  GpuEngine(const EngineOptions& opt, GanModels& host, Communicator& comm)
      : opt_(opt),
        host_(host),
        comm_(comm) {
    const Precision precision = opt.precision;
    fmt_ = {storage_type(precision), layout_of(opt.layout, precision)};
    open_device(precision);
    conv_ = std::make_unique<ConvEngine>(*ctx_, fmt_);
    image_shape_ = d_input_shape();
    G_ = std::make_unique<GpuNet>(*host.G, Shape{opt.nz, 1, 1}, *ctx_, *conv_, fmt_);
    D_ = std::make_unique<GpuNet>(*host.D, image_shape_, *ctx_, *conv_, fmt_);

    const int64_t n = opt.local_batch;
    const int64_t image_numel = shape_numel(image_shape_);
    const int64_t iterations = opt.objective.n_critic;  // a real batch, flips and noise per critic iteration
    real_dev_ = DeviceBuffer<std::byte>(static_cast<size_t>(iterations * n * image_numel) * sizeof(float));
    flips_ = DeviceBuffer<uint8_t>(static_cast<size_t>(iterations * n));
    z_ = DeviceBuffer<float>(static_cast<size_t>(opt.objective.noise_batches() * n * opt.nz));
    if (opt.objective.gp_weight > 0) mix_ = DeviceBuffer<float>(static_cast<size_t>(iterations * n));
    scalars_dev_ = DeviceBuffer<float>(kStepScalars);
    scalars_host_ = pinned_tensor({kStepScalars}, DType::f32);
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    // The arena: G's activations live through the step; each D pass (forward, backward) is given back.
    // Passes run on micro-batches (the large-batch plan); the step's inputs are the rank's whole share.
    const int N = static_cast<int>(opt.micro());
    const size_t e = data_type_size(fmt_.type);
    const size_t need = G_->forward_bytes(N) + G_->backward_bytes(N) + 2 * D_->forward_bytes(N) +
                        D_->backward_bytes(N) +
                        (4 + static_cast<size_t>(iterations)) * static_cast<size_t>(n) * (image_numel + opt.nz) * e +
                        (size_t{64} << 20);
    // A gradient penalty's pass: D at the interpolates with its kept backward, tangents and second pass,
    // the interpolates, the seed and penalty gradients.
    const size_t penalty = opt.objective.gp_weight > 0
                               ? D_->penalty_bytes(N) + 4 * static_cast<size_t>(n) * image_numel * e +
                                     cuda::gradient_penalty_workspace_bytes(n)
                               : 0;
    const size_t bytes =
        opt.arena_mb > 0 ? static_cast<size_t>(opt.arena_mb * 1048576.0) : need + penalty + (need + penalty) / 4;
    arena_ = std::make_unique<DeviceArena>(bytes);
    G_->set_arena(arena_.get());
    D_->set_arena(arena_.get());
    ops_ = std::make_unique<GpuStepOps>(*arena_, ctx_->stream(), ctx_->recorder(), scalars_dev_.data(), fmt_.type);
    // Device memory moves over the device collectives; with one rank there are none, and the host
    // communicator of a world of 1 moves nothing (batch norm then needs no reducer).
    Communicator& device_comm = dev_comm_ ? *dev_comm_ : comm_;
    parts_ = std::make_unique<StepParts>(host, *G_, *D_, device_comm, *ops_,
                                         opt.step_settings(dev_comm_ != nullptr && opt.sync_bn));
    // Lazy regularization changes the step's work from batch to batch: no graph can replay it.
    use_graphs_ = opt.cuda_graph && comm.world_size() == 1 && !(opt.objective.gp_weight > 0 && opt.objective.gp_every > 1);
    if (opt.ema_host) {
      // G_ema's average in one device buffer laid out as G's flat parameters, one slot per parameter.
      ema_ = DeviceBuffer<float>(static_cast<size_t>(std::max<int64_t>(G_->flat_size(), 1)));
      std::vector<TensorRef> refs;
      for (const ParamSlot& slot : G_->param_slots())
        refs.push_back({G_->flat_params() + slot.offset, nullptr, ema_.data() + slot.offset, nullptr, slot.numel});
      ema_list_ = std::make_unique<MultiTensorList>(refs, ctx_->stream());
      copy_ema(/*to_device=*/true);
    }
    ctx_->synchronize();
  }

  ~GpuEngine() override {
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

  using StepEngine::submit;
  void submit(std::span<const Tensor> reals, int64_t step) override {
    GT_CHECK(!submitted_, "submit() twice without wait()");
    cudaStream_t s = ctx_->stream();
    const int64_t n = opt_.local_batch;
    const int iterations = opt_.objective.n_critic;
    GT_CHECK(static_cast<int>(reals.size()) == iterations, "{} real batches for n_critic {}", reals.size(), iterations);
    // The upload and the conversion take their sizes from the model: a batch of other images would
    // overrun real_dev_ or be read with the wrong strides.
    const int64_t C = image_shape_[0], H = image_shape_[1], W = image_shape_[2];
    StepRecorder& recorder = ctx_->recorder();
    for (int k = 0; k < iterations; ++k) {
      const Tensor& real = reals[static_cast<size_t>(k)];
      GT_CHECK(real.dim(0) == n, "batch of {} images, the engine was made for {}", real.dim(0), n);
      if (real.dtype() == DType::u8)
        GT_CHECK(real.ndim() == 4 && real.dim(1) == H && real.dim(2) == W && (real.dim(3) == C || real.dim(3) == 1),
                 "uint8 batch {}, the model takes [{}, {}, {}, {}] (NHWC)", real.str(), n, H, W, C);
      else
        GT_CHECK(real.dtype() == DType::f32 && real.shape() == (Shape{n, C, H, W}), "batch {}, the model takes f32 {}",
                 real.str(), shape_str(Shape{n, C, H, W}));
      // A captured step holds the conversion of the batch kind it was captured with.
      const bool u8 = real.dtype() == DType::u8;
      GT_CHECK(!recorder.captured() || real_u8_ == u8, "batch {} after CUDA graphs were captured for {} batches",
               real.str(), real_u8_ ? "uint8" : "f32");
      GT_CHECK(k == 0 || (u8 == real_u8_ && real.shape() == real_shape_), "critic batch {} is {}, batch 0 {}", k,
               real.str(), shape_str(real_shape_));
      real_u8_ = u8;
      real_shape_ = real.shape();
      // The step's inputs, outside any graph: they depend on the step number.
      CUDA_CHECK(cudaMemcpyAsync(real_dev_.data() + static_cast<size_t>(k) * real_slot_bytes(), real.raw(),
                                 real.nbytes(), cudaMemcpyHostToDevice, s));
      const int64_t batch = step * iterations + k;
      if (real_u8_ && opt_.flip) draw_flips(flips_.data() + k * n, n, opt_.seed, batch, opt_.shard_first, s);
    }
    for (int k = 0; k < opt_.objective.noise_batches(); ++k)
      fill_noise(z_.data() + k * n * opt_.nz, n, opt_.nz, opt_.seed, noise_key(opt_.objective, step, k),
                 opt_.shard_first, s);
    if (opt_.objective.gp_weight > 0)
      for (int k = 0; k < iterations; ++k)
        cuda::fill_penalty_mix(mix_.data() + k * n, n, opt_.seed, static_cast<uint64_t>(step * iterations + k),
                               opt_.shard_first, s);
    first_batch_ = step * iterations;

    // G_ema's weight for this step: read by the step's eager EMA call, also when a graph replays.
    if (opt_.ema_host) ema_weight_ = static_cast<float>(ema_one_minus_beta(opt_.ema, step + 1, opt_.global_batch));
    if (!use_graphs_ || steps_done_ == 0) {
      run_step();  // eager: the first step also finds every convolution's algorithm (which synchronizes)
    } else {
      if (!recorder.captured()) recorder.capture([this] { run_step(); });
      recorder.replay();
    }
    CUDA_CHECK(cudaMemcpyAsync(scalars_host_.raw(), scalars_dev_.data(), kStepScalars * sizeof(float),
                               cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaEventRecord(done_, s));
    submitted_ = true;
    ++steps_done_;
  }

  StepResult wait() override {
    GT_CHECK(submitted_, "wait() without submit()");
    // With NCCL the stream may be waiting for collectives on the device (gradient buckets, synchronized batch
    // norm): the host waits with the communicator's deadline, so a vanished peer is an error, not a hang.
#if GANTRAIN_HAVE_NCCL
    if (nccl_)
      nccl_->wait_event(done_, "the training step (waiting for its collectives)");
    else
#endif
      CUDA_CHECK(cudaEventSynchronize(done_));
    submitted_ = false;
    ops_->add_phase_times();
    double v[kStepScalars];
    for (int k = 0; k < kStepScalars; ++k) v[k] = static_cast<double>(scalars_host_.f32()[k]);
    return step_result(v, parts_->loss_scale());
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
    // In pieces of exactly the training batch (the last one padded with zero rows; eval mode treats
    // each sample alone): the training shapes' convolution plans serve, so no new plan can grow the
    // cuDNN workspace and free the one the captured graphs point at. The arena's size suffices too.
    const int B = static_cast<int>(opt_.local_batch);
    for (int64_t first = 0; first < n; first += B) {
      const int rows = static_cast<int>(std::min<int64_t>(B, n - first));
      const size_t mark = arena_->mark();
      float* zf = arena_->allocate<float>(static_cast<size_t>(B) * nz);
      if (rows < B) CUDA_CHECK(cudaMemsetAsync(zf, 0, static_cast<size_t>(B) * nz * sizeof(float), s));
      copy_host_to_device(zf, z.f32() + first * nz, static_cast<size_t>(rows * nz) * sizeof(float), s);
      void* zt = arena_->allocate_bytes(static_cast<size_t>(B) * nz * data_type_size(fmt_.type));
      convert(zt, fmt_.type, zf, DataType::f32, static_cast<int64_t>(B) * nz, s);
      const Tensor y = G_->forward(Tensor::borrow({B, nz, 1, 1}, G_->storage_dtype(), Device::cuda, zt), Mode::eval);
      float* yf = arena_->allocate<float>(static_cast<size_t>(B) * per_image);
      convert_activations(yf, {DataType::f32, Layout::nchw}, y.raw(), fmt_, B, C, H, W, s);
      copy_device_to_host(out.f32() + first * per_image, yf, static_cast<size_t>(rows * per_image) * sizeof(float), s);
      arena_->rewind(mark);
    }
    return out;
  }

  void sync_to_host() override {
    GT_CHECK(!submitted_, "sync_to_host() while a step is in flight");
    G_->download();
    D_->download();
    parts_->sync_optimizers_to_host();
    if (ema_list_) copy_ema(/*to_device=*/false);
    ctx_->synchronize();
  }

  void load_from_host() override {
    GT_CHECK(!submitted_, "load_from_host() while a step is in flight");
    // The parameters land in the same device buffers, so captured graphs stay valid.
    G_->upload();
    D_->upload();
    parts_->load_optimizers_from_host();
    if (ema_list_) copy_ema(/*to_device=*/true);
    ctx_->synchronize();
  }

  PhaseClock take_phase_seconds(double (&seconds)[kStepPhases]) override { return ops_->take_phase_seconds(seconds); }

  size_t device_bytes() const override { return arena_->high_water(); }
  // Between steps (GpuNet refuses while a step is captured): the device weight every Fade reads, and the host
  // networks' (G_ema's generates samples on the host side of sync_to_host).
  void set_fade_alpha(float alpha) override {
    G_->set_fade_alpha(alpha);
    D_->set_fade_alpha(alpha);
    if (opt_.ema_host) opt_.ema_host->set_fade_alpha(alpha);
  }

 private:
  Shape d_input_shape() const {
    const LayerAttrs a = host_.D->layer(0).attrs();
    GT_CHECK(a.in_channels > 0 || host_.D->layer(0).kind() == "Fade", "D's first layer ({}) does not take images",
             host_.D->layer(0).kind());
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
    // dist.backend decides (parallel/launch.h); a refusal is agreed, so every rank reports it once.
    DeviceCollectives which = DeviceCollectives::staged;
    run_agreed(comm_, [&] { which = choose_device_collectives(opt_.dist_backend, max_sharing, nccl_unavailable_reason()); });
    if (which == DeviceCollectives::nccl) {
#if GANTRAIN_HAVE_NCCL
      std::unique_ptr<NcclCommunicator> nc = make_nccl_communicator(borrow_communicator(comm_), opt_.timeout_s);
      go.device = nc->device();
      ctx_ = std::make_unique<GpuContext>(go);
      nc->set_compute_stream(ctx_->stream());
      comm_note_ = ", " + nc->describe();
      nccl_ = nc.get();
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

  // The engine's side of a step, then the one GAN step: the batch and the noise converted into the
  // step's format in the arena (the same addresses every step, so a captured step replays), then
  // train/gan_step.h. Eager, or captured once by the StepRecorder.
  void run_step() {
    cudaStream_t s = ctx_->stream();
    const int N = static_cast<int>(opt_.local_batch);
    const int C = static_cast<int>(image_shape_[0]), H = static_cast<int>(image_shape_[1]),
              W = static_cast<int>(image_shape_[2]);
    const DataType t = fmt_.type;
    const DType dtype = G_->storage_dtype();
    arena_->reset();
    ops_->start_step();
    std::vector<Tensor> reals, zs;
    for (int k = 0; k < opt_.objective.n_critic; ++k) {
      void* real = arena_->allocate_bytes(static_cast<size_t>(N) * C * H * W * data_type_size(t));
      const std::byte* stored = real_dev_.data() + static_cast<size_t>(k) * real_slot_bytes();
      if (real_u8_) {
        const int in_c = static_cast<int>(real_shape_[3]);
        u8_nhwc_to_image(real, fmt_, reinterpret_cast<const uint8_t*>(stored),
                         opt_.flip ? flips_.data() + static_cast<size_t>(k) * N : nullptr, N, H, W, in_c, C, 127.5f,
                         -1.f, s);
      } else {
        convert_activations(real, fmt_, stored, {DataType::f32, Layout::nchw}, N, C, H, W, s);
      }
      reals.push_back(Tensor::borrow({N, C, H, W}, dtype, Device::cuda, real));
    }
    for (int k = 0; k < opt_.objective.noise_batches(); ++k) {
      void* z = arena_->allocate_bytes(static_cast<size_t>(N) * opt_.nz * data_type_size(t));
      convert(z, t, z_.data() + static_cast<size_t>(k) * N * opt_.nz, DataType::f32,
              static_cast<int64_t>(N) * opt_.nz, s);
      zs.push_back(Tensor::borrow({N, opt_.nz, 1, 1}, dtype, Device::cuda, z));
    }
    std::vector<Tensor> mixes;
    if (opt_.objective.gp_weight > 0)
      for (int k = 0; k < opt_.objective.n_critic; ++k)
        mixes.push_back(Tensor::borrow({N}, DType::f32, Device::cuda, mix_.data() + static_cast<size_t>(k) * N));
    run_gan_step(parts_->step(), reals, zs, mixes, first_batch_);
    // G_ema after the G update (its weight changes per step: an eager call, between graph segments).
    if (ema_list_) ctx_->recorder().eager([this] { ema_update(ema_list_->view(), ema_weight_, ctx_->stream()); });
  }

  // G_ema between the host network (by parameter name) and the device average.
  void copy_ema(bool to_device) {
    std::vector<NamedParam> host = opt_.ema_host->named_params();
    cudaStream_t s = ctx_->stream();
    for (const ParamSlot& slot : G_->param_slots()) {
      auto it = std::find_if(host.begin(), host.end(), [&](const NamedParam& p) { return p.name == slot.name; });
      GT_CHECK(it != host.end() && it->param->value.numel() == slot.numel, "G_ema has no parameter {} of {} values",
               slot.name, slot.numel);
      const size_t bytes = static_cast<size_t>(slot.numel) * sizeof(float);
      if (to_device)
        copy_host_to_device(ema_.data() + slot.offset, it->param->value.f32(), bytes, s);
      else
        copy_device_to_host(it->param->value.f32(), ema_.data() + slot.offset, bytes, s);
    }
    CUDA_CHECK(cudaStreamSynchronize(s));
  }

  // Bytes of one stored real batch in real_dev_ (room for f32 NCHW, the larger kind).
  size_t real_slot_bytes() const {
    return static_cast<size_t>(opt_.local_batch * shape_numel(image_shape_)) * sizeof(float);
  }

  EngineOptions opt_;
  GanModels& host_;
  Communicator& comm_;
  ActFormat fmt_;
  int device_ = 0;
  std::string comm_note_;
  std::unique_ptr<GpuContext> ctx_;
  std::unique_ptr<Communicator> dev_comm_;  // after ctx_: goes first, while its stream still exists
#if GANTRAIN_HAVE_NCCL
  NcclCommunicator* nccl_ = nullptr;  // dev_comm_ when it is NCCL's (its deadline-aware event wait)
#endif
  std::unique_ptr<ConvEngine> conv_;
  std::unique_ptr<GpuNet> G_, D_;
  std::unique_ptr<DeviceArena> arena_;
  std::unique_ptr<GpuStepOps> ops_;
  std::unique_ptr<StepParts> parts_;
  Shape image_shape_;  // [C, H, W]
  DeviceBuffer<std::byte> real_dev_;
  DeviceBuffer<uint8_t> flips_;
  DeviceBuffer<float> z_, scalars_dev_;
  DeviceBuffer<float> mix_;   // with a gradient penalty: each critic iteration's interpolation weights
  int64_t first_batch_ = 0;  // the batch number of the submitted step's first critic iteration
  DeviceBuffer<float> ema_;                    // G_ema's parameters, laid out as G's flat parameters
  std::unique_ptr<MultiTensorList> ema_list_;  // G's parameters with their averages (null: no G_ema)
  float ema_weight_ = 0.f;                     // this step's 1 - beta
  Tensor scalars_host_;
  cudaEvent_t done_ = nullptr;
  bool real_u8_ = false;
  Shape real_shape_;
  bool use_graphs_ = false, submitted_ = false;
  int64_t steps_done_ = 0;
};

}  // namespace

std::unique_ptr<StepEngine> make_gpu_engine(const EngineOptions& opt, GanModels& host, Communicator& comm) {
  return std::make_unique<GpuEngine>(opt, host, comm);
}

}  // namespace gt::cuda
