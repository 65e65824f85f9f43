// What a run reads and builds before its loop, shared by the trainer and its built-in hooks: the checked inputs, the host models and their optimizers.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/image_source.h"
#include "io/checkpoint.h"
#include "nn/dcgan.h"
#include "nn/sequential.h"
#include "parallel/fault_injection.h"
#include "train/cpu_step.h"
#include "train/large_batch.h"
#include "train/optim.h"
#include "train/progressive.h"

namespace gt {

// Everything a run reads and decides before anything is written, on every rank.
struct RunInputs {
  DcganSpec spec;
  Device device = Device::cpu;
  std::unique_ptr<ImageSource> source;
  std::optional<BatchPlan> plan;
  std::optional<FaultPlan> fault;
  LargeBatchPlan large_batch;  // rank 0's: each rank's share and its micro-batches
  int64_t total_steps = 0;  // planned_steps()
  int64_t dataset_size = 0;
  // model.arch progan: the model, its phases and each phase's large-batch plan (large_batch is then the
  // first phase's); empty for dcgan.
  std::optional<ProganSchedule> progan;
  ProganSpec progan_spec;
  std::vector<LargeBatchPlan> phase_plans;
  const LargeBatchPlan& plan_at(int64_t step) const {
    return progan ? phase_plans.at(static_cast<size_t>(progan->phase_at(step).index)) : large_batch;
  }
};

// The run's planned last step (a step is one G update, which reads train.n_critic batches):
// train.max_steps when set, else train.max_images real images rounded up to whole steps when set, else
// the steps that train.epochs epochs of batches make (rounded down, at least 1). (train.max_minutes and
// stop signals end a run earlier.)
int64_t planned_steps(const TrainConfig& train, int64_t steps_per_epoch);

// G and D initialized from the seed, and their optimizers: the host models every engine starts from and
// hands back for checkpoints.
struct Models {
  Sequential G, D;
  std::unique_ptr<Optimizer> opt_g, opt_d;
  // G_ema (ema.*): G's structure holding the moving average of its parameters; null when off. Its
  // buffers (batch norm's running statistics) are G's, copied in by copy_buffers_to_ema.
  std::unique_ptr<Sequential> G_ema;
  GanModels view() { return {&G, &D, opt_g.get(), opt_d.get()}; }
};

// G, D from the seed; G_ema (when ema.* is on) starts as a copy of G.
std::unique_ptr<Models> make_models(const Config& cfg, const DcganSpec& spec);

// The host models of a phase from the seed: G and D (progan_init: keyed by name, so any phase's block gets the
// same initial weights), G_ema a copy of G when ema.* is on, optimizers at the phase's learning rates.
std::unique_ptr<Models> make_progan_models(const Config& cfg, const ProganSpec& spec, const ProganPhase& phase);

// Grows m to `phase` (or rebuilds it at an earlier one): new networks in which every parameter that the old ones
// have under the same name keeps its value (G_ema's too) and the others get their initial values (G_ema: G's);
// optimizers fresh (progan.reset_optimizer) or with each state tensor carried over by name (the new block's at
// zero) and the step count kept. The learning rates are the phase's.
void move_to_phase(Models& m, const Config& cfg, const ProganSpec& spec, const ProganPhase& phase);

// Parameters, buffers and optimizer state of a checkpoint into the host models; UserError naming the
// file and tensor when one is missing or shaped otherwise. G_ema (when on) comes from /G_ema/params,
// or starts as a copy of G when the checkpoint has none (returns false then).
bool load_models(Models& m, const Checkpoint& ck, const std::string& source);

// The generator a checkpoint holds, for its config's model: DCGAN's, or the Progressive GAN's at the phase its
// meta records (resolution, fading) with its fade-in weight. Parameters as built (load them with import_state_dict).
Sequential make_checkpoint_generator(const Config& cfg, const CheckpointMeta& meta);

// Every parameter of `from` that `to` has under the same name and shape, copied into `to` (a growing network).
void copy_params_by_name(Sequential& from, Sequential& to);

// G's parameters (or buffers) into G_ema's: the start of the average, and the running statistics a
// checkpoint's G_ema carries.
void copy_params_to_ema(Models& m);
void copy_buffers_to_ema(Models& m);

// 1 - beta of the G_ema update after `steps_done` G updates of `batch` images each (computed in double:
// 1 - ema.beta, or 1 - 0.5^(batch / half-life) with the half-life at most steps_done * batch * ema.rampup
// when that is on); 0 when ema.* is off.
double ema_one_minus_beta(const EmaConfig& ema, int64_t steps_done, int64_t batch);

}  // namespace gt
