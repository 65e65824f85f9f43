// Listing, validating, cleaning up and thinning out a run's checkpoints.
#include "train/checkpoints.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>

#include "core/fault_point.h"
#include "io/checkpoint.h"

namespace gt {

namespace fs = std::filesystem;

namespace {

// "ckpt_00000040.h5" -> 40; -1 for any other name.
int64_t step_of(const std::string& name) {
  constexpr std::string_view prefix = "ckpt_", suffix = ".h5";
  if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) || !name.ends_with(suffix)) return -1;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

double modification_seconds(const fs::path& p) {
  std::error_code ec;
  const auto t = fs::last_write_time(p, ec);
  if (ec) return 0;
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

}  // namespace

std::vector<CheckpointFile> list_checkpoints(const fs::path& dir) {
  std::vector<CheckpointFile> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const int64_t step = step_of(entry.path().filename().string());
    if (step >= 0) out.push_back({step, entry.path()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::vector<std::string> remove_unfinished_writes(const fs::path& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return removed;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".h5.tmp") && fs::remove(entry.path(), ec)) removed.push_back(name);
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

std::vector<size_t> retention_victims(const std::vector<double>& times, const RetentionPolicy& policy,
                                      size_t protect) {
  const size_t n = times.size();
  if (policy.keep_last <= 0 || n <= static_cast<size_t>(policy.keep_last)) return {};
  const size_t first_newest = n - static_cast<size_t>(policy.keep_last);
  std::vector<size_t> victims;
  double last_kept = -1e300;
  for (size_t i = 0; i < first_newest; ++i) {
    if (policy.keep_every_hours > 0 && times[i] - last_kept >= policy.keep_every_hours * 3600.0) {
      last_kept = times[i];
      continue;
    }
    if (i != protect) victims.push_back(i);
  }
  return victims;
}

std::vector<std::string> apply_retention(const fs::path& dir, const RetentionPolicy& policy, const fs::path& protect) {
  const std::vector<CheckpointFile> all = list_checkpoints(dir);
  std::vector<double> times;
  size_t protect_index = all.size();
  for (size_t i = 0; i < all.size(); ++i) {
    times.push_back(modification_seconds(all[i].path));
    std::error_code ec;
    if (fs::equivalent(all[i].path, protect, ec)) protect_index = i;
  }
  std::vector<std::string> deleted;
  for (size_t i : retention_victims(times, policy, protect_index)) {
    fault_point("retention");
    std::error_code ec;
    if (fs::remove(all[i].path, ec)) deleted.push_back(all[i].path.string());
  }
  return deleted;
}

}  // namespace gt
