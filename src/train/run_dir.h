// RunDirectory: rank 0's outputs of a run (config.yaml, train.log and the console, metrics.jsonl, TensorBoard events, samples/, checkpoints/); silent on other ranks.
#pragma once
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "io/image.h"
#include "io/metrics.h"
#include "io/tensorboard.h"

namespace gt {

// The run directory to write: dir itself when it is absent or empty, else the first free "dir.1",
// "dir.2", ... so an earlier run is never overwritten.
std::filesystem::path unused_run_dir(const std::filesystem::path& dir);

// The TensorBoard tag of a metrics.jsonl key ("d_loss" -> "loss/d"): related curves share a section.
// RuntimeError for a key without a tag, so a new metric gets one on purpose.
std::string tensorboard_tag(const std::string& metric);

class RunDirectory {
 public:
  // writer: rank 0, which creates out_dir/name (or the first free name.N beside it) with samples/ and
  // checkpoints/ and writes config.yaml; the other ranks write nothing.
  // tensorboard: rank 0 also writes a new TensorBoard event file in the run directory (log.tensorboard).
  RunDirectory(const std::string& out_dir, const std::string& name, const std::string& config_yaml, bool writer,
               bool tensorboard = false);
  // The run directory `dir` as agreed at the start (train/resume.h). A new one is created as above; one
  // continued in place (in_place) keeps its config.yaml (a config that differs is saved beside it as
  // config.step_NNNNNNNN.yaml), appends to train.log, and keeps the metrics.jsonl lines of steps up to
  // resume_step; later ones, from steps that are trained again, move to metrics.dropped.jsonl.
  RunDirectory(const std::string& dir, const std::string& config_yaml, bool writer, bool in_place,
               int64_t resume_step, bool tensorboard = false);

  ~RunDirectory();  // erases a status line left on the terminal
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

  bool writer() const { return writer_; }
  const std::filesystem::path& path() const { return path_; }

  // A console line, mirrored to train.log (rank 0 only).
  template <class... Args>
  void line(fmt::format_string<Args...> f, Args&&... args) {
    if (writer_) write_line(fmt::format(f, std::forward<Args>(args)...));
  }
  // The live status line: on a terminal (rank 0's stdout is a tty, TERM is not "dumb", and no MPI or
  // Slurm launcher started the process, whose terminal may not be the user's), redrawn in
  // place ("\r", erase line), cut to the terminal's width so it never wraps, at most ten times a second
  // unless `now`; never in train.log. Elsewhere (Slurm, CI, a pipe) nothing: the lines above carry the
  // progress every log.every_steps. A console line first erases the status; the next status redraws it.
  void status(const std::string& text, bool now = false);
  bool live() const { return live_; }
  // A metrics.jsonl line, and the same values as TensorBoard scalars (tags: tensorboard_tag).
  void metrics(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  // A sample grid's PNG bytes as the TensorBoard image "samples" (the PNG file itself is written by the caller).
  void sample_grid(int64_t step, const PngGrid& grid);

  std::string metrics_path() const { return (path_ / "metrics.jsonl").string(); }
  std::string sample_path(int64_t step) const;
  std::string checkpoint_path(int64_t step) const;

 private:
  void write_line(const std::string& s);
  void continue_metrics(int64_t resume_step);
  void erase_status();

  bool writer_;
  bool live_ = false;           // rank 0 on a terminal
  bool status_shown_ = false;   // a status line is on the terminal now
  std::chrono::steady_clock::time_point last_status_{};
  std::filesystem::path path_;
  std::ofstream log_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // null: not rank 0, or log.tensorboard false
};

}  // namespace gt
