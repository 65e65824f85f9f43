// Device buffers through a host communicator (MPI): each collective copies to pinned host memory, runs there, and copies back.
#pragma once
// C++17-clean (nvcc may include it).
#include <cuda_runtime_api.h>

#include <memory>

#include "parallel/communicator.h"

namespace gt::cuda {

// Wraps host_comm (the MPI communicator, or the local one) so that its collectives take device pointers:
// the data is copied to pinned host memory (cudaMemcpyAsync on stream, which orders it after the work
// that wrote the buffers), goes through host_comm, and is copied back. This is how ranks that share one
// GPU, which NCCL refuses, communicate. The blocking calls return with the result in place; the handle
// of start_all_reduce copies back in its test() or wait(), and must not outlive the communicator.
// Pinned buffers are kept between calls (cudaMallocHost synchronizes the device). backend() is
// host_comm's.
std::unique_ptr<Communicator> make_host_staged_communicator(std::unique_ptr<Communicator> host_comm,
                                                            cudaStream_t stream);

}  // namespace gt::cuda
