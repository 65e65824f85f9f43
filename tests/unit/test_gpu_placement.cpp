// Rank-to-GPU placement over a whole job (no GPU needed): nodes grouped by host, the NCCL one-rank-per-GPU check naming node and counts, the gathered view format.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "common/fake_env.h"
#include "common/test_util.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/gpu_placement.h"


namespace gt {
namespace {

using Visible = std::optional<std::vector<std::string>>;

RankDeviceView view(const std::string& host, int local_rank, int devices, Visible visible = std::nullopt) {
  return RankDeviceView{host, NodeProcess{local_rank, devices, std::move(visible)}};
}

TEST(GpuPlacement, ViewsSurviveTheirTextForm) {
  const std::vector<RankDeviceView> views = {
      view("node-a", 0, 8), view("node-b.cluster", 3, 2, std::vector<std::string>{"GPU-5f1c", "1"}),
      view("n", 1, 4, std::vector<std::string>{})};
  for (const RankDeviceView& v : views) {
    const RankDeviceView back = decode_device_view(encode_device_view(v));
    EXPECT_EQ(back.host, v.host);
    EXPECT_EQ(back.process.local_rank, v.process.local_rank);
    EXPECT_EQ(back.process.device_count, v.process.device_count);
    EXPECT_EQ(back.process.visible, v.process.visible);  // unset, a list, and an empty list stay distinct
  }
  EXPECT_THROW(decode_device_view("node\t0\t1"), RuntimeError);
}

TEST(GpuPlacement, RanksSpreadOverTheGpusOfTheirOwnNode) {
  // Two nodes of 2 GPUs, ranks interleaved: each node's local ranks 0 and 1 take GPUs 0 and 1.
  const std::vector<RankDeviceView> job = {view("a", 0, 2), view("b", 0, 2), view("a", 1, 2), view("b", 1, 2)};
  const std::vector<DeviceAssignment> placed = place_ranks_on_devices(job, /*exclusive=*/true);
  ASSERT_EQ(placed.size(), 4u);
  EXPECT_EQ(placed[0].ordinal, 0);
  EXPECT_EQ(placed[1].ordinal, 0);
  EXPECT_EQ(placed[2].ordinal, 1);
  EXPECT_EQ(placed[3].ordinal, 1);
  for (const DeviceAssignment& a : placed) EXPECT_EQ(a.sharing, 1);
}

TEST(GpuPlacement, MoreRanksThanGpusOnANodeNamesTheNodeAndTheCounts) {
  // Node a is fine (2 ranks, 2 GPUs); node b runs 3 ranks on 2 GPUs.
  const std::vector<RankDeviceView> job = {view("a", 0, 2), view("a", 1, 2), view("b", 0, 2), view("b", 1, 2),
                                           view("b", 2, 2)};
  const std::string e = user_error_text([&] { place_ranks_on_devices(job, true); });
  EXPECT_CONTAINS(e, "node b runs 3 ranks");
  EXPECT_CONTAINS(e, "only 2 GPUs");
  EXPECT_CONTAINS(e, "NCCL allows one rank per GPU");
  EXPECT_CONTAINS(e, "dist.backend: mpi");
  EXPECT_EQ(e.find("node a"), std::string::npos);
  // The MPI communicator may share GPUs: the same job places, two ranks on b's GPU 0.
  const std::vector<DeviceAssignment> shared = place_ranks_on_devices(job, false);
  EXPECT_EQ(shared[2].ordinal, 0);
  EXPECT_EQ(shared[4].ordinal, 0);
  EXPECT_EQ(shared[4].sharing, 2);
  EXPECT_EQ(shared[0].sharing, 1);
}

TEST(GpuPlacement, TwoRanksOnOneGpuIsTheOneGpuMachineCase) {
  const std::vector<RankDeviceView> job = {view("vm", 0, 1), view("vm", 1, 1)};
  const std::string e = user_error_text([&] { place_ranks_on_devices(job, true); });
  EXPECT_CONTAINS(e, "node vm runs 2 ranks but they see only 1 GPU (0)");
  EXPECT_CONTAINS(e, "start at most 1 rank on this node");
}

TEST(GpuPlacement, OneGpuPerRankFromTheLauncherCountsTheNodesGpus) {
  // srun --gpus-per-task=1: each rank sees one device, a different one; the node has 2 GPUs in all.
  const std::vector<RankDeviceView> own = {view("n", 0, 1, std::vector<std::string>{"2"}),
                                           view("n", 1, 1, std::vector<std::string>{"3"})};
  const std::vector<DeviceAssignment> placed = place_ranks_on_devices(own, true);
  EXPECT_EQ(placed[0].ordinal, 0);
  EXPECT_EQ(placed[1].ordinal, 0);
  EXPECT_EQ(placed[0].physical, "2");
  EXPECT_EQ(placed[1].physical, "3");
  // The same device given to both ranks: one GPU for two ranks.
  const std::vector<RankDeviceView> same = {view("n", 0, 1, std::vector<std::string>{"GPU-aa"}),
                                            view("n", 1, 1, std::vector<std::string>{"GPU-aa"})};
  EXPECT_CONTAINS(user_error_text([&] { place_ranks_on_devices(same, true); }), "they see only 1 GPU (GPU-aa)");
}

TEST(GpuPlacement, CollisionsWithEnoughGpusAndRanksWithoutAnyNameTheNode) {
  // Two GPUs on the node, but the ranks list them in different orders: local rank 0 takes entry 0 of
  // "0,1" and local rank 1 entry 1 of "1,0", both physical GPU 0.
  const std::vector<RankDeviceView> crossed = {view("x", 0, 2, std::vector<std::string>{"0", "1"}),
                                               view("x", 1, 2, std::vector<std::string>{"1", "0"})};
  const std::string e = user_error_text([&] { place_ranks_on_devices(crossed, true); });
  EXPECT_CONTAINS(e, "node x:");
  EXPECT_CONTAINS(e, "GPU 0 would be shared by local ranks 0, 1");
  EXPECT_CONTAINS(user_error_text([] { place_ranks_on_devices({view("y", 0, 0)}, true); }), "node y: local rank 0 sees no GPU");
}

TEST(GpuPlacement, GatherAndPlaceWithOneRankAgreesOnTheVerdict) {
  auto comm = make_local_communicator();
  const std::vector<DeviceAssignment> placed = gather_and_place(*comm, view("solo", 0, 3), true);
  ASSERT_EQ(placed.size(), 1u);
  EXPECT_EQ(placed[0].ordinal, 0);
  EXPECT_THROW(gather_and_place(*comm, view("solo", 0, 0), true), AgreedUserError);
}

}  // namespace
}  // namespace gt
