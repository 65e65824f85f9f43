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
  int64_t format_version = 3;  // as read; save_checkpoint always writes the newest format (3)
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

// Writes format 3 to "<path>.tmp", flushes, fsyncs, renames onto path and fsyncs the directory. A full
// disk or a file-size limit raises RuntimeError naming path and the OS reason; the .tmp is removed and
// no other file is touched.
void save_checkpoint(const std::string& path, const Checkpoint& ckpt);
// Reads every group under the root, verifying every checksum and digest on the way; a missing,
// truncated, corrupt or foreign file raises UserError: one sentence that names it and the problem.
Checkpoint load_checkpoint(const std::string& path);
// Rewrites the digest block of a format-3 checkpoint for the file as it is now: for tests and repair
// tools that edit a checkpoint with HDF5 on purpose (any other change makes it "corrupt").
void reseal_checkpoint(const std::string& path);
// The HDF5 part of load_checkpoint alone, without the whole-file digest check that comes first in
// load_checkpoint: for the fuzz target of the HDF5 reader and for inspecting damaged files. Raises
// what load_checkpoint raises for a file that passed the digest.
Checkpoint parse_checkpoint_hdf5(const std::string& path);
// True when path starts like a format-3 checkpoint: with its digest block's first line, or with any 512
// bytes before HDF5's signature (a damaged digest block). A cheap sniff of 520 bytes; nothing verified.
bool looks_like_sealed_checkpoint(const std::string& path);
// parse_checkpoint_hdf5, returning "": the "checkpoint" check that executables serve (core/file_check.h),
// which load_checkpoint runs in a separate process for files without a digest block (formats 1 and 2).
std::string verify_checkpoint_hdf5(const std::string& path);
// "" when path is a complete, uncorrupted checkpoint this build reads (every dataset is read, so
// every checksum is checked); else the sentence load_checkpoint would raise. Never throws.
std::string checkpoint_problem(const std::string& path);
// "G/params/main.0.weight" (group/name) of the first f32 tensor holding a NaN or an infinity, or "".
std::string first_nonfinite_tensor(const Checkpoint& ck);

}  // namespace gt
