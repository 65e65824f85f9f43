// RunDirectory: creates rank 0's run directory and writes its console log, metrics and file names.
#include "train/run_dir.h"

#include <cstdio>

#include "core/error.h"

namespace gt {

namespace fs = std::filesystem;

fs::path unused_run_dir(const fs::path& dir) {
  auto taken = [](const fs::path& p) { return fs::exists(p) && !(fs::is_directory(p) && fs::is_empty(p)); };
  if (!taken(dir)) return dir;
  for (int i = 1;; ++i) {
    const fs::path candidate = fmt::format("{}.{}", dir.string(), i);
    if (!taken(candidate)) return candidate;
  }
}

RunDirectory::RunDirectory(const std::string& out_dir, const std::string& name, const std::string& config_yaml,
                           bool writer)
    : writer_(writer), asked_(fs::path(out_dir) / name), path_(writer ? unused_run_dir(asked_) : asked_) {
  if (!writer_) {
    metrics_ = std::make_unique<MetricsWriter>();
    return;
  }
  fs::create_directories(path_ / "samples");
  fs::create_directories(path_ / "checkpoints");
  std::ofstream f(path_ / "config.yaml");
  f << config_yaml;
  if (!f) runtime_error("cannot write {}/config.yaml", path_.string());
  log_.open(path_ / "train.log", std::ios::app);
  metrics_ = std::make_unique<MetricsWriter>(metrics_path());
}

void RunDirectory::write_line(const std::string& s) {
  fmt::print("{}\n", s);
  std::fflush(stdout);
  log_ << s << '\n';
  log_.flush();
}

std::string RunDirectory::sample_path(int64_t step) const {
  return (path_ / "samples" / fmt::format("step_{:08d}.png", step)).string();
}

std::string RunDirectory::checkpoint_path(int64_t step) const {
  return (path_ / "checkpoints" / fmt::format("ckpt_{:08d}.h5", step)).string();
}

}  // namespace gt
