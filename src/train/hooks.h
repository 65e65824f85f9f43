// Training hooks: the one interface (begin, after each step, end) through which the loop's services run: logging, stop conditions, checkpoints, samples, metrics, the NaN guard, timing.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "train/gan_step.h"

namespace gt {

// Which ranks call a hook. `every`: the hook takes part in collectives (samples and metrics computed in
// shares, the NaN verdict, a stop any rank may ask for), so every rank must call it at the same point;
// only such a hook may change the loop's way (stop, skip), because every rank must take the same way.
// `rank0`: the hook only looks and writes (the console, metrics.jsonl, checkpoints), on rank 0 alone.
enum class HookRanks { rank0, every };

// What the loop does after a hook has seen a step.
enum class HookVerdict {
  go_on,      // the next hook, then the next step
  skip_rest,  // the step was undone (a NaN rollback): the later hooks do not see it; the loop goes on
  stop,       // the later hooks see the step, then the loop stops (why: the hook's stop_reason())
};

// Why a run stopped before its planned last step; `none`: it ran to the end.
enum class StopReason { none, signal, time_limit };

// Host-clock moments of one step as the loop took them: submit() begins at `begin`, returns at `submitted`;
// the next batch is read until `loaded`; wait() returns at `waited`; the step's values are agreed over the
// ranks by `agreed`.
struct StepClock {
  using Clock = std::chrono::steady_clock;
  Clock::time_point begin, submitted, loaded, waited, agreed;
};

// One finished step as every rank sees it.
struct StepInfo {
  int64_t step = 0;         // steps done, this one counted (1 after the run's first step)
  int64_t total_steps = 0;  // the planned last step
  int64_t epoch = 0;        // the epoch this step belongs to
  StepResult result;        // losses and means over the global batch, gradient norms (train/gan_step.h)
  int64_t images = 0;       // real images the step read (its global batch times train.n_critic)
  double lr_g = 0, lr_d = 0;  // the learning rates the step used
  // Progressive growing (model.arch progan): the step's phase ("8x8 transition"; empty otherwise), its index,
  // resolution and fade-in weight.
  std::string phase;
  int phase_index = 0, resolution = 0;
  double alpha = 1;
  bool finite = true;       // every checked value finite on every rank
  std::string nonfinite;    // otherwise: which value, where ("step 7: d_loss is not finite on rank 1")
  StepClock clock;
};

// The run as the hooks see it at begin().
struct RunBegin {
  int64_t first_step = 0;   // 0, or the step a resumed run continues from
  int64_t total_steps = 0;  // the planned last step
};

// The run as the hooks see it at end(): the last step done, and why it stopped.
struct RunEnd {
  int64_t first_step = 0, step = 0, total_steps = 0;
  StopReason stopped = StopReason::none;
};

class TrainHook {
 public:
  virtual ~TrainHook() = default;
  virtual const char* name() const = 0;
  virtual HookRanks ranks() const = 0;
  virtual void begin(const RunBegin& run) { (void)run; }
  virtual HookVerdict after_step(const StepInfo& step) {
    (void)step;
    return HookVerdict::go_on;
  }
  // Why it returned stop (asked only then).
  virtual StopReason stop_reason() const { return StopReason::none; }
  virtual void end(const RunEnd& run) { (void)run; }
};

// The hooks of a run in the order they are called. A rank calls the `every` hooks and, on rank 0, the
// `rank0` ones; begin and end go to the same hooks in the same order.
class HookList {
 public:
  explicit HookList(int rank) : rank_(rank) {}
  // Adds a hook (called after those added before); returns it, for the loop's own references.
  template <class H>
  H& add(std::unique_ptr<H> hook) {
    H& ref = *hook;
    hooks_.push_back(std::move(hook));
    return ref;
  }
  void begin(const RunBegin& run);
  // After a step: each hook in order until one says skip_rest. Returns stop when a hook asked to stop
  // (the reason in *why), skip_rest when the step was undone, else go_on. A rank0 hook that returns
  // anything but go_on is a programming error (the other ranks would take another way): RuntimeError.
  HookVerdict after_step(const StepInfo& step, StopReason* why);
  void end(const RunEnd& run);
  // The names of the hooks this rank calls, in order ("timing, nan_guard, ...").
  std::vector<std::string> names() const;

 private:
  bool calls(const TrainHook& h) const { return h.ranks() == HookRanks::every || rank_ == 0; }
  int rank_;
  std::vector<std::unique_ptr<TrainHook>> hooks_;
};

}  // namespace gt
