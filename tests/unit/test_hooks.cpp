// Unit tests of the training hooks: the HookList's order and rank rules, the timing split of a step, the planned length (steps, images, epochs), the learning-rate schedule and the built-in hooks in a real run.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "config/config.h"
#include "train/engine.h"
#include "train/hooks.h"
#include "train/run_hooks.h"
#include "train/run_setup.h"
#include "train/step_timing.h"
#include "train/trainer.h"

namespace gt {
namespace {

namespace fs = std::filesystem;
using Clock = StepClock::Clock;

// A hook that writes what it sees into a shared log and answers with a fixed verdict at one step.
class Recorder final : public TrainHook {
 public:
  Recorder(std::string name, HookRanks ranks, std::vector<std::string>& log, int64_t act_at = -1,
           HookVerdict verdict = HookVerdict::go_on, StopReason reason = StopReason::none)
      : name_(std::move(name)), ranks_(ranks), log_(log), act_at_(act_at), verdict_(verdict), reason_(reason) {}
  const char* name() const override { return name_.c_str(); }
  HookRanks ranks() const override { return ranks_; }
  void begin(const RunBegin& run) override { log_.push_back(name_ + ".begin@" + std::to_string(run.first_step)); }
  HookVerdict after_step(const StepInfo& step) override {
    log_.push_back(name_ + ".step" + std::to_string(step.step));
    return step.step == act_at_ ? verdict_ : HookVerdict::go_on;
  }
  StopReason stop_reason() const override { return reason_; }
  void end(const RunEnd& run) override { log_.push_back(name_ + ".end@" + std::to_string(run.step)); }

 private:
  std::string name_;
  HookRanks ranks_;
  std::vector<std::string>& log_;
  int64_t act_at_;
  HookVerdict verdict_;
  StopReason reason_;
};

StepInfo step_info(int64_t step) {
  StepInfo s;
  s.step = step;
  s.total_steps = 10;
  return s;
}

TEST(HookList, CallsHooksInOrderAndRank0HooksOnRank0Only) {
  for (int rank : {0, 1}) {
    std::vector<std::string> log;
    HookList hooks(rank);
    hooks.add(std::make_unique<Recorder>("a", HookRanks::every, log));
    hooks.add(std::make_unique<Recorder>("b", HookRanks::rank0, log));
    hooks.add(std::make_unique<Recorder>("c", HookRanks::every, log));
    hooks.begin({3, 10});
    StopReason why = StopReason::none;
    EXPECT_EQ(hooks.after_step(step_info(4), &why), HookVerdict::go_on);
    hooks.end({3, 4, 10, StopReason::none});
    const std::vector<std::string> want =
        rank == 0 ? std::vector<std::string>{"a.begin@3", "b.begin@3", "c.begin@3", "a.step4", "b.step4", "c.step4",
                                             "a.end@4", "b.end@4", "c.end@4"}
                  : std::vector<std::string>{"a.begin@3", "c.begin@3", "a.step4", "c.step4", "a.end@4", "c.end@4"};
    EXPECT_EQ(log, want) << "rank " << rank;
    EXPECT_EQ(hooks.names(), rank == 0 ? (std::vector<std::string>{"a", "b", "c"}) : (std::vector<std::string>{"a", "c"}));
  }
}

TEST(HookList, SkipRestHidesTheStepFromLaterHooks) {
  std::vector<std::string> log;
  HookList hooks(0);
  hooks.add(std::make_unique<Recorder>("guard", HookRanks::every, log, 2, HookVerdict::skip_rest));
  hooks.add(std::make_unique<Recorder>("later", HookRanks::rank0, log));
  StopReason why = StopReason::none;
  EXPECT_EQ(hooks.after_step(step_info(1), &why), HookVerdict::go_on);
  EXPECT_EQ(hooks.after_step(step_info(2), &why), HookVerdict::skip_rest);
  EXPECT_EQ(hooks.after_step(step_info(3), &why), HookVerdict::go_on);
  EXPECT_EQ(log, (std::vector<std::string>{"guard.step1", "later.step1", "guard.step2", "guard.step3", "later.step3"}));
  EXPECT_EQ(why, StopReason::none);
}

TEST(HookList, StopLetsLaterHooksSeeTheStepAndKeepsTheFirstReason) {
  std::vector<std::string> log;
  HookList hooks(0);
  hooks.add(std::make_unique<Recorder>("time", HookRanks::every, log, 5, HookVerdict::stop, StopReason::time_limit));
  hooks.add(std::make_unique<Recorder>("writer", HookRanks::rank0, log));
  hooks.add(std::make_unique<Recorder>("signal", HookRanks::every, log, 5, HookVerdict::stop, StopReason::signal));
  StopReason why = StopReason::none;
  EXPECT_EQ(hooks.after_step(step_info(5), &why), HookVerdict::stop);
  EXPECT_EQ(why, StopReason::time_limit);
  EXPECT_EQ(log, (std::vector<std::string>{"time.step5", "writer.step5", "signal.step5"}));
}

TEST(HookList, ARank0HookMayNotChangeTheLoopsWay) {
  // Rank 0 alone would stop while the other ranks waited in the next step's collectives: refused.
  for (HookVerdict v : {HookVerdict::stop, HookVerdict::skip_rest}) {
    std::vector<std::string> log;
    HookList hooks(0);
    hooks.add(std::make_unique<Recorder>("lonely", HookRanks::rank0, log, 1, v, StopReason::signal));
    StopReason why = StopReason::none;
    try {
      hooks.after_step(step_info(1), &why);
      FAIL() << "a rank-0 hook changed the loop's way";
    } catch (const RuntimeError& e) {
      EXPECT_CONTAINS(std::string(e.what()), "lonely");
      EXPECT_CONTAINS(std::string(e.what()), "only a hook every rank calls");
    }
  }
}

// ---- the timing split --------------------------------------------------------------------------------

// A step's moments from offsets in ms after t0.
StepClock clock_at(Clock::time_point t0, double submitted, double loaded, double waited, double agreed) {
  auto at = [t0](double ms) { return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(ms)); };
  return {t0, at(submitted), at(loaded), at(waited), at(agreed)};
}

double sum(const double (&parts)[kTimeParts]) {
  double s = 0;
  for (double p : parts) s += p;
  return s;
}

constexpr int kG = static_cast<int>(StepPhase::g_forward), kD = static_cast<int>(StepPhase::d_forward_backward),
              kComm = static_cast<int>(StepPhase::comm_wait), kOther = static_cast<int>(StepPhase::other),
              kOpt = static_cast<int>(StepPhase::optimizer);

TEST(StepTiming, HostPhasesCountAsMeasuredAndThePartsAddUpToTheWallTime) {
  const Clock::time_point prev = Clock::now(), t0 = prev + std::chrono::milliseconds(3);
  // submit 10 ms (the CPU step), read 4 ms, wait 0.5 ms, agree 1 ms; phases 9 ms of the 10.5.
  const StepClock c = clock_at(t0, 10, 14, 14.5, 15.5);
  double phases[kStepPhases] = {};
  phases[kG] = 2e-3, phases[kD] = 5e-3, phases[kOpt] = 1.5e-3, phases[kComm] = 0.5e-3;
  double parts[kTimeParts];
  split_step_time(c, prev, phases, PhaseClock::host, parts);
  EXPECT_NEAR(sum(parts), 18.5e-3, 1e-9);  // 3 ms rest + 15.5 ms step
  EXPECT_NEAR(parts[kTimeRest], 3e-3, 1e-9);
  EXPECT_NEAR(parts[kTimeData], 4e-3, 1e-9);
  EXPECT_NEAR(parts[kG], 2e-3, 1e-9);
  EXPECT_NEAR(parts[kComm], 0.5e-3 + 1e-3, 1e-9);  // the bucket wait and the results' all-reduce
  EXPECT_NEAR(parts[kOther], 10.5e-3 - 9e-3, 1e-9);
}

TEST(StepTiming, DevicePhasesOverlapTheNextBatch) {
  const Clock::time_point t0 = Clock::now();
  double phases[kStepPhases] = {};
  phases[kG] = 3e-3, phases[kD] = 4e-3, phases[kOpt] = 1e-3;  // 8 ms on the device
  double parts[kTimeParts];
  // Device-bound: launches 1 ms, the batch read in 2 ms, then wait() blocks 6 ms: no data wait at all.
  split_step_time(clock_at(t0, 1, 3, 9, 9.2), t0, phases, PhaseClock::device, parts);
  EXPECT_NEAR(sum(parts), 9.2e-3, 1e-9);
  EXPECT_EQ(parts[kTimeData], 0.0);
  EXPECT_NEAR(parts[kD], 4e-3, 1e-9);
  EXPECT_NEAR(parts[kOther], 1e-3, 1e-9);  // 9 ms of step, 8 ms in phases
  // Data-bound: launches 1 ms, the batch read in 20 ms, wait() returns at once: the device was done at
  // about 8 ms, so 13 ms were spent waiting for data.
  split_step_time(clock_at(t0, 1, 21, 21.01, 21.2), t0, phases, PhaseClock::device, parts);
  EXPECT_NEAR(sum(parts), 21.2e-3, 1e-9);
  EXPECT_NEAR(parts[kTimeData], 13e-3, 1e-9);
  EXPECT_NEAR(parts[kOther], 21.01e-3 - 8e-3 - 13e-3, 1e-9);
  // Launch-bound (eager launches longer than the device's work): the device waited on the host, which
  // is `other`; data is what the read took after the launches and the device's last kernel.
  split_step_time(clock_at(t0, 12, 14, 14.01, 14.1), t0, phases, PhaseClock::device, parts);
  EXPECT_NEAR(sum(parts), 14.1e-3, 1e-9);
  EXPECT_NEAR(parts[kTimeData], 2e-3, 1e-9);
  EXPECT_NEAR(parts[kOther], 14.01e-3 - 8e-3 - 2e-3, 1e-9);
}

TEST(StepTiming, PhasesLongerThanTheStepAreScaledAndNoneCountsAllAsOther) {
  const Clock::time_point t0 = Clock::now();
  double phases[kStepPhases] = {};
  phases[kG] = 6e-3, phases[kD] = 6e-3;  // 12 ms measured in a 10 ms step: skew
  double parts[kTimeParts];
  split_step_time(clock_at(t0, 2, 4, 10, 10), t0, phases, PhaseClock::device, parts);
  EXPECT_NEAR(sum(parts), 10e-3, 1e-9);
  EXPECT_NEAR(parts[kG], 5e-3, 1e-9);
  for (double p : parts) EXPECT_GE(p, 0.0);
  split_step_time(clock_at(t0, 2, 4, 10, 10), t0, phases, PhaseClock::host, parts);
  EXPECT_NEAR(sum(parts), 10e-3, 1e-9);
  EXPECT_NEAR(parts[kG] + parts[kD], 8e-3, 1e-9);  // the engine's 8 ms (submit + wait), the read apart
  split_step_time(clock_at(t0, 2, 4, 10, 10), t0, phases, PhaseClock::none, parts);
  EXPECT_NEAR(parts[kOther], 8e-3, 1e-9);
  EXPECT_EQ(parts[kG], 0.0);
  EXPECT_NEAR(parts[kTimeData], 2e-3, 1e-9);
}

// An engine with fixed phase seconds per call, to drive the TimingHook.
class PhaseEngine final : public StepEngine {
 public:
  std::string describe() const override { return "fake"; }
  void submit(std::span<const Tensor>, int64_t) override {}
  StepResult wait() override { return {}; }
  Tensor generate(const Tensor& z) override { return z; }
  void sync_to_host() override {}
  void load_from_host() override {}
  PhaseClock take_phase_seconds(double (&s)[kStepPhases]) override {
    for (double& v : s) v = 0;
    s[kG] = 1e-3;
    return PhaseClock::host;
  }
};

TEST(TimingHook, WindowsAreMillisecondsPerStepAndStartAfresh) {
  PhaseEngine engine;
  TimingHook timing(engine);
  timing.begin({0, 10});
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < 4; ++i) {
    StepInfo s = step_info(i + 1);
    s.clock = clock_at(t0 + std::chrono::milliseconds(10 * i), 2, 3, 3, 3.5);
    timing.after_step(s);
  }
  auto window = timing.take_window(4, 0.040);
  ASSERT_EQ(window.size(), static_cast<size_t>(kTimeParts + 1));
  EXPECT_EQ(window[kG].first, "ms_g_forward");
  EXPECT_NEAR(window[kG].second, 1.0, 1e-9);
  EXPECT_NEAR(window[kTimeData].second, 1.0, 1e-9);
  EXPECT_NEAR(window[kComm].second, 0.5, 1e-9);
  EXPECT_EQ(window.back().first, "ms_step");
  EXPECT_NEAR(window.back().second, 10.0, 1e-9);
  // The next window starts from zero.
  auto empty = timing.take_window(1, 0.0);
  EXPECT_EQ(empty[kG].second, 0.0);
  EXPECT_CONTAINS(timing.run_summary(), "G forward 1.0");
}

// ---- the planned length ------------------------------------------------------------------------------

TEST(PlannedSteps, StepsThenImagesThenEpochs) {
  TrainConfig t;
  t.batch_size = 64;
  t.epochs = 3;
  EXPECT_EQ(planned_steps(t, 100), 300);
  t.max_images = 1000;  // 15.6 steps: whole steps, rounded up
  EXPECT_EQ(planned_steps(t, 100), 16);
  t.max_images = 1024;
  EXPECT_EQ(planned_steps(t, 100), 16);
  t.max_images = 100000;  // more than the epochs: replaces them
  EXPECT_EQ(planned_steps(t, 100), 1563);
  t.max_steps = 7;
  EXPECT_EQ(planned_steps(t, 100), 7);
}

// ---- learning rates ----------------------------------------------------------------------------------

TEST(LrFactor, BatchScalingTimesALinearWarmup) {
  TrainConfig t;
  t.batch_size = 1024;
  t.lr_base_batch = 256;
  EXPECT_EQ(lr_factor(t, 0), 1.0);  // none
  t.lr_scaling = LrScaling::linear;
  EXPECT_EQ(lr_factor(t, 0), 4.0);
  t.lr_scaling = LrScaling::sqrt;
  EXPECT_EQ(lr_factor(t, 7), 2.0);
  t.warmup_steps = 4;  // steps 0..3 use 1/4, 2/4, 3/4, 4/4 of the rate
  EXPECT_DOUBLE_EQ(lr_factor(t, 0), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(t, 2), 1.5);
  EXPECT_EQ(lr_factor(t, 3), 2.0);
  EXPECT_EQ(lr_factor(t, 100), 2.0);
}

TEST(Trainer, LearningRatesFollowTheScheduleInTheMetrics) {
  test::TempDir tmp("gt_test_hooks_lr");
  Config c = load_config(std::string(GT_SOURCE_DIR) + "/config/tiny.yaml",
                         {"run.out_dir=" + tmp.path().string(), "run.name=lr", "train.max_steps=6",
                          "train.lr_scaling=linear", "train.lr_base_batch=4", "train.warmup_steps=4",
                          "optim.d.lr=0.001", "log.every_steps=1", "log.sample_every_steps=0",
                          "checkpoint.every_steps=0"});
  const TrainSummary s = train(c);
  ASSERT_EQ(s.steps, 6);
  std::ifstream in(s.metrics_path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 6u);
  // The value of "key": in a metrics line.
  auto value = [](const std::string& line, const std::string& key) {
    const size_t at = line.find("\"" + key + "\":");
    return at == std::string::npos ? -1.0 : std::stod(line.substr(at + key.size() + 3));
  };
  // Batch 8 over base 4: x2; warmup 1/4, 2/4, 3/4, then 1 (optim.g.lr 2e-4 in tiny.yaml, D's 1e-3 here).
  const double ramp[] = {0.25, 0.5, 0.75, 1, 1, 1};
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_NEAR(value(lines[i], "lr_g"), 2e-4 * 2 * ramp[i], 1e-18) << lines[i];
    EXPECT_NEAR(value(lines[i], "lr_d"), 1e-3 * 2 * ramp[i], 1e-18) << lines[i];
  }
}

TEST(Trainer, ProgressiveLearningRatesArePerPhaseAndScaledByThePhasesBatch) {
  // config/progan_tiny.yaml: phases of 6 steps, batches 16 (4x4, 8x8) and 8 (16x16); progan.lr per resolution,
  // linear scaling from a base batch of 8: x2 at batch 16, x1 at batch 8.
  test::TempDir tmp("gt_test_hooks_progan_lr");
  Config c = load_config(std::string(GT_SOURCE_DIR) + "/config/progan_tiny.yaml",
                         {"run.out_dir=" + tmp.path().string(), "run.name=lr", "progan.lr=[0.004, 0.002, 0.001]",
                          "train.lr_scaling=linear", "train.lr_base_batch=8", "log.every_steps=1",
                          "log.sample_every_steps=0", "checkpoint.every_steps=0"});
  const TrainSummary s = train(c);
  ASSERT_EQ(s.steps, 30);
  std::ifstream in(s.metrics_path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 30u);
  auto value = [](const std::string& line, const std::string& key) {
    const size_t at = line.find("\"" + key + "\":");
    return at == std::string::npos ? -1.0 : std::stod(line.substr(at + key.size() + 3));
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    const int resolution = i < 6 ? 4 : i < 18 ? 8 : 16;
    const double want = resolution == 4 ? 0.004 * 2 : resolution == 8 ? 0.002 * 2 : 0.001;
    EXPECT_EQ(value(lines[i], "resolution"), resolution) << lines[i];
    EXPECT_NEAR(value(lines[i], "lr_g"), want, 1e-15) << lines[i];
    EXPECT_NEAR(value(lines[i], "lr_d"), want, 1e-15) << lines[i];
  }
}

TEST(Trainer, MaxImagesStopsAfterWholeStepsOfThem) {
  test::TempDir tmp("gt_test_hooks_images");
  Config c = load_config(std::string(GT_SOURCE_DIR) + "/config/tiny.yaml",
                         {"run.out_dir=" + tmp.path().string(), "run.name=images", "train.max_steps=0",
                          "train.max_images=20", "train.epochs=5", "log.every_steps=1", "log.sample_every_steps=0",
                          "checkpoint.every_steps=0"});
  const TrainSummary s = train(c);
  EXPECT_EQ(s.steps, 3);  // 20 images at batch 8: 3 steps
  EXPECT_FALSE(s.stopped_by_signal || s.stopped_by_time);
  EXPECT_CONTAINS(s.checkpoint_path, "ckpt_00000003");
  std::ifstream log(fs::path(s.run_dir) / "train.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_CONTAINS(text, "done: 3 steps");
  EXPECT_CONTAINS(text, "time per step (ms)");
}

}  // namespace
}  // namespace gt
