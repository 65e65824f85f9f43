// plan_start: choosing how a run starts from the run directory and checkpoint.resume; check_resumable.
#include "train/resume.h"

#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "train/checkpoints.h"
#include "train/run_dir.h"

namespace gt {

namespace fs = std::filesystem;

namespace {

bool is_run_directory(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "config.yaml", ec) && fs::is_directory(dir / "checkpoints", ec);
}

// The newest checkpoint of dir that validates; newer ones that do not are renamed NAME.invalid, each
// with a note. {} when none validates.
CheckpointFile newest_valid(const fs::path& dir, const CheckpointValidator& validate, std::vector<std::string>& notes) {
  for (const std::string& name : remove_unfinished_writes(dir))
    notes.push_back(fmt::format("removed {}, left by a checkpoint write that was cut short", name));
  std::vector<CheckpointFile> all = list_checkpoints(dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const std::string problem = validate(it->path.string());
    if (problem.empty()) return *it;
    const fs::path aside = it->path.string() + ".invalid";
    std::error_code ec;
    fs::rename(it->path, aside, ec);
    notes.push_back(fmt::format("skipped: {} (kept as {})", problem, aside.filename().string()));
  }
  return {-1, {}};
}

StartPlan fresh_beside(const fs::path& asked, std::string why) {
  StartPlan p;
  p.run_dir = unused_run_dir(asked).string();
  p.first_line = fmt::format("new run {}{}", p.run_dir, why);
  return p;
}

StartPlan from_checkpoint(const CheckpointFile& ck, const fs::path& dir, bool in_place, int64_t total_steps) {
  StartPlan p;
  p.run_dir = dir.string();
  p.in_place = in_place;
  p.checkpoint = ck.path.string();
  p.step = ck.step;
  if (ck.step >= total_steps) {
    p.kind = StartKind::finished;
    p.first_line = fmt::format("run {} is finished: {} holds step {} of {}; nothing to do (raise train.max_steps, "
                               "train.max_images or train.epochs to train on, or set checkpoint.resume=never for a new run)",
                               dir.string(), ck.path.filename().string(), ck.step, total_steps);
  } else {
    p.kind = StartKind::resume;
    p.first_line = fmt::format("resuming run {} from {} at step {} of {}", dir.string(), ck.path.string(), ck.step,
                               total_steps);
  }
  return p;
}

}  // namespace

StartPlan plan_start(const Config& cfg, int64_t total_steps, const CheckpointValidator& validate) {
  const fs::path asked = fs::path(cfg.run.out_dir) / cfg.run.name;
  const std::string& resume = cfg.checkpoint.resume;
  if (resume == "never") {
    const fs::path dir = unused_run_dir(asked);
    return fresh_beside(asked, dir == asked ? "" : fmt::format(" ({} is taken; checkpoint.resume is never)",
                                                               asked.string()));
  }
  if (resume != "auto") {
    const std::string problem = validate(resume);
    if (!problem.empty()) user_error("checkpoint.resume: {}", problem);
    const int64_t step = [&] {
      // The step is the checkpoint's own, whatever its file is called.
      for (const CheckpointFile& c : list_checkpoints(fs::path(resume).parent_path()))
        if (fs::equivalent(c.path, resume)) return c.step;
      return int64_t{-1};
    }();
    CheckpointFile ck{step, fs::path(resume)};
    std::error_code ec;
    const bool in_place = is_run_directory(asked) && fs::equivalent(fs::path(resume).parent_path(), asked / "checkpoints", ec);
    if (!in_place) {
      StartPlan p = fresh_beside(asked, "");
      p.kind = StartKind::resume;
      p.checkpoint = resume;
      p.step = -1;  // read from the checkpoint by the trainer
      p.first_line = fmt::format("new run {} continuing from checkpoint {}", p.run_dir, resume);
      return p;
    }
    if (ck.step < 0) user_error("checkpoint.resume: {} is not named ckpt_NNNNNNNN.h5", resume);
    return from_checkpoint(ck, asked, true, total_steps);
  }
  // auto
  std::error_code ec;
  if (!fs::exists(asked, ec) || (fs::is_directory(asked, ec) && fs::is_empty(asked, ec))) return fresh_beside(asked, "");
  if (!is_run_directory(asked))
    return fresh_beside(asked, fmt::format(" ({} exists but holds no gantrain run)", asked.string()));
  std::vector<std::string> notes;
  const CheckpointFile ck = newest_valid(asked / "checkpoints", validate, notes);
  StartPlan p;
  if (ck.step >= 0) {
    p = from_checkpoint(ck, asked, true, total_steps);
  } else {
    p.run_dir = asked.string();
    p.in_place = true;
    p.first_line = fmt::format("restarting run {} from step 0: it has no checkpoint that validates", asked.string());
  }
  p.notes = std::move(notes);
  return p;
}

StartPlan agree_start(const Config& cfg, int64_t total_steps, const CheckpointValidator& validate,
                      Communicator& comm) {
  StartPlan p;
  run_agreed(comm, [&] {
    if (comm.rank() == 0) p = plan_start(cfg, total_steps, validate);
  });
  int64_t fixed[3] = {static_cast<int64_t>(p.kind), p.in_place, p.step};
  comm.broadcast(fixed, 3, 0);
  p.kind = static_cast<StartKind>(fixed[0]);
  p.in_place = fixed[1] != 0;
  p.step = fixed[2];
  p.run_dir = broadcast_string(comm, p.run_dir, 0);
  p.checkpoint = broadcast_string(comm, p.checkpoint, 0);
  p.first_line = broadcast_string(comm, p.first_line, 0);
  return p;
}

std::vector<std::string> check_resumable(const std::string& checkpoint_config, const std::string& config,
                                         const std::string& source) {
  auto must_match = [](const std::string& key) {
    return key.starts_with("model.") || key == "optim.g.name" || key == "optim.d.name" || key == "train.batch_size" || key == "train.n_critic" ||
           key == "run.seed" || key == "data.source" || key == "data.synthetic_count";
  };
  const std::vector<ConfigValue> old_values = flatten_config_yaml(checkpoint_config);
  const std::vector<ConfigValue> new_values = flatten_config_yaml(config);
  std::vector<std::string> changes;
  for (const ConfigValue& now : new_values) {
    const ConfigValue* then = nullptr;
    for (const ConfigValue& o : old_values)
      if (o.path == now.path) then = &o;
    // A key the checkpoint's config lacks came with a newer gantrain: its default applied before.
    if (!then || then->value == now.value) continue;
    if (must_match(now.path))
      user_error("cannot resume from {}: {} is {} there and {} now, and a run cannot change it midway (use another "
                 "run.name, or checkpoint.resume=never for a new run)",
                 source, now.path, then->value, now.value);
    changes.push_back(fmt::format("{}: {} -> {}", now.path, then->value, now.value));
  }
  return changes;
}

}  // namespace gt
