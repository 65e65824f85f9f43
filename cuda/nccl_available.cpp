// Whether NCCL can open on this node: built in, and a GPU usable (built with or without NCCL).
#include <fmt/format.h>

#include "cuda/device.h"
#include "parallel/launch.h"

namespace gt::cuda {

std::string nccl_unavailable_reason() {
#if !GANTRAIN_HAVE_NCCL
  return "NCCL was not found when this gantrain was built (nccl.h and libnccl.so; set GANTRAIN_CUDA_LIBRARY_ROOTS "
         "to its prefix and rebuild)";
#else
  const DeviceReport gpus = query_devices();
  if (gpus.count == 0) return fmt::format("{} has no usable GPU ({})", host_name(), gpus.reason);
  return "";
#endif
}

}  // namespace gt::cuda
