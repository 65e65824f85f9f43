// What the C++ tests repeat: substring expectations, temporary folders, random tensors, bit comparison, a body run in a child process, and skips that fail where the test command promises the dependency.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>

#include "core/error.h"
#include "core/tensor.h"

// Expects `part` in (or, LACKS, not in) the string `text`, printing the text when it fails.
#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << "in: " << (text)
#define EXPECT_LACKS(text, part) EXPECT_EQ(std::string(text).find(part), std::string::npos) << "in: " << (text)

// Skips the test with `reason` (something it needs is missing), except under the test command
// (scripts/test.sh sets GANTRAIN_TEST_REQUIRE_ALL=1 after installing every test dependency), where the
// missing dependency is a failure.
#define GT_SKIP_MISSING(reason)                                                             \
  do {                                                                                      \
    if (::gt::test::require_all()) FAIL() << "required by the test command, but " << reason; \
    GTEST_SKIP() << reason;                                                                 \
  } while (0)

namespace gt::test {

inline bool require_all() {
  const char* v = std::getenv("GANTRAIN_TEST_REQUIRE_ALL");
  return v && std::string(v) == "1";
}

// A tensor of uniform values in [lo, hi) from rng (the layer tests' inputs and weights).
inline Tensor random_tensor(const Shape& shape, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  Tensor t(shape);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = u(rng);
  return t;
}

inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// A fresh folder under the system's temporary directory (mkdtemp), removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "gt_test") {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string operator/(const std::string& name) const { return file(name); }

 private:
  std::filesystem::path path_;
};

// How `body` ended in a forked child process, where it may set process limits (RLIMIT_FSIZE for a
// full disk) or signal dispositions without touching the test: `runtime_error` true and its message
// when it threw gt::RuntimeError; otherwise false and what happened instead (another exception, no
// exception, or the child's death by a signal).
struct ChildOutcome {
  bool runtime_error = false;
  std::string message;
};

inline ChildOutcome runtime_error_in_child(const std::function<void()>& body) {
  int fds[2];
  if (pipe(fds) != 0) return {false, "pipe() failed"};
  fflush(nullptr);
  const pid_t child = fork();
  if (child < 0) return {false, "fork() failed"};
  if (child == 0) {
    close(fds[0]);
    std::string message = "no exception";
    int code = 3;
    try {
      body();
    } catch (const ::gt::RuntimeError& e) {
      message = e.what();
      code = 0;
    } catch (const std::exception& e) {
      message = std::string("wrong exception type: ") + e.what();
    }
    if (write(fds[1], message.data(), message.size()) < 0) code = 4;
    close(fds[1]);
    _exit(code);
  }
  close(fds[1]);
  std::string message;
  char buffer[512];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) > 0;) message.append(buffer, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  if (waitpid(child, &status, 0) != child) return {false, "waitpid() failed: " + message};
  if (!WIFEXITED(status)) return {false, "the child died of signal " + std::to_string(WTERMSIG(status)) + ": " + message};
  return {WEXITSTATUS(status) == 0, message};
}

}  // namespace gt::test
