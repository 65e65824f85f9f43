// File checks in a child process: the child is this executable started again with the request in its environment; verdict on fd 3.
#include "core/file_check.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/error.h"
#include "core/fault_point.h"

extern char** environ;

namespace gt {

namespace {

constexpr const char* kKindVar = "GANTRAIN_FILE_CHECK_KIND";
constexpr const char* kPathVar = "GANTRAIN_FILE_CHECK_PATH";
constexpr int kVerdictFd = 3;  // the child writes "passed\n<note>", "refused\n<sentence>" or "failed\n<text>" here
constexpr size_t kMaxReportBytes = 64 * 1024;
constexpr size_t kMaxVerdictBytes = 1 << 20;

std::mutex served_mutex;
std::vector<std::string>& served_kinds() {
  static std::vector<std::string> kinds;
  return kinds;
}

bool serves(std::string_view kind) {
  std::lock_guard<std::mutex> lock(served_mutex);
  for (const std::string& k : served_kinds())
    if (k == kind) return true;
  return false;
}

void write_all(int fd, const std::string& text) {
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the parent went away: nobody to tell
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// A pipe whose ends are above the standard descriptors and the verdict descriptor, close-on-exec.
struct Pipe {
  int read = -1, write = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) runtime_error("cannot make a pipe for a file check: {}", std::strerror(errno));
    read = lift(fds[0]);
    write = lift(fds[1]);
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  void close_read() {
    if (read >= 0) ::close(read);
    read = -1;
  }
  void close_write() {
    if (write >= 0) ::close(write);
    write = -1;
  }
  static int lift(int fd) {
    if (fd > kVerdictFd) return fd;
    const int high = ::fcntl(fd, F_DUPFD_CLOEXEC, kVerdictFd + 1);
    ::close(fd);
    if (high < 0) runtime_error("cannot move a pipe for a file check: {}", std::strerror(errno));
    return high;
  }
};

FileCheckResult run_in_process(const std::string& path, FileCheckFn check) {
  FileCheckResult r;
  try {
    r.note = check(path);
    r.outcome = FileCheckResult::Outcome::passed;
  } catch (const UserError& e) {
    r.outcome = FileCheckResult::Outcome::refused;
    r.message = e.what();
  }
  return r;
}

std::string signal_text(int sig) {
  const char* name = ::strsignal(sig);
  return fmt::format("signal {} ({})", sig, name ? name : "unknown");
}

}  // namespace

void serve_file_checks(std::initializer_list<std::pair<std::string_view, FileCheckFn>> checks) {
  const char* kind = std::getenv(kKindVar);
  if (kind == nullptr) {
    std::lock_guard<std::mutex> lock(served_mutex);
    for (const auto& [name, fn] : checks) served_kinds().emplace_back(name);
    return;
  }
  // The child: the request is not passed on to processes it may start, and no core file for a crash
  // that the parent expects to survive.
  const std::string requested = kind;
  const char* path_env = std::getenv(kPathVar);
  const std::string path = path_env ? path_env : "";
  ::unsetenv(kKindVar);
  ::unsetenv(kPathVar);
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  const bool verdict_fd_open = ::fcntl(kVerdictFd, F_GETFD) >= 0;
  // _Exit: no atexit handlers or static destructors in the child (HDF5's shutdown, a leak checker's
  // report of what a check left open): the verdict is all the parent gets, and the run's own process
  // runs the same code again under its own checks.
  auto report = [&](const std::string& text, int code) {
    if (verdict_fd_open) write_all(kVerdictFd, text);
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
  };
  fault_point("file_check");  // tests: GANTRAIN_TEST_KILL=file_check:1 makes the child die as a crash would
  for (const auto& [name, fn] : checks) {
    if (name != requested) continue;
    try {
      report("passed\n" + fn(path), 0);
    } catch (const UserError& e) {
      report(std::string("refused\n") + e.what(), 2);
    } catch (const std::exception& e) {
      report(std::string("failed\n") + e.what(), 1);
    }
  }
  report("failed\nthis executable serves no file check named '" + requested + "'", 1);
}

FileCheckResult run_file_check(std::string_view kind, const std::string& path, FileCheckFn check, double timeout_s) {
  if (!serves(kind)) return run_in_process(path, check);

  Pipe verdict, output;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, output.write, 1);
  posix_spawn_file_actions_adddup2(&actions, output.write, 2);
  posix_spawn_file_actions_adddup2(&actions, verdict.write, kVerdictFd);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  // MPI sockets and other descriptors a child has no business holding.
  posix_spawn_file_actions_addclosefrom_np(&actions, kVerdictFd + 1);
#endif
  std::vector<std::string> env_storage;
  for (char** e = environ; e && *e; ++e) {
    const std::string_view entry(*e);
    if (entry.starts_with(std::string(kKindVar) + "=") || entry.starts_with(std::string(kPathVar) + "=")) continue;
    env_storage.emplace_back(entry);
  }
  env_storage.push_back(std::string(kKindVar) + "=" + std::string(kind));
  env_storage.push_back(std::string(kPathVar) + "=" + path);
  std::vector<char*> envp;
  for (std::string& s : env_storage) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  char* argv[] = {exe.data(), nullptr};
  pid_t pid = -1;
  // posix_spawn starts the child without copying this process's memory (glibc uses CLONE_VM|CLONE_VFORK).
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) runtime_error("cannot start a process to check {}: {}", path, std::strerror(rc));
  verdict.close_write();
  output.close_write();

  FileCheckResult r;
  r.isolated = true;
  std::string verdict_text;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed_s = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  bool timed_out = false;
  double deadline_s = timeout_s;
  int stop_signal = 0;  // 0 until the time is up; then SIGSEGV (a sanitizer prints where the child was), then SIGKILL
  char buffer[8192];
  while (verdict.read >= 0 || output.read >= 0) {
    pollfd fds[2];
    nfds_t n = 0;
    if (verdict.read >= 0) fds[n++] = {verdict.read, POLLIN, 0};
    if (output.read >= 0) fds[n++] = {output.read, POLLIN, 0};
    const double left_s = deadline_s - elapsed_s();
    if (left_s <= 0) {
      if (stop_signal == SIGKILL) break;  // the child is gone; a grandchild may hold the pipes
      timed_out = true;
      stop_signal = stop_signal == 0 ? SIGSEGV : SIGKILL;
      ::kill(pid, stop_signal);
      deadline_s = elapsed_s() + 5;
      continue;
    }
    const int ready = ::poll(fds, n, static_cast<int>(std::min(left_s * 1000 + 1, 60000.0)));
    if (ready < 0 && errno != EINTR) break;
    for (nfds_t i = 0; i < n && ready > 0; ++i) {
      if (fds[i].revents == 0) continue;
      const bool is_verdict = fds[i].fd == verdict.read;
      const ssize_t got = ::read(fds[i].fd, buffer, sizeof buffer);
      if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (got <= 0) {
        is_verdict ? verdict.close_read() : output.close_read();
        continue;
      }
      std::string& sink = is_verdict ? verdict_text : r.report;
      const size_t cap = is_verdict ? kMaxVerdictBytes : kMaxReportBytes;
      sink.append(buffer, std::min(static_cast<size_t>(got), cap - std::min(cap, sink.size())));
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) runtime_error("cannot wait for the process checking {}: {}", path, std::strerror(errno));
  }
  const auto newline = verdict_text.find('\n');
  const std::string head = verdict_text.substr(0, newline);
  const std::string body = newline == std::string::npos ? "" : verdict_text.substr(newline + 1);
  if (timed_out) {
    r.outcome = FileCheckResult::Outcome::timed_out;
    r.message = fmt::format("it ran longer than {:g} s", timeout_s);
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && head == "passed") {
    r.outcome = FileCheckResult::Outcome::passed;
    r.note = body;
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == 2 && head == "refused") {
    r.outcome = FileCheckResult::Outcome::refused;
    r.message = body;
  } else {
    r.outcome = FileCheckResult::Outcome::crashed;
    if (WIFSIGNALED(status))
      r.message = "it was ended by " + signal_text(WTERMSIG(status));
    else if (head == "failed")
      r.message = "it failed: " + body;
    else
      r.message = fmt::format("it exited with code {}", WEXITSTATUS(status));
  }
  return r;
}

double file_check_timeout_s() {
  if (const char* v = std::getenv("GANTRAIN_FILE_CHECK_TIMEOUT_S")) {
    char* end = nullptr;
    const double t = std::strtod(v, &end);
    if (end == v || *end != '\0' || !(t > 0))
      user_error("GANTRAIN_FILE_CHECK_TIMEOUT_S={} is not a positive number of seconds", v);
    return t;
  }
  return 120;
}

std::string check_file_or_refuse(std::string_view kind, const std::string& path, FileCheckFn check,
                                 const std::string& what) {
  const double timeout_s = file_check_timeout_s();
  const FileCheckResult r = run_file_check(kind, path, check, timeout_s);
  switch (r.outcome) {
    case FileCheckResult::Outcome::passed: return r.note;
    case FileCheckResult::Outcome::refused: throw UserError(r.message);
    case FileCheckResult::Outcome::crashed:
      user_error("{} is damaged: the check that reads it in a separate process crashed ({}), as HDF5 does on some "
                 "damaged files; copy or create the file again",
                 what, r.message);
    case FileCheckResult::Outcome::timed_out:
      user_error("{} could not be checked: reading it in a separate process took longer than {:g} s (a damaged file "
                 "can make HDF5 loop forever; on a slow file system, raise GANTRAIN_FILE_CHECK_TIMEOUT_S)",
                 what, timeout_s);
  }
  runtime_error("unknown outcome of the check of {}", path);
}

}  // namespace gt
