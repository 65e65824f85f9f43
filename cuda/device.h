// CUDA device discovery, and whether NCCL can open here; the rest of the CUDA backend builds on it.
#pragma once
#include <cstddef>
#include <string>

namespace gt::cuda {

struct DeviceReport {
  int count = 0;        // usable devices
  std::string reason;   // why there are none: the CUDA error's name and message, empty when count > 0
  std::string name;     // device 0's name
  int cc_major = 0, cc_minor = 0;
};

// Never throws: a machine without a GPU or driver reports count 0 and the reason.
DeviceReport query_devices();

// "" when NCCL can open here (built in, and a GPU usable); otherwise what is missing, as a sentence
// (cuda/nccl_available.cpp).
std::string nccl_unavailable_reason();

// Free memory of the current CUDA device in bytes (cudaMemGetInfo), 0 when it cannot be read. The large-
// batch plan's budget on a GPU when train.memory_mb is 0.
size_t free_memory_bytes();

// GANTRAIN_EXPECT_GPU=1 (set by bench/gpu/gpu_check.sh): this machine must have a usable GPU, so a GPU
// test that finds none fails with the CUDA error instead of skipping (a skip must never read as a pass).
bool gpu_expected();

}  // namespace gt::cuda
