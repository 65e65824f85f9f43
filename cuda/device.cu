// CUDA device discovery.
#include <cuda_runtime.h>

#include "cuda/device.h"

#include <cstdlib>
#include <cstring>

namespace gt::cuda {

DeviceReport query_devices() {
  DeviceReport r;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    // The name too (cudaErrorNoDevice, cudaErrorInsufficientDriver, ...): the message alone is hard to search.
    r.reason = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return r;
  }
  r.count = n;
  if (n == 0) {
    r.reason = "cudaGetDeviceCount found no CUDA device";
    return r;
  }
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) {
    r.name = p.name;
    r.cc_major = p.major;
    r.cc_minor = p.minor;
  }
  return r;
}

size_t free_memory_bytes() {
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return free_bytes;
}

bool gpu_expected() {
  const char* v = std::getenv("GANTRAIN_EXPECT_GPU");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

}  // namespace gt::cuda
