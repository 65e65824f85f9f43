// What the C++ tests repeat: substring expectations, temporary folders, bit comparison, and skips that fail where the test command promises the dependency.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>

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

}  // namespace gt::test
