// How a run starts: new, resumed from a checkpoint (auto, never or a path), or already finished; decided by rank 0 for every rank.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "config/config.h"

namespace gt {

class Communicator;

enum class StartKind : int64_t { fresh, resume, finished };

struct StartPlan {
  StartKind kind = StartKind::fresh;
  std::string run_dir;     // the run directory to write (new, or the one resumed in place)
  bool in_place = false;   // run_dir already holds this run (metrics and log continue)
  std::string checkpoint;  // resume and finished: the checkpoint that validates
  int64_t step = 0;        // the step training continues from (the checkpoint's)
  std::string first_line;  // what happened, the run's first line
  std::vector<std::string> notes;  // rank 0: checkpoints skipped and why, leftovers removed
};

// Rank 0's decision (it reads the file system; it renames checkpoints that fail validation to
// NAME.invalid so that nothing is overwritten later). checkpoint.resume:
//   auto   out_dir/name with a config.yaml: continue from its newest checkpoint that validates (or
//          from step 0 in place when none does); a checkpoint at or past total_steps: finished.
//          A directory that is not a run: a new run beside it (name.1, ...).
//   never  a new run (name.1, ... when out_dir/name is taken).
//   PATH   that checkpoint (a UserError when it does not validate); in place when it lies in
//          out_dir/name/checkpoints, else in a new run directory.
//
// validate(path) is what "validates" means: "" for a checkpoint this run can continue from, else the
// sentence why not (the checkpoint is then skipped, or refused when it was given as a path); it throws
// a UserError for a checkpoint whose config this run cannot continue, which stops the run instead.
using CheckpointValidator = std::function<std::string(const std::string& path)>;
StartPlan plan_start(const Config& cfg, int64_t total_steps, const CheckpointValidator& validate);

// plan_start on rank 0 (a problem there is an agreed error on every rank), broadcast to all, so ranks
// that see a shared file system differently still take one path. Notes stay on rank 0.
StartPlan agree_start(const Config& cfg, int64_t total_steps, const CheckpointValidator& validate,
                      Communicator& comm);

// A resumed run's config against the checkpoint's: a key that changes the model, its shapes, the
// optimizers or the data stream (model.*, optim.*.name, train.batch_size, run.seed, data.source,
// data.synthetic_count) is a UserError naming the key, both values and `source`; every other change
// is accepted and returned as "key: old -> new" lines for the log.
std::vector<std::string> check_resumable(const std::string& checkpoint_config, const std::string& config,
                                         const std::string& source);

}  // namespace gt
