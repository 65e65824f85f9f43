// Progressive growing's schedule (model.arch progan): the phases of a run, the fade-in weight of every step, and each phase's batch and learning rates.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/tensor.h"
#include "nn/progan.h"

namespace gt {

// One phase: the networks at `resolution` with its new block fading in (a transition) or not (stable), for the
// run's steps [first_step, first_step + steps).
struct ProganPhase {
  int index = 0;
  int resolution = 4;
  bool fading = false;
  int64_t first_step = 0, steps = 0;
  int64_t batch = 0;         // global batch (progan.batch, else train.batch_size)
  double lr_g = 0, lr_d = 0; // progan.lr, else optim.g.lr and optim.d.lr
  std::string name() const;  // "8x8 transition", "4x4 stable"
};

struct ProganSchedule {
  std::vector<ProganPhase> phases;
  int n_critic = 1;  // real batches a step reads
  int64_t total_steps() const;
  // The phase that runs step `step` (counted from 0); the last phase for a step past the end.
  const ProganPhase& phase_at(int64_t step) const;
  // The phase whose networks a model has after `step` steps: that of its last step (the first phase at 0).
  const ProganPhase& phase_after(int64_t step) const { return phase_at(step > 0 ? step - 1 : 0); }
  // The fade-in weight step `step` uses: in a transition the share of the phase's steps done before it
  // ((step - first_step) / steps: 0 at its first step), 1 elsewhere.
  double alpha(int64_t step) const;
  // The fade-in weight of the networks after `steps_done` steps, as their checkpoint records it and as samples,
  // the SWD and `gantrain sample` use it: the share of its phase's steps done ((steps_done - first_step) / steps;
  // 1 at the end of a transition), 1 in a stable phase.
  double alpha_after(int64_t steps_done) const;
  // Real images read by the steps before `step`.
  int64_t images_before(int64_t step) const;
};

// model.* as a ProganSpec (model.arch progan); UserError naming the key when a value does not fit.
ProganSpec progan_spec(const ModelConfig& m);

// The phases of progan.* for model.resolution: 4x4 stable, then a transition and a stable phase per doubling.
// A list whose length is neither 1 nor the number of resolutions, or a phase that would have no steps, is a
// UserError naming the key.
ProganSchedule progan_schedule(const Config& cfg);

// Nearest-neighbour upsampling of images [n, C, r, r] to [n, C, resolution, resolution] (resolution / r a power
// of two; the images themselves when r is already the resolution): a phase's samples at the final size.
Tensor upsample_to(const Tensor& images, int64_t resolution);

// The real images of a phase from the loader's batch at the final resolution: each halving a 2x2 average
// (the box filter), and in a transition the paper's fade of the reals, lerp(up(pool(x_r)), x_r, alpha), so D
// sees images that change as smoothly as G's. out must be [n, C, resolution, resolution].
void progan_reals(const Tensor& full, Tensor& out, bool fading, double alpha);

}  // namespace gt
