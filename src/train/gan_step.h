// The one GAN step, written once over Net for both engines: n_critic updates of D (each on its own real batch and fakes), then G through the updated D on the last fakes, under any objective.
#pragma once
#include <functional>
#include <span>

#include "core/loss_math.h"
#include "core/tensor.h"
#include "nn/net.h"
#include "parallel/gradient_bucketer.h"

namespace gt {

class Communicator;
class GradientBucketer;

// The step's scalars, written by StepOps on the step's device and read once the step has completed.
// grad_norm_d/g: the L2 norm of each network's gradient as its optimizer gets it (summed over the ranks,
// before clipping), the same on every rank; penalty: the gradient penalty of the step's last critic batch
// that had one, without the lazy scale (0 when lazy regularization skipped all of the step's batches).
enum class StepScalar : int { loss_real, loss_fake, loss_g, prob_real, prob_fake, grad_norm_d, grad_norm_g, penalty };
constexpr int kStepScalars = 8;

// Where a step's time goes (the timing breakdown, docs/formats.md "metrics.jsonl"): run_gan_step marks
// each part with StepOps::phase. D's passes for the G step count as d_forward_backward; synchronized
// batch norm's all-reduces happen inside the passes they belong to; comm_wait is the wait for the last
// gradient buckets after a network's final backward; optimizer includes the gradient norm.
enum class StepPhase : int { g_forward, d_forward_backward, g_backward, comm_wait, optimizer, other };
constexpr int kStepPhases = 6;
inline constexpr const char* kStepPhaseNames[kStepPhases] = {"g_forward", "d_forward_backward", "g_backward",
                                                             "comm_wait", "optimizer", "other"};

// How a micro-batch's value goes into a step scalar: slot = value * weight, or slot += value * weight
// (the micro-batches after the first), so the slot ends as the mean over the rank's share.
struct ScalarWrite {
  float weight = 1.f;
  bool accumulate = false;
};

// What the step needs from a device besides its networks. The CPU engine's are host tensors and
// doubles; the CUDA engine's are arena memory and device floats read back when the step completes.
class StepOps {
 public:
  virtual ~StepOps() = default;
  // A buffer shaped and stored like t on the device, for a gradient the step computes (contents undefined).
  virtual Tensor buffer_like(const Tensor& t) = 0;
  // Temporary device memory: release(m) gives back everything taken since m = mark() (the CPU's
  // tensors free themselves when the last reference goes).
  virtual size_t mark() { return 0; }
  virtual void release(size_t mark) { (void)mark; }
  // One term of the objective (core/loss_math.h) over every logit: the mean term into `loss` and, unless
  // `reported` is null, the mean of what the step reports as D's output (sigmoid for BCE, the raw score
  // for a critic) into *reported, both unscaled, each written as `write` says; dlogits = scale *
  // d(mean term)/d(logit).
  virtual void gan_loss(const Tensor& logits, const LossTerm& term, float scale, Tensor& dlogits, StepScalar loss,
                        const StepScalar* reported, const ScalarWrite& write) = 0;
  // The L2 norm of net's flat gradient into `slot` (for the NaN guard and the metrics).
  virtual void grad_norm(Net& net, StepScalar slot) = 0;
  // WGAN-GP's interpolates: row i is penalty_math::mix(real_i, fake_i, mix[i]), a new buffer like real (mix:
  // f32 [n] on the device).
  virtual Tensor interpolate(const Tensor& real, const Tensor& fake, const Tensor& mix) = 0;
  // Sets one of the step's scalars to 0 (a lazy penalty's slot, in a step whose batches carry none).
  virtual void zero_scalar(StepScalar slot) = 0;
  // A buffer shaped and stored like t with every value 1 (the seed of D's input gradient).
  virtual Tensor ones_like(const Tensor& t) = 0;
  // The gradient penalty over the rows g_i of g: weight * mean_i (||g_i|| - 1)^2 into `loss` (unscaled), and
  // dg = scale * d(that)/dg, with d||g_i||/dg_i = 0 where g_i = 0 (torch's norm backward).
  virtual void gradient_penalty(const Tensor& g, float weight, float scale, Tensor& dg, StepScalar loss,
                                const ScalarWrite& write) = 0;
  // The gradient all-reduce's wire format for a net of n gradients (dist.reduce_precision): a buffer of n values
  // of `type` in the memory of the step's communicator, and the conversions on the engine's stream. Kept for the
  // engine's life. The default (an engine that cannot): f32, the gradients themselves.
  virtual GradientWire gradient_wire(int64_t n, ElemType type) {
    (void)n;
    (void)type;
    return {};
  }
  // From here on the step's time counts to `phase`, until the next call (a step ends with `other`).
  // The CPU's ops time it with the host clock; an engine that does not time phases ignores it.
  virtual void phase(StepPhase phase) { (void)phase; }
};

// The step's objective (loss.*, train.n_critic in the config): the loss family, the drift weight on D's
// real term, WGAN's weight clipping of the critic, and the critic updates per G update.
struct GanObjective {
  LossKind kind = LossKind::bce;
  float drift = 0.f;        // epsilon * mean(D(x)^2) added to D's loss; 0 = none
  float clip_critic = 0.f;  // D's weights clamped to [-c, c] after each critic update; 0 = off
  int n_critic = 1;         // D updates per G update, each on its own real batch and noise
  bool fresh_g_noise = false;  // the G update draws its own noise (the WGAN paper); else it reuses the last fakes
  float gp_weight = 0.f;    // WGAN-GP's lambda: the gradient penalty at interpolates, added to D's loss; 0 = none
  int gp_every = 1;         // the penalty on critic batches b with b % gp_every == 0 only, scaled by gp_every
  bool penalty_on(int64_t batch) const { return gp_weight > 0.f && batch % gp_every == 0; }
  LossTerm term(LossRole role) const { return {kind, role, role == LossRole::d_real ? drift : 0.f}; }
  // Noise batches a step takes: one per critic iteration, and the G update's own when fresh_g_noise.
  int noise_batches() const { return n_critic + (fresh_g_noise ? 1 : 0); }
};

// The noise key of a step's fresh G noise (GanObjective::fresh_g_noise): the step with this bit set, a
// key no batch number reaches, so it never repeats a critic iteration's noise.
inline constexpr uint64_t kFreshGNoiseKey = uint64_t{1} << 62;

// One network's optimizer as the step sees it, on the network's device.
class NetOptimizer {
 public:
  virtual ~NetOptimizer() = default;
  // Clips the network's gradients (already summed over the ranks) to the global L2 norm clip_norm when it
  // is > 0 (torch.nn.utils.clip_grad_norm_), applies one update, then clamps every parameter to
  // [-weight_limit, weight_limit] when that is > 0 (WGAN's critic; NaN stays NaN, as torch.clamp).
  virtual void update(float clip_norm, float weight_limit = 0.f) = 0;
};

// Everything one step uses. The bucketers sum the gradients over the ranks during each network's last
// backward (inactive with one rank).
struct GanStep {
  Net& G;
  Net& D;
  NetOptimizer& opt_g;
  NetOptimizer& opt_d;
  GradientBucketer& reduce_g;
  GradientBucketer& reduce_d;
  StepOps& ops;
  float clip_grad_norm = 0.f;  // 0 = off
  // This rank's share of the global batch, local_n / global_n. Each loss is the mean over the global
  // batch, so this rank's logits gradients (and the losses it reports) are its batch mean times this
  // share; summed over the ranks they are the one-process values.
  double loss_scale = 1.0;
  GanObjective objective{};
  // Micro-batches per critic iteration and per G update (the large-batch plan): each batch's rows split
  // into this many equal parts whose gradients are accumulated into one update; batch norm normalizes each
  // part with its own statistics.
  int accumulation = 1;
};

// With step.accumulation A > 1 every critic iteration and the G update run over A micro-batches of n / A
// rows (the G update then makes each micro-batch's fakes again from the last critic iteration's noise, so
// G's batch-norm running statistics see those forwards too), and the result is the last micro-batch's fakes.
// One step on this rank's real images and noise (real [n, C, H, W], noise [n, nz, 1, 1], on the device):
// objective.n_critic real batches and objective.noise_batches() noise batches. Critic iteration k draws
// G(z_k) and updates D on reals[k] and those fakes (then clamps D's weights when objective.clip_critic >
// 0); the G update then goes through the updated D on the last iteration's fakes (with n_critic 1: the
// classic DCGAN step, the same fakes for both halves), or on G(z_last) of its own noise when
// objective.fresh_g_noise. Updates G, D, their batch-norm statistics and optimizers; the scalars go to ops
// (D's are the last critic iteration's). Returns the fakes of the G update (step memory on the device).
// With a gradient penalty (objective.gp_weight > 0), mixes[k] holds critic iteration k's interpolation
// weights (f32 [n] on the device: the engine draws them with fill_penalty_mix, keyed by the run's batch
// number), and critic iteration k is the run's batch first_batch + k (step * n_critic + k), which decides
// lazy regularization (GanObjective::penalty_on). Without a penalty mixes may be empty.
Tensor run_gan_step(GanStep& step, std::span<const Tensor> reals, std::span<const Tensor> zs,
                    std::span<const Tensor> mixes = {}, int64_t first_batch = 0);
inline Tensor run_gan_step(GanStep& step, const Tensor& real, const Tensor& z) {
  return run_gan_step(step, std::span<const Tensor>(&real, 1), std::span<const Tensor>(&z, 1));
}

// Losses and means of this rank's shard times the loss scale: the sum over the ranks is the global value.
// With n_critic > 1 the D values are those of the last critic iteration.
struct StepResult {
  double d_loss = 0;  // D's objective: BCE(D(x), 1) + BCE(D(G(z)), 0), -D(x) + D(G(z)), or the hinge, plus drift and penalty
  double g_loss = 0;  // G's: BCE(D(G(z)), 1) or -D(G(z)), with D after its update
  double d_real = 0;  // mean sigmoid(D(x)) (BCE), or the mean critic score D(x)
  double d_fake = 0;  // the same of D(G(z)), before the D update
  double d_grad_norm = 0, g_grad_norm = 0;  // the whole gradient's norm (not a share): the same on every rank
  double d_penalty = 0;  // the gradient penalty (part of d_loss) of the step's last critic batch that had one, or 0
  Tensor fake;        // G(z) [N, C, H, W] from this step, where the engine returns it (the CPU's)
};
// The step's result from its scalars as StepOps wrote them.
StepResult step_result(const double (&scalars)[kStepScalars], double loss_scale);

// The same for samples split over the ranks: rank r generates its contiguous share of z's rows with
// `generate` (host z [n, nz] -> host images [n, C, H, W]) and the shares are all-gathered, so every rank
// returns all N images, in order (for rank 0's sample grid).
Tensor generate_across_ranks(const std::function<Tensor(const Tensor&)>& generate, const Tensor& z,
                             Communicator& comm);

}  // namespace gt
