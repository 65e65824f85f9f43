// The NCCL communicator: the Communicator interface over device buffers, one rank per GPU, bootstrapped over a host communicator (MPI).
#pragma once
// C++17-clean (nvcc may include it); no NCCL or MPI header needed by its users.
#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace gt::cuda {

// A collective queued on a CUDA stream: done_event() completes with it, so GPU work can wait for it on
// the device (cudaStreamWaitEvent) while the host goes on; test()/wait() are the host-side waits.
class StreamCollective : public PendingCollective {
 public:
  virtual cudaEvent_t done_event() const = 0;
};

// Every collective takes device pointers on device() (a host pointer is refused). Collectives run on the
// communicator's own stream, after the work already queued on the compute stream (set_compute_stream;
// the legacy default stream until set), so buffers written there are ready. The blocking calls return
// once the result is in place; start_all_reduce returns a StreamCollective, whose order_before_device_work
// makes the compute stream wait for it with no host wait (the gradient buckets and synchronized batch norm
// use it, so backward, the optimizer and the next layers are queued while collectives run). Every wait polls the
// collective and NCCL's asynchronous error state against dist.timeout_s: a failed or vanished peer is
// an error (the NCCL communicator is then aborted), never a hang. A handle must not outlive its
// communicator.
class NcclCommunicator : public Communicator {
 public:
  virtual int device() const = 0;             // the CUDA device ordinal this rank uses
  virtual cudaStream_t stream() const = 0;    // where the collectives run
  virtual void set_compute_stream(cudaStream_t stream) = 0;
  // Waits on the host for an event of the compute stream with this communicator's deadline and error checks:
  // the wait to use for GPU work that may be waiting for collectives on the device (order_before_device_work),
  // so that a vanished peer is an error after dist.timeout_s, never a hang. what names it in the error.
  virtual void wait_event(cudaEvent_t event, const char* what) = 0;
  // One line for the log: NCCL's version (library and headers), ranks, this rank's GPU and node.
  virtual std::string describe() const = 0;
};

// Opens NCCL over the ranks of bootstrap (the MPI communicator, or the local one for a world of 1), which
// the NCCL communicator keeps for start-up agreement, host and local rank, and abort. Every rank: picks
// its GPU by the rank-to-device mapping (parallel/device_map.h, exclusive: one rank per GPU, else a
// UserError naming the node and the counts), rank 0 makes the unique id and bootstrap broadcasts it, then
// ncclCommInitRankConfig (non-blocking, so the wait has the timeout). Errors are agreed over bootstrap.
std::unique_ptr<NcclCommunicator> make_nccl_communicator(std::unique_ptr<Communicator> bootstrap, double timeout_s);

// "2.28.9": the NCCL library loaded at run time.
std::string nccl_library_version();

}  // namespace gt::cuda
