// CUDA device discovery.
#include <cuda_runtime.h>

#include "cuda/device.h"

namespace gt::cuda {

DeviceReport query_devices() {
  DeviceReport r;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    r.reason = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return r;
  }
  r.count = n;
  if (n == 0) {
    r.reason = "no CUDA device";
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

}  // namespace gt::cuda
