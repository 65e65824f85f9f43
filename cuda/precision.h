// Numeric precision of the GPU backend's matrix work: fp32, tf32 (tensor cores, fp32 storage), bf16 (bf16 activations, fp32 master weights).
#pragma once

namespace gt::cuda {

// fp32: convolutions and GEMMs on FMA units only, exact float32 products.
// tf32: float32 storage, products on tensor cores with 10-bit mantissas (cuDNN/cuBLAS math modes).
// bf16: bf16 activations and packed conv-weight copies (formats.h), float32 accumulation, master weights
//       and optimizer state in float32; dense layers stay float32 with TF32 products. Written, not yet
//       run on a GPU.
enum class Precision { fp32, tf32, bf16 };

inline const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

}  // namespace gt::cuda
