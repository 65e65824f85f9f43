// Storage formats of the GPU backend's activations: the element type (f32 or bf16) and the layout (NCHW or NHWC).
#pragma once
// C++17-clean: host files, tests and .cu files include it.
#include <cstddef>
#include <cstdint>

#include "cuda/precision.h"

namespace gt::cuda {

enum class DataType : uint8_t { f32, bf16 };
enum class Layout : uint8_t { nchw, nhwc };

// How an activation tensor [N, C, H, W] is stored. Parameters are always f32 in PyTorch's layout (the
// master copy the optimizers update); convolutions read a packed copy in the activations' format.
struct ActFormat {
  DataType type = DataType::f32;
  Layout layout = Layout::nchw;
};

inline size_t data_type_size(DataType t) { return t == DataType::bf16 ? 2 : 4; }
inline const char* data_type_name(DataType t) { return t == DataType::bf16 ? "bf16" : "f32"; }
inline const char* layout_name(Layout l) { return l == Layout::nhwc ? "NHWC" : "NCHW"; }
inline bool operator==(const ActFormat& a, const ActFormat& b) { return a.type == b.type && a.layout == b.layout; }
inline bool operator!=(const ActFormat& a, const ActFormat& b) { return !(a == b); }

// The activation storage of a precision: bf16 stores bf16, fp32 and tf32 store f32.
inline DataType storage_type(Precision p) { return p == Precision::bf16 ? DataType::bf16 : DataType::f32; }

}  // namespace gt::cuda
