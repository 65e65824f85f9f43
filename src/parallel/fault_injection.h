// Test-only faults for the multi-rank failure tests: GANTRAIN_TEST_FAULT=RANK:STEP:KIND makes one rank fail at one step.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "parallel/launch.h"

namespace gt {

// KIND: throw (a RuntimeError), segv (raises SIGSEGV), hang (sleeps forever), exit (exits with code 7
// at once, as a process killed by a bug outside our error handling would), nan (that step's real batch
// is all NaN on that rank), nan_from (the same at that step and every later one), sigterm and sigusr1
// (the process sends itself that signal before the step, at a known moment, and runs on).
struct FaultPlan {
  int rank = 0;
  int64_t step = 0;
  std::string kind;
};

// nullopt when GANTRAIN_TEST_FAULT is unset; a malformed value is a UserError naming it.
std::optional<FaultPlan> fault_plan_from_env(const EnvLookup& env);

// Acts when plan names this rank and step; otherwise returns at once.
void inject_fault_if_due(const std::optional<FaultPlan>& plan, int rank, int64_t step);
// True when plan poisons this rank's batch at this step (kinds nan and nan_from).
bool nan_fault_due(const std::optional<FaultPlan>& plan, int rank, int64_t step);

}  // namespace gt
