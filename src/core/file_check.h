// Checks of untrusted files run in a child process, so a crash or a hang inside a third-party parser (HDF5) ends the child, not the run.
#pragma once
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace gt {

// A check reads everything of `path` that a later in-process use of the file will parse and returns
// a short note (e.g. what kind of file it is), or raises UserError naming the file and the problem.
using FileCheckFn = std::string (*)(const std::string& path);

struct FileCheckResult {
  enum class Outcome {
    passed,     // the check returned; note holds what it returned
    refused,    // the check raised UserError; message holds its sentence
    crashed,    // the child died (a signal, a sanitizer's report, another exit code); message says how
    timed_out,  // the child ran past the time limit and was killed
  };
  Outcome outcome = Outcome::passed;
  std::string note;
  std::string message;
  std::string report;    // the child's stderr (a sanitizer's report in sanitized builds), at most 64 KiB
  bool isolated = false; // false: this executable serves no checks, so the check ran in this process
};

// Call first in main() (before MPI or CUDA start) of every executable that runs checks in children,
// naming the checks it serves. In a normal process it records them and returns. In a process started
// by run_file_check it runs the requested check, reports to the parent and ends the process there
// (exit code 0 passed, 2 refused, 1 failed; no atexit handlers run).
void serve_file_checks(std::initializer_list<std::pair<std::string_view, FileCheckFn>> checks);

// Runs `check` on path in a child process: this executable started again (posix_spawn of
// /proc/self/exe, which never forks the memory of a process that holds MPI, NCCL or CUDA state)
// with the request in its environment, served by serve_file_checks under `kind`. Waits at most
// timeout_s seconds (then stops the child). In an executable that did not serve `kind` (unit tests),
// runs check in this process and reports passed or refused. Other exceptions of an in-process check
// propagate; a child that cannot be started raises RuntimeError.
FileCheckResult run_file_check(std::string_view kind, const std::string& path, FileCheckFn check, double timeout_s);

// The time limit for checks of user files: GANTRAIN_FILE_CHECK_TIMEOUT_S, else 120 s (a damaged file
// can make HDF5 loop forever; a healthy one is checked in well under a second, even on a slow shared
// file system).
double file_check_timeout_s();

// run_file_check, then: passed returns the note; refused raises the child's UserError; a crash or a
// time-out raises UserError "<what> is damaged: ...", naming the file. `what` is e.g. "dataset file
// data/x.h5".
std::string check_file_or_refuse(std::string_view kind, const std::string& path, FileCheckFn check,
                                 const std::string& what);

}  // namespace gt
