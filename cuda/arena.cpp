// Device allocations and copies, and the bump arena of the training step.
#include "cuda/arena.h"

#include "cuda/check.h"
#include "core/error.h"

namespace gt::cuda {

void* device_malloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();  // an allocation failure is not sticky; clear it before asking for free memory
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    runtime_error("cudaMalloc of {} bytes failed ({}); the device has {} of {} bytes free", bytes,
                  cudaGetErrorString(err), free_bytes, total_bytes);
  }
  return p;
}

void device_free(void* p) noexcept {
  if (p) cudaFree(p);  // nothing useful to do with an error in a destructor path
}

void copy_host_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
}

void copy_device_to_host(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (!bytes) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void copy_device_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
}

void fill_bytes(void* dst, int byte, size_t bytes, cudaStream_t stream) {
  if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, stream));
}

DeviceArena::DeviceArena(size_t capacity_bytes)
    : base_(static_cast<std::byte*>(device_malloc(capacity_bytes))), capacity_(capacity_bytes) {}

DeviceArena::~DeviceArena() { device_free(base_); }

void* DeviceArena::allocate_bytes(size_t bytes) {
  const size_t start = (used_ + kAlignment - 1) / kAlignment * kAlignment;
  if (start + bytes > capacity_ || start + bytes < start)
    runtime_error("the device arena of {} bytes cannot hold {} more bytes ({} in use, high-water mark {}); "
                  "make the arena larger",
                  capacity_, bytes, used_, high_water_);
  used_ = start + bytes;
  if (used_ > high_water_) high_water_ = used_;
  return base_ + start;
}

void DeviceArena::rewind(size_t mark) {
  GT_CHECK(mark <= used_, "arena rewind to {} past the current use {}", mark, used_);
  used_ = mark;
}

}  // namespace gt::cuda
