// Test-only kill points: GANTRAIN_TEST_KILL=POINT:N[:RANK] ends the process with SIGKILL the N-th time it passes POINT.
#pragma once

namespace gt {

// Named moments where the crash-safety tests (tests/e2e/test_resume.py, test_checkpoints.py) kill a run: "step" (before
// each training step), "ckpt_created" (the temporary checkpoint file exists), "ckpt_meta" (/meta
// written), "ckpt_tensors" (every tensor written, file still open), "ckpt_synced" (the temporary file
// flushed and fsynced, before the rename), "ckpt_renamed" (after the rename, before the directory
// sync), "retention" (before each old checkpoint is deleted), "metrics" (after each metrics line).
//
// When GANTRAIN_TEST_KILL is set to "POINT:N" (or "POINT:N:RANK", RANK as in OMPI_COMM_WORLD_RANK,
// PMIX_RANK or SLURM_PROCID), the N-th call with that name (counted from 1) raises SIGKILL, as a node
// failure or the OOM killer would. Unset, a call costs one relaxed atomic load. A malformed value
// aborts the process with a message on the first call, so a test cannot silently miss its kill.
void fault_point(const char* name);

}  // namespace gt
