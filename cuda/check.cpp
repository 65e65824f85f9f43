// The failure paths of the GPU error-check macros: each library's own name and message for a status.
#include "cuda/check.h"

#include <cublas_v2.h>
#include <cudnn.h>
#ifdef GANTRAIN_HAVE_NCCL
#include <nccl.h>
#endif

#include "core/error.h"

namespace gt::cuda {
namespace {

[[noreturn]] void fail(const char* library, const char* name, int status, const char* message, const char* expr,
                       const char* file, int line) {
  runtime_error("{} error {} ({}): {} in {} at {}:{}", library, name, status, message, expr, file, line);
}

}  // namespace

void cuda_failed(int status, const char* expr, const char* file, int line) {
  const auto err = static_cast<cudaError_t>(status);
  fail("CUDA", cudaGetErrorName(err), status, cudaGetErrorString(err), expr, file, line);
}

void cudnn_failed(int status, const char* expr, const char* file, int line) {
  const char* name = cudnnGetErrorString(static_cast<cudnnStatus_t>(status));
  // cuDNN 9 keeps details of the last failure (which engine, which check) beyond the status name.
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof detail);
  fail("cuDNN", name, status, detail[0] != '\0' ? detail : "no further detail", expr, file, line);
}

void cublas_failed(int status, const char* expr, const char* file, int line) {
  const auto s = static_cast<cublasStatus_t>(status);
  fail("cuBLAS", cublasGetStatusName(s), status, cublasGetStatusString(s), expr, file, line);
}

void nccl_failed(int status, const char* expr, const char* file, int line) {
#ifdef GANTRAIN_HAVE_NCCL
  const char* message = ncclGetErrorString(static_cast<ncclResult_t>(status));
  fail("NCCL", message, status, message, expr, file, line);
#else
  fail("NCCL", "unavailable", status, "built without NCCL", expr, file, line);
#endif
}

}  // namespace gt::cuda
