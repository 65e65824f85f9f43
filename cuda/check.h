// One error-check macro per GPU library (CUDA_CHECK, CUDNN_CHECK, CUBLAS_CHECK, NCCL_CHECK): file:line and the library's own message.
#pragma once
// C++17-clean: included by .cu files (nvcc compiles them as C++17) and by host C++20 files alike.
#include <cuda_runtime_api.h>

namespace gt::cuda {

// Each throws gt::RuntimeError "<library> error <name> (<code>): <message> in <expr> at <file>:<line>".
// The status travels as an int so this header needs none of the libraries' headers.
[[noreturn]] void cuda_failed(int status, const char* expr, const char* file, int line);
[[noreturn]] void cudnn_failed(int status, const char* expr, const char* file, int line);
[[noreturn]] void cublas_failed(int status, const char* expr, const char* file, int line);
[[noreturn]] void nccl_failed(int status, const char* expr, const char* file, int line);

}  // namespace gt::cuda

#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    const cudaError_t gt_status_ = (call);                                                 \
    if (gt_status_ != cudaSuccess)                                                         \
      ::gt::cuda::cuda_failed(static_cast<int>(gt_status_), #call, __FILE__, __LINE__);    \
  } while (0)

// After a kernel launch: a bad configuration is reported here, a fault in the kernel at the next sync.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// The three below expand only where the library's header is included (they name its status enum).
#define CUDNN_CHECK(call)                                                                  \
  do {                                                                                     \
    const cudnnStatus_t gt_status_ = (call);                                               \
    if (gt_status_ != CUDNN_STATUS_SUCCESS)                                                \
      ::gt::cuda::cudnn_failed(static_cast<int>(gt_status_), #call, __FILE__, __LINE__);   \
  } while (0)

#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    const cublasStatus_t gt_status_ = (call);                                              \
    if (gt_status_ != CUBLAS_STATUS_SUCCESS)                                               \
      ::gt::cuda::cublas_failed(static_cast<int>(gt_status_), #call, __FILE__, __LINE__);  \
  } while (0)

#define NCCL_CHECK(call)                                                                   \
  do {                                                                                     \
    const ncclResult_t gt_status_ = (call);                                                \
    if (gt_status_ != ncclSuccess)                                                         \
      ::gt::cuda::nccl_failed(static_cast<int>(gt_status_), #call, __FILE__, __LINE__);    \
  } while (0)
