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

// Whether HDF5 file path has an object (group or dataset) at `object` ("/images"): 1 yes, 0 no, -1 when
// the file does not open as HDF5 (-2) or the lookup fails (-1, damaged metadata).
int h5_file_lookup(const std::string& path, const std::string& object);

}  // namespace gt
