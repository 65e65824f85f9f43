// metrics.jsonl: one JSON object per line, appended and flushed so a crash loses at most one line.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace gt {

class MetricsWriter {
 public:
  MetricsWriter() = default;
  explicit MetricsWriter(const std::string& path);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  // Writes {"step": step, key: value, ...}.
  void write(int64_t step, const std::vector<std::pair<std::string, double>>& values);

 private:
  FILE* f_ = nullptr;
  std::string path_;  // for error messages
};

}  // namespace gt
