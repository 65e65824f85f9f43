// Synchronized batch norm: each batch-norm layer's per-channel sums go through one all-reduce (ordered on the device for NCCL).
#include "parallel/sync_batchnorm.h"

namespace gt {

std::function<void(double* values, int64_t count)> sum_over_ranks(Communicator& comm) {
  // Device memory (NCCL): the layer's next kernels wait for the sums on the device, the host goes on queueing.
  if (!comm.orders_on_device())
    return [&comm](double* values, int64_t count) { comm.all_reduce(values, count, ReduceOp::sum); };
  return [&comm](double* values, int64_t count) {
    std::unique_ptr<PendingCollective> sums = comm.start_all_reduce(values, count, ReduceOp::sum);
    if (!sums->order_before_device_work()) sums->wait();
  };
}

}  // namespace gt
