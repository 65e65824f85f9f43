// Device memory: DeviceBuffer (one owned allocation, made outside the step) and DeviceArena (one cudaMalloc, bump allocation, reset per step).
#pragma once
// C++17-clean: test and host files include it; kernels take the raw pointers.
#include <cstddef>
#include <cstdint>
#include <utility>

#include <cuda_runtime_api.h>

namespace gt::cuda {

// Raw helpers behind the types below; each throws gt::RuntimeError on a CUDA error.
void* device_malloc(size_t bytes);  // cudaMalloc; a failure names the size and the free memory
void device_free(void* p) noexcept;
void copy_host_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream);  // async on stream
void copy_device_to_host(void* dst, const void* src, size_t bytes, cudaStream_t stream);  // waits for stream
void copy_device_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream);
void fill_bytes(void* dst, int byte, size_t bytes, cudaStream_t stream);

// One owned device allocation of count elements of T: parameters, optimizer state, workspaces.
// Move-only. Allocating is a cudaMalloc (synchronizing), so buffers are made at set-up, never per step.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count)
      : data_(count ? static_cast<T*>(device_malloc(count * sizeof(T))) : nullptr), count_(count) {}
  ~DeviceBuffer() { device_free(data_); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      device_free(data_);
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

  // Copies min(count, size()) elements; upload returns before the copy ends (keep host memory alive
  // until the stream syncs), download waits for it.
  void upload(const T* host, size_t count, cudaStream_t stream = nullptr) {
    copy_host_to_device(data_, host, (count < count_ ? count : count_) * sizeof(T), stream);
  }
  void download(T* host, size_t count, cudaStream_t stream = nullptr) const {
    copy_device_to_host(host, data_, (count < count_ ? count : count_) * sizeof(T), stream);
  }
  void fill_bytes(int byte, cudaStream_t stream = nullptr) { ::gt::cuda::fill_bytes(data_, byte, bytes(), stream); }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

// One cudaMalloc at construction; allocate() bumps a pointer (no CUDA call, no sync), reset() frees
// everything at once. The training step takes its activations and temporaries from here, so the
// steady state allocates nothing. Running out throws with the capacity and the high-water mark, so
// the fix (a larger arena) is in the message.
class DeviceArena {
 public:
  static constexpr size_t kAlignment = 256;  // cudaMalloc's own alignment; enough for any vector load

  explicit DeviceArena(size_t capacity_bytes);
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  void* allocate_bytes(size_t bytes);
  template <class T>
  T* allocate(size_t count) {
    return static_cast<T*>(allocate_bytes(count * sizeof(T)));
  }

  // A mark to rewind to: temporaries of one layer are freed when it is done, activations kept.
  size_t mark() const { return used_; }
  void rewind(size_t mark);
  void reset() { rewind(0); }

  size_t capacity() const { return capacity_; }
  size_t used() const { return used_; }
  size_t high_water() const { return high_water_; }

 private:
  std::byte* base_ = nullptr;
  size_t capacity_ = 0, used_ = 0, high_water_ = 0;
};

}  // namespace gt::cuda
