// The per-device GPU context: one stream, the cuDNN and cuBLAS handles bound to it, and the precision they run at.
#pragma once
#include <cstddef>
#include <memory>

#include <cublas_v2.h>
#include <cudnn.h>

#include "cuda/arena.h"
#include "cuda/precision.h"
#include "cuda/step_recorder.h"

namespace gt::cuda {

struct GpuOptions {
  int device = 0;
  Precision precision = Precision::fp32;
  // Only algorithms that give the same bits on every run (cuDNN's backward-filter and backward-data
  // algorithms with atomics are skipped), so a resumed or repeated run reproduces exactly.
  bool deterministic = true;
  size_t conv_workspace_limit = size_t{1} << 30;   // largest workspace a convolution algorithm may use
  size_t cublas_workspace_bytes = size_t{32} << 20;  // given to cuBLAS so it never allocates (graph capture)
};

// Owns a non-blocking stream and the library handles; every call of the backend goes to stream().
// Creating one selects opts.device on the calling thread.
class GpuContext {
 public:
  explicit GpuContext(const GpuOptions& opts = {});
  ~GpuContext();
  GpuContext(const GpuContext&) = delete;
  GpuContext& operator=(const GpuContext&) = delete;

  cudaStream_t stream() const { return stream_; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  cublasHandle_t cublas() const { return cublas_; }
  const GpuOptions& options() const { return opts_; }
  Precision precision() const { return opts_.precision; }
  // Where a step's per-step launches and host bookkeeping go (eager, or kept out of a CUDA graph).
  StepRecorder& recorder() { return *recorder_; }
  void synchronize() const;  // waits for the stream; reports any kernel fault with its CUDA error

 private:
  GpuOptions opts_;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer<std::byte> cublas_workspace_;
  std::unique_ptr<StepRecorder> recorder_;
};

}  // namespace gt::cuda
