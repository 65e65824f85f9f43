// The test-only faults of GANTRAIN_TEST_FAULT (see fault_injection.h).
#include "parallel/fault_injection.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "core/error.h"

namespace gt {

std::optional<FaultPlan> fault_plan_from_env(const EnvLookup& env) {
  const char* text = env("GANTRAIN_TEST_FAULT");
  if (!text) return std::nullopt;
  FaultPlan plan;
  char kind[16] = {};
  long long step = 0;
  if (std::sscanf(text, "%d:%lld:%15s", &plan.rank, &step, kind) != 3 || plan.rank < 0 || step < 0)
    user_error("GANTRAIN_TEST_FAULT '{}' is not RANK:STEP:KIND (e.g. 1:3:throw)", text);
  plan.step = step;
  plan.kind = kind;
  if (plan.kind != "throw" && plan.kind != "segv" && plan.kind != "hang" && plan.kind != "exit" && plan.kind != "nan" &&
      plan.kind != "nan_from" && plan.kind != "sigterm" && plan.kind != "sigusr1")
    user_error("GANTRAIN_TEST_FAULT '{}': KIND must be throw, segv, hang, exit, nan, nan_from, sigterm or sigusr1", text);
  return plan;
}

bool nan_fault_due(const std::optional<FaultPlan>& plan, int rank, int64_t step) {
  if (!plan || plan->rank != rank) return false;
  return (plan->kind == "nan" && step == plan->step) || (plan->kind == "nan_from" && step >= plan->step);
}

void inject_fault_if_due(const std::optional<FaultPlan>& plan, int rank, int64_t step) {
  if (!plan || plan->rank != rank || plan->step != step || plan->kind.starts_with("nan")) return;
  if (plan->kind == "throw") runtime_error("test fault injected at step {} (GANTRAIN_TEST_FAULT)", step);
  if (plan->kind == "segv") std::raise(SIGSEGV);
  if (plan->kind == "exit") std::_Exit(7);
  if (plan->kind == "sigterm" || plan->kind == "sigusr1") {
    std::raise(plan->kind == "sigterm" ? SIGTERM : SIGUSR1);  // handled like one from outside; the run goes on
    return;
  }
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // hang
}

}  // namespace gt
