// GPU context: stream and library handles, with the math mode of the chosen precision.
#include "cuda/context.h"

#include "cuda/check.h"

namespace gt::cuda {

GpuContext::GpuContext(const GpuOptions& opts) : opts_(opts) {
  CUDA_CHECK(cudaSetDevice(opts.device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  recorder_ = std::make_unique<StepRecorder>(stream_);
  CUDNN_CHECK(cudnnCreate(&cudnn_));
  CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
  CUBLAS_CHECK(cublasCreate(&cublas_));
  CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  // fp32 keeps cuBLAS off the tensor cores (its default math never converts to TF32 unless the
  // NVIDIA_TF32_OVERRIDE environment variable asks for it); tf32 allows the conversion, and so does
  // bf16, whose dense layers keep f32 storage (only convolution activations are bf16).
  CUBLAS_CHECK(cublasSetMathMode(
      cublas_, opts.precision == Precision::fp32 ? CUBLAS_DEFAULT_MATH : CUBLAS_TF32_TENSOR_OP_MATH));
  if (opts.cublas_workspace_bytes) {
    cublas_workspace_ = DeviceBuffer<std::byte>(opts.cublas_workspace_bytes);
    CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.data(), cublas_workspace_.bytes()));
  }
}

GpuContext::~GpuContext() {
  // Destructors report nothing: the handles go whatever their state.
  recorder_.reset();  // its graphs before the stream
  if (cublas_) cublasDestroy(cublas_);
  if (cudnn_) cudnnDestroy(cudnn_);
  if (stream_) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

void GpuContext::synchronize() const { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace gt::cuda
