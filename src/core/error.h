// Errors: UserError for a user's mistake (exit 2, a plain sentence naming the input), GT_CHECK for bugs and runtime failures (exit 1).
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace gt {

// A mistake in what the user gave us: a config key, a file, a value. The CLI prints it and exits 2.
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A failure while running (I/O error, library error, broken invariant). The CLI prints it and exits 1.
class RuntimeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void user_error(fmt::format_string<Args...> f, Args&&... args) {
  throw UserError(fmt::format(f, std::forward<Args>(args)...));
}

template <class... Args>
[[noreturn]] void runtime_error(fmt::format_string<Args...> f, Args&&... args) {
  throw RuntimeError(fmt::format(f, std::forward<Args>(args)...));
}

[[noreturn]] void check_failed(const char* expr, const char* file, int line, const std::string& msg);

}  // namespace gt

// GT_CHECK(cond, "format {}", args...): internal invariant; throws gt::RuntimeError with file:line.
#define GT_CHECK(cond, ...)                                                         \
  do {                                                                              \
    if (!(cond)) ::gt::check_failed(#cond, __FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
  } while (0)
