// Which GPU every rank of a job takes, decided from all ranks' views of their nodes, with the check NCCL needs (one rank per GPU).
#pragma once
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/device_map.h"

namespace gt {

// One rank's view: its node (host name) and what it sees there (local rank, device count, CUDA_VISIBLE_DEVICES).
struct RankDeviceView {
  std::string host;
  NodeProcess process;
};

// A view as one line of text, so every rank's travels in one all-gather; decode reverses encode.
std::string encode_device_view(const RankDeviceView& view);
RankDeviceView decode_device_view(const std::string& text);

// The device of every rank, in the order given (rank order). Ranks are grouped into nodes by host and
// each node is mapped by assign_devices. With exclusive (NCCL), a node running more ranks than the GPUs
// its ranks can see is a UserError naming the node and both counts; every error names the node.
std::vector<DeviceAssignment> place_ranks_on_devices(const std::vector<RankDeviceView>& ranks, bool exclusive);

// All-gathers every rank's view over comm (a host communicator) and places them: every rank gets the
// same assignments, or the same AgreedUserError (reported once, by rank 0).
std::vector<DeviceAssignment> gather_and_place(Communicator& comm, const RankDeviceView& mine, bool exclusive);

}  // namespace gt
