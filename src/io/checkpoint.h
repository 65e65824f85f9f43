// HDF5 checkpoints in the documented layout (docs/formats.md): /meta attributes, /G/params, /D/params, optimizer, RNG and data state.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gt {

struct CheckpointMeta {
  int64_t format_version = 1;
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t images_seen = 0;
  int64_t world_size = 1;
  int64_t seed = 0;
  int64_t resolution = 0;
  double alpha = 1.0;          // progressive fade-in (1 for non-progressive runs)
  std::string config_yaml;     // the resolved config
  std::string code_version;    // "0.1.0+gitrev"
  std::map<std::string, int64_t> ints;  // further integer attributes (e.g. data cursor)
};

// Named tensors grouped by HDF5 group path: {"G/params", {{"main.0.weight", tensor}, ...}}.
using TensorGroups = std::map<std::string, std::vector<std::pair<std::string, Tensor>>>;

struct Checkpoint {
  CheckpointMeta meta;
  TensorGroups groups;
  const Tensor* find(const std::string& group, const std::string& name) const;
};

// Writes to "<path>.tmp", flushes, fsyncs, renames onto path and fsyncs the directory.
void save_checkpoint(const std::string& path, const Checkpoint& ckpt);
// Reads every group under the root; a missing or malformed file raises UserError naming it.
Checkpoint load_checkpoint(const std::string& path);

}  // namespace gt
