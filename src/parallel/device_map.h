// Which GPU each rank of a node uses: local rank from MPI or the launcher's variables, CUDA_VISIBLE_DEVICES respected.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "parallel/launch.h"

namespace gt {

// This process's rank among the processes of its node, from the launcher: OMPI_COMM_WORLD_LOCAL_RANK
// (Open MPI), SLURM_LOCALID (srun), MPI_LOCALRANKID (MPICH's hydra). nullopt when none is set. The MPI
// communicator's shared-memory split is the first choice; this is the fallback, and works before MPI starts.
std::optional<int> local_rank_from_env(const EnvLookup& env);

// The entries of CUDA_VISIBLE_DEVICES as CUDA reads them: indices or GPU-/MIG- UUIDs, up to the first
// invalid entry. nullopt when the variable is unset (every device is visible); an empty list hides all.
std::optional<std::vector<std::string>> cuda_visible_devices(const EnvLookup& env);

// One process of a node as the mapping sees it.
struct NodeProcess {
  int local_rank = 0;
  int device_count = 0;                                  // what the CUDA runtime reports to that process
  std::optional<std::vector<std::string>> visible;      // its CUDA_VISIBLE_DEVICES, nullopt = unset
};

struct DeviceAssignment {
  int ordinal = 0;       // the device number the process selects (cudaSetDevice), within its visible list
  std::string physical;  // the device's name on the node: the CUDA_VISIBLE_DEVICES entry, or the ordinal
  int sharing = 1;       // processes of the node on this physical device
};

// Local rank r takes visible device r mod count, so ranks spread over the devices they see: all of a
// node's GPUs when CUDA_VISIBLE_DEVICES is unset, and its own one when the launcher gives each rank one
// GPU (srun --gpus-per-task=1 sets CUDA_VISIBLE_DEVICES per rank). Returns one entry per process, in the
// order given. UserError when a process sees no device, or when exclusive (NCCL allows one rank per GPU)
// and two processes land on the same physical device.
std::vector<DeviceAssignment> assign_devices(const std::vector<NodeProcess>& node, bool exclusive);

}  // namespace gt
