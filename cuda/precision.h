// Numeric precision of the GPU backend's matrix work: run.precision's enum (config/choices.h) and what each value means on the device.
#pragma once
// C++17-clean: .cu files include it.
#include "config/choices.h"

namespace gt::cuda {

// fp32: convolutions and GEMMs on FMA units only, exact float32 products.
// tf32: float32 storage, products on tensor cores with 10-bit mantissas (cuDNN/cuBLAS math modes).
// bf16: bf16 activations and packed conv-weight copies (formats.h), float32 accumulation, master weights
//       and optimizer state in float32; dense layers stay float32 with TF32 products.
using gt::Precision;

inline const char* precision_name(Precision p) { return choice_name(p); }

}  // namespace gt::cuda
