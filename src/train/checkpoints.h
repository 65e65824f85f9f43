// The checkpoints of a run directory: listing, leftovers of killed writes, and retention (newest K plus one every H hours).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace gt {

struct CheckpointFile {
  int64_t step = 0;
  std::filesystem::path path;
};

// checkpoints/ckpt_NNNNNNNN.h5 files of dir (a run's checkpoints/ folder), oldest step first. Other
// names (*.tmp, *.invalid, files a user put there) are not checkpoints.
std::vector<CheckpointFile> list_checkpoints(const std::filesystem::path& dir);

// Removes the "*.h5.tmp" files a write killed before its rename left in dir; returns their names.
std::vector<std::string> remove_unfinished_writes(const std::filesystem::path& dir);

struct RetentionPolicy {
  int keep_last = 0;            // newest kept; 0 = all
  double keep_every_hours = 0;  // also one per this many hours (by file time); 0 = off
};

// Which of `all` (oldest first, with their modification times in seconds) retention deletes: every
// checkpoint but the newest keep_last, except one per keep_every_hours (the oldest, then each that
// is at least that much newer than the last one kept) and except `protect`, never deleted.
std::vector<size_t> retention_victims(const std::vector<double>& times, const RetentionPolicy& policy,
                                      size_t protect);

// Applies retention_victims to dir's checkpoints, never deleting `protect` (the newest that validates).
// Returns the deleted paths.
std::vector<std::string> apply_retention(const std::filesystem::path& dir, const RetentionPolicy& policy,
                                         const std::filesystem::path& protect);

}  // namespace gt
