// Test helpers for launcher environments and user errors: an environment lookup over a map, and the text of the UserError a call throws.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/error.h"
#include "parallel/launch.h"

namespace gt {

// The variables of a launcher (mpirun, srun) as the process would read them, without touching the real ones.
inline EnvLookup fake_env(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

// The message of the UserError f throws, or `none` when it throws none.
inline std::string user_error_text(const std::function<void()>& f, const std::string& none = "") {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return none;
}

}  // namespace gt
