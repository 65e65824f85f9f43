// Scratch buffers a CPU layer keeps between calls, grown on demand so steady-state steps do not allocate.
#pragma once
#include <cstddef>
#include <vector>

#include "nn/layer.h"

namespace gt::cpu {

// A buffer of at least n floats; its contents are unspecified after a grow.
inline float* scratch_floats(std::vector<float>& buffer, size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// A parameter (value and zeroed grad) of the given shape.
inline Param make_param(const char* name, Shape shape) {
  return Param{name, Tensor(shape), Tensor(shape)};
}

}  // namespace gt::cpu
