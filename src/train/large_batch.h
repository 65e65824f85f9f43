// The large-batch plan: how the global batch becomes each rank's share and the share micro-batches whose gradients are accumulated, decided by rank 0 within a memory budget.
#pragma once
#include <cstdint>
#include <string>

#include "nn/sequential.h"
#include "train/gan_step.h"
#include "train/progressive.h"

namespace gt {

class Communicator;

struct LargeBatchPlan {
  int64_t global_batch = 0;  // train.batch_size
  int world = 1;             // ranks
  int64_t local_batch = 0;   // each rank's share: global_batch / world
  int64_t micro_batch = 0;   // images per forward and backward pass
  int64_t accumulation = 1;  // micro-batches per critic iteration: local_batch / micro_batch
  double bytes_per_image = 0;  // the estimate of one image's activations and gradients in a step
  double budget_bytes = 0;     // the budget the micro-batch was chosen within (0: none)
  std::string basis;           // why this micro-batch: "train.micro_batch", "within train.memory_mb", ...
  // "batch 1024 = 4 ranks x 256 = 4 micro-batches of 64 accumulated (within train.memory_mb 512: ...)".
  std::string describe() const;
};

// The estimated bytes one image of a micro-batch takes during a step, from the layer shapes (float
// activations kept for backward and their gradients, G's and one D pass at a time; a gradient penalty's
// pass keeps D's output gradients and tangents as well). An estimate for the plan, not a measurement.
double step_bytes_per_image(Sequential& G, Sequential& D, int nz, const GanObjective& objective);

// The plan for a global batch over `world` ranks: the share must divide evenly (a UserError naming
// train.batch_size otherwise); micro_batch > 0 must divide the share (naming train.micro_batch); with
// micro_batch 0 the largest divisor of the share whose estimate fits budget_bytes (0: the whole share),
// and a budget below one image is a UserError naming train.memory_mb. budget_source says where the
// budget came from, for the plan's line. granule > 1 (ProGAN's minibatch standard deviation groups): the share
// and every micro-batch must be multiples of it (a UserError naming model.mbstd_group or train.micro_batch).
LargeBatchPlan plan_large_batch(int64_t global_batch, int world, int64_t micro_batch, double budget_bytes,
                                double bytes_per_image, const std::string& budget_source, int64_t granule = 1);

// The plan of one Progressive GAN phase at its batch: the estimate of its own networks, every micro-batch whole
// minibatch-stddev groups; a UserError names the phase and batch_key (the key its batch came from).
LargeBatchPlan plan_progan_phase(const ProganSpec& spec, const ProganPhase& phase, const GanObjective& objective,
                                 int world, int64_t micro_batch, double budget_bytes, const std::string& budget_source,
                                 const std::string& batch_key);

// Rank 0's plan on every rank (its micro-batch and basis broadcast), so ranks whose budgets differ (free
// GPU memory) still take the same micro-batches.
LargeBatchPlan agree_large_batch(const LargeBatchPlan& mine, Communicator& comm);

}  // namespace gt
