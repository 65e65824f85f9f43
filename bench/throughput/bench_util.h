// What the benchmarks share: the UTC time, the host and its CPU model for their records, and the progan benchmarks' --phases.
#pragma once
#include <unistd.h>

#include <ctime>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace gt::bench {

inline std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

inline std::string host_name() {
  char buf[256] = {};
  return gethostname(buf, sizeof buf - 1) == 0 ? buf : "unknown";
}

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// --phases of the progan benchmarks: "all", or phase numbers "0,3,12" below count; a UserError names a bad one.
inline std::vector<int> parse_phases(const std::string& text, size_t count) {
  std::vector<int> out;
  if (text == "all") {
    for (size_t i = 0; i < count; ++i) out.push_back(static_cast<int>(i));
    return out;
  }
  std::stringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 0) user_error("--phases: '{}' is not 'all' or a list of phase numbers", text);
    if (static_cast<size_t>(v) >= count) user_error("--phases: the config has phases 0 to {}, not {}", count - 1, v);
    out.push_back(v);
  }
  if (out.empty()) user_error("--phases: '{}' names no phase", text);
  return out;
}

}  // namespace gt::bench
