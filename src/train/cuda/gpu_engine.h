// The CUDA step engine: the DCGAN step of train/gan_step.h on one GPU per rank, with NCCL or host-staged collectives and CUDA graphs.
#pragma once
#include <memory>

#include "train/engine.h"

namespace gt::cuda {

// Picks this rank's GPU (rank-to-device mapping over comm), opens the device collectives when comm has
// several ranks (NCCL when every rank has a GPU of its own and dist.backend allows it, else collectives
// staged through comm's host memory), uploads the host models and sizes the arena. UserError when no
// GPU is usable, naming the node and the reason. Written without a GPU to run on: see docs/gpu.md.
std::unique_ptr<StepEngine> make_gpu_engine(const EngineOptions& opt, GanModels& host, Communicator& comm);

}  // namespace gt::cuda
