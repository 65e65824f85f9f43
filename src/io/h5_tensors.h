// Plain HDF5 files of named tensors at the root (sample output /z and /images), written atomically.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gt {

void save_tensors_h5(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors);

}  // namespace gt

namespace gt {

// True when path is a readable HDF5 file with an object (group or dataset) at `object` ("/images").
bool h5_file_has(const std::string& path, const std::string& object);

}  // namespace gt
