// Unit tests of core/file_check: checks in a child process (this test binary started again) that pass, refuse, crash, hang or fail.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/error.h"
#include "core/file_check.h"

namespace {

using Outcome = gt::FileCheckResult::Outcome;

std::string check_ok(const std::string& path) { return "read " + path + " in pid " + std::to_string(getpid()); }
std::string check_refuse(const std::string& path) { gt::user_error("file {} has no /images", path); }
std::string check_segv(const std::string&) {
  std::raise(SIGSEGV);
  return "";
}
std::string check_hang(const std::string&) {
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}
std::string check_throw(const std::string&) { throw std::runtime_error("out of memory in the parser"); }
std::string check_noisy_abort(const std::string&) {
  std::fprintf(stderr, "library: something is badly wrong\n");
  std::fflush(stderr);
  std::abort();
}
std::string check_env(const std::string&) {
  const char* kind = std::getenv("GANTRAIN_FILE_CHECK_KIND");
  return kind ? std::string("leaked ") + kind : "clean";
}
std::string check_unserved(const std::string&) { return std::string("in-process pid ") + std::to_string(getpid()); }

gt::FileCheckResult run(const char* kind, gt::FileCheckFn fn, double timeout_s = 60) {
  return gt::run_file_check(kind, "/data/some file.h5", fn, timeout_s);
}

TEST(FileCheck, PassedCheckRunsInAChildAndReturnsItsNote) {
  const gt::FileCheckResult r = run("ok", &check_ok);
  ASSERT_EQ(r.outcome, Outcome::passed) << r.message << r.report;
  EXPECT_TRUE(r.isolated);
  EXPECT_EQ(r.note.rfind("read /data/some file.h5 in pid ", 0), 0u) << r.note;
  EXPECT_NE(r.note, check_ok("/data/some file.h5")) << "the check ran in this process";
}

TEST(FileCheck, RefusalCarriesTheChildsSentence) {
  const gt::FileCheckResult r = run("refuse", &check_refuse);
  ASSERT_EQ(r.outcome, Outcome::refused) << r.message << r.report;
  EXPECT_EQ(r.message, "file /data/some file.h5 has no /images");
}

TEST(FileCheck, CrashIsSurvivedAndReported) {
  const gt::FileCheckResult r = run("segv", &check_segv);
  ASSERT_EQ(r.outcome, Outcome::crashed) << r.message;
  // Without a sanitizer the child dies by the signal; under AddressSanitizer its handler reports and exits.
  EXPECT_TRUE(r.message.find("signal 11") != std::string::npos || r.report.find("SEGV") != std::string::npos)
      << r.message << "\n" << r.report;
}

TEST(FileCheck, HangIsStoppedAtTheTimeLimit) {
  const auto t0 = std::chrono::steady_clock::now();
  const gt::FileCheckResult r = run("hang", &check_hang, 0.5);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.outcome, Outcome::timed_out) << r.message;
  EXPECT_GE(seconds, 0.5);
  EXPECT_LT(seconds, 15) << "the child outlived its limit by far";
}

TEST(FileCheck, OtherExceptionIsACrashWithItsText) {
  const gt::FileCheckResult r = run("throw", &check_throw);
  ASSERT_EQ(r.outcome, Outcome::crashed);
  EXPECT_EQ(r.message, "it failed: out of memory in the parser");
}

TEST(FileCheck, ChildStderrIsKeptAsTheReport) {
  const gt::FileCheckResult r = run("noisy_abort", &check_noisy_abort);
  ASSERT_EQ(r.outcome, Outcome::crashed);
  EXPECT_NE(r.report.find("library: something is badly wrong"), std::string::npos) << r.report;
}

TEST(FileCheck, ChildDoesNotPassTheRequestOn) {
  const gt::FileCheckResult r = run("env", &check_env);
  ASSERT_EQ(r.outcome, Outcome::passed);
  EXPECT_EQ(r.note, "clean");
}

TEST(FileCheck, UnservedKindRunsInThisProcess) {
  const gt::FileCheckResult r = run("unserved", &check_unserved);
  ASSERT_EQ(r.outcome, Outcome::passed);
  EXPECT_FALSE(r.isolated);
  EXPECT_EQ(r.note, check_unserved(""));
  EXPECT_EQ(run("unserved_refusal", &check_refuse).outcome, Outcome::refused);
}

TEST(FileCheck, CheckFileOrRefuseTurnsEveryFailureIntoAUserError) {
  EXPECT_EQ(gt::check_file_or_refuse("env", "x.h5", &check_env, "dataset file x.h5"), "clean");
  auto message = [](const char* kind, gt::FileCheckFn fn) {
    try {
      gt::check_file_or_refuse(kind, "x.h5", fn, "dataset file x.h5");
    } catch (const gt::UserError& e) {
      return std::string(e.what());
    }
    return std::string("no UserError");
  };
  EXPECT_EQ(message("refuse", &check_refuse), "file x.h5 has no /images");
  const std::string crashed = message("segv", &check_segv);
  EXPECT_EQ(crashed.rfind("dataset file x.h5 is damaged: the check that reads it in a separate process crashed", 0), 0u)
      << crashed;
  setenv("GANTRAIN_FILE_CHECK_TIMEOUT_S", "0.3", 1);
  const std::string hung = message("hang", &check_hang);
  setenv("GANTRAIN_FILE_CHECK_TIMEOUT_S", "zero", 1);
  EXPECT_THROW(gt::file_check_timeout_s(), gt::UserError);
  unsetenv("GANTRAIN_FILE_CHECK_TIMEOUT_S");
  EXPECT_EQ(hung.rfind("dataset file x.h5 could not be checked: reading it in a separate process took longer than 0.3 s", 0),
            0u)
      << hung;
  EXPECT_EQ(gt::file_check_timeout_s(), 120);
}

}  // namespace

int main(int argc, char** argv) {
  // Started by run_file_check, this binary runs one check and exits; otherwise it runs the tests.
  gt::serve_file_checks({{"ok", &check_ok},
                         {"refuse", &check_refuse},
                         {"segv", &check_segv},
                         {"hang", &check_hang},
                         {"throw", &check_throw},
                         {"noisy_abort", &check_noisy_abort},
                         {"env", &check_env}});
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
