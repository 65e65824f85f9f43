// How a process joins a job: launcher detection (mpirun, srun), MPI's lifetime, and the communicator dist.backend asks for.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "config/choices.h"
#include "parallel/communicator.h"

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

// Every decision dist.backend makes is below: the host communicator the trainer talks over, and
// which device collectives a CUDA run puts on top of it.

// The host communicator for dist.backend (timeouts in seconds, 0 = wait forever):
//   auto, nccl - MPI when MPI is initialized (an MPI launcher started the process), else local (nccl's
//                device collectives are opened by the CUDA engine over this communicator);
//   mpi        - MPI, initializing it when needed (a process started alone is then a world of 1);
//   local      - world size 1; a UserError when MPI runs more than one rank.
// A UserError too when the launch itself is wrong (launch_problem).
std::unique_ptr<Communicator> open_communicator(DistBackend backend, double timeout_s);
// nullptr when current is what open_communicator(backend) would open, else that one, opened: the CLI
// opens "auto" to read the config, then the config's dist.backend decides.
std::unique_ptr<Communicator> replacement_communicator(const Communicator& current, DistBackend backend,
                                                       double timeout_s);
// A UserError when dist.backend cannot serve the run's device: nccl moves GPU buffers only.
void check_backend_for_device(DistBackend backend, bool cuda, DeviceChoice asked);

// The device collectives of a CUDA run with several ranks: NCCL when dist.backend is nccl (a UserError
// with nccl_missing when it cannot open), or auto with one rank per GPU and NCCL usable (nccl_missing
// empty); else the host communicator's collectives staged through pinned host memory.
enum class DeviceCollectives { nccl, staged };
DeviceCollectives choose_device_collectives(DistBackend backend, int max_ranks_per_gpu,
                                            const std::string& nccl_missing);

#if GANTRAIN_HAVE_MPI
// The MPI communicator over a duplicate of MPI_COMM_WORLD; MPI must be initialized.
std::unique_ptr<Communicator> make_mpi_communicator(double timeout_s);
#endif

}  // namespace gt
