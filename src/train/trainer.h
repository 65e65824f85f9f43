// The training loop of one process: data, models, optimizers, progress, metrics, samples and checkpoints in the run directory.
#pragma once
#include <string>

#include "config/config.h"

namespace gt {

struct TrainSummary {
  int64_t steps = 0;          // steps done in total (including before a resume)
  bool stopped_by_signal = false;
  double images_per_second = 0;
  std::string run_dir, metrics_path, samples_path, checkpoint_path;
};

// Validates data and model before anything is written (UserError on bad input), then trains.
// config_text is the resolved YAML saved to the run directory and to checkpoints.
TrainSummary train(const Config& cfg);

// Sets the CPU engine's OpenMP threads (0 = all cores). Returns the number used.
int set_cpu_threads(int threads);

}  // namespace gt
