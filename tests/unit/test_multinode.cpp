// A job of 2 nodes x 8 GPUs as mpirun and srun start it (fake environments): launcher detection, local ranks, every rank's GPU, the NCCL checks.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/fake_env.h"
#include "common/test_util.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/device_map.h"
#include "parallel/gpu_placement.h"
#include "parallel/launch.h"

namespace gt {
namespace {

using Env = std::map<std::string, std::string>;

constexpr int kNodes = 2;
constexpr int kGpusPerNode = 8;
constexpr int kRanks = kNodes * kGpusPerNode;
const char* const kHosts[kNodes] = {"gpu-a01", "gpu-a02"};

EnvLookup lookup(const Env& vars) { return fake_env(vars); }

// Where rank r runs: block (ranks 0-7 on the first node; srun's default, mpirun --map-by ppr:8:node or slot) or
// cyclic (srun --distribution=cyclic, mpirun --map-by node: rank r on node r % 2).
struct Slot {
  int node;
  int local;
};
Slot slot_of(int r, bool cyclic) { return cyclic ? Slot{r % kNodes, r / kNodes} : Slot{r / kGpusPerNode, r % kGpusPerNode}; }

// What `sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8` gives the batch shell, and so every process under it.
Env allocation_env() {
  return {{"SLURM_JOB_ID", "4242"},         {"SLURM_JOB_NUM_NODES", "2"},          {"SLURM_NNODES", "2"},
          {"SLURM_NTASKS", "16"},           {"SLURM_NPROCS", "16"},                {"SLURM_NTASKS_PER_NODE", "8"},
          {"SLURM_TASKS_PER_NODE", "8(x2)"}, {"SLURM_JOB_NODELIST", "gpu-a[01-02]"}, {"SLURM_GPUS_PER_NODE", "8"}};
}

// Rank r under `srun --mpi=pmix` in that allocation: the step's variables as srun's documentation lists them, PMIx's rank
// (written by hand, not captured from a real two-node job).
Env srun_env(int r, bool cyclic, bool pmix = true) {
  const Slot s = slot_of(r, cyclic);
  Env e = allocation_env();
  e["SLURM_STEP_NUM_TASKS"] = "16";
  e["SLURM_STEP_NUM_NODES"] = "2";
  e["SLURM_STEP_TASKS_PER_NODE"] = "8(x2)";
  e["SLURM_PROCID"] = std::to_string(r);
  e["SLURM_LOCALID"] = std::to_string(s.local);
  e["SLURM_NODEID"] = std::to_string(s.node);
  e["SLURMD_NODENAME"] = kHosts[s.node];
  e["CUDA_VISIBLE_DEVICES"] = "0,1,2,3,4,5,6,7";  // --gpus-per-node=8: the node's allocated GPUs, for every task
  if (pmix) {
    e["PMIX_RANK"] = std::to_string(r);
    e["PMIX_NAMESPACE"] = "slurm.pmix.4242.0";
  }
  return e;
}

// Rank r under Open MPI 4.1's mpirun (the variables it gives every rank, as printed by a job over the fake nodes of
// tests/mpi/test_two_nodes.py). Inside the allocation the ranks also inherit Slurm's variables of the step their
// daemon runs in: the batch step on the first node, the srun step of the orted mpirun starts on the second.
Env mpirun_env(int r, bool cyclic, bool in_slurm) {
  const Slot s = slot_of(r, cyclic);
  Env e;
  if (in_slurm) {
    e = allocation_env();
    e["SLURM_PROCID"] = "0";
    e["SLURM_LOCALID"] = "0";
    e["SLURM_NODEID"] = std::to_string(s.node);
    e["SLURMD_NODENAME"] = kHosts[s.node];
    e["CUDA_VISIBLE_DEVICES"] = "0,1,2,3,4,5,6,7";
    if (s.node == 1) {
      e["SLURM_STEP_NUM_TASKS"] = "1";
      e["SLURM_STEP_NUM_NODES"] = "1";
    }
  }
  e["OMPI_COMM_WORLD_SIZE"] = "16";
  e["OMPI_COMM_WORLD_RANK"] = std::to_string(r);
  e["OMPI_COMM_WORLD_LOCAL_RANK"] = std::to_string(s.local);
  e["OMPI_COMM_WORLD_LOCAL_SIZE"] = "8";
  e["OMPI_COMM_WORLD_NODE_RANK"] = std::to_string(s.local);
  e["OMPI_UNIVERSE_SIZE"] = "16";
  e["PMIX_RANK"] = std::to_string(r);
  e["PMIX_NAMESPACE"] = "1410990081";
  return e;
}

// Rank r's view of its node, as the NCCL communicator and the CUDA engine build it: the host, the local rank (here
// the launcher's, which MPI's shared-memory split agrees with), what CUDA counts, CUDA_VISIBLE_DEVICES.
RankDeviceView view_from(const Env& env, const std::string& host, int device_count) {
  const EnvLookup e = lookup(env);
  const std::optional<int> local = local_rank_from_env(e);
  EXPECT_TRUE(local.has_value());
  return RankDeviceView{host, NodeProcess{local.value_or(-1), device_count, cuda_visible_devices(e)}};
}

// ---- launcher detection and local ranks, every rank ---------------------------------------------------------

TEST(MultiNodeLaunch, MpirunSixteenRanksOnTwoNodes) {
  for (bool in_slurm : {false, true}) {
    for (bool cyclic : {false, true}) {
      for (int r = 0; r < kRanks; ++r) {
        SCOPED_TRACE(testing::Message() << "rank " << r << (cyclic ? " cyclic" : " block") << (in_slurm ? " in Slurm" : ""));
        const EnvLookup env = lookup(mpirun_env(r, cyclic, in_slurm));
        EXPECT_TRUE(started_by_mpi_launcher(env));
        EXPECT_EQ(launch_problem(env, kRanks), "");
        // Open MPI's local rank, not the global rank (PMIX_RANK), nor the outer Slurm step's SLURM_LOCALID (0 everywhere).
        EXPECT_EQ(local_rank_from_env(env), slot_of(r, cyclic).local);
        // A world that is not mpirun's: e.g. ranks that failed to wire up across the nodes and each formed their own.
        EXPECT_EQ(launch_problem(env, 8), "mpirun started 16 ranks but MPI sees a world of 8");
        EXPECT_EQ(launch_problem(env, 1), "mpirun started 16 ranks but MPI sees a world of 1");
      }
    }
  }
}

TEST(MultiNodeLaunch, SrunPmixSixteenRanksOnTwoNodes) {
  for (bool cyclic : {false, true}) {
    for (int r = 0; r < kRanks; ++r) {
      SCOPED_TRACE(testing::Message() << "rank " << r << (cyclic ? " cyclic" : " block"));
      const EnvLookup env = lookup(srun_env(r, cyclic));
      EXPECT_TRUE(started_by_mpi_launcher(env));
      EXPECT_EQ(launch_problem(env, kRanks), "");
      // SLURM_LOCALID: the task's index on its node, not SLURM_PROCID or PMIX_RANK (global) nor SLURM_NODEID.
      EXPECT_EQ(local_rank_from_env(env), slot_of(r, cyclic).local);
    }
  }
}

TEST(MultiNodeLaunch, SrunWithoutAnMpiPluginIsRefusedOnEveryRank) {
  // MpiDefault=none and no --mpi: 16 tasks, no PMI variables, so MPI is never started and each is a world of 1.
  for (int r = 0; r < kRanks; ++r) {
    SCOPED_TRACE(testing::Message() << "rank " << r);
    const EnvLookup env = lookup(srun_env(r, false, /*pmix=*/false));
    EXPECT_FALSE(started_by_mpi_launcher(env));
    const std::string problem = launch_problem(env, 1);
    EXPECT_CONTAINS(problem, "srun started 16 tasks, but without MPI wire-up");
    EXPECT_CONTAINS(problem, "srun --mpi=pmix");
    // Its local rank is still known (SLURM_LOCALID), which is what lets the refusal happen before any GPU is touched.
    EXPECT_EQ(local_rank_from_env(env), r % kGpusPerNode);
  }
  // The batch shell itself (one task, SLURM_PROCID 0, no step of several tasks) is not refused.
  Env batch = allocation_env();
  batch["SLURM_PROCID"] = "0";
  EXPECT_EQ(launch_problem(lookup(batch), 1), "");
}

// ---- every rank's GPU over both nodes -----------------------------------------------------------------------

std::vector<RankDeviceView> job_views(bool srun, bool cyclic, bool in_slurm = false) {
  std::vector<RankDeviceView> views;
  for (int r = 0; r < kRanks; ++r) {
    const Env env = srun ? srun_env(r, cyclic) : mpirun_env(r, cyclic, in_slurm);
    views.push_back(view_from(env, kHosts[slot_of(r, cyclic).node], kGpusPerNode));
  }
  return views;
}

TEST(MultiNodePlacement, EightGpusPerNodeEveryRankTakesItsLocalRanksGpu) {
  for (bool srun : {true, false}) {
    for (bool cyclic : {false, true}) {
      SCOPED_TRACE(testing::Message() << (srun ? "srun" : "mpirun") << (cyclic ? " cyclic" : " block"));
      const std::vector<DeviceAssignment> placed = place_ranks_on_devices(job_views(srun, cyclic), /*exclusive=*/true);
      ASSERT_EQ(placed.size(), static_cast<size_t>(kRanks));
      for (int r = 0; r < kRanks; ++r) {
        const int local = slot_of(r, cyclic).local;
        EXPECT_EQ(placed[r].ordinal, local) << "rank " << r;
        EXPECT_EQ(placed[r].physical, std::to_string(local)) << "rank " << r;
        // GPU `local` of the other node is another GPU: nodes are told apart by host name.
        EXPECT_EQ(placed[r].sharing, 1) << "rank " << r;
      }
    }
  }
  // mpirun inside the allocation: the same, despite SLURM_LOCALID 0 on every rank.
  const std::vector<DeviceAssignment> placed = place_ranks_on_devices(job_views(false, false, true), true);
  for (int r = 0; r < kRanks; ++r) EXPECT_EQ(placed[r].ordinal, r % kGpusPerNode) << "rank " << r;
}

TEST(MultiNodePlacement, OneGpuPerTaskEveryRankTakesOrdinalZero) {
  // srun --gpus-per-task=1 (or --gpu-bind=single:1): each task's CUDA_VISIBLE_DEVICES names its own GPU and CUDA
  // counts 1; ordinal 0 is that GPU.
  std::vector<RankDeviceView> views;
  for (int r = 0; r < kRanks; ++r) {
    Env env = srun_env(r, false);
    env["CUDA_VISIBLE_DEVICES"] = std::to_string(r % kGpusPerNode);
    views.push_back(view_from(env, kHosts[r / kGpusPerNode], 1));
  }
  const std::vector<DeviceAssignment> placed = place_ranks_on_devices(views, /*exclusive=*/true);
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(placed[r].ordinal, 0) << "rank " << r;
    EXPECT_EQ(placed[r].physical, std::to_string(r % kGpusPerNode)) << "rank " << r;
    EXPECT_EQ(placed[r].sharing, 1) << "rank " << r;
  }
  // A site whose per-task device cgroups renumber every task's GPU as 0 (CUDA_VISIBLE_DEVICES=0 on all 8 tasks of a
  // node) cannot be told apart from 8 tasks on one GPU: NCCL is refused, naming the first node.
  for (RankDeviceView& v : views) v.process.visible = std::vector<std::string>{"0"};
  const std::string e = user_error_text([&] { place_ranks_on_devices(views, true); });
  EXPECT_CONTAINS(e, "node gpu-a01 runs 8 ranks but they see only 1 GPU (0)");
  // With UUIDs (as some sites set them) the 16 GPUs stay distinct.
  for (int r = 0; r < kRanks; ++r) views[r].process.visible = std::vector<std::string>{"GPU-" + std::to_string(1000 + r)};
  const std::vector<DeviceAssignment> by_uuid = place_ranks_on_devices(views, true);
  EXPECT_EQ(by_uuid[9].physical, "GPU-1009");
  EXPECT_EQ(by_uuid[9].ordinal, 0);
}

TEST(MultiNodePlacement, NineRanksOnANodeOfEightGpusNamesTheNodeAndTheCounts) {
  // 17 ranks: 8 on gpu-a01, 9 on gpu-a02 (e.g. mpirun -np 17 with a hostfile of slots=9).
  std::vector<RankDeviceView> views;
  for (int r = 0; r < 17; ++r) {
    const int node = r < 8 ? 0 : 1, local = r < 8 ? r : r - 8;
    Env env = mpirun_env(r, false, false);
    env["OMPI_COMM_WORLD_SIZE"] = "17";
    env["OMPI_COMM_WORLD_LOCAL_RANK"] = std::to_string(local);
    views.push_back(view_from(env, kHosts[node], kGpusPerNode));
  }
  const std::string e = user_error_text([&] { place_ranks_on_devices(views, /*exclusive=*/true); });
  EXPECT_CONTAINS(e, "node gpu-a02 runs 9 ranks but they see only 8 GPUs (0, 1, 2, 3, 4, 5, 6, 7)");
  EXPECT_CONTAINS(e, "start at most 8 ranks on this node (mpirun --map-by ppr:8:node, srun --ntasks-per-node=8)");
  EXPECT_LACKS(e, "gpu-a01");
  // dist.backend: mpi may share: local rank 8 of gpu-a02 takes its GPU 0 together with local rank 0.
  const std::vector<DeviceAssignment> shared = place_ranks_on_devices(views, /*exclusive=*/false);
  EXPECT_EQ(shared[16].ordinal, 0);
  EXPECT_EQ(shared[16].sharing, 2);
  EXPECT_EQ(shared[8].sharing, 2);
  EXPECT_EQ(shared[0].sharing, 1);  // gpu-a01's GPU 0 is not gpu-a02's
}

TEST(MultiNodePlacement, NodesReportingTheSameHostNameAreOneNode) {
  // Ranks are grouped into nodes by host name alone: two machines that both call themselves "node" (containers
  // with a fixed hostname) look like one node of 16 ranks and 8 GPUs, and NCCL is refused.
  std::vector<RankDeviceView> views = job_views(/*srun=*/true, /*cyclic=*/false);
  for (RankDeviceView& v : views) v.host = "node";
  EXPECT_CONTAINS(user_error_text([&] { place_ranks_on_devices(views, true); }),
                  "node node runs 16 ranks but they see only 8 GPUs");
}

// ---- the whole job through gather_and_place, from each rank's side ------------------------------------------

// Rank `rank` of a job whose other ranks hold `views` and behave exactly as this one does (each reaches the same
// verdict from the same gathered views): all-gathers return every rank's slot, broadcasts keep what every rank holds.
class SymmetricJob final : public Communicator {
 public:
  SymmetricJob(std::vector<RankDeviceView> views, int rank) : views_(std::move(views)), rank_(rank) {}
  std::string backend() const override { return "symmetric-test"; }
  int rank() const override { return rank_; }
  int world_size() const override { return static_cast<int>(views_.size()); }
  int local_rank() const override { return views_[static_cast<size_t>(rank_)].process.local_rank; }
  int local_size() const override { return kGpusPerNode; }
  std::string host() const override { return views_[static_cast<size_t>(rank_)].host; }
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override { std::_Exit(exit_code); }
  void all_reduce_bytes(const void*, void*, int64_t, ElemType, ReduceOp) override {
    ADD_FAILURE() << "placement does not all-reduce";
  }
  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void*, void*, int64_t, ElemType, ReduceOp) override {
    ADD_FAILURE() << "placement does not all-reduce";
    return nullptr;
  }
  void all_gather_bytes(const void* send, void* recv, int64_t count, ElemType t) override {
    const size_t bytes = static_cast<size_t>(count) * elem_size(t);
    auto* out = static_cast<uint8_t*>(recv);
    for (int p = 0; p < world_size(); ++p) {
      uint8_t* slot = out + static_cast<size_t>(p) * bytes;
      if (p == rank_ || t != ElemType::u8) {  // this rank's own data; verdict codes are the same on every rank
        std::memcpy(slot, send, bytes);
        continue;
      }
      const std::string text = encode_device_view(views_[static_cast<size_t>(p)]);
      ASSERT_LT(text.size(), bytes);
      std::memset(slot, 0, bytes);
      std::memcpy(slot, text.data(), text.size());
    }
    ++gathers;
  }
  void broadcast_bytes(void*, int64_t, ElemType, int root) override { roots.push_back(root); }

  int gathers = 0;
  std::vector<int> roots;

 private:
  std::vector<RankDeviceView> views_;
  int rank_;
};

TEST(MultiNodePlacement, GatherAndPlaceGivesEveryRankTheSameAnswer) {
  const std::vector<RankDeviceView> views = job_views(/*srun=*/true, /*cyclic=*/true);
  for (int r = 0; r < kRanks; ++r) {
    SCOPED_TRACE(testing::Message() << "rank " << r);
    SymmetricJob job(views, r);
    const std::vector<DeviceAssignment> placed = gather_and_place(job, views[static_cast<size_t>(r)], true);
    ASSERT_EQ(placed.size(), static_cast<size_t>(kRanks));
    // What the NCCL communicator then does with it: cudaSetDevice(placed[rank].ordinal), and
    // ncclCommInitRankConfig(world_size() = 16, rank() = r) with the id rank 0 made and broadcast.
    EXPECT_EQ(placed[static_cast<size_t>(r)].ordinal, r / kNodes);  // cyclic: rank r is local rank r / 2
    for (int q = 0; q < kRanks; ++q) EXPECT_EQ(placed[static_cast<size_t>(q)].ordinal, q / kNodes);
    EXPECT_EQ(job.gathers, 2);         // the views, then the verdict
    EXPECT_TRUE(job.roots.empty());    // nothing to report
  }
}

TEST(MultiNodePlacement, GatherAndPlaceAgreesOnTheErrorOnEveryRank) {
  // Each node's 8 ranks see only GPUs 0-3 (CUDA_VISIBLE_DEVICES=0,1,2,3): every rank stops with the same message,
  // which rank 0 broadcasts (and alone prints).
  std::vector<RankDeviceView> views = job_views(/*srun=*/true, /*cyclic=*/false);
  for (RankDeviceView& v : views) {
    v.process.visible = std::vector<std::string>{"0", "1", "2", "3"};
  }
  for (int r = 0; r < kRanks; ++r) {
    SCOPED_TRACE(testing::Message() << "rank " << r);
    SymmetricJob job(views, r);
    try {
      gather_and_place(job, views[static_cast<size_t>(r)], true);
      ADD_FAILURE() << "no error";
    } catch (const AgreedUserError& e) {
      EXPECT_CONTAINS(e.what(), "node gpu-a01 runs 8 ranks but they see only 4 GPUs (0, 1, 2, 3)");
    }
    EXPECT_EQ(job.roots, (std::vector<int>{0, 0}));  // the message's length, then its text, from rank 0
  }
}

}  // namespace
}  // namespace gt
