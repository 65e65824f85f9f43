// The CPU step engine and the engine factory (the CUDA engine is in train/cuda/, built with the CUDA backend).
#include "train/engine.h"

#include <omp.h>

#include <vector>

#include "core/optim_math.h"
#include "core/rng.h"
#include "parallel/communicator.h"
#include "train/cpu_step.h"
#include "train/run_setup.h"
#if GANTRAIN_HAVE_CUDA
#include "train/cuda/gpu_engine.h"
#endif

namespace gt {
namespace {

// The reference engine: the one GAN step on host tensors, done inside submit().
class CpuEngine final : public StepEngine {
 public:
  CpuEngine(const EngineOptions& opt, GanModels& m, Communicator& comm)
      : opt_(opt),
        m_(m),
        // Batch norm over the global batch (with one rank the same bits as without); sync_bn false leaves
        // each rank's shard to itself.
        parts_(m, *m.G, *m.D, comm, ops_, opt.step_settings(opt.sync_bn)) {
    for (int k = 0; k < opt.objective.noise_batches(); ++k) z_.emplace_back(Shape{opt.local_batch, opt.nz, 1, 1});
    if (opt.objective.gp_weight > 0)
      for (int k = 0; k < opt.objective.n_critic; ++k) mix_.emplace_back(Shape{opt.local_batch});
  }

  std::string describe() const override {
    const int t = omp_get_max_threads();
    return fmt::format("cpu, {} thread{}", t, t > 1 ? "s" : "");
  }

  using StepEngine::submit;
  void submit(std::span<const Tensor> reals, int64_t step) override {
    const int n_critic = opt_.objective.n_critic;
    GT_CHECK(static_cast<int>(reals.size()) == n_critic, "{} real batches for n_critic {}", reals.size(), n_critic);
    // This rank's rows of each batch's noise: keyed by (seed, batch, global index), as with one rank.
    for (int k = 0; k < opt_.objective.noise_batches(); ++k)
      fill_noise(z_[static_cast<size_t>(k)].f32(), opt_.local_batch, opt_.nz, opt_.seed, noise_key(opt_.objective, step, k),
                 opt_.shard_first);
    for (size_t k = 0; k < mix_.size(); ++k)
      fill_penalty_mix(mix_[k].f32(), opt_.local_batch, opt_.seed, static_cast<uint64_t>(step * n_critic) + k,
                       opt_.shard_first);
    fake_ = run_gan_step(parts_.step(), reals, z_, mix_, step * n_critic);
    // G_ema after the G update: every rank holds the same G, so every rank's average is the same.
    if (opt_.ema_host) {
      const float w = static_cast<float>(ema_one_minus_beta(opt_.ema, step + 1, opt_.global_batch));
      float* average = opt_.ema_host->flat_params();
      const float* p = m_.G->flat_params();
      for (int64_t i = 0; i < m_.G->flat_size(); ++i) average[i] = optim_math::ema_value(average[i], p[i], w);
    }
  }

  StepResult wait() override {
    StepResult r = step_result(ops_.scalars(), parts_.loss_scale());
    r.fake = fake_;
    return r;
  }
  Tensor generate(const Tensor& z) override { return gt::generate(*m_.G, z); }
  PhaseClock take_phase_seconds(double (&seconds)[kStepPhases]) override {
    ops_.take_phase_seconds(seconds);
    return PhaseClock::host;
  }
  void sync_to_host() override {}
  void load_from_host() override {}
  void set_fade_alpha(float alpha) override {
    m_.G->set_fade_alpha(alpha);
    m_.D->set_fade_alpha(alpha);
    if (opt_.ema_host) opt_.ema_host->set_fade_alpha(alpha);
  }

 private:
  EngineOptions opt_;
  GanModels& m_;
  CpuStepOps ops_;  // before parts_, which holds a reference to it
  StepParts parts_;
  std::vector<Tensor> z_;    // one noise batch per critic iteration
  std::vector<Tensor> mix_;  // with a gradient penalty: the interpolation weights of each critic iteration
  Tensor fake_;
};

}  // namespace

std::unique_ptr<StepEngine> make_engine(const EngineOptions& opt, GanModels& host, Communicator& comm) {
  GT_CHECK(opt.local_batch > 0 && opt.global_batch >= opt.local_batch, "engine batch sizes {} of {}",
           opt.local_batch, opt.global_batch);
  GT_CHECK(opt.micro() >= 1 && opt.local_batch % opt.micro() == 0, "micro-batch {} for a share of {}", opt.micro(),
           opt.local_batch);
  GT_CHECK(opt.ema.enabled() == (opt.ema_host != nullptr), "ema.* is {} but the engine was given {} host G_ema",
           opt.ema.enabled() ? "on" : "off", opt.ema_host ? "a" : "no");
  if (opt.device == Device::cpu) return std::make_unique<CpuEngine>(opt, host, comm);
#if GANTRAIN_HAVE_CUDA
  return cuda::make_gpu_engine(opt, host, comm);
#else
  user_error("run.device is cuda, but this gantrain was built without CUDA (GANTRAIN_CUDA=OFF, or no nvcc at "
             "configure time); rebuild with the CUDA toolkit or use run.device: cpu");
#endif
}

}  // namespace gt
