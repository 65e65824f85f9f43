// The step engine: what runs the training steps of G and D on one rank, on the CPU or on a GPU; the trainer drives it.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "config/choices.h"
#include "config/config.h"
#include "core/tensor.h"
#include "train/cpu_step.h"
#include "train/gan_step.h"
#include "train/step_parts.h"
#include "train/step_timing.h"

namespace gt {

class Communicator;

struct EngineOptions {
  Device device = Device::cpu;
  // cuda only:
  Precision precision = Precision::tf32;  // bf16: bf16 activations; f32 master weights and optimizer state
  LayoutChoice layout = LayoutChoice::automatic;  // auto: NHWC for bf16, else NCHW
  bool cuda_graph = true;          // capture the steady-state step as a CUDA graph where the collectives allow it
  bool deterministic = true;       // cuDNN algorithms that give the same bits on every run only
  double arena_mb = 0;             // device arena for the step's activations; 0 = sized from the model
  DistBackend dist_backend = DistBackend::automatic;  // which device collectives (parallel/launch.h)

  // Both:
  int64_t global_batch = 0;  // images per step over all ranks
  int64_t local_batch = 0;   // this rank's share
  int64_t shard_first = 0;   // this rank's first position in the global batch (noise rows are keyed by it)
  int64_t micro_batch = 0;   // images per forward/backward pass (the large-batch plan); 0 = local_batch
  uint64_t seed = 0;
  float clip_grad_norm = 0;  // 0 = off
  bool flip = false;         // data.flip: with uint8 batches the engine draws the flips (keyed as the loader's)
  double timeout_s = 0;      // dist.timeout_s, for device collectives
  bool sync_bn = true;       // batch norm over the global batch when there are several ranks
  int64_t bucket_bytes = 25 << 20;
  ElemType reduce_type = ElemType::f32;  // dist.reduce_precision: the gradient all-reduce's wire format
  int nz = 100;
  GanObjective objective{};  // loss.*, train.n_critic: the step's objective and its critic iterations
  EmaConfig ema{};              // G_ema's schedule (ema.*); off unless enabled()
  Sequential* ema_host = nullptr;  // the host G_ema (run_setup.h Models): the engine's average starts from it
                                   // and goes back to it in sync_to_host()

  // This rank's share of the global batch, and the step's settings that follow from the options.
  double loss_scale() const { return static_cast<double>(local_batch) / static_cast<double>(global_batch); }
  int64_t micro() const { return micro_batch > 0 ? micro_batch : local_batch; }
  int accumulation() const { return static_cast<int>(local_batch / micro()); }
  StepSettings step_settings(bool synchronized_bn) const {
    return {clip_grad_norm, loss_scale(), std::max<int64_t>(bucket_bytes / 4, 1), synchronized_bn, objective,
            accumulation(), reduce_type};
  }
};

// One rank's engine. The host models (G, D and their optimizers) stay the source of truth at the edges:
// an engine on another device copies them in when made and back in sync_to_host(), so checkpoints,
// samples and parameter hashes use the host objects unchanged.
class StepEngine {
 public:
  virtual ~StepEngine() = default;
  // One line for the log: "cpu, 2 threads" or "cuda NVIDIA H100 80GB HBM3 (sm_90), bf16 NHWC, graph".
  virtual std::string describe() const = 0;
  // The host batch the engine reads: f32 [n, C, H, W] in [-1, 1], flipped by the loader (CPU), or the
  // stored uint8 [n, H, W, C] with flips drawn on the device from the same key (GPU).
  virtual bool wants_u8_batches() const { return false; }
  // A host tensor for the loader to fill (page-locked for a GPU, so the upload is asynchronous).
  virtual Tensor make_batch_buffer(const Shape& shape, DType dtype) { return Tensor(shape, dtype); }
  // Starts step `step` (counted from 0) on this rank's real images: one batch per critic iteration
  // (objective.n_critic), each untouched until wait() returns (the GPU engine uploads them
  // asynchronously). Critic iteration k is batch b = step * n_critic + k of the run: its noise is drawn
  // inside, keyed by (seed, b, shard_first + row) (noise_key; the G update's fresh noise by its own key),
  // a GPU's flips by (seed, b, position) and a gradient penalty's interpolation weights by (seed, b,
  // shard_first + row) (fill_penalty_mix), so they are the same bits on every backend and rank count
  // (with n_critic 1, b is the step).
  virtual void submit(std::span<const Tensor> reals, int64_t step) = 0;
  void submit(const Tensor& real, int64_t step) { submit(std::span<const Tensor>(&real, 1), step); }
  // Waits for the submitted step; its losses and means are this rank's share (see StepResult).
  virtual StepResult wait() = 0;
  // G(z) in eval mode for samples: host z [n, nz] -> host f32 [n, C, H, W]. Local: no collective.
  virtual Tensor generate(const Tensor& z) = 0;
  // Copies parameters, buffers, optimizer state and G_ema's average back into the host models (on the CPU:
  // nothing to copy; G_ema is the host's already).
  virtual void sync_to_host() = 0;
  // Copies the host models (reloaded from a checkpoint) into the engine's (no-op on the CPU, whose
  // engine trains the host models themselves).
  virtual void load_from_host() = 0;
  // Seconds spent in each StepPhase since the last call (then zeroed), summed over the steps, and how
  // they were measured (train/step_timing.h): the CPU engine with the host clock, the CUDA engine with
  // events on its stream; `none` leaves the trainer to count the whole step as `other`.
  virtual PhaseClock take_phase_seconds(double (&seconds)[kStepPhases]) {
    (void)seconds;
    return PhaseClock::none;
  }
  // Device memory in use and its peak, in bytes (0 on the CPU).
  virtual size_t device_bytes() const { return 0; }
  // The fade-in weight of the networks' Fade layers (Progressive GAN transitions) from the next submit() on,
  // G_ema's included. Networks without one ignore it.
  virtual void set_fade_alpha(float alpha) { (void)alpha; }
};

// The noise key of a step's noise batch k: critic iteration k's batch number step * n_critic + k, or
// for k = n_critic (the G update's fresh noise) the step with kFreshGNoiseKey set.
inline uint64_t noise_key(const GanObjective& o, int64_t step, int k) {
  return k < o.n_critic ? static_cast<uint64_t>(step * o.n_critic + k) : (static_cast<uint64_t>(step) | kFreshGNoiseKey);
}

// The CPU engine (train/gan_step.h's step, gradients summed over comm in buckets, synchronized batch
// norm), or the CUDA engine (train/cuda/gpu_engine.h). A UserError names what is missing for cuda (a
// build without CUDA, or no usable GPU on this node).
std::unique_ptr<StepEngine> make_engine(const EngineOptions& opt, GanModels& host, Communicator& comm);

}  // namespace gt
