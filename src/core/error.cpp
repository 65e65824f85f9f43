// Error helpers shared by every module.
#include "core/error.h"

namespace gt {

void check_failed(const char* expr, const char* file, int line, const std::string& msg) {
  throw RuntimeError(fmt::format("{}:{}: check failed: {}: {}", file, line, expr, msg));
}

}  // namespace gt
