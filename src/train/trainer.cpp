// The training loop of one rank (a single process is rank 0 of 1). See docs/user-guide.md and docs/distributed.md.
#include "train/trainer.h"

#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <cmath>
#include <omp.h>
#include <optional>
#include <unistd.h>

#include "core/fault_point.h"
#include "core/rng.h"
#include "core/version.h"
#include "data/image_source.h"
#include "data/loader.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "nn/dcgan.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/fault_injection.h"
#include "parallel/launch.h"
#include "train/engine.h"
#include "train/checkpoints.h"
#include "train/model_state.h"
#include "train/resume.h"
#include "train/run_dir.h"
#include "train/signal_guard.h"
#include "train/swd_hook.h"
#if GANTRAIN_HAVE_CUDA
#include "cuda/device.h"
#endif

namespace gt {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The fixed noise of sample grids: a step number no training step reaches.
constexpr uint64_t kSampleNoiseStep = ~0ull;

std::string fmt_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

// run.device on this rank: auto is cuda when this rank sees a usable GPU (the ranks then agree).
bool wants_cuda(DeviceChoice device) {
  if (device != DeviceChoice::automatic) return device == DeviceChoice::cuda;
#if GANTRAIN_HAVE_CUDA
  return cuda::query_devices().count > 0;
#else
  return false;
#endif
}

// Everything a run reads and decides before anything is written, on every rank. A problem on any
// rank stops all of them, reported once.
struct RunInputs {
  DcganSpec spec;
  Device device = Device::cpu;
  std::unique_ptr<ImageSource> source;
  std::optional<BatchPlan> plan;
  std::optional<FaultPlan> fault;
  int64_t total_steps = 0;
  int64_t dataset_size = 0;
};

RunInputs check_inputs(const Config& cfg, Communicator& comm) {
  RunInputs in;
  const int P = comm.world_size();
  const int64_t B = cfg.train.batch_size;
  // run.device auto: cuda only when every rank has a GPU, so that all ranks run the same engine.
  int64_t cuda = wants_cuda(cfg.run.device);
  if (cfg.run.device == DeviceChoice::automatic) comm.all_reduce(&cuda, 1, ReduceOp::min);
  in.device = cuda ? Device::cuda : Device::cpu;
  run_agreed(comm, [&] {
    in.spec = dcgan_spec(cfg.model);
    check_backend_for_device(cfg.dist.backend, in.device == Device::cuda, cfg.run.device);
    if (B % P != 0)
      user_error("train.batch_size {} does not divide over {} ranks: every rank takes an equal share of the global "
                 "batch, so use a multiple of {} (e.g. {})",
                 B, P, P, (B + P - 1) / P * P);
    in.fault = fault_plan_from_env(process_env());
    in.source = open_image_source(cfg.data, in.spec.channels, in.spec.resolution, static_cast<uint64_t>(cfg.run.seed));
    in.plan.emplace(in.source->size(), B, static_cast<uint64_t>(cfg.run.seed));
    check_swd_config(cfg.log, in.spec.resolution, in.source->size());
  });
  in.total_steps = cfg.train.max_steps > 0 ? cfg.train.max_steps : cfg.train.epochs * in.plan->steps_per_epoch();
  in.dataset_size = in.source->size();
  return in;
}

// G and D initialized from the seed, and their optimizers: the host models every engine starts from
// and hands back for checkpoints.
struct Models {
  Sequential G, D;
  std::unique_ptr<Optimizer> opt_g, opt_d;
  GanModels view() { return {&G, &D, opt_g.get(), opt_d.get()}; }
};

std::unique_ptr<Models> make_models(const Config& cfg, const DcganSpec& spec) {
  auto m = std::make_unique<Models>();
  m->G = make_dcgan_generator(spec);
  m->D = make_dcgan_discriminator(spec);
  const uint64_t seed = static_cast<uint64_t>(cfg.run.seed);
  dcgan_init(m->G, cfg.model.init_std, seed, 1);
  dcgan_init(m->D, cfg.model.init_std, seed, 2);
  m->opt_g = make_optimizer(cfg.optim_g, m->G.named_params());
  m->opt_d = make_optimizer(cfg.optim_d, m->D.named_params());
  return m;
}

EngineOptions engine_options(const Config& cfg, const Communicator& comm, const RunInputs& in) {
  const int64_t B = cfg.train.batch_size, P = comm.world_size();
  EngineOptions e;
  e.device = in.device;
  e.precision = cfg.run.precision;
  e.layout = cfg.run.layout;
  e.cuda_graph = cfg.run.cuda_graph;
  e.arena_mb = cfg.run.gpu_arena_mb;
  e.dist_backend = cfg.dist.backend;
  e.timeout_s = cfg.dist.timeout_s;
  e.global_batch = B;
  e.local_batch = B / P;
  e.shard_first = comm.rank() * (B / P);
  e.seed = static_cast<uint64_t>(cfg.run.seed);
  e.clip_grad_norm = cfg.train.clip_grad_norm;
  e.flip = cfg.data.flip;
  e.sync_bn = cfg.dist.sync_bn;  // false leaves each rank's batch norm to its shard; rank 0's statistics are saved
  // Gradients summed over the ranks in buckets during backward (with one rank: nothing to do).
  e.bucket_bytes = std::max<int64_t>(1, static_cast<int64_t>(cfg.dist.bucket_mb * 1048576.0));
  e.nz = in.spec.nz;
  return e;
}

LoaderOptions loader_options(const Config& cfg, const Communicator& comm, StepEngine& engine, int64_t first_step,
                             int64_t total_steps) {
  LoaderOptions o;
  o.output_u8 = engine.wants_u8_batches();
  // Every batch buffer the loader cycles through is the engine's kind (page-locked for a GPU).
  o.allocate = [&engine](const Shape& shape, DType dtype) { return engine.make_batch_buffer(shape, dtype); };
  o.global_batch = cfg.train.batch_size;
  o.rank = comm.rank();
  o.world_size = comm.world_size();
  o.prefetch_batches = cfg.data.prefetch_batches;
  o.threads = cfg.data.loader_threads;
  o.flip = cfg.data.flip;
  o.seed = static_cast<uint64_t>(cfg.run.seed);
  o.first_step = first_step;
  o.end_step = total_steps;
  return o;
}

// A hash of every parameter's bits: ranks compare it to check that they still hold the same model.
uint64_t parameter_hash(Sequential& net) {
  return fnv1a64({reinterpret_cast<const char*>(net.flat_params()), static_cast<size_t>(net.flat_size()) * 4});
}

// Every rank applies the same summed gradients, so the models must stay bit-identical; a library whose
// reductions differ in the last bit between ranks would let them drift apart. Returns the ranks that
// differ from rank 0 (empty when all agree).
std::vector<int> ranks_with_other_parameters(Communicator& comm, Sequential& G, Sequential& D) {
  const int64_t mine[2] = {static_cast<int64_t>(parameter_hash(G)), static_cast<int64_t>(parameter_hash(D))};
  std::vector<int64_t> all(static_cast<size_t>(2 * comm.world_size()));
  comm.all_gather(mine, all.data(), 2);
  std::vector<int> differ;
  for (int r = 1; r < comm.world_size(); ++r)
    if (all[2 * r] != all[0] || all[2 * r + 1] != all[1]) differ.push_back(r);
  return differ;
}

// The step's losses and means over the global batch (each rank's share summed over the ranks) and its
// gradient norms (the same on every rank), with, per quantity, the ranks where it was not finite. The
// same on every rank, so every rank takes the same way.
struct GlobalResult {
  static constexpr int kChecked = 4;  // d_loss, g_loss, d_grad_norm, g_grad_norm
  static constexpr const char* kNames[kChecked] = {"d_loss", "g_loss", "D's gradient norm", "G's gradient norm"};
  StepResult r;
  std::vector<int> bad[kChecked];
  bool finite() const {
    for (const auto& b : bad)
      if (!b.empty()) return false;
    return true;
  }
};

GlobalResult global_result(StepResult r, Communicator& comm) {
  GlobalResult g;
  const double checked[GlobalResult::kChecked] = {r.d_loss, r.g_loss, r.d_grad_norm, r.g_grad_norm};
  int64_t flags[GlobalResult::kChecked];
  // The step's one collective carries the count of ranks with a non-finite value along with the sums.
  double v[4 + GlobalResult::kChecked] = {r.d_loss, r.g_loss, r.d_real, r.d_fake};
  for (int k = 0; k < GlobalResult::kChecked; ++k) v[4 + k] = flags[k] = !std::isfinite(checked[k]);
  comm.all_reduce(v, 4 + GlobalResult::kChecked, ReduceOp::sum);
  r.d_loss = v[0], r.g_loss = v[1], r.d_real = v[2], r.d_fake = v[3];
  g.r = r;
  bool any = false;
  for (int k = 0; k < GlobalResult::kChecked; ++k) any = any || v[4 + k] > 0;
  if (!any) return g;
  // Rare: name the ranks (every rank sees the same counts, so every rank takes this second collective).
  std::vector<int64_t> all(static_cast<size_t>(GlobalResult::kChecked * comm.world_size()));
  comm.all_gather(flags, all.data(), GlobalResult::kChecked);
  for (int rank = 0; rank < comm.world_size(); ++rank)
    for (int k = 0; k < GlobalResult::kChecked; ++k)
      if (all[static_cast<size_t>(GlobalResult::kChecked * rank + k)]) g.bad[k].push_back(rank);
  return g;
}

// "step 7: d_loss is not finite on rank 1 (g_loss on ranks 0, 1; ...)": the first quantity that is not.
std::string describe_nonfinite(const GlobalResult& g, int64_t step) {
  auto ranks = [](const std::vector<int>& v) {
    return fmt::format("{} {}", v.size() > 1 ? "ranks" : "rank", fmt::join(v, ", "));
  };
  std::string first, others;
  for (int k = 0; k < GlobalResult::kChecked; ++k) {
    if (g.bad[k].empty()) continue;
    if (first.empty()) {
      first = fmt::format("step {}: {} is not finite on {}", step, GlobalResult::kNames[k], ranks(g.bad[k]));
    } else {
      others += fmt::format("{}{} on {}", others.empty() ? "" : "; ", GlobalResult::kNames[k], ranks(g.bad[k]));
    }
  }
  return others.empty() ? first : fmt::format("{} ({})", first, others);
}

// Progress over a logging window: one console line and one metrics.jsonl line every log.every_steps.
class Progress {
 public:
  Progress(RunDirectory& run, const Config& cfg, const BatchPlan& plan, int64_t first_step, int64_t total_steps,
           Models& m)
      : run_(run), cfg_(cfg), plan_(plan), first_(first_step), total_(total_steps), m_(m) {}

  // Where one step's time went, as the loop measured it: the engine's submit and wait (engine_s; its
  // phases from the engine where it times them, the remainder `step_other`), the next batch (data_s),
  // the all-reduce of the step's results (comm_s, counted as comm_wait), and, as `rest`, everything
  // between the previous step's end and this one's begin (logging, samples, checkpoints, stop checks).
  void time_step(StepEngine& engine, double engine_s, double data_s, double comm_s, Clock::time_point begin,
                 Clock::time_point end) {
    double t[kTimes] = {};
    t[kRest] = std::chrono::duration<double>(begin - mark_).count();
    mark_ = end;
    t[kData] = data_s;
    double phases[kStepPhases] = {};
    double named = 0;
    if (engine.take_phase_seconds(phases))
      for (int p = 0; p < kStepPhases; ++p)
        if (p != static_cast<int>(StepPhase::other)) t[p] += phases[p], named += phases[p];
    t[static_cast<int>(StepPhase::comm_wait)] += comm_s;
    t[static_cast<int>(StepPhase::other)] += std::max(0.0, engine_s - named);
    for (int i = 0; i < kTimes; ++i) window_times_[i] += t[i], run_times_[i] += t[i];
  }

  // "time per step: ..." over the whole run, for the console at the end.
  std::string time_summary() const {
    const int64_t steps = std::max<int64_t>(run_steps_, 1);
    double total = 0;
    std::string parts;
    for (int i = 0; i < kTimes; ++i) {
      total += run_times_[i];
      parts += fmt::format("{}{} {:.1f}", i ? " | " : "", kTimeLabels[i], 1e3 * run_times_[i] / steps);
    }
    return fmt::format("time per step (ms): {} | total {:.1f}", parts, 1e3 * total / steps);
  }

  void add(const StepResult& r, int64_t done) {
    d_loss_ += r.d_loss, g_loss_ += r.g_loss, d_real_ += r.d_real, d_fake_ += r.d_fake;
    ++run_steps_;
    d_norm_ += r.d_grad_norm, g_norm_ += r.g_grad_norm;
    ++n_;
    const double ips = n_ * cfg_.train.batch_size / std::max(seconds_since(window_), 1e-9);
    const double eta = seconds_since(start_) / static_cast<double>(std::max<int64_t>(done - first_, 1)) * (total_ - done);
    const int64_t epoch = plan_.epoch_of(done - 1);
    // On a terminal, every other step redraws one line in place (run_dir.h); the lines below stay in the scrollback.
    const bool log_now = done % cfg_.log.every_steps == 0 || done == total_;
    if (run_.live() && !log_now)
      run_.status(fmt::format("step {}/{} ({:.0f}%) | epoch {} | {:.0f} img/s | d_loss {:.4f} | g_loss {:.4f} | "
                              "D(x) {:.3f} | D(G(z)) {:.3f} | eta {}",
                              done, total_, 100.0 * done / std::max<int64_t>(total_, 1), epoch, ips, d_loss_ / n_,
                              g_loss_ / n_, d_real_ / n_, d_fake_ / n_, fmt_duration(eta)),
                  false);
    if (!log_now) return;
    // The window ends now: what happened since the last step's end is its `rest`.
    const Clock::time_point now = Clock::now();
    const double since_mark = std::chrono::duration<double>(now - mark_).count();
    window_times_[kRest] += since_mark, run_times_[kRest] += since_mark;
    mark_ = now;
    const double window_s = std::chrono::duration<double>(now - window_).count();
    run_.line("step {:>6}/{} | epoch {} | d_loss {:.4f} | g_loss {:.4f} | D(x) {:.3f} | D(G(z)) {:.3f} | {:.0f} img/s | "
              "eta {}",
              done, total_, epoch, d_loss_ / n_, g_loss_ / n_, d_real_ / n_, d_fake_ / n_, ips, fmt_duration(eta));
    std::vector<std::pair<std::string, double>> values = {{"epoch", static_cast<double>(epoch)},
                        {"d_loss", d_loss_ / n_},
                        {"g_loss", g_loss_ / n_},
                        {"d_real", d_real_ / n_},
                        {"d_fake", d_fake_ / n_},
                        {"d_grad_norm", d_norm_ / n_},
                        {"g_grad_norm", g_norm_ / n_},
                        {"images_per_sec", ips},
                        {"lr_g", m_.opt_g->lr()},
                        {"lr_d", m_.opt_d->lr()}};
    for (auto& kv : timing_metrics(window_s)) values.push_back(std::move(kv));
    run_.metrics(done, values);
    d_loss_ = g_loss_ = d_real_ = d_fake_ = d_norm_ = g_norm_ = 0, n_ = 0;
    std::fill(std::begin(window_times_), std::end(window_times_), 0.0);
    window_ = now;
  }
  double minutes() const { return seconds_since(start_) / 60.0; }
  double seconds() const { return seconds_since(start_); }

 private:
  // The timing breakdown's parts: the step's phases (StepPhase order; `other` is the engine's time
  // outside its named phases), then data and rest.
  static constexpr int kData = kStepPhases, kRest = kStepPhases + 1, kTimes = kStepPhases + 2;
  static constexpr const char* kTimeKeys[kTimes] = {"ms_g_forward", "ms_d_forward_backward", "ms_g_backward",
                                                     "ms_comm_wait", "ms_optimizer", "ms_step_other", "ms_data",
                                                     "ms_rest"};
  static constexpr const char* kTimeLabels[kTimes] = {"G forward", "D forward+backward", "G backward",
                                                       "comm wait", "optimizer", "step other", "data", "rest"};

  // The window's breakdown in milliseconds per step, and ms_step: the window's wall time per step.
  std::vector<std::pair<std::string, double>> timing_metrics(double window_s) const {
    std::vector<std::pair<std::string, double>> v;
    for (int i = 0; i < kTimes; ++i) v.emplace_back(kTimeKeys[i], 1e3 * window_times_[i] / n_);
    v.emplace_back("ms_step", 1e3 * window_s / n_);
    return v;
  }

  RunDirectory& run_;
  const Config& cfg_;
  const BatchPlan& plan_;
  int64_t first_, total_;
  Models& m_;
  double d_loss_ = 0, g_loss_ = 0, d_real_ = 0, d_fake_ = 0, d_norm_ = 0, g_norm_ = 0;
  int n_ = 0;
  int64_t run_steps_ = 0;
  double window_times_[kTimes] = {}, run_times_[kTimes] = {};
  Clock::time_point start_ = Clock::now(), window_ = start_, mark_ = start_;
};

// Sample grids and checkpoints of a run: every rank takes part (samples are generated in shares),
// rank 0 writes, verifies and thins out the checkpoints.
class Outputs {
 public:
  Outputs(RunDirectory& run, const Config& cfg, const std::string& config_yaml, const RunInputs& in, Models& m,
          StepEngine& engine, Communicator& comm)
      : run_(run), cfg_(cfg), config_yaml_(config_yaml), in_(in), m_(m), engine_(engine), comm_(comm),
        z_({cfg.log.sample_count, in.spec.nz}) {
    fill_noise(z_.f32(), cfg.log.sample_count, in.spec.nz, static_cast<uint64_t>(cfg.run.seed), kSampleNoiseStep, 0);
  }

  void samples(int64_t step) {
    samples_path = run_.sample_path(step);
    const int cols = std::max(1, static_cast<int>(std::lround(std::sqrt(static_cast<double>(z_.dim(0))))));
    Tensor images = generate_across_ranks([&](const Tensor& z) { return engine_.generate(z); }, z_, comm_);
    if (run_.writer()) run_.sample_grid(step, write_grid_png(samples_path, images, cols));
  }

  // Rank 0: the host models at `step` into a new checkpoint (never over an existing file), read back
  // and verified, then retention. Non-finite weights are never written. Other ranks: nothing.
  void checkpoint(int64_t step) {
    checkpoint_path = run_.checkpoint_path(step);
    if (!run_.writer()) return;
    engine_.sync_to_host();
    Checkpoint ck;
    ck.meta.step = step;
    ck.meta.epoch = in_.plan->epoch_of(std::max<int64_t>(step - 1, 0));
    ck.meta.images_seen = step * cfg_.train.batch_size;
    ck.meta.world_size = comm_.world_size();
    ck.meta.seed = cfg_.run.seed;
    ck.meta.resolution = in_.spec.resolution;
    ck.meta.alpha = 1.0;  // progressive fade-in: none for DCGAN
    ck.meta.config_yaml = config_yaml_;
    ck.meta.code_version = std::string(version()) + "+" + git_revision();
    // RNG and data cursor: every draw is keyed by (seed, step, index), so the step is the whole state.
    ck.meta.ints["data_cursor_step"] = step;
    ck.meta.ints["dataset_size"] = in_.dataset_size;
    ck.meta.ints["nan_rollbacks"] = nan_rollbacks;
    ck.meta.ints["unix_time"] = static_cast<int64_t>(std::time(nullptr));
    // The state of later features, in every checkpoint so a resume never has to guess: progressive
    // growing (phase, images into the fade-in) and the large-batch plan (micro-batches per step).
    ck.meta.ints["phase"] = 0;
    ck.meta.ints["fade_images"] = 0;
    ck.meta.ints["accumulation_steps"] = 1;
    export_state_dict(m_.G, "G/params", ck.groups);
    export_state_dict(m_.D, "D/params", ck.groups);
    export_optimizer(*m_.opt_g, "G/optim", ck.groups);
    export_optimizer(*m_.opt_d, "D/optim", ck.groups);
    const std::string bad = first_nonfinite_tensor(ck);
    if (!bad.empty())
      runtime_error("refusing to write the checkpoint of step {}: /{} is not finite (the earlier checkpoints are "
                    "untouched)",
                    step, bad);
    std::error_code ec;
    if (std::filesystem::exists(checkpoint_path, ec)) {
      // Only a run resumed from an older checkpoint of its own directory gets here: keep the abandoned one.
      const std::string aside = checkpoint_path + ".superseded";
      std::filesystem::rename(checkpoint_path, aside, ec);
      run_.line("note: kept the earlier {} as {}", checkpoint_path, aside);
    }
    save_checkpoint(checkpoint_path, ck);
    const std::string problem = checkpoint_problem(checkpoint_path);
    if (!problem.empty()) runtime_error("the checkpoint just written does not read back: {}", problem);
    last_good = checkpoint_path;
    last_time_ = Clock::now();
    const RetentionPolicy policy{cfg_.checkpoint.keep_last, cfg_.checkpoint.keep_every_hours};
    for (const std::string& gone : apply_retention(run_.path() / "checkpoints", policy, checkpoint_path))
      run_.line("retention: deleted {}", gone);
  }

  // Rank 0: checkpoint.every_minutes have passed since the last checkpoint (or the start).
  bool minutes_due() const {
    return run_.writer() && cfg_.checkpoint.every_minutes > 0 &&
           seconds_since(last_time_) >= cfg_.checkpoint.every_minutes * 60.0;
  }

  std::string samples_path, checkpoint_path;
  std::string last_good;      // rank 0: the newest checkpoint that validates (written, or resumed from)
  int64_t nan_rollbacks = 0;  // rollbacks in this run so far, resumes included

 private:
  RunDirectory& run_;
  const Config& cfg_;
  const std::string& config_yaml_;
  const RunInputs& in_;
  Models& m_;
  StepEngine& engine_;
  Communicator& comm_;
  Tensor z_;
  Clock::time_point last_time_ = Clock::now();
};

// The SWD of G's samples (log.swd_every_steps): every rank measures its share, rank 0 writes one
// metrics.jsonl line of its own for the step ({"step", "swd", "swd_<res>"...}, x1e3 as `gantrain eval`
// prints) and a console line.
class SwdMetric {
 public:
  SwdMetric(const Config& cfg, const RunInputs& in, Communicator& comm)
      : hook_(cfg.log, static_cast<uint64_t>(cfg.run.seed), *in.source, in.spec.resolution, in.spec.channels,
              in.spec.nz, comm) {}

  void measure(RunDirectory& run, StepEngine& engine, int64_t step) {
    if (step == last_step_) return;  // a run that ends where it measured (a resume that trains no step)
    last_step_ = step;
    const Clock::time_point t0 = Clock::now();
    const SwdResult r = hook_.measure([&](const Tensor& z) { return engine.generate(z); });
    std::vector<std::pair<std::string, double>> values = {{"swd", r.average * 1e3}};
    std::string levels;
    for (size_t l = 0; l < r.per_level.size(); ++l) {
      values.emplace_back(fmt::format("swd_{}", r.resolutions[l]), r.per_level[l] * 1e3);
      levels += fmt::format(" | {} {:.4f}", r.resolutions[l], r.per_level[l] * 1e3);
    }
    run.metrics(step, values);
    run.line("swd x1e3 at step {}: avg {:.4f}{} ({} images, {:.1f} s)", step, r.average * 1e3, levels, hook_.images(),
             seconds_since(t0));
  }

 private:
  SwdHook hook_;
  int64_t last_step_ = -1;
};

// Parameters, buffers and optimizer state of a checkpoint into the host models; UserError naming the
// file and tensor when one is missing or shaped otherwise.
void load_models(Models& m, const Checkpoint& ck, const std::string& source) {
  import_state_dict(m.G, ck, "G/params", source);
  import_state_dict(m.D, ck, "D/params", source);
  import_optimizer(*m.opt_g, ck, "G/optim", source);
  import_optimizer(*m.opt_d, ck, "D/optim", source);
}

// What a resumed run takes from its checkpoint besides the models.
struct Resumed {
  int64_t step = 0;
  int64_t nan_rollbacks = 0;
  int64_t world_size = 0;  // the checkpoint's (0: a new run)
  std::vector<std::string> changes;  // accepted config changes, "key: old -> new"
};

// A checkpoint this run cannot continue whatever its state (another model, optimizer, batch, seed or
// dataset): a UserError naming the key. Returns the accepted config changes.
std::vector<std::string> check_continuable(const Checkpoint& ck, const std::string& path, const std::string& config_yaml,
                                           const RunInputs& in) {
  std::vector<std::string> changes = check_resumable(ck.meta.config_yaml, config_yaml, path);
  auto it = ck.meta.ints.find("dataset_size");
  if (it != ck.meta.ints.end() && it->second != in.dataset_size)
    user_error("cannot resume from {}: it was trained on {} images and the data now has {} (data.path or "
               "data.source names another dataset)",
               path, it->second, in.dataset_size);
  return changes;
}

// What "validates" means for this run (train/resume.h): the file reads with every checksum verified, its
// values are finite, its embedded config parses, and its tensors load into this run's models. A config
// this run cannot continue throws instead.
std::string validate_for_run(const std::string& path, const Config& cfg, const std::string& config_yaml,
                             const RunInputs& in) {
  Checkpoint ck;
  try {
    ck = load_checkpoint(path);
    const std::string bad = first_nonfinite_tensor(ck);
    if (!bad.empty()) return fmt::format("checkpoint {} holds non-finite values (/{})", path, bad);
    parse_config(ck.meta.config_yaml, path + ":/meta/config");
  } catch (const std::exception& e) {
    return e.what();
  }
  check_continuable(ck, path, config_yaml, in);
  try {
    std::unique_ptr<Models> scratch = make_models(cfg, in.spec);
    load_models(*scratch, ck, path);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

Resumed resume_from(const std::string& path, const std::string& config_yaml, const RunInputs& in, Models& m) {
  const Checkpoint ck = load_checkpoint(path);
  Resumed r;
  r.changes = check_continuable(ck, path, config_yaml, in);
  load_models(m, ck, path);
  r.step = ck.meta.step;
  r.world_size = ck.meta.world_size;
  auto it = ck.meta.ints.find("nan_rollbacks");
  if (it != ck.meta.ints.end()) r.nan_rollbacks = it->second;
  return r;
}

void print_banner(RunDirectory& run, const Config& cfg, const RunInputs& in, Communicator& comm, StepEngine& engine,
                  const Loader& loader, Models& m, const std::vector<std::string>& rank_lines) {
  const int P = comm.world_size();
  run.line("gantrain {} ({}) | run {} | {}", version(), git_revision(), run.path().string(), engine.describe());
  run.line("ranks: {} ({} communicator) | {} images per rank per step | batch norm {}", P, comm.backend(),
           loader.shard_size(),
           P == 1 ? "over the batch" : cfg.dist.sync_bn ? "synchronized over the ranks" : "per rank (dist.sync_bn false)");
  if (P > 1)
    for (int r = 0; r < P; ++r) run.line("  rank {}: {}", r, rank_lines[static_cast<size_t>(r)]);
  run.line("data: {}", in.source->describe());
  run.line("loader: {} images per step on this rank (positions {}..{}) | {}", loader.shard_size(), loader.shard_first(),
           loader.shard_first() + loader.shard_size() - 1,
           loader.threads() > 0
               ? fmt::format("{} batches read ahead by {} thread{} ({:.1f} MiB at most)", cfg.data.prefetch_batches,
                             loader.threads(), loader.threads() > 1 ? "s" : "", loader.memory_bytes_limit() / 1048576.0)
               : std::string("read on the training thread"));
  run.line("model: dcgan {}x{}x{} nz {} | G {} params | D {} params", in.spec.channels, in.spec.resolution,
           in.spec.resolution, in.spec.nz, m.G.param_count(), m.D.param_count());
  run.line("plan: batch {} | {} steps per epoch | {} steps | optim G {} lr {} | D {} lr {}", cfg.train.batch_size,
           in.plan->steps_per_epoch(), in.total_steps, choice_name(cfg.optim_g.kind), cfg.optim_g.lr,
           choice_name(cfg.optim_d.kind), cfg.optim_d.lr);
}

bool due(int64_t every, int64_t done, int64_t total) { return every > 0 && done % every == 0 && done != total; }

}  // namespace

DcganSpec dcgan_spec(const ModelConfig& m) {
  if (m.arch != "dcgan") user_error("model.arch '{}' is not supported (dcgan)", m.arch);
  return DcganSpec{m.nz, m.g_width, m.d_width, m.resolution, m.channels, m.leaky_slope};
}

int set_cpu_threads(int threads) {
  const int n = threads > 0 ? threads : omp_get_num_procs();
  // OpenBLAS itself stays single-threaded: the CPU engine splits GEMMs over OpenMP threads (nn/cpu/gemm.cpp).
  omp_set_num_threads(n);
  return n;
}

TrainSummary train(const Config& cfg) {
  std::unique_ptr<Communicator> comm = open_communicator(cfg.dist.backend, cfg.dist.timeout_s);
  return train(cfg, *comm);
}

TrainSummary train(const Config& cfg, Communicator& comm) {
  comm.set_timeout(cfg.dist.timeout_s);
  const std::string config_yaml = config_to_yaml(cfg);
  check_same_config_and_build(comm, config_yaml);
  const RunInputs in = check_inputs(cfg, comm);
  TrainSummary sum;

  // How this run starts: rank 0 reads the run directory and decides for every rank.
  const StartPlan start = agree_start(
      cfg, in.total_steps, [&](const std::string& path) { return validate_for_run(path, cfg, config_yaml, in); }, comm);
  if (start.kind == StartKind::finished) {
    if (comm.rank() == 0) {
      fmt::print("{}\n", start.first_line);
      std::ofstream(std::filesystem::path(start.run_dir) / "train.log", std::ios::app) << start.first_line << "\n";
    }
    sum.already_finished = true;
    sum.steps = start.step;
    sum.run_dir = start.run_dir;
    sum.checkpoint_path = start.checkpoint;
    return sum;
  }

  // run.threads 0: this rank's cores (mpirun may bind it to some), shared with the node's other ranks.
  set_cpu_threads(cfg.run.threads > 0 ? cfg.run.threads : std::max(1, omp_get_num_procs() / comm.local_size()));
  std::unique_ptr<Models> m = make_models(cfg, in.spec);
  Resumed resumed;
  if (!start.checkpoint.empty())
    run_agreed(comm, [&] { resumed = resume_from(start.checkpoint, config_yaml, in, *m); });
  const int64_t first = resumed.step;
  GanModels host = m->view();
  const EngineOptions eo = engine_options(cfg, comm, in);
  std::unique_ptr<StepEngine> engine = make_engine(eo, host, comm);
  // The SWD's real images are read before the loader's threads read the same source.
  std::optional<SwdMetric> swd;
  if (cfg.log.swd_every_steps > 0) run_agreed(comm, [&] { swd.emplace(cfg, in, comm); });
  Loader loader(*in.source, loader_options(cfg, comm, *engine, first, in.total_steps));
  GT_CHECK(loader.shard_size() == eo.local_batch && loader.shard_first() == eo.shard_first,
           "loader shard {}+{} differs from the engine's {}+{}", loader.shard_first(), loader.shard_size(),
           eo.shard_first, eo.local_batch);
  const std::vector<std::string> rank_lines =
      preflight(comm, fmt::format("{} (pid {}, local rank {} of {}), {}", comm.host(), getpid(), comm.local_rank(),
                                  comm.local_size(), engine->describe()));

  RunDirectory run(start.run_dir, config_yaml, comm.rank() == 0, start.in_place, first, cfg.log.tensorboard);
  run.line("{}", start.first_line);
  for (const std::string& note : start.notes) run.line("{}", note);
  for (const std::string& change : resumed.changes) run.line("config changed since the checkpoint: {}", change);
  if (resumed.world_size > 0 && resumed.world_size != comm.world_size())
    run.line("elastic resume: the checkpoint was written by {} ranks, this run has {} (the same global batch {})",
             resumed.world_size, comm.world_size(), cfg.train.batch_size);
  print_banner(run, cfg, in, comm, *engine, loader, *m, rank_lines);
  Outputs out(run, cfg, config_yaml, in, *m, *engine, comm);
  out.nan_rollbacks = resumed.nan_rollbacks;
  if (!start.checkpoint.empty()) out.last_good = start.checkpoint;
  const int stop_signal_number = cfg.train.stop_signal == StopSignal::usr1   ? SIGUSR1
                                 : cfg.train.stop_signal == StopSignal::usr2 ? SIGUSR2
                                 : cfg.train.stop_signal == StopSignal::hup  ? SIGHUP
                                                                             : 0;
  SignalGuard signals(stop_signal_number);

  // Two host batches: the loader fills one while the engine (a GPU's, asynchronously) reads the other.
  Tensor batches[2] = {engine->make_batch_buffer(loader.batch_shape(), loader.batch_dtype()),
                       engine->make_batch_buffer(loader.batch_shape(), loader.batch_dtype())};
  Progress progress(run, cfg, *in.plan, first, in.total_steps, *m);  // the run's clock starts here
  const int64_t total = in.total_steps;
  if (swd && first == 0 && total > 0) swd->measure(run, *engine, 0);  // the untrained G: where the curve starts
  if (first < total) loader.next(batches[first % 2]);
  int64_t step = first;
  for (; step < total; ++step) {
    fault_point("step");
    Tensor& batch = batches[step % 2];
    inject_fault_if_due(in.fault, comm.rank(), step);
    if (nan_fault_due(in.fault, comm.rank(), step) && batch.dtype() == DType::f32)
      std::fill_n(batch.f32(), batch.numel(), std::numeric_limits<float>::quiet_NaN());
    const Clock::time_point t0 = Clock::now();
    engine->submit(batch, step);
    const Clock::time_point t1 = Clock::now();
    if (step + 1 < total) loader.next(batches[(step + 1) % 2]);  // while the step runs (on a GPU)
    const Clock::time_point t2 = Clock::now();
    const StepResult local = engine->wait();
    const Clock::time_point t3 = Clock::now();
    const GlobalResult g = global_result(local, comm);
    const Clock::time_point t4 = Clock::now();
    auto secs = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    progress.time_step(*engine, secs(t0, t1) + secs(t2, t3), secs(t1, t2), secs(t3, t4), t0, t4);
    const int64_t done = step + 1;
    if (!g.finite()) {
      // The NaN guard: every rank has the same verdict, so every rank takes the same way.
      const std::string what = describe_nonfinite(g, done);
      if (cfg.train.nan_policy == NanPolicy::stop)
        throw AgreedRuntimeError(fmt::format("{}; stopping (train.nan_policy stop). Lower the learning rate, enable "
                                             "train.clip_grad_norm, or set train.nan_policy rollback",
                                             what));
      const std::string back_to = broadcast_string(comm, out.last_good, 0);
      if (back_to.empty())
        throw AgreedRuntimeError(fmt::format("{}, before the run's first checkpoint: nothing to roll back to; stopping",
                                             what));
      if (out.nan_rollbacks >= cfg.train.nan_max_rollbacks)
        throw AgreedRuntimeError(fmt::format("{}; stopping after {} rollbacks (train.nan_max_rollbacks)", what,
                                             out.nan_rollbacks));
      run_agreed(comm, [&] { load_models(*m, load_checkpoint(back_to), back_to); });
      engine->load_from_host();
      ++out.nan_rollbacks;
      run.line("{}; rolled back to {} (rollback {} of at most {}), going on with the next batch", what, back_to,
               out.nan_rollbacks, cfg.train.nan_max_rollbacks);
      continue;
    }
    progress.add(g.r, done);
    if (due(cfg.log.sample_every_steps, done, total)) out.samples(done);
    if (swd && due(cfg.log.swd_every_steps, done, total)) swd->measure(run, *engine, done);
    if (due(cfg.checkpoint.every_steps, done, total) || (done != total && out.minutes_due())) out.checkpoint(done);
    // Stop requests agreed by all ranks, so that they all leave after the same step: a signal any rank
    // received, or a time limit any rank's clock reached.
    int64_t stop[2] = {signals.stop_signal(), cfg.train.max_minutes > 0 && progress.minutes() >= cfg.train.max_minutes};
    comm.all_reduce(stop, 2, ReduceOp::max);
    if (stop[1] && done != total) {
      run.line("time limit train.max_minutes={} reached after {} steps: stopping with a checkpoint", cfg.train.max_minutes,
               done);
      sum.stopped_by_time = true;
      ++step;
      break;
    }
    if (stop[0] != 0 && done != total) {
      run.line("signal {} received: stopping after step {} with a checkpoint", stop[0], done);
      sum.stopped_by_signal = true;
      ++step;
      break;
    }
  }

  const double seconds = progress.seconds();
  sum.steps = step;
  sum.images_per_second = (step - first) * cfg.train.batch_size / std::max(seconds, 1e-9);
  out.samples(step);
  if (swd) swd->measure(run, *engine, step);
  engine->sync_to_host();  // every rank: the parameter check below reads the host models
  out.checkpoint(step);
  const std::vector<int> drifted = ranks_with_other_parameters(comm, m->G, m->D);
  if (!drifted.empty())
    run.line("warning: ranks {} hold parameters that differ from rank 0's: the all-reduce did not give every rank the "
             "same bits (docs/distributed.md)",
             fmt::format("{}", fmt::join(drifted, ", ")));
  run.line("{}: {} steps in {} ({:.0f} img/s, {:.1f} s waiting for data)",
           sum.stopped_by_signal || sum.stopped_by_time ? "stopped" : "done", step - first, fmt_duration(seconds),
           sum.images_per_second, loader.wait_seconds());
  run.line("{}", progress.time_summary());
  if (sum.stopped_by_signal || sum.stopped_by_time)
    run.line("to continue, run the same command again (checkpoint.resume auto); exit code {}", 3);
  run.line("samples:    {}", out.samples_path);
  run.line("metrics:    {}", run.metrics_path());
  run.line("checkpoint: {}", out.checkpoint_path);
  sum.run_dir = run.path().string();
  sum.metrics_path = run.metrics_path();
  sum.samples_path = out.samples_path;
  sum.checkpoint_path = out.checkpoint_path;
  return sum;
}

}  // namespace gt
