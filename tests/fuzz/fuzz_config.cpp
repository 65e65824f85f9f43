// Fuzz target: YAML text and "key.path=value" overrides through parse_config, then the resolved YAML back through it.
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "core/error.h"
#include "fuzz_util.h"

// Leading lines that start with '@' are overrides (the text after '@'; '@' cannot start plain YAML,
// so the split is unambiguous); the rest of the input is the YAML file.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  while (!text.empty() && text.front() == '@') {
    const size_t end = text.find('\n');
    overrides.emplace_back(text.substr(1, end == std::string_view::npos ? std::string_view::npos : end - 1));
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
  }
  gt::Config config;
  try {
    config = gt::parse_config(std::string(text), "fuzz.yaml", overrides);
  } catch (const gt::UserError&) {
    return 0;  // the expected answer to a bad config
  }
  // A config that validated must survive its own round trip: the run directory's config.yaml and
  // every checkpoint hold this text, and a resume parses it again. Anything thrown here is a finding.
  const std::string resolved = gt::config_to_yaml(config);
  const std::string again = gt::config_to_yaml(gt::parse_config(resolved, "resolved.yaml"));
  if (again != resolved) __builtin_trap();  // the round trip changed a value
  gt::flatten_config_yaml(resolved);
  return 0;
}
