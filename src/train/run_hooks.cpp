// The built-in hooks of a training run: what each service does after a step and at the end, on the ranks it runs on.
#include "train/run_hooks.h"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <ctime>
#include <filesystem>

#include <fmt/format.h>

#include "core/rng.h"
#include "core/version.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "train/checkpoints.h"
#include "train/engine.h"
#include "train/model_state.h"
#include "train/run_dir.h"

namespace gt {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The fixed noise of sample grids: a step number no training step reaches.
constexpr uint64_t kSampleNoiseStep = ~0ull;

int signal_number(StopSignal s) {
  switch (s) {
    case StopSignal::usr1: return SIGUSR1;
    case StopSignal::usr2: return SIGUSR2;
    case StopSignal::hup: return SIGHUP;
    default: return 0;
  }
}

}  // namespace

std::string fmt_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

bool due_at(int64_t every, int64_t done, int64_t total) { return every > 0 && done % every == 0 && done != total; }

// ---- NaN guard ---------------------------------------------------------------------------------------

HookVerdict NanGuardHook::after_step(const StepInfo& step) {
  if (step.finite) return HookVerdict::go_on;
  // Every rank has the same verdict, so every rank takes the same way.
  const std::string& what = step.nonfinite;
  if (train_.nan_policy == NanPolicy::stop)
    throw AgreedRuntimeError(fmt::format("{}; stopping (train.nan_policy stop). Lower the learning rate, enable "
                                         "train.clip_grad_norm, or set train.nan_policy rollback",
                                         what));
  const std::string back_to = broadcast_string(comm_, ledger_.last_good, 0);
  if (back_to.empty())
    throw AgreedRuntimeError(fmt::format("{}, before the run's first checkpoint: nothing to roll back to; stopping",
                                         what));
  if (ledger_.nan_rollbacks >= train_.nan_max_rollbacks)
    throw AgreedRuntimeError(fmt::format("{}; stopping after {} rollbacks (train.nan_max_rollbacks)", what,
                                         ledger_.nan_rollbacks));
  reload_(back_to);
  ++ledger_.nan_rollbacks;
  run_.line("{}; rolled back to {} (rollback {} of at most {}), going on with the next batch", what, back_to,
            ledger_.nan_rollbacks, train_.nan_max_rollbacks);
  return HookVerdict::skip_rest;
}

// ---- logging -----------------------------------------------------------------------------------------

void LoggingHook::begin(const RunBegin& run) {
  first_ = run.first_step;
  start_ = window_ = Clock::now();
}

HookVerdict LoggingHook::after_step(const StepInfo& step) {
  const StepResult& r = step.result;
  const int64_t done = step.step, total = step.total_steps;
  d_loss_ += r.d_loss, g_loss_ += r.g_loss, d_real_ += r.d_real, d_fake_ += r.d_fake;
  d_norm_ += r.d_grad_norm, g_norm_ += r.g_grad_norm;
  d_penalty_ += r.d_penalty;
  ++n_;
  const double n = static_cast<double>(n_);
  // Real images per second: a step reads n_critic batches.
  images_ += step.images;
  const double ips = static_cast<double>(images_) / std::max(seconds_since(window_), 1e-9);
  const double eta = seconds_since(start_) / static_cast<double>(std::max<int64_t>(done - first_, 1)) * (total - done);
  const int64_t epoch = step.epoch;
  // On a terminal, every other step redraws one line in place (run_dir.h); the lines below stay in the scrollback.
  const bool log_now = done % cfg_.log.every_steps == 0 || done == total;
  // D's outputs: probabilities for BCE (3 decimals), a critic's raw scores otherwise (4 significant digits).
  const bool probabilities = cfg_.loss.objective == Objective::nonsaturating;
  auto d_out = [probabilities](double v) { return probabilities ? fmt::format("{:.3f}", v) : fmt::format("{:.4g}", v); };
  if (run_.live() && !log_now)
    run_.status(fmt::format("step {}/{} ({:.0f}%) | epoch {}{} | {:.0f} img/s | d_loss {:.4f} | g_loss {:.4f} | "
                            "D(x) {} | D(G(z)) {} | eta {}",
                            done, total, 100.0 * done / std::max<int64_t>(total, 1), epoch,
                            step.phase.empty() ? "" : " | " + step.phase, ips, d_loss_ / n,
                            g_loss_ / n, d_out(d_real_ / n), d_out(d_fake_ / n), fmt_duration(eta)),
                false);
  if (!log_now) return HookVerdict::go_on;
  // The window ends now: what happened since the last step's end is its `rest`.
  timing_.close_window_rest();
  const Clock::time_point now = Clock::now();
  const double window_s = std::chrono::duration<double>(now - window_).count();
  const std::string phase =
      step.phase.empty() ? "" : fmt::format(" | {}{}", step.phase, step.alpha < 1 ? fmt::format(" alpha {:.3f}", step.alpha) : "");
  run_.line("step {:>6}/{} | epoch {}{} | d_loss {:.4f} | g_loss {:.4f} | D(x) {} | D(G(z)) {} | {:.0f} img/s | eta {}",
            done, total, epoch, phase, d_loss_ / n, g_loss_ / n, d_out(d_real_ / n), d_out(d_fake_ / n), ips,
            fmt_duration(eta));
  std::vector<std::pair<std::string, double>> values = {{"epoch", static_cast<double>(epoch)},
                                                        {"d_loss", d_loss_ / n},
                                                        {"g_loss", g_loss_ / n},
                                                        {"d_real", d_real_ / n},
                                                        {"d_fake", d_fake_ / n},
                                                        {"d_grad_norm", d_norm_ / n},
                                                        {"g_grad_norm", g_norm_ / n},
                                                        {"images_per_sec", ips},
                                                        // the rates the logged step used
                                                        {"lr_g", step.lr_g},
                                                        {"lr_d", step.lr_d}};
  if (!step.phase.empty()) {  // progressive growing: where the logged step stood
    values.emplace_back("phase", static_cast<double>(step.phase_index));
    values.emplace_back("resolution", static_cast<double>(step.resolution));
    values.emplace_back("alpha", step.alpha);
  }
  // The gradient penalty, part of d_loss (with lazy regularization: the last critic batch that had one).
  if (cfg_.loss.gp_weight > 0) values.emplace_back("d_penalty", d_penalty_ / n);
  for (auto& kv : timing_.take_window(n_, window_s)) values.push_back(std::move(kv));
  run_.metrics(done, values);
  d_loss_ = g_loss_ = d_real_ = d_fake_ = d_norm_ = g_norm_ = d_penalty_ = 0, n_ = 0, images_ = 0;
  window_ = now;
  return HookVerdict::go_on;
}

// ---- sample grids ------------------------------------------------------------------------------------

SampleHook::SampleHook(RunDirectory& run, const LogConfig& log, uint64_t seed, int nz, StepEngine& engine,
                       Communicator& comm)
    : run_(run), log_(log), engine_(engine), comm_(comm), z_({log.sample_count, nz}) {
  fill_noise(z_.f32(), log.sample_count, nz, seed, kSampleNoiseStep, 0);
}

HookVerdict SampleHook::after_step(const StepInfo& step) {
  if (due_at(log_.sample_every_steps, step.step, step.total_steps)) write(step.step);
  return HookVerdict::go_on;
}

void SampleHook::write(int64_t step) {
  const int cols = std::max(1, static_cast<int>(std::lround(std::sqrt(static_cast<double>(z_.dim(0))))));
  Tensor images = generate_across_ranks([&](const Tensor& z) { return engine_.generate(z); }, z_, comm_);
  if (run_.writer()) run_.sample_grid(step, write_grid_png(run_.sample_path(step), images, cols));
}

// ---- SWD ---------------------------------------------------------------------------------------------

void SwdMetricHook::begin(const RunBegin& run) {
  if (run.first_step == 0 && run.total_steps > 0) measure(0);  // the untrained G: where the curve starts
}

HookVerdict SwdMetricHook::after_step(const StepInfo& step) {
  if (due_at(every_, step.step, step.total_steps)) measure(step.step);
  return HookVerdict::go_on;
}

void SwdMetricHook::measure(int64_t step) {
  if (step == last_step_) return;  // a run that ends where it measured (a resume that trains no step)
  last_step_ = step;
  const Clock::time_point t0 = Clock::now();
  const SwdResult r = meter_->measure([&](const Tensor& z) { return engine_.generate(z); });
  std::vector<std::pair<std::string, double>> values = {{"swd", r.average * 1e3}};
  std::string levels;
  for (size_t l = 0; l < r.per_level.size(); ++l) {
    values.emplace_back(fmt::format("swd_{}", r.resolutions[l]), r.per_level[l] * 1e3);
    levels += fmt::format(" | {} {:.4f}", r.resolutions[l], r.per_level[l] * 1e3);
  }
  run_.metrics(step, values);
  run_.line("swd x1e3 at step {}: avg {:.4f}{} ({} images, {:.1f} s)", step, r.average * 1e3, levels, meter_->images(),
            seconds_since(t0));
}

// ---- checkpoints -------------------------------------------------------------------------------------

void CheckpointHook::begin(const RunBegin&) { last_time_ = Clock::now(); }

HookVerdict CheckpointHook::after_step(const StepInfo& step) {
  const bool minutes_due =
      cfg_.checkpoint.every_minutes > 0 && seconds_since(last_time_) >= cfg_.checkpoint.every_minutes * 60.0;
  if (due_at(cfg_.checkpoint.every_steps, step.step, step.total_steps) || (step.step != step.total_steps && minutes_due))
    write(step.step);
  return HookVerdict::go_on;
}

// The host models at `step` into a new checkpoint (never over an existing file), read back and verified,
// then retention.
void CheckpointHook::write(int64_t step) {
  const std::string path = run_.checkpoint_path(step);
  engine_.sync_to_host();
  Checkpoint ck;
  ck.meta.step = step;
  const int64_t batches = step * cfg_.train.n_critic;  // the loader's position: a step reads n_critic batches
  ck.meta.epoch = in_.plan->epoch_of(std::max<int64_t>(batches - 1, 0));
  ck.meta.images_seen = batches * cfg_.train.batch_size;
  if (in_.progan) {  // per-phase batches: the images count phase by phase
    ck.meta.images_seen = in_.progan->images_before(step);
    ck.meta.epoch = in_.dataset_size > 0 ? std::max<int64_t>(ck.meta.images_seen - 1, 0) / in_.dataset_size : 0;
  }
  ck.meta.world_size = world_size_;
  ck.meta.seed = cfg_.run.seed;
  ck.meta.resolution = in_.spec.resolution;
  ck.meta.alpha = 1.0;  // progressive fade-in: none for DCGAN
  ck.meta.config_yaml = config_yaml_;
  ck.meta.code_version = std::string(version()) + "+" + git_revision();
  // RNG and data cursor: every draw is keyed by (seed, step, index), so the step is the whole state.
  ck.meta.ints["data_cursor_step"] = step;  // the data continues from batch step * train.n_critic
  ck.meta.ints["dataset_size"] = in_.dataset_size;
  ck.meta.ints["nan_rollbacks"] = ledger_.nan_rollbacks;
  ck.meta.ints["unix_time"] = static_cast<int64_t>(std::time(nullptr));
  // The state of later features, in every checkpoint so a resume never has to guess: progressive
  // growing (phase, images into the fade-in) and the large-batch plan (micro-batches per step).
  ck.meta.ints["phase"] = 0;
  ck.meta.ints["fade_images"] = 0;
  const LargeBatchPlan& plan = in_.plan_at(std::max<int64_t>(step - 1, 0));
  ck.meta.ints["accumulation_steps"] = plan.accumulation;
  ck.meta.ints["micro_batch"] = plan.micro_batch;
  if (in_.progan) {
    // The networks' phase (that of the last step) and how far its fade-in has come: the next step's alpha.
    const ProganPhase& p = in_.progan->phase_after(step);
    ck.meta.resolution = p.resolution;
    ck.meta.ints["phase"] = p.index;
    ck.meta.ints["fading"] = p.fading;
    ck.meta.ints["final_resolution"] = in_.progan_spec.resolution;
    const int64_t into = std::clamp<int64_t>(step - p.first_step, 0, p.steps);
    ck.meta.ints["fade_images"] = p.fading ? into * p.batch * cfg_.train.n_critic : 0;
    ck.meta.alpha = in_.progan->alpha_after(step);
  }
  export_state_dict(m_.G, "G/params", ck.groups);
  export_state_dict(m_.D, "D/params", ck.groups);
  if (m_.G_ema) {  // the averaged parameters with G's running statistics
    copy_buffers_to_ema(m_);
    export_state_dict(*m_.G_ema, "G_ema/params", ck.groups);
  }
  export_optimizer(*m_.opt_g, "G/optim", ck.groups);
  export_optimizer(*m_.opt_d, "D/optim", ck.groups);
  const std::string bad = first_nonfinite_tensor(ck);
  if (!bad.empty())
    runtime_error("refusing to write the checkpoint of step {}: /{} is not finite (the earlier checkpoints are "
                  "untouched)",
                  step, bad);
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    // Only a run resumed from an older checkpoint of its own directory gets here: keep the abandoned one.
    const std::string aside = path + ".superseded";
    std::filesystem::rename(path, aside, ec);
    run_.line("note: kept the earlier {} as {}", path, aside);
  }
  save_checkpoint(path, ck);
  const std::string problem = checkpoint_problem(path);
  if (!problem.empty()) runtime_error("the checkpoint just written does not read back: {}", problem);
  ledger_.last_good = path;
  last_time_ = Clock::now();
  const RetentionPolicy policy{cfg_.checkpoint.keep_last, cfg_.checkpoint.keep_every_hours};
  for (const std::string& gone : apply_retention(run_.path() / "checkpoints", policy, path))
    run_.line("retention: deleted {}", gone);
}

// ---- learning rates ----------------------------------------------------------------------------------

double lr_factor(const TrainConfig& train, int64_t step) {
  const double ratio = static_cast<double>(train.batch_size) / static_cast<double>(train.lr_base_batch);
  double f = train.lr_scaling == LrScaling::linear ? ratio : train.lr_scaling == LrScaling::sqrt ? std::sqrt(ratio) : 1.0;
  if (train.warmup_steps > 0 && step + 1 < train.warmup_steps)
    f *= static_cast<double>(step + 1) / static_cast<double>(train.warmup_steps);
  return f;
}

void LrScheduleHook::apply(int64_t step) {
  // Progressive growing: each phase's own rates (progan.lr), under the same warmup and the batch scaling of the
  // phase's batch.
  const ProganPhase* phase = progan_ ? &progan_->phase_at(step) : nullptr;
  TrainConfig train = cfg_.train;
  if (phase) train.batch_size = phase->batch;
  const double f = lr_factor(train, step);
  m_.opt_g->set_lr((phase ? phase->lr_g : cfg_.optim_g.lr) * f);
  m_.opt_d->set_lr((phase ? phase->lr_d : cfg_.optim_d.lr) * f);
}

// ---- stop conditions ---------------------------------------------------------------------------------

StopHook::StopHook(RunDirectory& run, const TrainConfig& train, Communicator& comm)
    : run_(run), train_(train), comm_(comm), signals_(signal_number(train.stop_signal)), start_(Clock::now()) {}

double StopHook::seconds() const { return seconds_since(start_); }

HookVerdict StopHook::after_step(const StepInfo& step) {
  // A signal any rank received, or a time limit any rank's clock reached: agreed, so every rank leaves
  // after the same step. At the planned last step the run ends anyway.
  int64_t stop[2] = {signals_.stop_signal(), train_.max_minutes > 0 && seconds() / 60.0 >= train_.max_minutes};
  comm_.all_reduce(stop, 2, ReduceOp::max);
  if (step.step == step.total_steps) return HookVerdict::go_on;
  if (stop[1]) {
    run_.line("time limit train.max_minutes={} reached after {} steps: stopping with a checkpoint", train_.max_minutes,
              step.step);
    reason_ = StopReason::time_limit;
    return HookVerdict::stop;
  }
  if (stop[0] != 0) {
    run_.line("signal {} received: stopping after step {} with a checkpoint", stop[0], step.step);
    reason_ = StopReason::signal;
    return HookVerdict::stop;
  }
  return HookVerdict::go_on;
}

}  // namespace gt
