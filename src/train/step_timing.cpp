// The timing breakdown: each step's wall time split into its parts, and the hook that sums them per logging window and per run.
#include "train/step_timing.h"

#include <algorithm>
#include <fmt/format.h>

#include "train/engine.h"

namespace gt {
namespace {

double secs(StepClock::Clock::time_point a, StepClock::Clock::time_point b) {
  return std::max(0.0, std::chrono::duration<double>(b - a).count());
}

}  // namespace

void split_step_time(const StepClock& c, StepClock::Clock::time_point previous_end, const double (&phases)[kStepPhases],
                     PhaseClock how, double (&parts)[kTimeParts]) {
  std::fill(std::begin(parts), std::end(parts), 0.0);
  constexpr int kOther = static_cast<int>(StepPhase::other), kComm = static_cast<int>(StepPhase::comm_wait);
  const double submit_s = secs(c.begin, c.submitted), data_s = secs(c.submitted, c.loaded),
               wait_s = secs(c.loaded, c.waited);
  parts[kTimeRest] = secs(previous_end, c.begin);
  parts[kComm] = secs(c.waited, c.agreed);
  double named = 0;
  if (how != PhaseClock::none)
    for (int p = 0; p < kStepPhases; ++p)
      if (p != kOther) named += std::max(0.0, phases[p]);
  if (how == PhaseClock::device) {
    const double span = submit_s + data_s + wait_s;  // begin..waited: the device ran the step inside it
    const double scale = named > span ? span / named : 1.0;
    for (int p = 0; p < kStepPhases; ++p)
      if (p != kOther) parts[p] += std::max(0.0, phases[p]) * scale;
    const double busy = named * scale, idle = span - busy;
    // When the device was done: at `waited` if wait() had to wait, else (estimated) once the launches
    // were made and its busy time had passed.
    const double device_done = wait_s > kDeviceDoneWait ? span : std::max(submit_s, busy);
    parts[kTimeData] = std::clamp(submit_s + data_s - device_done, 0.0, idle);
    parts[kOther] = idle - parts[kTimeData];
    return;
  }
  const double engine_s = submit_s + wait_s;
  if (how == PhaseClock::host) {
    const double scale = named > engine_s ? engine_s / named : 1.0;
    for (int p = 0; p < kStepPhases; ++p)
      if (p != kOther) parts[p] += std::max(0.0, phases[p]) * scale;
    parts[kOther] = engine_s - named * scale;
  } else {
    parts[kOther] = engine_s;
  }
  parts[kTimeData] = data_s;
}

void TimingHook::begin(const RunBegin&) { mark_ = StepClock::Clock::now(); }

HookVerdict TimingHook::after_step(const StepInfo& step) {
  double phases[kStepPhases] = {};
  const PhaseClock how = engine_.take_phase_seconds(phases);
  double parts[kTimeParts];
  split_step_time(step.clock, mark_, phases, how, parts);
  mark_ = step.clock.agreed;
  for (int i = 0; i < kTimeParts; ++i) window_[i] += parts[i], run_[i] += parts[i];
  ++run_steps_;
  return HookVerdict::go_on;
}

void TimingHook::close_window_rest() {
  const auto now = StepClock::Clock::now();
  const double s = secs(mark_, now);
  window_[kTimeRest] += s, run_[kTimeRest] += s;
  mark_ = now;
}

std::vector<std::pair<std::string, double>> TimingHook::take_window(int64_t steps, double window_s) {
  const double n = static_cast<double>(std::max<int64_t>(steps, 1));
  std::vector<std::pair<std::string, double>> v;
  for (int i = 0; i < kTimeParts; ++i) v.emplace_back(kTimeKeys[i], 1e3 * window_[i] / n);
  v.emplace_back("ms_step", 1e3 * window_s / n);
  std::fill(std::begin(window_), std::end(window_), 0.0);
  return v;
}

std::string TimingHook::run_summary() const {
  const double steps = static_cast<double>(std::max<int64_t>(run_steps_, 1));
  double total = 0;
  std::string parts;
  for (int i = 0; i < kTimeParts; ++i) {
    total += run_[i];
    parts += fmt::format("{}{} {:.1f}", i ? " | " : "", kTimeLabels[i], 1e3 * run_[i] / steps);
  }
  return fmt::format("time per step (ms): {} | total {:.1f}", parts, 1e3 * total / steps);
}

}  // namespace gt
