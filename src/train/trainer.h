// The training loop of one process: data, models, optimizers, progress, metrics, samples and checkpoints in the run directory.
#pragma once
#include <string>

#include "config/config.h"
#include "nn/dcgan.h"
#include "train/gan_step.h"

namespace gt {

class Communicator;

struct TrainSummary {
  int64_t steps = 0;          // steps done
  bool stopped_by_signal = false;
  bool stopped_by_time = false;    // train.max_minutes
  bool already_finished = false;   // checkpoint.resume found the run finished: nothing was trained
  double images_per_second = 0;
  std::string run_dir, metrics_path, samples_path, checkpoint_path;
};

// Validates data and model before anything is written (UserError on bad input), then trains. The
// resolved config (every key, config_to_yaml) is saved to the run directory and to checkpoints.
TrainSummary train(const Config& cfg);
// The same as one rank of a data-parallel job: every rank of comm calls it with the same config; each
// trains on its shard of every global batch, and rank 0 alone writes the run directory and the console.
// A problem every rank sees (bad input, mismatched config or build) is an AgreedUserError/RuntimeError
// thrown on every rank; a failure on one rank alone is an ordinary exception (the caller aborts the job).
TrainSummary train(const Config& cfg, Communicator& comm);

// The step's objective from loss.*, train.n_critic and train.g_fresh_noise.
GanObjective gan_objective(const Config& cfg);
// "objective: wgan | D's weights clamped to +-0.01 | 5 D updates per G update | ...", for the run's banner
// and `info --config`.
std::string describe_objective(const Config& cfg);

// The DCGAN geometry of a model config; UserError when model.arch is not a DCGAN.
DcganSpec dcgan_spec(const ModelConfig& m);

// Sets the CPU engine's OpenMP threads (0 = all cores). Returns the number used.
int set_cpu_threads(int threads);

}  // namespace gt
