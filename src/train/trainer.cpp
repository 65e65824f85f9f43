// The training loop of one rank (a single process is rank 0 of 1). See docs/user-guide.md and docs/distributed.md.
#include "train/trainer.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <cmath>
#include <omp.h>
#include <optional>
#include <unistd.h>

#include "core/fault_point.h"
#include "core/version.h"
#include "data/image_source.h"
#include "data/loader.h"
#include "io/checkpoint.h"
#include "nn/dcgan.h"
#include "nn/progan.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/fault_injection.h"
#include "parallel/launch.h"
#include "train/engine.h"
#include "train/model_state.h"
#include "train/progressive.h"
#include "train/resume.h"
#include "train/run_dir.h"
#include "train/run_hooks.h"
#include "train/run_setup.h"
#include "train/swd_meter.h"
#if GANTRAIN_HAVE_CUDA
#include "cuda/device.h"
#endif

namespace gt {

namespace {

using Clock = std::chrono::steady_clock;

// run.device on this rank: auto is cuda when this rank sees a usable GPU (the ranks then agree).
bool wants_cuda(DeviceChoice device) {
  if (device != DeviceChoice::automatic) return device == DeviceChoice::cuda;
#if GANTRAIN_HAVE_CUDA
  return cuda::query_devices().count > 0;
#else
  return false;
#endif
}

// Everything a run reads and decides before anything is written, on every rank (train/run_setup.h). A
// problem on any rank stops all of them, reported once.
RunInputs check_inputs(const Config& cfg, Communicator& comm) {
  RunInputs in;
  const int P = comm.world_size();
  const int64_t B = cfg.train.batch_size;
  // run.device auto: cuda only when every rank has a GPU, so that all ranks run the same engine.
  int64_t cuda = wants_cuda(cfg.run.device);
  if (cfg.run.device == DeviceChoice::automatic) comm.all_reduce(&cuda, 1, ReduceOp::min);
  in.device = cuda ? Device::cuda : Device::cpu;
  const bool progressive = cfg.model.arch == "progan";
  run_agreed(comm, [&] {
    if (progressive) {
      // The final model's sizes travel in in.spec (channels, resolution, nz); the phases in in.progan.
      in.progan_spec = progan_spec(cfg.model);
      in.progan = progan_schedule(cfg);
      in.spec.nz = cfg.model.nz;
      in.spec.channels = cfg.model.channels;
      in.spec.resolution = cfg.model.resolution;
    } else {
      in.spec = dcgan_spec(cfg.model);
    }
    check_backend_for_device(cfg.dist.backend, in.device == Device::cuda, cfg.run.device);
    double budget = 0;
    std::string source;
    if (cfg.train.memory_mb > 0) {
      budget = cfg.train.memory_mb * 1048576.0;
      source = fmt::format("train.memory_mb {}", cfg.train.memory_mb);
    } else if (in.device == Device::cuda && comm.rank() == 0 && cfg.train.micro_batch == 0) {
#if GANTRAIN_HAVE_CUDA
      budget = 0.8 * static_cast<double>(cuda::free_memory_bytes());
      source = fmt::format("80% of rank 0's free GPU memory, {:.0f} MiB", budget / 1048576.0);
#endif
    }
    // The large-batch plan, first (a batch that does not divide over the ranks stops here): rank 0's budget
    // decides (free GPU memory may differ between ranks). Progressive growing: one plan per phase, each
    // micro-batch a multiple of the minibatch-stddev group.
    if (progressive) {
      for (const ProganPhase& phase : in.progan->phases)
        in.phase_plans.push_back(plan_progan_phase(in.progan_spec, phase, gan_objective(cfg), P, cfg.train.micro_batch,
                                                   comm.rank() == 0 ? budget : 0.0, source,
                                                   cfg.progan.batch.empty() ? "train.batch_size" : "progan.batch"));
      in.large_batch = in.phase_plans.front();
    } else {
      Sequential G = make_dcgan_generator(in.spec), D = make_dcgan_discriminator(in.spec);
      const double per_image = step_bytes_per_image(G, D, in.spec.nz, gan_objective(cfg));
      in.large_batch =
          plan_large_batch(B, P, cfg.train.micro_batch, comm.rank() == 0 ? budget : 0.0, per_image, source);
    }
    in.fault = fault_plan_from_env(process_env());
    in.source = open_image_source(cfg.data, in.spec.channels, in.spec.resolution, static_cast<uint64_t>(cfg.run.seed));
    if (in.progan) {  // each phase reads its own batches (its loader's epochs); the largest must fit the data
      for (const ProganPhase& p : in.progan->phases)
        if (p.batch > in.source->size())
          user_error("the {} phase's batch {} ({}) is larger than the data set ({} images)", p.name(), p.batch,
                     cfg.progan.batch.empty() ? "train.batch_size" : "progan.batch", in.source->size());
      in.plan.emplace(in.source->size(), in.progan->phases.front().batch, static_cast<uint64_t>(cfg.run.seed));
    } else {
      in.plan.emplace(in.source->size(), B, static_cast<uint64_t>(cfg.run.seed));
    }
    check_swd_config(cfg.log, in.spec.resolution, in.source->size());
  });
  in.large_batch = agree_large_batch(in.large_batch, comm);
  for (LargeBatchPlan& plan : in.phase_plans) plan = agree_large_batch(plan, comm);
  in.total_steps = planned_steps(cfg.train, in.plan->steps_per_epoch());
  if (in.progan) {  // the phases' steps; train.max_steps, when set, ends the run earlier
    in.total_steps = in.progan->total_steps();
    if (cfg.train.max_steps > 0) in.total_steps = std::min(in.total_steps, cfg.train.max_steps);
  }
  in.dataset_size = in.source->size();
  return in;
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
  e.micro_batch = in.large_batch.micro_batch;
  e.seed = static_cast<uint64_t>(cfg.run.seed);
  e.clip_grad_norm = cfg.train.clip_grad_norm;
  e.flip = cfg.data.flip;
  e.sync_bn = cfg.dist.sync_bn;  // false leaves each rank's batch norm to its shard; rank 0's statistics are saved
  // Gradients summed over the ranks in buckets during backward (with one rank: nothing to do).
  e.bucket_bytes = std::max<int64_t>(1, static_cast<int64_t>(cfg.dist.bucket_mb * 1048576.0));
  e.reduce_type = cfg.dist.reduce_precision == ReducePrecision::bf16 ? ElemType::bf16 : ElemType::f32;
  e.nz = in.spec.nz;
  e.objective = gan_objective(cfg);
  e.ema = cfg.ema;
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
  // The loader counts batches: a step reads train.n_critic of them.
  o.first_step = first_step * cfg.train.n_critic;
  o.end_step = total_steps * cfg.train.n_critic;
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
  constexpr int kSums = 5;
  double v[kSums + GlobalResult::kChecked] = {r.d_loss, r.g_loss, r.d_real, r.d_fake, r.d_penalty};
  for (int k = 0; k < GlobalResult::kChecked; ++k) v[kSums + k] = flags[k] = !std::isfinite(checked[k]);
  comm.all_reduce(v, kSums + GlobalResult::kChecked, ReduceOp::sum);
  r.d_loss = v[0], r.g_loss = v[1], r.d_real = v[2], r.d_fake = v[3], r.d_penalty = v[4];
  g.r = r;
  bool any = false;
  for (int k = 0; k < GlobalResult::kChecked; ++k) any = any || v[kSums + k] > 0;
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

// What a resumed run takes from its checkpoint besides the models.
struct Resumed {
  int64_t step = 0;
  int64_t nan_rollbacks = 0;
  int64_t world_size = 0;  // the checkpoint's (0: a new run)
  std::vector<std::string> changes;  // accepted config changes, "key: old -> new"
  std::vector<std::string> notes;    // other lines for the log
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
    std::unique_ptr<Models> scratch = in.progan ? make_progan_models(cfg, in.progan_spec, in.progan->phase_after(ck.meta.step))
                                               : make_models(cfg, in.spec);
    load_models(*scratch, ck, path);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

Resumed resume_from(const std::string& path, const Config& cfg, const std::string& config_yaml, const RunInputs& in,
                    Models& m) {
  const Checkpoint ck = load_checkpoint(path);
  Resumed r;
  r.changes = check_continuable(ck, path, config_yaml, in);
  // A progressive run's models take the phase of the checkpoint's last step first.
  if (in.progan) move_to_phase(m, cfg, in.progan_spec, in.progan->phase_after(ck.meta.step));
  if (!load_models(m, ck, path))
    r.notes.push_back(fmt::format("G_ema starts from G: {} has no averaged generator (/G_ema)", path));
  r.step = ck.meta.step;
  r.world_size = ck.meta.world_size;
  auto it = ck.meta.ints.find("nan_rollbacks");
  if (it != ck.meta.ints.end()) r.nan_rollbacks = it->second;
  // Another batch plan sums the gradients over other micro-batches from here on (and, with batch norm,
  // normalizes with other statistics): allowed, and said.
  // (A rank count alone changes the share, not how it is split: no note for one pass each.)
  auto micro = ck.meta.ints.find("micro_batch"), accumulated = ck.meta.ints.find("accumulation_steps");
  const LargeBatchPlan& plan = in.plan_at(std::max<int64_t>(ck.meta.step - 1, 0));
  if (micro != ck.meta.ints.end() && accumulated != ck.meta.ints.end() &&
      (accumulated->second != plan.accumulation || (accumulated->second > 1 && micro->second != plan.micro_batch)))
    r.notes.push_back(fmt::format("batch plan changed: the checkpoint's steps accumulated {} micro-batch{} of {}, this "
                                  "run {} of {} ({} per rank per critic batch)",
                                  accumulated->second, accumulated->second > 1 ? "es" : "", micro->second,
                                  plan.accumulation, plan.micro_batch, plan.local_batch));
  return r;
}

void print_banner(RunDirectory& run, const Config& cfg, const RunInputs& in, Communicator& comm, StepEngine& engine,
                  const Loader& loader, Models& m, const std::vector<std::string>& rank_lines) {
  const int P = comm.world_size();
  run.line("gantrain {} ({}) | run {} | {}", version(), git_revision(), run.path().string(), engine.describe());
  run.line("ranks: {} ({} communicator) | {} images per rank per step | batch norm {}{}", P, comm.backend(),
           loader.shard_size(),
           in.progan ? "none in the model (progan)"
           : P == 1  ? "over the batch"
           : cfg.dist.sync_bn ? "synchronized over the ranks"
                              : "per rank (dist.sync_bn false)",
           P > 1 ? fmt::format(" | gradients summed in {} buckets of {} MiB", choice_name(cfg.dist.reduce_precision),
                               cfg.dist.bucket_mb)
                 : "");
  if (P > 1)
    for (int r = 0; r < P; ++r) run.line("  rank {}: {}", r, rank_lines[static_cast<size_t>(r)]);
  run.line("data: {}", in.source->describe());
  run.line("loader: {} images per step on this rank (positions {}..{}) | {}", loader.shard_size(), loader.shard_first(),
           loader.shard_first() + loader.shard_size() - 1,
           loader.threads() > 0
               ? fmt::format("{} batches read ahead by {} thread{} ({:.1f} MiB at most)", cfg.data.prefetch_batches,
                             loader.threads(), loader.threads() > 1 ? "s" : "", loader.memory_bytes_limit() / 1048576.0)
               : std::string("read on the training thread"));
  if (in.progan) {
    const ProganSpec& ps = in.progan_spec;
    run.line("model: progan {}x{}x{} nz {} | feature maps min({} / r, {}) | minibatch stddev groups of {} | {} phases, "
             "{} steps{}",
             ps.channels, ps.resolution, ps.resolution, ps.nz, ps.fmap_base, ps.fmap_max, ps.mbstd_group,
             in.progan->phases.size(), in.progan->total_steps(),
             in.total_steps < in.progan->total_steps() ? fmt::format(" (this run stops at {}: train.max_steps)", in.total_steps)
                                                       : "");
    run.line("optim G {} | D {} | {}", choice_name(cfg.optim_g.kind), choice_name(cfg.optim_d.kind),
             cfg.progan.reset_optimizer ? "fresh optimizer state every phase" : "optimizer state carried across phases");
    for (const ProganPhase& p : in.progan->phases)
      run.line("  phase {:>2}: {:<18} steps {}..{} | lr G {:.4g} D {:.4g} | {}", p.index, p.name(), p.first_step,
               p.first_step + p.steps - 1, p.lr_g, p.lr_d, in.phase_plans[static_cast<size_t>(p.index)].describe());
  } else {
    run.line("model: dcgan {}x{}x{} nz {} | G {} params | D {} params", in.spec.channels, in.spec.resolution,
             in.spec.resolution, in.spec.nz, m.G.param_count(), m.D.param_count());
    run.line("plan: batch {} | {} batches per epoch | {} steps{} | optim G {} lr {} | D {} lr {}", cfg.train.batch_size,
             in.plan->steps_per_epoch(), in.total_steps,
             cfg.train.n_critic > 1 ? fmt::format(" of {} D updates and 1 G update", cfg.train.n_critic) : "",
             choice_name(cfg.optim_g.kind), cfg.optim_g.lr, choice_name(cfg.optim_d.kind), cfg.optim_d.lr);
    run.line("batch plan: {}", in.large_batch.describe());
  }
  run.line("{}", describe_objective(cfg));
  if (cfg.train.lr_scaling != LrScaling::none || cfg.train.warmup_steps > 0)
    run.line("learning rates: x{:.4g} ({} scaling from batch {} to {}){} | G {:.4g} | D {:.4g} after the warmup",
             lr_factor(cfg.train, std::max<int64_t>(cfg.train.warmup_steps, 1) - 1), choice_name(cfg.train.lr_scaling),
             cfg.train.lr_base_batch, cfg.train.batch_size,
             cfg.train.warmup_steps > 0 ? fmt::format(", linear warmup over {} steps", cfg.train.warmup_steps) : "",
             cfg.optim_g.lr * lr_factor(cfg.train, cfg.train.warmup_steps),
             cfg.optim_d.lr * lr_factor(cfg.train, cfg.train.warmup_steps));
  if (cfg.ema.enabled())
    run.line("ema: G_ema = beta G_ema + (1 - beta) G after every G update, {}",
             cfg.ema.beta > 0 ? fmt::format("beta {}", cfg.ema.beta)
                              : fmt::format("half-life {} images{}", cfg.ema.half_life_images,
                                            cfg.ema.rampup > 0 ? fmt::format(", ramp-up {}", cfg.ema.rampup) : ""));
}

// The engine the hooks hold: the current phase's (progressive growing makes one per phase) behind one
// reference. For a progressive run it also turns the loader's full-resolution batches into the phase's real
// images (progan_reals) and G's samples back into full-resolution ones, so every grid of a run has one size.
class EngineSlot final : public StepEngine {
 public:
  EngineSlot(const RunInputs& in) : in_(in) {}
  void reset(std::unique_ptr<StepEngine> engine) { inner_ = std::move(engine); }
  // The phase and fade-in weight of the next submit() (progressive runs).
  void set_phase(const ProganPhase& phase, double alpha) {
    phase_ = &phase;
    alpha_ = alpha;
    inner_->set_fade_alpha(static_cast<float>(alpha));
  }

  std::string describe() const override { return inner_->describe(); }
  bool wants_u8_batches() const override { return !in_.progan && inner_->wants_u8_batches(); }
  Tensor make_batch_buffer(const Shape& shape, DType dtype) override { return inner_->make_batch_buffer(shape, dtype); }
  using StepEngine::submit;
  void submit(std::span<const Tensor> reals, int64_t step) override {
    if (!in_.progan) return inner_->submit(reals, step);
    GT_CHECK(phase_, "a progressive step without its phase");
    const int r = phase_->resolution;
    phase_reals_.resize(reals.size());
    for (size_t k = 0; k < reals.size(); ++k) {
      const Shape want = {reals[k].dim(0), reals[k].dim(1), r, r};
      if (!phase_reals_[k].defined() || phase_reals_[k].shape() != want)
        phase_reals_[k] = inner_->make_batch_buffer(want, DType::f32);
      progan_reals(reals[k], phase_reals_[k], phase_->fading, alpha_);
    }
    inner_->submit(phase_reals_, step);
  }
  StepResult wait() override { return inner_->wait(); }
  Tensor generate(const Tensor& z) override {
    Tensor images = inner_->generate(z);
    return in_.progan ? upsample_to(images, in_.spec.resolution) : images;
  }
  void sync_to_host() override { inner_->sync_to_host(); }
  void load_from_host() override { inner_->load_from_host(); }
  PhaseClock take_phase_seconds(double (&seconds)[kStepPhases]) override { return inner_->take_phase_seconds(seconds); }
  size_t device_bytes() const override { return inner_->device_bytes(); }
  void set_fade_alpha(float alpha) override { inner_->set_fade_alpha(alpha); }

 private:
  const RunInputs& in_;
  std::unique_ptr<StepEngine> inner_;
  const ProganPhase* phase_ = nullptr;
  double alpha_ = 1;
  std::vector<Tensor> phase_reals_;  // the phase's real images, alive until the next submit()
};

// The engine options of a progressive phase: its global batch, each rank's share and its micro-batches.
EngineOptions phase_engine_options(EngineOptions e, const LargeBatchPlan& plan, const Communicator& comm) {
  e.global_batch = plan.global_batch;
  e.local_batch = plan.local_batch;
  e.shard_first = comm.rank() * plan.local_batch;
  e.micro_batch = plan.micro_batch;
  return e;
}

}  // namespace

std::string describe_objective(const Config& cfg) {
  std::string s = fmt::format("objective: {}", choice_name(cfg.loss.objective));
  if (cfg.loss.drift > 0) s += fmt::format(" + drift {} * D(x)^2", cfg.loss.drift);
  if (cfg.loss.clip_critic > 0) s += fmt::format(" | D's weights clamped to +-{}", cfg.loss.clip_critic);
  if (cfg.loss.gp_weight > 0)
    s += fmt::format(" + gradient penalty {} * (||grad D(x_hat)|| - 1)^2{}", cfg.loss.gp_weight,
                     cfg.loss.gp_every > 1 ? fmt::format(" every {} critic batches (x{})", cfg.loss.gp_every,
                                                         cfg.loss.gp_every)
                                           : "");
  if (cfg.model.d_norm != NormChoice::batch)
    s += fmt::format(" | critic normalization {}", choice_name(cfg.model.d_norm));
  s += fmt::format(" | {} D update{} per G update", cfg.train.n_critic, cfg.train.n_critic > 1 ? "s" : "");
  s += cfg.train.g_fresh_noise ? " | the G update on noise of its own" : " | the G update on the last D update's fakes";
  return s;
}

GanObjective gan_objective(const Config& cfg) {
  GanObjective o;
  switch (cfg.loss.objective) {
    case Objective::nonsaturating: o.kind = LossKind::bce; break;
    case Objective::wgan: o.kind = LossKind::wasserstein; break;
    case Objective::hinge: o.kind = LossKind::hinge; break;
  }
  o.drift = cfg.loss.drift;
  o.clip_critic = cfg.loss.clip_critic;
  o.n_critic = cfg.train.n_critic;
  o.fresh_g_noise = cfg.train.g_fresh_noise;
  o.gp_weight = cfg.loss.gp_weight;
  o.gp_every = cfg.loss.gp_every;
  return o;
}

DcganSpec dcgan_spec(const ModelConfig& m) {
  if (m.arch != "dcgan") user_error("model.arch '{}' is not supported (dcgan)", m.arch);
  DcganSpec s{m.nz, m.g_width, m.d_width, m.resolution, m.channels, m.leaky_slope};
  auto kind = [](NormChoice c) {
    switch (c) {
      case NormChoice::layer: return NormKind::layer;
      case NormChoice::none: return NormKind::none;
      case NormChoice::batch: break;
    }
    return NormKind::batch;
  };
  s.d_norm = kind(m.d_norm);
  s.g_norm = kind(m.g_norm);
  return s;
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
  // A progressive run's models start in the phase of the step it continues from (they grow in the loop).
  std::unique_ptr<Models> m = in.progan ? make_progan_models(cfg, in.progan_spec, in.progan->phase_after(start.step))
                                        : make_models(cfg, in.spec);
  Resumed resumed;
  if (!start.checkpoint.empty())
    run_agreed(comm, [&] { resumed = resume_from(start.checkpoint, cfg, config_yaml, in, *m); });
  const int64_t first = resumed.step;
  // Resumed at the end of a phase: grow into the next one before anything is built on the models.
  if (in.progan && in.progan->phase_at(first).index != in.progan->phase_after(first).index)
    move_to_phase(*m, cfg, in.progan_spec, in.progan->phase_at(first));
  GanModels host = m->view();
  const EngineOptions base_options = engine_options(cfg, comm, in);
  EngineOptions eo = base_options;
  // The engine of the phase the models are in (progressive), or of the run.
  int model_phase = in.progan ? in.progan->phase_at(first).index : 0;
  auto make_phase_engine = [&] {
    host = m->view();
    if (in.progan) eo = phase_engine_options(base_options, in.phase_plans[static_cast<size_t>(model_phase)], comm);
    eo.ema_host = m->G_ema.get();
    return make_engine(eo, host, comm);
  };
  auto engine = std::make_unique<EngineSlot>(in);
  engine->reset(make_phase_engine());
  // The SWD's real images are read before the loader's threads read the same source.
  std::unique_ptr<SwdMeter> swd;
  if (cfg.log.swd_every_steps > 0)
    run_agreed(comm, [&] {
      swd = std::make_unique<SwdMeter>(cfg.log, static_cast<uint64_t>(cfg.run.seed), *in.source, in.spec.resolution,
                                       in.spec.channels, in.spec.nz, comm);
    });
  // The loader of the segment that holds `step`: the whole run, or a progressive phase (its own batch, and its
  // own data order: the seed mixed with the phase).
  auto segment_end = [&](int64_t step) {
    if (!in.progan) return in.total_steps;
    const ProganPhase& p = in.progan->phase_at(step);
    return std::min(in.total_steps, p.first_step + p.steps);
  };
  auto make_loader = [&](int64_t step) {
    LoaderOptions o = loader_options(cfg, comm, *engine, step, in.total_steps);
    if (in.progan) {
      const ProganPhase& p = in.progan->phase_at(step);
      o.global_batch = p.batch;
      o.first_step = (step - p.first_step) * cfg.train.n_critic;
      o.end_step = (segment_end(step) - p.first_step) * cfg.train.n_critic;
      o.seed = static_cast<uint64_t>(cfg.run.seed) ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(p.index + 1));
    }
    auto loader = std::make_unique<Loader>(*in.source, o);
    GT_CHECK(loader->shard_size() == eo.local_batch && loader->shard_first() == eo.shard_first,
             "loader shard {}+{} differs from the engine's {}+{}", loader->shard_first(), loader->shard_size(),
             eo.shard_first, eo.local_batch);
    return loader;
  };
  std::unique_ptr<Loader> loader = make_loader(first);
  const std::vector<std::string> rank_lines =
      preflight(comm, fmt::format("{} (pid {}, local rank {} of {}), {}", comm.host(), getpid(), comm.local_rank(),
                                  comm.local_size(), engine->describe()));

  RunDirectory run(start.run_dir, config_yaml, comm.rank() == 0, start.in_place, first, cfg.log.tensorboard);
  run.line("{}", start.first_line);
  for (const std::string& note : start.notes) run.line("{}", note);
  for (const std::string& change : resumed.changes) run.line("config changed since the checkpoint: {}", change);
  for (const std::string& note : resumed.notes) run.line("{}", note);
  if (resumed.world_size > 0 && resumed.world_size != comm.world_size())
    run.line("elastic resume: the checkpoint was written by {} ranks, this run has {} (the same global batch {})",
             resumed.world_size, comm.world_size(), cfg.train.batch_size);
  print_banner(run, cfg, in, comm, *engine, *loader, *m, rank_lines);
  // The run's services, as hooks (train/hooks.h), in the order they see each step: timing first (it
  // times every step, an undone one too), the learning rates of the next step, the NaN guard (which may
  // undo the step for the rest), then logging, samples, the SWD, checkpoints, and the stop conditions last.
  RunLedger ledger;
  ledger.nan_rollbacks = resumed.nan_rollbacks;
  if (!start.checkpoint.empty()) ledger.last_good = start.checkpoint;
  HookList hooks(comm.rank());
  TimingHook& timing = hooks.add(std::make_unique<TimingHook>(*engine));
  LrScheduleHook& lr_schedule =
      hooks.add(std::make_unique<LrScheduleHook>(cfg, *m, in.progan ? &*in.progan : nullptr));
  bool rebuild_engine = false;  // a rollback gave the models another phase's structure
  hooks.add(std::make_unique<NanGuardHook>(cfg.train, ledger, run, comm, [&](const std::string& path) {
    run_agreed(comm, [&] {
      const Checkpoint ck = load_checkpoint(path);
      const int then = in.progan ? in.progan->phase_after(ck.meta.step).index : model_phase;
      if (then == model_phase) {
        load_models(*m, ck, path);
        return;
      }
      // A checkpoint of an earlier phase: its networks, then grown to this phase again (the newer blocks from
      // their initial weights).
      move_to_phase(*m, cfg, in.progan_spec, in.progan->phases[static_cast<size_t>(then)]);
      load_models(*m, ck, path);
      move_to_phase(*m, cfg, in.progan_spec, in.progan->phases[static_cast<size_t>(model_phase)]);
      rebuild_engine = true;
    });
    if (!rebuild_engine) engine->load_from_host();
  }));
  hooks.add(std::make_unique<LoggingHook>(run, cfg, timing));
  hooks.add(std::make_unique<SampleHook>(run, cfg.log, static_cast<uint64_t>(cfg.run.seed), in.spec.nz, *engine, comm));
  if (swd) hooks.add(std::make_unique<SwdMetricHook>(run, cfg.log.swd_every_steps, std::move(swd), *engine));
  hooks.add(std::make_unique<CheckpointHook>(run, cfg, config_yaml, in, *m, *engine, comm.world_size(), ledger));
  StopHook& stop = hooks.add(std::make_unique<StopHook>(run, cfg.train, comm));  // the run's clock starts here
  run.line("hooks: {}", fmt::join(hooks.names(), ", "));

  // Two groups of host batches (n_critic each, one per critic iteration): the loader fills one group
  // while the engine (a GPU's, asynchronously) reads the other.
  const int n_critic = cfg.train.n_critic;
  std::vector<Tensor> batches[2];
  auto make_batches = [&] {
    for (auto& group : batches) {
      group.clear();
      for (int k = 0; k < n_critic; ++k)
        group.push_back(engine->make_batch_buffer(loader->batch_shape(), loader->batch_dtype()));
    }
  };
  make_batches();
  auto load_group = [&](std::vector<Tensor>& group) {
    for (Tensor& b : group) loader->next(b);
  };
  const int64_t total = in.total_steps;
  hooks.begin({first, total});
  if (first < total) load_group(batches[first % 2]);
  int64_t step = first;
  int64_t end_of_segment = segment_end(first);
  StopReason stopped = StopReason::none;
  while (step < total) {
    if (in.progan && (step == end_of_segment || rebuild_engine)) {
      // A new phase: grow the models (every rank alike), then its engine, loader and batches.
      const ProganPhase& next = in.progan->phase_at(step);
      // The engine's state onto the host models, unless a rollback has just replaced them with a checkpoint's.
      if (!rebuild_engine) engine->sync_to_host();
      if (next.index != model_phase) move_to_phase(*m, cfg, in.progan_spec, next);
      model_phase = next.index;
      engine->reset(make_phase_engine());
      lr_schedule.begin({step, total});  // the new optimizers take the phase's rates
      rebuild_engine = false;
      if (step == end_of_segment) {
        loader = make_loader(step);
        make_batches();
        load_group(batches[step % 2]);
        end_of_segment = segment_end(step);
        run.line("phase {}: {} from step {} | G {} params | D {} params | {}", next.index, next.name(), step,
                 m->G.param_count(), m->D.param_count(), in.phase_plans[static_cast<size_t>(next.index)].describe());
      }
    }
    fault_point("step");
    std::vector<Tensor>& group = batches[step % 2];
    inject_fault_if_due(in.fault, comm.rank(), step);
    if (nan_fault_due(in.fault, comm.rank(), step) && group.front().dtype() == DType::f32)
      std::fill_n(group.front().f32(), group.front().numel(), std::numeric_limits<float>::quiet_NaN());
    StepInfo info;
    if (in.progan) {
      const ProganPhase& p = in.progan->phase_at(step);
      info.alpha = in.progan->alpha(step);
      info.phase = p.name();
      info.phase_index = p.index;
      info.resolution = p.resolution;
      engine->set_phase(p, info.alpha);
    }
    info.images = eo.global_batch * n_critic;
    info.lr_g = m->opt_g->lr();
    info.lr_d = m->opt_d->lr();
    info.clock.begin = Clock::now();
    engine->submit(group, step);
    info.clock.submitted = Clock::now();
    if (step + 1 < end_of_segment) load_group(batches[(step + 1) % 2]);  // while the step runs (on a GPU)
    info.clock.loaded = Clock::now();
    const StepResult local = engine->wait();
    // The hooks see the networks as a checkpoint of this step records them: the fade-in weight after the step.
    if (in.progan) engine->set_fade_alpha(static_cast<float>(in.progan->alpha_after(step + 1)));
    info.clock.waited = Clock::now();
    const GlobalResult g = global_result(local, comm);
    info.clock.agreed = Clock::now();
    ++step;
    info.step = step;
    info.total_steps = total;
    info.epoch = in.progan ? (in.progan->images_before(step) - 1) / std::max<int64_t>(in.dataset_size, 1)
                           : in.plan->epoch_of(step * n_critic - 1);  // of the step's last batch
    info.result = g.r;
    info.finite = g.finite();
    if (!info.finite) info.nonfinite = describe_nonfinite(g, step);
    if (hooks.after_step(info, &stopped) == HookVerdict::stop) break;
  }

  sum.steps = step;
  sum.stopped_by_signal = stopped == StopReason::signal;
  sum.stopped_by_time = stopped == StopReason::time_limit;
  const double seconds = stop.seconds();
  const int64_t images = in.progan ? in.progan->images_before(step) - in.progan->images_before(first)
                                   : (step - first) * cfg.train.batch_size * n_critic;
  sum.images_per_second = static_cast<double>(images) / std::max(seconds, 1e-9);
  engine->sync_to_host();  // every rank: the final checkpoint and the parameter check below read the host models
  hooks.end({first, step, total, stopped});
  const std::vector<int> drifted = ranks_with_other_parameters(comm, m->G, m->D);
  if (!drifted.empty())
    run.line("warning: ranks {} hold parameters that differ from rank 0's: the all-reduce did not give every rank the "
             "same bits (docs/distributed.md)",
             fmt::format("{}", fmt::join(drifted, ", ")));
  run.line("{}: {} steps in {} ({:.0f} img/s, {:.1f} s waiting for data)",
           stopped != StopReason::none ? "stopped" : "done", step - first, fmt_duration(seconds),
           sum.images_per_second, loader->wait_seconds());
  if (comm.rank() == 0) run.line("{}", timing.run_summary());
  if (stopped != StopReason::none)
    run.line("to continue, run the same command again (checkpoint.resume auto); exit code {}", 3);
  sum.run_dir = run.path().string();
  sum.metrics_path = run.metrics_path();
  sum.samples_path = run.sample_path(step);
  sum.checkpoint_path = run.checkpoint_path(step);
  run.line("samples:    {}", sum.samples_path);
  run.line("metrics:    {}", sum.metrics_path);
  run.line("checkpoint: {}", sum.checkpoint_path);
  return sum;
}

}  // namespace gt
