// Synchronized batch norm over the ranks: hooks every BatchNorm2d of a network to the communicator.
#pragma once
#include "dist/communicator.h"
#include "nn/sequential.h"

namespace gt {

// Makes every BatchNorm2d layer of net sum its per-channel statistics over comm's ranks (so a training
// batch is normalized with the global batch's mean and variance), or, with comm == nullptr, use this
// process's batch alone again. comm must outlive net's use of it. Returns the number of layers touched.
int synchronize_batch_norm(Sequential& net, Communicator* comm);

}  // namespace gt
