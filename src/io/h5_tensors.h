// Plain HDF5 files of named tensors at the root (sample output /z and /images), written atomically.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gt {

void save_tensors_h5(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors);

}  // namespace gt
