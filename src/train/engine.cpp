// The CPU step engine and the engine factory (the CUDA engine is in train/cuda/, built with the CUDA backend).
#include "train/engine.h"

#include <omp.h>

#include "core/rng.h"
#include "parallel/communicator.h"
#include "train/cpu_step.h"
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
        parts_(m, *m.G, *m.D, comm, ops_, opt.step_settings(opt.sync_bn)),
        z_({opt.local_batch, opt.nz, 1, 1}) {}

  std::string describe() const override {
    const int t = omp_get_max_threads();
    return fmt::format("cpu, {} thread{}", t, t > 1 ? "s" : "");
  }

  void submit(const Tensor& real, int64_t step) override {
    // This rank's rows of the global batch's noise: keyed by (seed, step, global index), as with one rank.
    fill_noise(z_.f32(), opt_.local_batch, opt_.nz, opt_.seed, static_cast<uint64_t>(step), opt_.shard_first);
    fake_ = run_gan_step(parts_.step(), real, z_);
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

 private:
  EngineOptions opt_;
  GanModels& m_;
  CpuStepOps ops_;  // before parts_, which holds a reference to it
  StepParts parts_;
  Tensor z_, fake_;
};

}  // namespace

std::unique_ptr<StepEngine> make_engine(const EngineOptions& opt, GanModels& host, Communicator& comm) {
  GT_CHECK(opt.local_batch > 0 && opt.global_batch >= opt.local_batch, "engine batch sizes {} of {}",
           opt.local_batch, opt.global_batch);
  if (opt.device == Device::cpu) return std::make_unique<CpuEngine>(opt, host, comm);
#if GANTRAIN_HAVE_CUDA
  return cuda::make_gpu_engine(opt, host, comm);
#else
  user_error("run.device is cuda, but this gantrain was built without CUDA (GANTRAIN_CUDA=OFF, or no nvcc at "
             "configure time); rebuild with the CUDA toolkit or use run.device: cpu");
#endif
}

}  // namespace gt
