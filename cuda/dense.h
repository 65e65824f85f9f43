// Linear layers on cuBLAS: out [N, OUT] = in [N, IN] * weight[OUT, IN]^T + bias, row-major as the CPU kernels.
#pragma once
#include "cuda/context.h"

namespace gt::cuda {

// The same arguments and accumulation rules as cpu::linear_forward / cpu::linear_backward: weight_scale
// (equalized learning rate) multiplies the weight in every product (cuBLAS's alpha), and dweight is the
// gradient of the stored weight; the bias is not scaled.
void linear_forward(GpuContext& ctx, float* out, const float* in, const float* weight, const float* bias, int N,
                    int IN, int OUT, float weight_scale = 1.f);
// dweight, dbias accumulate (each skipped when null); dinp written (skipped when null).
void linear_backward(GpuContext& ctx, float* dinp, float* dweight, float* dbias, const float* dout, const float* in,
                     const float* weight, int N, int IN, int OUT, float weight_scale = 1.f);

}  // namespace gt::cuda
