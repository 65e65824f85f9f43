// How a process joins a job: launcher detection (mpirun, srun), MPI's lifetime, and the communicator dist.backend asks for.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "dist/communicator.h"

namespace gt {

// Looks up an environment variable (nullptr when unset); tests pass a fake one.
using EnvLookup = std::function<const char*(const char*)>;
EnvLookup process_env();

std::string host_name();

// True when an MPI launcher started this process: Open MPI's mpirun (OMPI_COMM_WORLD_SIZE), a PMIx
// launcher such as srun --mpi=pmix (PMIX_RANK), or a PMI-1/2 one such as MPICH's hydra (PMI_RANK).
bool started_by_mpi_launcher(const EnvLookup& env);

// Empty when how the process was started agrees with the world MPI built; else the problem in a
// sentence, e.g. srun started 4 tasks without MPI wire-up (so each would train alone).
std::string launch_problem(const EnvLookup& env, int world_size);

// MPI's lifetime for main(): MPI is initialized here when an MPI launcher started the process (so
// that even a config error can be reported once and end the job cleanly), and finalized on exit,
// also when open_communicator("mpi") initialized it later. Without MPI in the build, does nothing.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int rank() const;        // 0 without MPI
  int world_size() const;  // 1 without MPI
  // Ends every rank of the job now (MPI_Abort), or this process when it is alone.
  [[noreturn]] void abort(int exit_code);
};

// "[rank 3@node12] " for error lines of a multi-rank job, "" for a single process.
std::string rank_prefix(int rank, int world_size, const std::string& host);

// The communicator for dist.backend (timeouts in seconds, 0 = wait forever):
//   auto  - MPI when MPI is initialized (the process was started by an MPI launcher), else local
//           (never NCCL: the trainer's own collectives use host buffers; its GPU engine opens NCCL);
//   mpi   - MPI, initializing it when needed (a process started alone is then a world of 1);
//   local - world size 1; a UserError when MPI runs more than one rank;
//   nccl  - the NCCL communicator over device buffers (cuda/nccl_communicator.h), bootstrapped over MPI
//           (or alone as a world of 1); rank 0 prints its describe() line. A UserError saying what is
//           missing when gantrain was built without CUDA or NCCL, or no GPU is usable.
std::unique_ptr<Communicator> open_communicator(const std::string& backend, double timeout_s);

// "" when dist.backend: nccl can open here: built with CUDA and NCCL, and a GPU is usable. Otherwise
// what is missing, as a sentence.
std::string nccl_unavailable_reason();

// A UserError when comm moves device buffers (nccl) for a caller that holds host memory: train() takes
// the host communicator, and its GPU engine opens NCCL over it.
void require_host_communicator(const Communicator& comm);

#if GANTRAIN_HAVE_MPI
// The MPI communicator over a duplicate of MPI_COMM_WORLD; MPI must be initialized.
std::unique_ptr<Communicator> make_mpi_communicator(double timeout_s);
#endif

}  // namespace gt
