// Resume decisions, config changes across a resume, checkpoint listing and retention, and the stop-signal guard.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "common/test_util.h"
#include "config/config.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "train/checkpoints.h"
#include "train/resume.h"
#include "train/signal_guard.h"
#include "train/trainer.h"

namespace gt {
namespace {

namespace fs = std::filesystem;

void touch(const fs::path& p, const std::string& text = "x") {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// ---- retention -----------------------------------------------------------------------------------

TEST(Retention, KeepsTheNewestK) {
  const std::vector<double> t = {0, 10, 20, 30, 40};
  EXPECT_EQ(retention_victims(t, {2, 0}, 4), (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(retention_victims(t, {5, 0}, 4), (std::vector<size_t>{}));
  EXPECT_EQ(retention_victims(t, {9, 0}, 4), (std::vector<size_t>{}));
  EXPECT_EQ(retention_victims(t, {0, 0}, 4), (std::vector<size_t>{})) << "keep_last 0 keeps all";
}

TEST(Retention, NeverDeletesTheProtectedCheckpoint) {
  // The newest checkpoint that validates is the third: the two newer ones failed validation.
  EXPECT_EQ(retention_victims({0, 10, 20, 30, 40}, {2, 0}, 2), (std::vector<size_t>{0, 1}));
}

TEST(Retention, KeepsOnePerHoursWindow) {
  // Checkpoints every 20 minutes for 3 hours; keep the newest 2 and one per hour.
  std::vector<double> t;
  for (int i = 0; i <= 9; ++i) t.push_back(i * 1200.0);
  const std::vector<size_t> victims = retention_victims(t, {2, 1.0}, t.size() - 1);
  // Kept: 0 (the first), 3 (60 min later), 6 (120 min), and the newest two, 8 and 9.
  EXPECT_EQ(victims, (std::vector<size_t>{1, 2, 4, 5, 7}));
  // Applying retention again to what is left deletes nothing more: the decision is stable.
  std::vector<double> left;
  for (size_t i : {0, 3, 6, 8, 9}) left.push_back(t[i]);
  EXPECT_TRUE(retention_victims(left, {2, 1.0}, left.size() - 1).empty());
}

TEST(Retention, AppliesToTheCheckpointFilesOnly) {
  const fs::path dir = fs::temp_directory_path() / "gt_test_retention";
  fs::remove_all(dir);
  for (int s : {2, 4, 6, 8}) touch(dir / fmt::format("ckpt_{:08d}.h5", s));
  touch(dir / "ckpt_00000010.h5.tmp");
  touch(dir / "ckpt_00000001.h5.invalid");
  touch(dir / "notes.txt");
  const std::vector<CheckpointFile> all = list_checkpoints(dir);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all.front().step, 2);
  EXPECT_EQ(all.back().step, 8);
  const std::vector<std::string> gone = apply_retention(dir, {2, 0}, dir / "ckpt_00000008.h5");
  EXPECT_EQ(gone.size(), 2u);
  EXPECT_FALSE(fs::exists(dir / "ckpt_00000002.h5"));
  EXPECT_TRUE(fs::exists(dir / "ckpt_00000006.h5"));
  EXPECT_TRUE(fs::exists(dir / "ckpt_00000001.h5.invalid"));
  EXPECT_TRUE(fs::exists(dir / "notes.txt"));
  EXPECT_EQ(remove_unfinished_writes(dir), (std::vector<std::string>{"ckpt_00000010.h5.tmp"}));
  EXPECT_FALSE(fs::exists(dir / "ckpt_00000010.h5.tmp"));
  fs::remove_all(dir);
}

// ---- config changes across a resume --------------------------------------------------------------

std::string yaml_with(const std::vector<std::string>& overrides) {
  return config_to_yaml(parse_config("", "base.yaml", overrides));
}

TEST(Resumable, HarmlessChangesAreListed) {
  const std::string before = yaml_with({"train.max_steps=20", "log.every_steps=5"});
  const std::string after = yaml_with({"train.max_steps=40", "log.every_steps=1", "optim.g.lr=0.0001"});
  const std::vector<std::string> changes = check_resumable(before, after, "ck.h5");
  EXPECT_EQ(changes, (std::vector<std::string>{"train.max_steps: 20 -> 40", "optim.g.lr: 0.0002 -> 0.0001",
                                               "log.every_steps: 5 -> 1"}));
  EXPECT_TRUE(check_resumable(before, before, "ck.h5").empty());
}

TEST(Resumable, ChangesThatCannotResumeNameTheKey) {
  const std::string before = yaml_with({});
  for (const char* change_text : {"model.g_width=64", "model.resolution=32", "optim.d.name=sgd",
                                    "train.batch_size=512", "run.seed=1", "data.source=fashion-mnist",
                                    "data.synthetic_count=10"}) {
    const std::string change = change_text;
    const std::string key = change.substr(0, change.find('='));
    try {
      check_resumable(before, yaml_with({change}), "runs/x/checkpoints/ckpt_00000010.h5");
      ADD_FAILURE() << change << " was accepted";
    } catch (const UserError& e) {
      EXPECT_CONTAINS(e.what(), key);
      EXPECT_CONTAINS(e.what(), "ckpt_00000010.h5");
    }
  }
}

TEST(Resumable, FlattenedConfigHasEveryKey) {
  const std::vector<ConfigValue> values = flatten_config_yaml(yaml_with({}));
  EXPECT_EQ(values.size(), config_schema().size());
  EXPECT_EQ(values.front().path, "run.name");
}

// ---- how a run starts ----------------------------------------------------------------------------

Config tiny(const fs::path& out, std::vector<std::string> more = {}) {
  std::vector<std::string> o = {"run.out_dir=" + out.string(), "run.name=t", "train.max_steps=4", "log.every_steps=1",
                                "log.sample_every_steps=0", "checkpoint.every_steps=2"};
  o.insert(o.end(), more.begin(), more.end());
  return load_config(std::string(GT_SOURCE_DIR) + "/config/tiny.yaml", o);
}

TEST(PlanStart, AutoNeverPathAndFinished) {
  const fs::path out = fs::temp_directory_path() / "gt_test_plan_start";
  fs::remove_all(out);
  StartPlan p = plan_start(tiny(out), 4, checkpoint_problem);
  EXPECT_EQ(p.kind, StartKind::fresh);
  EXPECT_EQ(p.run_dir, (out / "t").string());
  EXPECT_FALSE(p.in_place);
  // A folder that is not a run: a new run beside it.
  touch(out / "t" / "mine.txt");
  p = plan_start(tiny(out), 4, checkpoint_problem);
  EXPECT_EQ(p.run_dir, (out / "t.1").string());
  fs::remove_all(out);

  train(tiny(out, {"train.max_steps=2"}));
  p = plan_start(tiny(out), 4, checkpoint_problem);
  EXPECT_EQ(p.kind, StartKind::resume);
  EXPECT_TRUE(p.in_place);
  EXPECT_EQ(p.step, 2);
  EXPECT_EQ(p.checkpoint, (out / "t" / "checkpoints" / "ckpt_00000002.h5").string());
  EXPECT_EQ(plan_start(tiny(out), 2, checkpoint_problem).kind, StartKind::finished);
  p = plan_start(tiny(out, {"checkpoint.resume=never"}), 4, checkpoint_problem);
  EXPECT_EQ(p.kind, StartKind::fresh);
  EXPECT_EQ(p.run_dir, (out / "t.1").string());
  // An explicit checkpoint elsewhere: a new run continuing from it.
  p = plan_start(tiny(out, {"run.name=u", "checkpoint.resume=" + (out / "t/checkpoints/ckpt_00000002.h5").string()}), 4,
                 checkpoint_problem);
  EXPECT_EQ(p.kind, StartKind::resume);
  EXPECT_FALSE(p.in_place);
  EXPECT_EQ(p.run_dir, (out / "u").string());
  EXPECT_THROW(plan_start(tiny(out, {"checkpoint.resume=" + (out / "nothing.h5").string()}), 4, checkpoint_problem),
               UserError);
  // A run directory whose only checkpoint is damaged: it is put aside and the run restarts in place.
  touch(out / "t" / "checkpoints" / "ckpt_00000002.h5", "not hdf5");
  touch(out / "t" / "checkpoints" / "ckpt_00000003.h5.tmp");
  p = plan_start(tiny(out), 4, checkpoint_problem);
  EXPECT_EQ(p.kind, StartKind::fresh);
  EXPECT_TRUE(p.in_place);
  EXPECT_EQ(p.run_dir, (out / "t").string());
  EXPECT_TRUE(fs::exists(out / "t" / "checkpoints" / "ckpt_00000002.h5.invalid"));
  EXPECT_FALSE(fs::exists(out / "t" / "checkpoints" / "ckpt_00000003.h5.tmp"));
  ASSERT_EQ(p.notes.size(), 2u);
  EXPECT_CONTAINS(p.notes[0], "ckpt_00000003.h5.tmp");
  EXPECT_CONTAINS(p.notes[1], "ckpt_00000002.h5");
  fs::remove_all(out);
}

// ---- stop signals ----------------------------------------------------------------------------------

extern "C" void resume_test_handler(int) {}

TEST(SignalGuardExtra, TheConfiguredSignalStopsAndOthersAreLeftAlone) {
  std::signal(SIGUSR1, resume_test_handler);
  std::signal(SIGUSR2, resume_test_handler);
  {
    SignalGuard guard(SIGUSR2);
    struct sigaction now {};
    sigaction(SIGUSR1, nullptr, &now);
    EXPECT_EQ(now.sa_handler, &resume_test_handler) << "SIGUSR1 is not ours when train.stop_signal is SIGUSR2";
    std::raise(SIGUSR2);
    EXPECT_EQ(guard.stop_signal(), SIGUSR2);
  }
  {
    SignalGuard guard(0);
    std::raise(SIGUSR1);  // the test's handler, not the guard's
    EXPECT_EQ(guard.stop_signal(), 0);
  }
  std::signal(SIGUSR1, SIG_DFL);
  std::signal(SIGUSR2, SIG_DFL);
}

TEST(SignalGuardExtra, ASecondStopSignalEndsTheProcessAtOnce) {
  EXPECT_EXIT(
      {
        SignalGuard guard(SIGUSR1);
        std::raise(SIGTERM);
        std::raise(SIGINT);
        std::_Exit(0);  // not reached
      },
      ::testing::KilledBySignal(SIGINT), "second stop signal: stopping at once");
}

}  // namespace
}  // namespace gt
