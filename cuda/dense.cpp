// Linear forward/backward as cuBLAS SGEMMs on row-major data (seen by column-major cuBLAS as the transposes).
#include "cuda/dense.h"

#include "cuda/check.h"
#include "cuda/kernels.h"

namespace gt::cuda {

// A row-major [r, c] matrix is, to cuBLAS, the column-major [c, r] matrix: its transpose. Each row-major
// product C = A * B is therefore issued as C^T = B^T * A^T.

void linear_forward(GpuContext& ctx, float* out, const float* in, const float* weight, const float* bias, int N,
                    int IN, int OUT, float weight_scale) {
  const float zero = 0.f;
  // out^T [OUT, N] = weight [OUT, IN] (stored as weight^T [IN, OUT], so op T) * in^T [IN, N]
  CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, OUT, N, IN, &weight_scale, weight, IN, in, IN,
                           &zero, out, OUT));
  if (bias) add_bias_rows(out, bias, N, OUT, ctx.stream());
}

void linear_backward(GpuContext& ctx, float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                     const float* weight, int N, int IN, int OUT, float weight_scale) {
  const float one = 1.f, zero = 0.f;
  // dweight^T [IN, OUT] += in^T [IN, N] * dout [N, OUT] (stored as dout^T [OUT, N], so op T)
  if (dweight)
    CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, IN, OUT, N, &weight_scale, in, IN, dout, OUT,
                             &one, dweight, IN));
  if (dbias) accumulate_column_sums(dbias, dout, N, OUT, ctx.stream());
  // dinp^T [IN, N] = weight^T [IN, OUT] * dout^T [OUT, N]
  if (dinp)
    CUBLAS_CHECK(cublasSgemm(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, IN, N, OUT, &weight_scale, weight, IN, dout,
                             OUT, &zero, dinp, IN));
}

}  // namespace gt::cuda
