// metrics.jsonl writer: one ordered JSON object per line, flushed at once; NaN and infinities become null.
#include "io/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fault_point.h"

namespace gt {

MetricsWriter::MetricsWriter(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "a");
  if (!f_) runtime_error("cannot open metrics file {} for appending: {}", path, std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

// A default-constructed writer (ranks other than 0) accepts and drops every line.
void MetricsWriter::write(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  if (!f_) return;
  nlohmann::ordered_json line;  // keeps "step" first and the caller's order, so lines read well by eye
  line["step"] = step;
  for (const auto& [key, value] : values) {
    GT_CHECK(!line.contains(key), "metric '{}' appears twice in the line for step {}", key, step);
    // JSON has no NaN or Infinity; null keeps the line parseable and the gap visible in plots.
    line[key] = std::isfinite(value) ? nlohmann::ordered_json(value) : nlohmann::ordered_json(nullptr);
  }
  std::string text = line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  text += '\n';
  if (std::fwrite(text.data(), 1, text.size(), f_) != text.size() || std::fflush(f_) != 0)
    runtime_error("cannot append to metrics file {}: {}", path_, std::strerror(errno));
  fault_point("metrics");
}

}  // namespace gt
