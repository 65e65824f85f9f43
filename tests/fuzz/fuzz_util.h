// What the fuzz targets share: the libFuzzer entry points, a temporary file holding the input, HDF5 checks in a child process.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/file_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace gt::fuzz {

// The input as a file for readers that take a path (HDF5, zlib): one name per process and target,
// in /dev/shm where it exists (no disk I/O per execution), else $TMPDIR or /tmp; removed after use.
class TempFile {
 public:
  TempFile(const char* target, const uint8_t* data, size_t size, const char* suffix = "") {
    const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : std::getenv("TMPDIR");
    path_ = std::string(dir && *dir ? dir : "/tmp") + "/gantrain-fuzz-" + target + "-" + std::to_string(getpid()) +
            suffix;
    FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
      std::perror(path_.c_str());
      std::abort();  // the harness itself failed, not the reader: stop loudly
    }
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Serves a target's file check in the child process that run_file_check starts (this executable
// again, core/file_check.h): call from LLVMFuzzerInitialize, which libFuzzer and replay_main call first.
inline void serve_check(std::string_view kind, gt::FileCheckFn check) {
  gt::serve_file_checks({{kind, check}});
}

// How long a target's check child may run before it counts as hung: a healthy check of a small input
// takes about 40 ms (most of it starting the process), and HDF5 loops forever on some damaged global
// heaps, which mutations reach often. A child that hangs outside HDF5 is run again for kConfirmHangS.
inline constexpr double kChildTimeoutS = 1;
inline constexpr double kConfirmHangS = 6;  // within libFuzzer's -timeout=10 for the whole input

// True when the sanitizer report of a child that crashed or hung (a hung child gets SIGSEGV, so the
// report says where it was) puts the faulting frame in the HDF5 library: a third-party fault the file
// check exists to survive (docs/fuzzing.md). Without a report (a build without sanitizers) there is
// nothing to tell them apart: true.
inline bool fault_in_library(const gt::FileCheckResult& r) {
  if (r.report.empty()) return true;
  // The sanitizer's own frames (clang prints "__asan_memcpy", gcc "bool __sanitizer::atomic_...(...)
  // ../src/libsanitizer/...") anywhere in the frame; the C library's functions by their names.
  static const char* const kSanitizer[] = {"__interceptor", "__asan", "__sanitizer", "__ubsan", "__lsan",
                                           "libsanitizer", "compiler-rt"};
  static const char* const kSkipped[] = {"memcpy", "memmove", "memset", "memcmp", "strlen", "strnlen", "strcmp",
                                         "free", "malloc", "calloc", "realloc", "__libc", "__GI_", "__mem", "__str",
                                         "raise", "abort", "gsignal", "pthread_kill", "__pthread_kill"};
  size_t at = 0;
  while ((at = r.report.find('#', at)) != std::string::npos) {
    const size_t end = r.report.find('\n', at);
    const std::string line = r.report.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? r.report.size() : end;
    const size_t in = line.find(" in ");
    if (line.size() < 2 || !std::isdigit(static_cast<unsigned char>(line[1])) || in == std::string::npos) continue;
    const std::string frame = line.substr(in + 4);
    // The C library's own frames (memcpy's implementations): by module, or by glibc's source folder.
    bool skipped = frame.find("libc.so") != std::string::npos || frame.find("sysdeps/") != std::string::npos;
    for (const char* marker : kSanitizer) skipped = skipped || frame.find(marker) != std::string::npos;
    for (const char* prefix : kSkipped) skipped = skipped || frame.rfind(prefix, 0) == 0;
    if (skipped) continue;
    return frame.find("libhdf5") != std::string::npos;
  }
  return false;
}

// Returns when a child that crashed or hung did so inside HDF5; aborts with its report otherwise (a
// finding in our code). A hang outside HDF5 counts once a second run, kConfirmHangS long, hangs too
// (the first may only have been slow on a loaded machine).
inline void expect_library_fault(const gt::FileCheckResult& r, const char* path, std::string_view kind,
                                 gt::FileCheckFn check) {
  if (fault_in_library(r)) return;
  if (r.outcome == gt::FileCheckResult::Outcome::timed_out) {
    const gt::FileCheckResult again = gt::run_file_check(kind, path, check, kConfirmHangS);
    if (again.outcome != gt::FileCheckResult::Outcome::timed_out || fault_in_library(again)) return;
  }
  std::fprintf(stderr, "fuzz: the check of %s %s (%s), not inside HDF5; the child's report:\n%s\n", path,
               r.outcome == gt::FileCheckResult::Outcome::timed_out ? "hung" : "crashed", r.message.c_str(),
               r.report.c_str());
  std::abort();
}

// Runs check on path in a child (run_file_check) and, when the child passed the file, in this process
// too, as production does (DatasetReader::open_checked, load_checkpoint): libFuzzer sees the coverage of
// files HDF5 parses. A file the child refused is not parsed here: HDF5 1.10 frees uninitialized
// pointers on some of its error paths (corpus/checkpoint/found_hdf5_dense_links_bad_free_H5Literate.h5
// passes in one process and crashes in another), so "the child survived it" says nothing about this
// process. Returns true when the file passed here as well.
inline bool check_isolated_then_here(std::string_view kind, const std::string& path, gt::FileCheckFn check) {
  const gt::FileCheckResult child = gt::run_file_check(kind, path, check, kChildTimeoutS);
  if (child.outcome == gt::FileCheckResult::Outcome::crashed ||
      child.outcome == gt::FileCheckResult::Outcome::timed_out) {
    expect_library_fault(child, path.c_str(), kind, check);
    return false;
  }
  if (child.outcome == gt::FileCheckResult::Outcome::refused) return false;
  try {
    check(path);
  } catch (const gt::UserError&) {
    return false;  // the same file refused here: possible only through HDF5's own nondeterminism
  }
  return true;
}

}  // namespace gt::fuzz
