// The built-in hooks of a training run: the NaN guard, logging and the live status line, sample grids, the SWD metric, checkpoints and the stop conditions (timing: train/step_timing.h).
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "config/config.h"
#include "core/tensor.h"
#include "train/hooks.h"
#include "train/run_setup.h"
#include "train/signal_guard.h"
#include "train/step_timing.h"
#include "train/swd_meter.h"

namespace gt {

class Communicator;
class RunDirectory;
class StepEngine;

// "1h02m", "3m05s", "42s".
std::string fmt_duration(double seconds);

// Whether a periodic service is due after `done` steps: every `every` steps (0 = never), except at the
// planned last step, where the service's end() runs instead.
bool due_at(int64_t every, int64_t done, int64_t total);

// The state that the checkpoint hook and the NaN guard share (rank 0's last_good is the one that counts).
struct RunLedger {
  std::string last_good;      // the newest checkpoint that validates (written, or resumed from)
  int64_t nan_rollbacks = 0;  // rollbacks in this run so far, resumes included
};

// The NaN guard (every rank: the verdict is agreed). A step whose values are not all finite stops the
// run (train.nan_policy stop: AgreedRuntimeError naming the value, step and ranks) or reloads the newest
// checkpoint (rollback: `reload(path)` on every rank) and skips the rest of the hooks for that step.
class NanGuardHook final : public TrainHook {
 public:
  NanGuardHook(const TrainConfig& train, RunLedger& ledger, RunDirectory& run, Communicator& comm,
               std::function<void(const std::string&)> reload)
      : train_(train), ledger_(ledger), run_(run), comm_(comm), reload_(std::move(reload)) {}
  const char* name() const override { return "nan_guard"; }
  HookRanks ranks() const override { return HookRanks::every; }
  HookVerdict after_step(const StepInfo& step) override;

 private:
  const TrainConfig& train_;
  RunLedger& ledger_;
  RunDirectory& run_;
  Communicator& comm_;
  std::function<void(const std::string&)> reload_;
};

// Logging (rank 0): on a terminal the status line after every step; every log.every_steps (and at the
// last step) a console line and a metrics.jsonl line with the window's means, learning rates,
// images/s and the timing hook's breakdown.
class LoggingHook final : public TrainHook {
 public:
  LoggingHook(RunDirectory& run, const Config& cfg, TimingHook& timing) : run_(run), cfg_(cfg), timing_(timing) {}
  const char* name() const override { return "logging"; }
  HookRanks ranks() const override { return HookRanks::rank0; }
  void begin(const RunBegin& run) override;
  HookVerdict after_step(const StepInfo& step) override;

 private:
  using Clock = std::chrono::steady_clock;
  RunDirectory& run_;
  const Config& cfg_;
  TimingHook& timing_;
  int64_t first_ = 0;
  double d_loss_ = 0, g_loss_ = 0, d_real_ = 0, d_fake_ = 0, d_norm_ = 0, g_norm_ = 0, d_penalty_ = 0;
  int64_t n_ = 0;
  int64_t images_ = 0;  // real images read in the window
  Clock::time_point start_{}, window_{};
};

// Sample grids (every rank: the images are generated in shares): G(z) of fixed noise every
// log.sample_every_steps and at the end, a PNG in samples/ and a TensorBoard image (rank 0).
class SampleHook final : public TrainHook {
 public:
  SampleHook(RunDirectory& run, const LogConfig& log, uint64_t seed, int nz, StepEngine& engine, Communicator& comm);
  const char* name() const override { return "samples"; }
  HookRanks ranks() const override { return HookRanks::every; }
  HookVerdict after_step(const StepInfo& step) override;
  void end(const RunEnd& run) override { write(run.step); }

 private:
  void write(int64_t step);
  RunDirectory& run_;
  const LogConfig& log_;
  StepEngine& engine_;
  Communicator& comm_;
  Tensor z_;
};

// The SWD metric (every rank: each measures its share, rank 0 computes the distance): before the first
// step of a new run, every log.swd_every_steps and at the end; a metrics.jsonl line of its own
// ({"step", "swd", "swd_<res>"...}, x1e3 as `gantrain eval` prints), TensorBoard quality/* and a
// console line.
class SwdMetricHook final : public TrainHook {
 public:
  // meter: made (reading the real images, each rank its share) before a loader reads the same source.
  SwdMetricHook(RunDirectory& run, int64_t every_steps, std::unique_ptr<SwdMeter> meter, StepEngine& engine)
      : run_(run), every_(every_steps), engine_(engine), meter_(std::move(meter)) {}
  const char* name() const override { return "swd"; }
  HookRanks ranks() const override { return HookRanks::every; }
  void begin(const RunBegin& run) override;
  HookVerdict after_step(const StepInfo& step) override;
  void end(const RunEnd& run) override { measure(run.step); }

 private:
  void measure(int64_t step);
  RunDirectory& run_;
  int64_t every_;
  StepEngine& engine_;
  std::unique_ptr<SwdMeter> meter_;
  int64_t last_step_ = -1;
};

// Checkpoints (rank 0 writes): every checkpoint.every_steps, when checkpoint.every_minutes have passed,
// and at the end; each read back and verified, then retention. Non-finite weights are never written.
class CheckpointHook final : public TrainHook {
 public:
  CheckpointHook(RunDirectory& run, const Config& cfg, const std::string& config_yaml, const RunInputs& in, Models& m,
                 StepEngine& engine, int world_size, RunLedger& ledger)
      : run_(run), cfg_(cfg), config_yaml_(config_yaml), in_(in), m_(m), engine_(engine), world_size_(world_size),
        ledger_(ledger) {}
  const char* name() const override { return "checkpoints"; }
  HookRanks ranks() const override { return HookRanks::rank0; }
  void begin(const RunBegin& run) override;
  HookVerdict after_step(const StepInfo& step) override;
  // The engine's state must be on the host (every rank's sync_to_host, which the loop makes first).
  void end(const RunEnd& run) override { write(run.step); }

 private:
  void write(int64_t step);
  RunDirectory& run_;
  const Config& cfg_;
  const std::string& config_yaml_;
  const RunInputs& in_;
  Models& m_;
  StepEngine& engine_;
  int world_size_;
  RunLedger& ledger_;
  std::chrono::steady_clock::time_point last_time_{};
};

// The learning rates' factor for step `step` (counted from 0): the batch scaling of train.lr_scaling
// (batch / lr_base_batch, or its square root) times the warmup ramp min(1, (step + 1) / warmup_steps).
double lr_factor(const TrainConfig& train, int64_t step);

// The learning rates of the next step (every rank: each rank's optimizers must use the same rates, though
// no collective is involved): optim.*.lr times lr_factor, set at begin for the first step and after every
// step for the next. Second in the order (after timing), so a NaN rollback, which hides the step from the
// later hooks, does not leave the next step with a stale rate.
class LrScheduleHook final : public TrainHook {
 public:
  // progan: the run's phases, whose learning rates replace optim.*.lr (null for dcgan).
  LrScheduleHook(const Config& cfg, Models& m, const ProganSchedule* progan = nullptr)
      : cfg_(cfg), m_(m), progan_(progan) {}
  const char* name() const override { return "lr_schedule"; }
  HookRanks ranks() const override { return HookRanks::every; }
  void begin(const RunBegin& run) override { apply(run.first_step); }
  HookVerdict after_step(const StepInfo& step) override {
    apply(step.step);
    return HookVerdict::go_on;
  }

 private:
  void apply(int64_t step);
  const Config& cfg_;
  Models& m_;
  const ProganSchedule* progan_;
};

// The stop conditions besides the planned last step (planned_steps: train.max_steps, train.max_images,
// train.epochs): a stop signal any rank received (SIGINT, SIGTERM, train.stop_signal; the handlers live
// as long as the hook) or train.max_minutes on any rank's clock. Every rank: the ranks agree after each
// step, so they all leave after the same one.
class StopHook final : public TrainHook {
 public:
  StopHook(RunDirectory& run, const TrainConfig& train, Communicator& comm);
  const char* name() const override { return "stop"; }
  HookRanks ranks() const override { return HookRanks::every; }
  HookVerdict after_step(const StepInfo& step) override;
  StopReason stop_reason() const override { return reason_; }
  double seconds() const;  // since the hook was made, just before the loop: the run's clock

 private:
  RunDirectory& run_;
  const TrainConfig& train_;
  Communicator& comm_;
  SignalGuard signals_;
  std::chrono::steady_clock::time_point start_{};
  StopReason reason_ = StopReason::none;
};

}  // namespace gt
