// The one GAN step, written once over Net for both engines: D on real and on fake, then G through the updated D on the same fakes.
#pragma once
#include <functional>

#include "core/tensor.h"
#include "nn/net.h"

namespace gt {

class Communicator;
class GradientBucketer;

// The step's scalars, written by StepOps on the step's device and read once the step has completed.
// The step's scalars; grad_norm_d/g: the L2 norm of each network's gradient as its optimizer gets it
// (summed over the ranks, before clipping), the same on every rank.
enum class StepScalar : int { loss_real, loss_fake, loss_g, prob_real, prob_fake, grad_norm_d, grad_norm_g };
constexpr int kStepScalars = 7;

// Where a step's time goes (the timing breakdown, docs/formats.md "metrics.jsonl"): run_gan_step marks
// each part with StepOps::phase. D's passes for the G step count as d_forward_backward; synchronized
// batch norm's all-reduces happen inside the passes they belong to; comm_wait is the wait for the last
// gradient buckets after a network's final backward; optimizer includes the gradient norm.
enum class StepPhase : int { g_forward, d_forward_backward, g_backward, comm_wait, optimizer, other };
constexpr int kStepPhases = 6;
inline constexpr const char* kStepPhaseNames[kStepPhases] = {"g_forward", "d_forward_backward", "g_backward",
                                                             "comm_wait", "optimizer", "other"};

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
  // Binary cross-entropy with logits against a constant target, over every logit: the mean loss into
  // `loss` and, unless prob is null, the mean sigmoid into *prob, both unscaled; dlogits = scale *
  // d(mean loss)/d(logit).
  virtual void bce_with_logits(const Tensor& logits, float target, float scale, Tensor& dlogits, StepScalar loss,
                               const StepScalar* prob) = 0;
  // The L2 norm of net's flat gradient into `slot` (for the NaN guard and the metrics).
  virtual void grad_norm(Net& net, StepScalar slot) = 0;
  // From here on the step's time counts to `phase`, until the next call (a step ends with `other`).
  // The CPU's ops time it with the host clock; an engine that does not time phases ignores it.
  virtual void phase(StepPhase phase) { (void)phase; }
};

// One network's optimizer as the step sees it, on the network's device.
class NetOptimizer {
 public:
  virtual ~NetOptimizer() = default;
  // Clips the network's gradients (already summed over the ranks) to the global L2 norm clip_norm when it
  // is > 0 (torch.nn.utils.clip_grad_norm_), then applies one update.
  virtual void update(float clip_norm) = 0;
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
};

// One step on this rank's real images [n, C, H, W] and noise [n, nz, 1, 1], both on the device. Updates
// G, D, their batch-norm statistics and optimizers; the scalars go to ops. Returns G(z), the fakes both
// halves of the step used (step memory on the device).
Tensor run_gan_step(GanStep& step, const Tensor& real, const Tensor& z);

// Losses and means of this rank's shard times the loss scale: the sum over the ranks is the global value.
struct StepResult {
  double d_loss = 0;  // BCE(D(x), 1) + BCE(D(G(z)), 0)
  double g_loss = 0;  // BCE(D(G(z)), 1), with D after its update
  double d_real = 0;  // mean sigmoid(D(x))
  double d_fake = 0;  // mean sigmoid(D(G(z))) before the D update
  double d_grad_norm = 0, g_grad_norm = 0;  // the whole gradient's norm (not a share): the same on every rank
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
