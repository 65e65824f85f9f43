// The CUDA step engine: the one GAN step of train/gan_step.h on one GPU per rank, with NCCL or host-staged collectives and CUDA graphs.
#pragma once
#include <memory>

#include "train/engine.h"

namespace gt::cuda {

// Picks this rank's GPU (rank-to-device mapping over comm), opens the device collectives when comm has
// several ranks (as parallel/launch.h's choose_device_collectives decides: NCCL, or collectives staged
// through comm's host memory), uploads the host models and sizes the arena. UserError when no GPU is
// usable, naming the node and the reason.
std::unique_ptr<StepEngine> make_gpu_engine(const EngineOptions& opt, GanModels& host, Communicator& comm);

}  // namespace gt::cuda
