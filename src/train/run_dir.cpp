// RunDirectory: creates rank 0's run directory and writes its console log, metrics and file names.
#include "train/run_dir.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace gt {

namespace fs = std::filesystem;

namespace {

// Columns of the terminal on stdout, or 0 when unknown.
int terminal_columns() {
  winsize w{};
  return ioctl(STDOUT_FILENO, TIOCGWINSZ, &w) == 0 ? w.ws_col : 0;
}

bool stdout_is_live_terminal() {
  if (!isatty(STDOUT_FILENO)) return false;
  // Under a launcher the terminal may not be the user's: Open MPI forwards a rank's output through a
  // pseudo-terminal even when mpirun's own output goes to a file or a pipe (a Slurm log, CI).
  for (const char* launcher : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (std::getenv(launcher) != nullptr) return false;
  const char* term = std::getenv("TERM");
  return term == nullptr || std::strcmp(term, "dumb") != 0;
}

}  // namespace

fs::path unused_run_dir(const fs::path& dir) {
  auto taken = [](const fs::path& p) { return fs::exists(p) && !(fs::is_directory(p) && fs::is_empty(p)); };
  if (!taken(dir)) return dir;
  for (int i = 1;; ++i) {
    const fs::path candidate = fmt::format("{}.{}", dir.string(), i);
    if (!taken(candidate)) return candidate;
  }
}

std::string tensorboard_tag(const std::string& metric) {
  // metrics.jsonl key -> TensorBoard tag (docs/formats.md, "TensorBoard events").
  static const std::pair<const char*, const char*> kTags[] = {
      {"d_loss", "loss/d"},           {"g_loss", "loss/g"},
      {"d_real", "d/real"},           {"d_fake", "d/fake"},
      {"d_grad_norm", "grad_norm/d"}, {"g_grad_norm", "grad_norm/g"},
      {"d_penalty", "loss/d_penalty"},
      {"lr_d", "lr/d"},               {"lr_g", "lr/g"},
      {"images_per_sec", "speed/images_per_s"}, {"epoch", "progress/epoch"},
      {"phase", "progress/phase"},    {"resolution", "progress/resolution"},
      {"alpha", "progress/alpha"},
  };
  for (const auto& [key, tag] : kTags)
    if (metric == key) return tag;
  // The timing breakdown, milliseconds per step: "ms_g_forward" -> "time_ms/g_forward".
  if (metric.starts_with("ms_") && metric.size() > 3) return "time_ms/" + metric.substr(3);
  // The SWD (log.swd_every_steps): "swd" -> "quality/swd", each level "swd_32" -> "quality/swd_32".
  if (metric == "swd" || (metric.starts_with("swd_") && metric.size() > 4 &&
                          metric.find_first_not_of("0123456789", 4) == std::string::npos))
    return "quality/" + metric;
  runtime_error("metric '{}' has no TensorBoard tag (add it to tensorboard_tag in train/run_dir.cpp)", metric);
}

RunDirectory::RunDirectory(const std::string& out_dir, const std::string& name, const std::string& config_yaml,
                           bool writer, bool tensorboard)
    : RunDirectory(writer ? unused_run_dir(fs::path(out_dir) / name).string() : (fs::path(out_dir) / name).string(),
                   config_yaml, writer, false, 0, tensorboard) {}

RunDirectory::RunDirectory(const std::string& dir, const std::string& config_yaml, bool writer, bool in_place,
                           int64_t resume_step, bool tensorboard)
    : writer_(writer), path_(dir) {
  live_ = writer_ && stdout_is_live_terminal();
  if (!writer_) {
    metrics_ = std::make_unique<MetricsWriter>();
    return;
  }
  std::error_code ec;
  fs::create_directories(path_ / "samples", ec);
  fs::create_directories(path_ / "checkpoints", ec);
  if (ec) user_error("cannot create the run directory {}: {}", path_.string(), ec.message());
  const fs::path config_path = path_ / "config.yaml";
  auto write_text = [](const fs::path& p, const std::string& text) {
    std::ofstream f(p);
    f << text;
    f.flush();
    if (!f) user_error("cannot write {}: the run directory is not writable", p.string());
  };
  if (!in_place || !fs::exists(config_path)) {
    write_text(config_path, config_yaml);
  } else {
    std::ifstream in(config_path);
    const std::string before((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (before != config_yaml) write_text(path_ / fmt::format("config.step_{:08d}.yaml", resume_step), config_yaml);
  }
  if (in_place) continue_metrics(resume_step);
  log_.open(path_ / "train.log", std::ios::app);
  if (!log_) user_error("cannot write {}: the run directory is not writable", (path_ / "train.log").string());
  metrics_ = std::make_unique<MetricsWriter>(metrics_path());
  // Every start, a resume included, opens a file of its own; TensorBoard reads a folder's event files in name
  // order, and the START record makes it drop what earlier files logged after the checkpoint (those steps are
  // trained again, as metrics.jsonl moves their lines to metrics.dropped.jsonl).
  if (tensorboard) {
    tensorboard_ = std::make_unique<TensorBoardWriter>(path_.string());
    tensorboard_->session_start(resume_step + 1);
  }
}

void RunDirectory::metrics(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  metrics_->write(step, values);
  if (!tensorboard_) return;
  std::vector<std::pair<std::string, double>> scalars;
  scalars.reserve(values.size());
  for (const auto& [key, value] : values) scalars.emplace_back(tensorboard_tag(key), value);
  tensorboard_->scalars(step, scalars);
}

void RunDirectory::sample_grid(int64_t step, const PngGrid& grid) {
  if (tensorboard_) tensorboard_->png_image(step, "samples", grid.png, grid.height, grid.width, grid.channels);
}

void RunDirectory::continue_metrics(int64_t resume_step) {
  const fs::path path = metrics_path();
  std::ifstream in(path);
  if (!in) return;
  std::string kept, dropped;
  for (std::string line; std::getline(in, line);) {
    // {"step": N, ...}: our writer puts the step first. A line cut short by a crash has no closing brace.
    long long step = -1;
    const bool whole = !line.empty() && line.back() == '}' && std::sscanf(line.c_str(), "{\"step\": %lld", &step) == 1;
    (whole && step <= resume_step ? kept : dropped) += line + "\n";
  }
  in.close();
  if (dropped.empty()) return;
  {
    std::ofstream d(path_ / "metrics.dropped.jsonl", std::ios::app);
    d << dropped;
  }
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    out.flush();
    if (!out) runtime_error("cannot rewrite {}", path.string());
  }
  fs::rename(tmp, path);
}


RunDirectory::~RunDirectory() { erase_status(); }

void RunDirectory::erase_status() {
  if (!status_shown_) return;
  std::fputs("\r\x1b[2K", stdout);  // carriage return, erase the whole line
  std::fflush(stdout);
  status_shown_ = false;
}

void RunDirectory::status(const std::string& text, bool now) {
  if (!live_) return;
  const auto t = std::chrono::steady_clock::now();
  if (!now && status_shown_ && t - last_status_ < std::chrono::milliseconds(100)) return;
  last_status_ = t;
  const int columns = terminal_columns();
  std::string shown = text;
  if (columns > 1 && shown.size() >= static_cast<size_t>(columns)) shown.resize(static_cast<size_t>(columns - 1));
  std::fputs("\r\x1b[2K", stdout);
  std::fputs(shown.c_str(), stdout);
  std::fflush(stdout);
  status_shown_ = true;
}

void RunDirectory::write_line(const std::string& s) {
  erase_status();
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
