// The timing breakdown: where each step's wall time went (the step's phases, data, the rest), for the host-timed CPU engine and the device-timed CUDA engine alike.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "train/gan_step.h"
#include "train/hooks.h"

namespace gt {

// How an engine measured its phases: not at all, with the host clock inside submit()/wait() (the CPU
// engine, whose step runs on the calling thread), or with device events (the CUDA engine, whose step
// runs on the device while the host reads the next batch).
enum class PhaseClock { none, host, device };

// The breakdown's parts: the step's phases in StepPhase order (`other`: the engine's time outside its
// named phases), then data (waiting for the next batch) and rest (between steps: hooks, logging,
// samples, checkpoints). kTimeKeys are the metrics.jsonl keys, kTimeLabels the console's names.
inline constexpr int kTimeData = kStepPhases, kTimeRest = kStepPhases + 1, kTimeParts = kStepPhases + 2;
inline constexpr const char* kTimeKeys[kTimeParts] = {"ms_g_forward", "ms_d_forward_backward", "ms_g_backward",
                                                      "ms_comm_wait", "ms_optimizer", "ms_step_other", "ms_data",
                                                      "ms_rest"};
inline constexpr const char* kTimeLabels[kTimeParts] = {"G forward", "D forward+backward", "G backward", "comm wait",
                                                        "optimizer", "step other", "data", "rest"};

// A wait() shorter than this found the device done: it finished before the next batch was read.
inline constexpr double kDeviceDoneWait = 50e-6;

// One step's wall time from `previous_end` (the previous step's `agreed`) to clock.agreed, split into the
// parts, which add up to it exactly. `phases` are the engine's seconds per StepPhase for this step.
//  - rest: previous_end to begin. The all-reduce of the step's values (waited to agreed) is comm_wait.
//  - host phases happen inside submit() and wait(): they count as measured, the engine's remaining
//    time is `other`, and reading the next batch is `data`.
//  - device phases overlap the host reading the next batch: they count as measured (scaled down if
//    they exceed begin..waited, which only clock skew can cause); of the remainder, `data` is the time
//    the host still read after the device was done (none when wait() had to wait: the device was the
//    slower), and the rest is `other` (launches, uploads, gaps between the phases).
//  - none: the engine's time (submit and wait) is `other`, reading is `data`.
void split_step_time(const StepClock& clock, StepClock::Clock::time_point previous_end,
                     const double (&phases)[kStepPhases], PhaseClock how, double (&parts)[kTimeParts]);

class StepEngine;

// The timing hook (rank 0): each step's split, summed over the logging window and over the run.
class TimingHook final : public TrainHook {
 public:
  explicit TimingHook(StepEngine& engine) : engine_(engine) {}
  const char* name() const override { return "timing"; }
  HookRanks ranks() const override { return HookRanks::rank0; }
  void begin(const RunBegin& run) override;
  HookVerdict after_step(const StepInfo& step) override;
  // The time since the last step ended (logging, samples, a checkpoint) counts as the window's rest.
  void close_window_rest();
  // The window's parts in ms per step (keys kTimeKeys) over its `steps`, and ms_step: `window_s` per
  // step; then a new window.
  std::vector<std::pair<std::string, double>> take_window(int64_t steps, double window_s);
  // "time per step (ms): G forward 1.2 | ... | total 9.9" over the run's steps.
  std::string run_summary() const;

 private:
  StepEngine& engine_;
  StepClock::Clock::time_point mark_{};
  double window_[kTimeParts] = {}, run_[kTimeParts] = {};
  int64_t run_steps_ = 0;
};

}  // namespace gt
