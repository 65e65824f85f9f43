// Synchronized batch norm over the ranks: the one reducer both engines hand to their networks' batch-norm layers.
#pragma once
#include <cstdint>
#include <functional>

#include "parallel/communicator.h"

namespace gt {

// Sums per-channel batch-norm values over comm's ranks, in place, in the memory comm's collectives take
// (host doubles for MPI and local, device doubles for NCCL and the staged device communicator). Given
// to Net::set_batch_stats_reducer(reducer, comm.world_size()), a training batch is normalized with the
// global batch's mean and variance. comm must outlive the network's use of it.
std::function<void(double* values, int64_t count)> sum_over_ranks(Communicator& comm);

}  // namespace gt
