// The CPU step engine and the engine factory (the CUDA engine is in train/cuda/, built with the CUDA backend).
#include "train/engine.h"

#include <omp.h>

#include "core/rng.h"
#include "dist/communicator.h"
#include "dist/gradient_reducer.h"
#include "dist/sync_batchnorm.h"
#if GANTRAIN_HAVE_CUDA
#include "train/cuda/gpu_engine.h"
#endif

namespace gt {
namespace {

// The reference engine: the step of train/gan_step.h on host tensors, done inside submit().
class CpuEngine final : public StepEngine {
 public:
  CpuEngine(const EngineOptions& opt, GanModels& m, Communicator& comm)
      : opt_(opt),
        m_(m),
        reduce_g_(comm, *m.G, opt.bucket_bytes),
        reduce_d_(comm, *m.D, opt.bucket_bytes),
        z_({opt.local_batch, opt.nz}) {
    // Batch norm over the global batch (with one rank the same bits as without); sync_bn false leaves each
    // rank's shard to itself.
    if (opt.sync_bn) {
      synchronize_batch_norm(*m.G, &comm);
      synchronize_batch_norm(*m.D, &comm);
    }
    step_opt_.clip_grad_norm = opt.clip_grad_norm;
    step_opt_.loss_scale = static_cast<double>(opt.local_batch) / static_cast<double>(opt.global_batch);
    step_opt_.reduce_d = &reduce_d_;
    step_opt_.reduce_g = &reduce_g_;
  }

  std::string describe() const override {
    const int t = omp_get_max_threads();
    return fmt::format("cpu, {} thread{}", t, t > 1 ? "s" : "");
  }

  void submit(const Tensor& real, int64_t step) override {
    // This rank's rows of the global batch's noise: keyed by (seed, step, global index), as with one rank.
    fill_noise(z_.f32(), opt_.local_batch, opt_.nz, opt_.seed, static_cast<uint64_t>(step), opt_.shard_first);
    result_ = dcgan_train_step(m_, real, z_, step_opt_);
  }

  StepResult wait() override { return result_; }
  Tensor generate(const Tensor& z) override { return gt::generate(*m_.G, z); }
  void sync_to_host() override {}

 private:
  EngineOptions opt_;
  GanModels& m_;
  GradientReducer reduce_g_, reduce_d_;
  Tensor z_;
  StepOptions step_opt_;
  StepResult result_;
};

}  // namespace

std::unique_ptr<StepEngine> make_engine(const EngineOptions& opt, GanModels& host, Communicator& comm) {
  GT_CHECK(opt.local_batch > 0 && opt.global_batch >= opt.local_batch, "engine batch sizes {} of {}",
           opt.local_batch, opt.global_batch);
  if (opt.device == "cpu") return std::make_unique<CpuEngine>(opt, host, comm);
  if (opt.device != "cuda") user_error("run.device '{}' is not one of cpu, cuda, auto", opt.device);
#if GANTRAIN_HAVE_CUDA
  return cuda::make_gpu_engine(opt, host, comm);
#else
  user_error("run.device is cuda, but this gantrain was built without CUDA (GANTRAIN_CUDA=OFF, or no nvcc at "
             "configure time); rebuild with the CUDA toolkit or use run.device: cpu");
#endif
}

}  // namespace gt
