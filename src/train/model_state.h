// Moving a model's parameters and buffers (a PyTorch state_dict) and optimizer state into and out of checkpoint groups.
#pragma once
#include <string>

#include "io/checkpoint.h"
#include "nn/sequential.h"
#include "train/optim.h"

namespace gt {

// Copies (deep) every parameter and buffer into groups[group] under its PyTorch name.
void export_state_dict(Sequential& net, const std::string& group, TensorGroups& groups);
// Loads every parameter and buffer from ckpt.groups[group]; a missing tensor or a shape mismatch
// raises UserError naming the source, group and tensor.
void import_state_dict(Sequential& net, const Checkpoint& ckpt, const std::string& group, const std::string& source);

void export_optimizer(Optimizer& opt, const std::string& group, TensorGroups& groups);
void import_optimizer(Optimizer& opt, const Checkpoint& ckpt, const std::string& group, const std::string& source);

}  // namespace gt
