// Distributed pieces that need no second process: the local communicator, launcher and device mapping logic, agreement, buckets, sync BN with one rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/fake_env.h"
#include "common/test_util.h"
#include "core/bf16.h"
#include "core/rng.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/device_map.h"
#include "parallel/fault_injection.h"
#include "parallel/gradient_bucketer.h"
#include "parallel/launch.h"
#include "parallel/sync_batchnorm.h"
#include "nn/dcgan.h"
#include "nn/layers.h"
#include "train/cpu_step.h"


namespace gt {
namespace {

Tensor random_tensor(const Shape& shape, uint64_t seed) {
  Tensor t(shape);
  fill_normal(t.f32(), t.numel(), 0.f, 1.f, seed, RngStream::test, 0);
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// ---- local communicator ------------------------------------------------------------------------

TEST(LocalCommunicator, IsAWorldOfOneWhoseCollectivesCopy) {
  auto comm = make_local_communicator();
  EXPECT_EQ(comm->backend(), "local");
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->world_size(), 1);
  EXPECT_EQ(comm->local_size(), 1);
  std::vector<float> a = {1.5f, -2.f, 3.f}, b(3, 0.f);
  comm->all_reduce(a.data(), b.data(), 3, ReduceOp::sum);
  EXPECT_EQ(b, a);
  comm->all_reduce(a.data(), 3, ReduceOp::avg);
  EXPECT_EQ(a, (std::vector<float>{1.5f, -2.f, 3.f}));
  auto pending = comm->start_all_reduce(a.data(), 3, ReduceOp::sum);
  EXPECT_TRUE(pending->test());
  pending->wait();
  std::vector<int64_t> gathered(2, -1);
  const int64_t mine[2] = {7, 9};
  comm->all_gather(mine, gathered.data(), 2);
  EXPECT_EQ(gathered, (std::vector<int64_t>{7, 9}));
  comm->broadcast(a.data(), 3, 0);
  comm->barrier();
  // Averaging integers has no meaning: an internal error, not a silent truncation.
  int64_t n = 3;
  EXPECT_THROW(comm->all_reduce(&n, 1, ReduceOp::avg), RuntimeError);
  EXPECT_THROW(comm->broadcast(a.data(), 3, 1), RuntimeError);
}

TEST(LocalCommunicator, ElementTypes) {
  EXPECT_EQ(elem_size(ElemType::f32), 4u);
  EXPECT_EQ(elem_size(ElemType::f64), 8u);
  EXPECT_EQ(elem_size(ElemType::i64), 8u);
  EXPECT_EQ(elem_size(ElemType::u8), 1u);
  EXPECT_EQ(std::string(elem_type_name(elem_type_of<float>())), "float");
  EXPECT_EQ(std::string(reduce_op_name(ReduceOp::avg)), "avg");
}

TEST(OpenCommunicator, BackendsWithoutALauncher) {
  EXPECT_EQ(open_communicator(DistBackend::automatic, 10)->backend(), "local");
  EXPECT_EQ(open_communicator(DistBackend::local, 10)->world_size(), 1);
  // nccl's device collectives sit on the host communicator auto opens: the trainer and the CLI agree.
  EXPECT_EQ(open_communicator(DistBackend::nccl, 10)->backend(), "local");
  const auto local = open_communicator(DistBackend::local, 10);
  EXPECT_EQ(replacement_communicator(*local, DistBackend::automatic, 10), nullptr);
  EXPECT_EQ(replacement_communicator(*local, DistBackend::nccl, 10), nullptr);
  EXPECT_EQ(replacement_communicator(*local, DistBackend::local, 10), nullptr);
}

TEST(DistBackend, DecidedOnceForTheDevice) {
  // nccl moves device buffers: a CPU run refuses it, naming both keys.
  const std::string e = user_error_text([] { check_backend_for_device(DistBackend::nccl, false, DeviceChoice::cpu); });
  EXPECT_CONTAINS(e, "dist.backend is nccl");
  EXPECT_CONTAINS(e, "run.device is cpu");
  EXPECT_CONTAINS(user_error_text([] { check_backend_for_device(DistBackend::nccl, false, DeviceChoice::automatic); }),
                  "some rank has no GPU");
  EXPECT_EQ(user_error_text([] { check_backend_for_device(DistBackend::nccl, true, DeviceChoice::cuda); },
                            "(no UserError)"),
            "(no UserError)");
  EXPECT_EQ(user_error_text([] { check_backend_for_device(DistBackend::mpi, false, DeviceChoice::cpu); },
                            "(no UserError)"),
            "(no UserError)");
  // Device collectives: NCCL for nccl (or an error saying what is missing), and for auto with one rank
  // per GPU where NCCL is usable; staged through host memory otherwise.
  EXPECT_EQ(choose_device_collectives(DistBackend::nccl, 1, ""), DeviceCollectives::nccl);
  EXPECT_CONTAINS(user_error_text([] { choose_device_collectives(DistBackend::nccl, 1, "no NCCL here"); }),
                  "dist.backend is nccl, but no NCCL here");
  EXPECT_EQ(choose_device_collectives(DistBackend::automatic, 1, ""), DeviceCollectives::nccl);
  EXPECT_EQ(choose_device_collectives(DistBackend::automatic, 2, ""), DeviceCollectives::staged);
  EXPECT_EQ(choose_device_collectives(DistBackend::automatic, 1, "no NCCL here"), DeviceCollectives::staged);
  EXPECT_EQ(choose_device_collectives(DistBackend::mpi, 1, ""), DeviceCollectives::staged);
  EXPECT_EQ(choose_device_collectives(DistBackend::local, 1, ""), DeviceCollectives::staged);
}

// ---- launcher and device mapping ---------------------------------------------------------------

TEST(Launch, LauncherVariables) {
  EXPECT_FALSE(started_by_mpi_launcher(fake_env({})));
  EXPECT_FALSE(started_by_mpi_launcher(fake_env({{"SLURM_PROCID", "0"}})));
  EXPECT_TRUE(started_by_mpi_launcher(fake_env({{"OMPI_COMM_WORLD_SIZE", "2"}})));
  EXPECT_TRUE(started_by_mpi_launcher(fake_env({{"PMIX_RANK", "0"}})));
  EXPECT_TRUE(started_by_mpi_launcher(fake_env({{"PMI_RANK", "3"}})));
}

TEST(Launch, ProblemsWithHowTheJobWasStarted) {
  EXPECT_EQ(launch_problem(fake_env({}), 1), "");
  EXPECT_EQ(launch_problem(fake_env({{"OMPI_COMM_WORLD_SIZE", "4"}}), 4), "");
  EXPECT_CONTAINS(launch_problem(fake_env({{"OMPI_COMM_WORLD_SIZE", "4"}}), 1), "mpirun started 4 ranks");
  // srun without an MPI plugin: every task would be a world of one and train alone.
  const auto bare_srun = fake_env({{"SLURM_PROCID", "1"}, {"SLURM_STEP_NUM_TASKS", "4"}});
  EXPECT_CONTAINS(launch_problem(bare_srun, 1), "srun --mpi=pmix");
  EXPECT_EQ(launch_problem(fake_env({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "1"}}), 1), "");
  EXPECT_EQ(launch_problem(fake_env({{"SLURM_PROCID", "1"}, {"SLURM_STEP_NUM_TASKS", "4"}, {"PMIX_RANK", "1"}}), 4),
            "");
}

TEST(Launch, RankPrefixOnlyForSeveralRanks) {
  EXPECT_EQ(rank_prefix(0, 1, "h"), "");
  EXPECT_EQ(rank_prefix(3, 4, "node7"), "[rank 3@node7] ");
}

TEST(DeviceMap, LocalRankFromLauncherVariables) {
  EXPECT_FALSE(local_rank_from_env(fake_env({})).has_value());
  EXPECT_EQ(local_rank_from_env(fake_env({{"SLURM_LOCALID", "2"}})), 2);
  EXPECT_EQ(local_rank_from_env(fake_env({{"MPI_LOCALRANKID", "5"}})), 5);
  // Open MPI's own variable wins over an outer srun's.
  EXPECT_EQ(local_rank_from_env(fake_env({{"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"SLURM_LOCALID", "0"}})), 1);
  // Garbage is not a rank.
  EXPECT_EQ(local_rank_from_env(fake_env({{"OMPI_COMM_WORLD_LOCAL_RANK", "x"}, {"SLURM_LOCALID", "3"}})), 3);
  EXPECT_FALSE(local_rank_from_env(fake_env({{"SLURM_LOCALID", "-1"}})).has_value());
}

TEST(DeviceMap, CudaVisibleDevicesAsCudaReadsThem) {
  EXPECT_FALSE(cuda_visible_devices(fake_env({})).has_value());
  EXPECT_EQ(*cuda_visible_devices(fake_env({{"CUDA_VISIBLE_DEVICES", ""}})), std::vector<std::string>{});
  EXPECT_EQ(*cuda_visible_devices(fake_env({{"CUDA_VISIBLE_DEVICES", "0,2"}})), (std::vector<std::string>{"0", "2"}));
  EXPECT_EQ(*cuda_visible_devices(fake_env({{"CUDA_VISIBLE_DEVICES", " 3 , 1"}})),
            (std::vector<std::string>{"3", "1"}));
  EXPECT_EQ(*cuda_visible_devices(fake_env({{"CUDA_VISIBLE_DEVICES", "GPU-8f3a,1"}})),
            (std::vector<std::string>{"GPU-8f3a", "1"}));
  // CUDA stops at the first invalid entry.
  EXPECT_EQ(*cuda_visible_devices(fake_env({{"CUDA_VISIBLE_DEVICES", "1,-1,2"}})), (std::vector<std::string>{"1"}));
  EXPECT_EQ(*cuda_visible_devices(fake_env({{"CUDA_VISIBLE_DEVICES", "-1"}})), std::vector<std::string>{});
}

TEST(DeviceMap, RanksSpreadOverTheDevicesTheySee) {
  std::vector<NodeProcess> node;
  for (int r = 0; r < 4; ++r) node.push_back({r, 4, std::nullopt});
  auto a = assign_devices(node, true);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(a[r].ordinal, r);
    EXPECT_EQ(a[r].physical, std::to_string(r));
    EXPECT_EQ(a[r].sharing, 1);
  }
  // CUDA_VISIBLE_DEVICES=2,3 for everyone: ordinals 0 and 1 are physical GPUs 2 and 3.
  std::vector<NodeProcess> two = {{0, 8, std::vector<std::string>{"2", "3"}}, {1, 8, std::vector<std::string>{"2", "3"}}};
  a = assign_devices(two, true);
  EXPECT_EQ(a[0].ordinal, 0);
  EXPECT_EQ(a[1].ordinal, 1);
  EXPECT_EQ(a[1].physical, "3");
}

TEST(DeviceMap, OneGpuPerRankFromTheLauncher) {
  // srun --gpus-per-task=1: each rank sees only its GPU, as device 0.
  std::vector<NodeProcess> node;
  for (int r = 0; r < 4; ++r) node.push_back({r, 1, std::vector<std::string>{std::to_string(r)}});
  auto a = assign_devices(node, true);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(a[r].ordinal, 0);
    EXPECT_EQ(a[r].physical, std::to_string(r));
    EXPECT_EQ(a[r].sharing, 1);
  }
}

TEST(DeviceMap, MoreRanksThanGpusIsAnErrorForNcclOnly) {
  std::vector<NodeProcess> node;
  for (int r = 0; r < 4; ++r) node.push_back({r, 2, std::nullopt});
  auto shared = assign_devices(node, false);
  EXPECT_EQ(shared[2].ordinal, 0);
  EXPECT_EQ(shared[2].sharing, 2);
  const std::string e = user_error_text([&] { assign_devices(node, true); });
  EXPECT_CONTAINS(e, "4 ranks on this node");
  EXPECT_CONTAINS(e, "GPU 0");
  EXPECT_CONTAINS(e, "local ranks 0, 2");
  EXPECT_CONTAINS(user_error_text([] { assign_devices({{0, 0, std::nullopt}}, false); }), "sees no GPU");
  EXPECT_CONTAINS(user_error_text([] { assign_devices({{0, 4, std::vector<std::string>{}}}, false); }),
                  "CUDA_VISIBLE_DEVICES");
}

// ---- agreement ---------------------------------------------------------------------------------

TEST(Agreement, Fnv1aKnownValues) {
  // Published FNV-1a 64-bit test vectors.
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(fnv1a64("bar", fnv1a64("foo")), fnv1a64("foobar"));  // pieces hash as one
}

TEST(Agreement, ErrorsBecomeAgreedWithTheirExitClass) {
  auto comm = make_local_communicator();
  EXPECT_NO_THROW(run_agreed(*comm, [] {}));
  try {
    run_agreed(*comm, [] { user_error("key train.batch_size is bad"); });
    FAIL() << "no exception";
  } catch (const AgreedUserError& e) {
    EXPECT_EQ(std::string(e.what()), "key train.batch_size is bad");  // rank 0: no prefix
    EXPECT_TRUE(is_agreed(e));
  }
  EXPECT_THROW(run_agreed(*comm, [] { runtime_error("disk gone"); }), AgreedRuntimeError);
  EXPECT_THROW(run_agreed(*comm, [] { throw std::bad_alloc(); }), AgreedRuntimeError);
  // An AgreedRuntimeError is still a RuntimeError (exit code 1) and a plain one is not agreed.
  EXPECT_THROW(run_agreed(*comm, [] { runtime_error("x"); }), RuntimeError);
  EXPECT_FALSE(is_agreed(RuntimeError("x")));
}

TEST(Agreement, IdentityMismatchNamesTheRanks) {
  std::vector<RankIdentity> ranks = {{1, 10, "a"}, {1, 10, "b"}, {1, 10, "c"}};
  EXPECT_EQ(describe_identity_mismatch(ranks), "");
  ranks[2].config_hash = 2;
  std::string m = describe_identity_mismatch(ranks);
  EXPECT_CONTAINS(m, "rank 2 (c) resolved a different config than rank 0 (a)");
  EXPECT_EQ(m.find("build"), std::string::npos);
  ranks[1].build_hash = 11;
  m = describe_identity_mismatch(ranks);
  EXPECT_CONTAINS(m, "rank 1 (b) runs a different gantrain build");
  EXPECT_CONTAINS(m, "rank 2 (c) resolved a different config");
  auto comm = make_local_communicator();
  EXPECT_NO_THROW(check_same_config_and_build(*comm, "run:\n  seed: 1\n"));
  EXPECT_NE(build_identity().find("gantrain"), std::string::npos);
}

TEST(Agreement, FirstConfigDifferenceNamesTheKey) {
  const std::string a = "run:\n  seed: 1\n\noptim:\n  g:\n    lr: 0.0002\n  d:\n    lr: 0.0002\n";
  const std::string b = "run:\n  seed: 1\n\noptim:\n  g:\n    lr: 0.0002\n  d:\n    lr: 0.001\n";
  EXPECT_EQ(first_config_difference(a, a), "");
  EXPECT_EQ(first_config_difference(a, b), "optim.d.lr: 0.0002 vs 0.001");
  EXPECT_EQ(first_config_difference("run:\n  seed: 1\n", "run:\n  seed: 2\n"), "run.seed: 1 vs 2");
}

TEST(Agreement, PreflightWithOneRank) {
  auto comm = make_local_communicator();
  const auto lines = preflight(*comm, "host-a (pid 1)");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "host-a (pid 1)");
}

TEST(FaultInjection, ParsesTheTestVariable) {
  EXPECT_FALSE(fault_plan_from_env(fake_env({})).has_value());
  auto plan = fault_plan_from_env(fake_env({{"GANTRAIN_TEST_FAULT", "1:3:throw"}}));
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->rank, 1);
  EXPECT_EQ(plan->step, 3);
  EXPECT_EQ(plan->kind, "throw");
  EXPECT_CONTAINS(user_error_text([] { fault_plan_from_env(fake_env({{"GANTRAIN_TEST_FAULT", "1:x"}})); }),
                  "RANK:STEP:KIND");
  EXPECT_CONTAINS(user_error_text([] { fault_plan_from_env(fake_env({{"GANTRAIN_TEST_FAULT", "0:1:melt"}})); }),
                  "KIND must be");
  EXPECT_NO_THROW(inject_fault_if_due(plan, 0, 3));  // another rank
  EXPECT_NO_THROW(inject_fault_if_due(plan, 1, 2));  // another step
  EXPECT_THROW(inject_fault_if_due(plan, 1, 3), RuntimeError);
}

// ---- backward hook and gradient buckets ----------------------------------------------------------

DcganSpec tiny_spec() { return DcganSpec{8, 4, 4, 32, 1, 0.2f}; }

// Delegates to the local communicator and counts the all-reduces (blocking, and non-blocking started).
class CountingCommunicator final : public Communicator {
 public:
  std::string backend() const override { return "counting"; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  std::string host() const override { return "test"; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override {
    inner_->abort(code);
    std::_Exit(code);
  }
  void all_reduce_bytes(const void* s, void* r, int64_t n, ElemType t, ReduceOp op) override {
    ++all_reduces;
    inner_->all_reduce_bytes(s, r, n, t, op);
  }
  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void* s, void* r, int64_t n, ElemType t,
                                                            ReduceOp op) override {
    ++started;
    return inner_->start_all_reduce_bytes(s, r, n, t, op);
  }
  void all_gather_bytes(const void* s, void* r, int64_t n, ElemType t) override { inner_->all_gather_bytes(s, r, n, t); }
  void broadcast_bytes(void* d, int64_t n, ElemType t, int root) override { inner_->broadcast_bytes(d, n, t, root); }

  int all_reduces = 0;
  int started = 0;

 private:
  std::unique_ptr<Communicator> inner_ = make_local_communicator();
};

TEST(Sequential, ParametersLiveInFlatBuffersAndBackwardReportsFinalRanges) {
  Sequential D = make_dcgan_discriminator(tiny_spec());
  dcgan_init(D, 0.02f, 1, 2);
  const std::vector<ParamSlot>& slots = D.param_slots();
  const auto named = D.named_params();
  ASSERT_EQ(slots.size(), named.size());
  int64_t covered = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    EXPECT_EQ(slots[i].name, named[i].name);
    EXPECT_EQ(slots[i].offset % 16, 0) << "64-byte aligned, as a tensor of its own";
    EXPECT_EQ(named[i].param->value.raw(), static_cast<void*>(D.flat_params() + slots[i].offset)) << slots[i].name;
    EXPECT_EQ(named[i].param->grad.raw(), static_cast<void*>(D.flat_grads() + slots[i].offset)) << slots[i].name;
    covered += slots[i].numel;
  }
  EXPECT_EQ(covered, D.param_count());
  EXPECT_GE(D.flat_size(), D.param_count());
  // Backward reports, after each layer, the lowest offset whose gradient is final: never rising, each
  // slot final once its own layer is done, everything final at the end.
  std::vector<int64_t> reported;
  Tensor logits = D.forward(random_tensor({2, 1, 32, 32}, 5), Mode::train);
  const Tensor dx = D.backward(Tensor::full(logits.shape(), 1.f),
                               {.input_grad = true, .on_final = [&](int64_t lowest) { reported.push_back(lowest); }});
  EXPECT_EQ(dx.shape(), (Shape{2, 1, 32, 32}));
  ASSERT_EQ(reported.size(), D.size());
  EXPECT_TRUE(std::is_sorted(reported.rbegin(), reported.rend()));
  EXPECT_EQ(reported.back(), 0);
  EXPECT_EQ(reported.front(), slots.back().offset);  // D ends with its last conv: its weight is done first
  // Without input_grad the backward returns nothing.
  logits = D.forward(random_tensor({2, 1, 32, 32}, 6), Mode::train);
  EXPECT_FALSE(D.backward(Tensor::full(logits.shape(), 1.f), {}).defined());
}

// A communicator that pretends to be one of two ranks whose non-blocking all-reduces add 1 to every
// element they cover (and complete at once), so a test sees which elements each bucket moved.
// Rank 0 of a pretended world of two on one host: the tests below give it the collectives they need; any
// other collective is a test failure.
class FakeTwoRanks : public Communicator {
 public:
  explicit FakeTwoRanks(std::string backend) : backend_(std::move(backend)) {}
  std::string backend() const override { return backend_; }
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 2; }
  std::string host() const override { return "test"; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
  void all_reduce_bytes(const void*, void*, int64_t, ElemType, ReduceOp) override { ADD_FAILURE(); }
  void all_gather_bytes(const void*, void*, int64_t, ElemType) override { ADD_FAILURE(); }
  void broadcast_bytes(void*, int64_t, ElemType, int) override { ADD_FAILURE(); }

 private:
  std::string backend_;
};

class PlusOneWorld final : public FakeTwoRanks {
 public:
  PlusOneWorld() : FakeTwoRanks("plus-one") {}
  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void* s, void* r, int64_t n, ElemType t,
                                                            ReduceOp op) override {
    EXPECT_TRUE(s == r && t == ElemType::f32 && op == ReduceOp::sum);
    float* v = static_cast<float*>(r);
    for (int64_t i = 0; i < n; ++i) v[i] += 1.f;
    ++started;
    return make_local_communicator()->start_all_reduce_bytes(r, r, 0, t, op);  // a completed handle
  }
  int started = 0;
};

TEST(GradientBucketer, BucketsCoverTheFlatBufferFromTheTop) {
  Sequential D = make_dcgan_discriminator(tiny_spec());
  PlusOneWorld comm;
  for (int64_t elems : {int64_t{1}, int64_t{7}, int64_t{1000}, D.flat_size(), int64_t{1} << 40}) {
    GradientBucketer b(comm, D.flat_grads(), D.flat_size(), elems);
    int64_t end = D.flat_size();
    for (size_t k = 0; k < b.bucket_count(); ++k) {
      const auto [lo, hi] = b.bucket_range(k);
      EXPECT_EQ(hi, end) << "contiguous, from the top down";
      EXPECT_GT(hi, lo);
      EXPECT_LE(hi - lo, elems);
      end = lo;
    }
    EXPECT_EQ(end, 0) << "the whole buffer";
  }
}

// A pass-through layer that records, when its backward runs, how many buckets were started so far.
class Probe final : public Layer {
 public:
  explicit Probe(const int* counter) : counter_(counter) {}
  std::string kind() const override { return "Probe"; }
  Shape output_shape(const Shape& in) const override { return in; }
  Tensor forward(const Tensor& x, Mode) override { return x; }
  Tensor backward(const Tensor& dy, bool) override {
    seen = *counter_;
    return dy;
  }
  int seen = -1;

 private:
  const int* counter_;
};

// A small D behind a probe: the probe is layer 0, so its backward runs after every other layer's.
Sequential probed_discriminator(const int* counter, Probe** probe) {
  const DcganSpec s = tiny_spec();
  Sequential net("main");
  auto owned = std::make_unique<Probe>(counter);
  if (probe) *probe = owned.get();
  net.add(std::move(owned));
  net.add(make_conv2d({s.channels, s.d_width, 4, 2, 1, false}));
  net.add(make_leaky_relu(s.leaky_slope));
  net.add(make_conv2d({s.d_width, s.d_width * 2, 4, 2, 1, false}));
  net.add(make_batchnorm2d(s.d_width * 2));
  net.add(make_leaky_relu(s.leaky_slope));
  net.add(make_conv2d({s.d_width * 2, 1, 8, 1, 0, false}));
  dcgan_init(net, 0.02f, 3, 2);
  return net;
}

TEST(GradientBucketer, BucketsStartWhileBackwardRunsAndMoveEveryGradientOnce) {
  PlusOneWorld comm;
  Probe* probe = nullptr;
  Sequential net = probed_discriminator(&comm.started, &probe);
  Sequential plain = probed_discriminator(&comm.started, nullptr);
  // Buckets smaller than the first conv's weight: several per layer, and one straddling two layers.
  GradientBucketer bucketer(comm, net.flat_grads(), net.flat_size(), 100);
  ASSERT_GT(bucketer.bucket_count(), 4u);
  const Tensor x = random_tensor({3, 1, 32, 32}, 11);
  for (Sequential* n : {&net, &plain}) n->zero_grad();
  // An unarmed backward (D's pass on real images) starts nothing.
  Tensor y = net.forward(x, Mode::train);
  net.backward(Tensor::full(y.shape(), 0.5f), {.on_final = bucketer.hook()});
  EXPECT_EQ(comm.started, 0);
  bucketer.arm();
  y = net.forward(x, Mode::train);
  net.backward(Tensor::full(y.shape(), 0.25f), {.on_final = bucketer.hook()});
  // By the time the probe's backward ran (the last layer of backward), every bucket but the lowest,
  // which holds the first conv's last weights too, was under way.
  EXPECT_GE(probe->seen, static_cast<int>(bucketer.bucket_count()) - 1);
  bucketer.finish();
  EXPECT_EQ(comm.started, static_cast<int>(bucketer.bucket_count()));
  // The same two backwards without buckets: each gradient element was moved exactly once (+1).
  Tensor z = plain.forward(x, Mode::train);
  plain.backward(Tensor::full(z.shape(), 0.5f));
  z = plain.forward(x, Mode::train);
  plain.backward(Tensor::full(z.shape(), 0.25f));
  ASSERT_EQ(net.flat_size(), plain.flat_size());
  for (int64_t i = 0; i < net.flat_size(); ++i)
    ASSERT_EQ(net.flat_grads()[i], plain.flat_grads()[i] + 1.f) << "element " << i;
  // finish() without arm() is a bug in the caller.
  EXPECT_THROW(bucketer.finish(), RuntimeError);
  // With one rank nothing moves, armed or not.
  CountingCommunicator alone;
  GradientBucketer single(alone, net.flat_grads(), net.flat_size(), 100);
  single.arm();
  y = net.forward(x, Mode::train);
  net.backward(Tensor::full(y.shape(), 0.25f), {.on_final = single.hook()});
  single.finish();
  EXPECT_EQ(alone.started, 0);
}

// One of two ranks whose collectives either can be ordered before later device work (NCCL's kind) or must be
// waited for on the host (MPI's): it counts which way each one went.
class OrderingWorld final : public FakeTwoRanks {
 public:
  explicit OrderingWorld(bool device) : FakeTwoRanks(device ? "device" : "host"), device_(device) {}
  bool orders_on_device() const override { return device_; }
  void all_reduce_bytes(const void*, void*, int64_t, ElemType, ReduceOp) override { ++blocking; }
  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void*, void*, int64_t, ElemType, ReduceOp) override {
    ++started;
    return std::make_unique<Pending>(*this);
  }
  int blocking = 0, started = 0, ordered = 0, host_waited = 0;

 private:
  struct Pending final : PendingCollective {
    explicit Pending(OrderingWorld& w) : w_(w) {}
    bool test() override { return false; }
    void wait() override { ++w_.host_waited; }
    bool order_before_device_work() override {
      if (!w_.device_) return false;
      ++w_.ordered;
      return true;
    }
    OrderingWorld& w_;
  };
  bool device_;
};

TEST(GradientBucketer, DeviceCollectivesAreOrderedOnTheStreamAndHostOnesWaitedFor) {
  Sequential D = make_dcgan_discriminator(tiny_spec());
  for (bool device : {true, false}) {
    OrderingWorld comm(device);
    GradientBucketer b(comm, D.flat_grads(), D.flat_size(), 1000);
    ASSERT_GT(b.bucket_count(), 2u);
    b.arm();
    b.on_final(D.flat_size() / 2);  // the upper buckets start during backward
    EXPECT_GT(comm.started, 0);
    b.finish();
    const int n = static_cast<int>(b.bucket_count());
    EXPECT_EQ(comm.started, n);
    // NCCL's kind: no host wait at all (the engine's end-of-step wait holds the deadline); MPI's: one per bucket.
    EXPECT_EQ(comm.ordered, device ? n : 0);
    EXPECT_EQ(comm.host_waited, device ? 0 : n);
    EXPECT_EQ(static_cast<int>(b.host_waits()), device ? 0 : n);
  }
}

TEST(Bf16, RoundsToNearestEvenAsTorchAndCudaDo) {
  auto bits = [](float f) { return float_to_bf16_bits(f); };
  EXPECT_EQ(bits(1.f), 0x3f80);
  EXPECT_EQ(bits(-2.f), 0xc000);
  EXPECT_EQ(bits(1.f + 1.f / 256), 0x3f80);      // halfway between 1 and 1 + 2^-7: to the even one, 1
  EXPECT_EQ(bits(1.f + 3.f / 256), 0x3f82);      // halfway between 1 + 2^-7 and 1 + 2^-6: to the even one
  EXPECT_EQ(bits(1.f + 1.f / 256 + 1.f / 65536), 0x3f81);  // past halfway: up
  EXPECT_EQ(bits(std::numeric_limits<float>::max()), 0x7f80);  // rounds to infinity
  EXPECT_EQ(bits(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(bits(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(bits(-std::numeric_limits<float>::signaling_NaN()))));
  for (float f : {0.f, -0.f, 1.f, 3.140625f, -0x1p-100f, 65280.f}) EXPECT_EQ(bf16_bits_to_float(bits(f)), f) << f;
}

// One of two ranks whose bf16 all-reduces add an identical second rank's values (in bf16).
class Bf16TwinWorld final : public FakeTwoRanks {
 public:
  Bf16TwinWorld() : FakeTwoRanks("bf16-twin") {}
  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void* s, void* r, int64_t n, ElemType t,
                                                            ReduceOp op) override {
    EXPECT_TRUE(s == r && t == ElemType::bf16 && op == ReduceOp::sum);
    uint16_t* v = static_cast<uint16_t*>(r);
    for (int64_t i = 0; i < n; ++i) v[i] = float_to_bf16_bits(2 * bf16_bits_to_float(v[i]));
    moved += n;
    return make_local_communicator()->start_all_reduce_bytes(r, r, 0, ElemType::f32, op);  // completed
  }
  int64_t moved = 0;
};

TEST(GradientBucketer, Bf16WirePacksEachBucketAndUnpacksTheSums) {
  Sequential D = make_dcgan_discriminator(tiny_spec());
  dcgan_init(D, 0.02f, 4, 2);
  const Tensor x = random_tensor({2, 1, 32, 32}, 31);
  Tensor y = D.forward(x, Mode::train);
  D.zero_grad();
  D.backward(Tensor::full(y.shape(), 0.5f));
  const std::vector<float> g(D.flat_grads(), D.flat_grads() + D.flat_size());
  Bf16TwinWorld comm;
  CpuStepOps ops;
  GradientBucketer b(comm, D.flat_grads(), D.flat_size(), 333, ops.gradient_wire(D.flat_size(), ElemType::bf16));
  b.arm();
  b.on_final(D.flat_size() / 3);
  b.finish();
  EXPECT_EQ(comm.moved, D.flat_size()) << "every gradient once, as bfloat16";
  int64_t wrong = 0, changed = 0;
  for (int64_t i = 0; i < D.flat_size(); ++i) {
    const float want = 2 * bf16_bits_to_float(float_to_bf16_bits(g[static_cast<size_t>(i)]));
    wrong += D.flat_grads()[i] != want;
    changed += D.flat_grads()[i] != 2 * g[static_cast<size_t>(i)];
  }
  EXPECT_EQ(wrong, 0) << "the sums of the rounded gradients, widened back";
  EXPECT_GT(changed, D.flat_size() / 2) << "most float gradients are not bfloat16 values";
  // A wire without its buffer is a bug in the engine.
  GradientWire broken;
  broken.type = ElemType::bf16;
  EXPECT_THROW(GradientBucketer(comm, D.flat_grads(), D.flat_size(), 333, broken), RuntimeError);
}

TEST(SyncBatchNorm, SumsAreOrderedOnTheDeviceWhereTheCommunicatorCan) {
  double sums[6] = {1, 2, 3, 4, 5, 6};
  OrderingWorld device(true), host(false);
  sum_over_ranks(device)(sums, 6);
  sum_over_ranks(host)(sums, 6);
  // NCCL: started and ordered, the host does not wait; MPI and local: the blocking all-reduce as before.
  EXPECT_EQ(device.started, 1);
  EXPECT_EQ(device.ordered, 1);
  EXPECT_EQ(device.host_waited, 0);
  EXPECT_EQ(device.blocking, 0);
  EXPECT_EQ(host.blocking, 1);
  EXPECT_EQ(host.started, 0);
  // A lent communicator says what the one it lends can do.
  EXPECT_TRUE(borrow_communicator(device)->orders_on_device());
  EXPECT_FALSE(borrow_communicator(host)->orders_on_device());
}

// ---- synchronized batch norm with one rank --------------------------------------------------------

TEST(SyncBatchNorm, IdentityReduceGivesThePlainLayersBits) {
  for (int C : {3, 40}) {  // 40 channels x 2 x 32 x 32: large enough for the OpenMP branch
    LayerPtr plain = make_batchnorm2d(C), synced = make_batchnorm2d(C);
    for (Layer* l : {plain.get(), synced.get()}) {
      l->params()[0]->value.copy_from(random_tensor({C}, 21));
      l->params()[1]->value.copy_from(random_tensor({C}, 22));
    }
    int calls = 0;
    ASSERT_TRUE(set_batch_stats_reducer(*synced, [&](double*, int64_t) { ++calls; }));
    const Tensor x = random_tensor({2, C, 32, 32}, 23), dy = random_tensor({2, C, 32, 32}, 24);
    for (int step = 0; step < 2; ++step) {  // twice: running statistics evolve the same way
      Tensor ya = plain->forward(x, Mode::train), yb = synced->forward(x, Mode::train);
      EXPECT_TRUE(same_bits(ya, yb));
      Tensor da = plain->backward(dy), db = synced->backward(dy);
      EXPECT_TRUE(same_bits(da, db));
    }
    EXPECT_EQ(calls, 2 * 3);  // mean and variance in forward, the two sums in backward
    for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(same_bits(plain->params()[i]->grad, synced->params()[i]->grad));
    for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(same_bits(plain->buffers()[i]->value, synced->buffers()[i]->value));
    // Eval mode never reduces.
    synced->forward(x, Mode::eval);
    EXPECT_EQ(calls, 6);
  }
  LayerPtr relu = make_relu();
  EXPECT_FALSE(set_batch_stats_reducer(*relu, nullptr));
}

TEST(SyncBatchNorm, ReducedSumsNormalizeWithTheGlobalStatistics) {
  // A reducer that doubles the sums stands for a second rank holding an identical shard: the global
  // batch is then [x; x], whose statistics are x's own, so outputs must match the plain layer's
  // closely, while the parameter gradients stay this rank's share.
  const int C = 5;
  LayerPtr plain = make_batchnorm2d(C), synced = make_batchnorm2d(C);
  ASSERT_TRUE(set_batch_stats_reducer(*synced, [](double* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) v[i] *= 2;
  }));
  const Tensor x = random_tensor({3, C, 4, 4}, 31), dy = random_tensor({3, C, 4, 4}, 32);
  Tensor ya = plain->forward(x, Mode::train), yb = synced->forward(x, Mode::train);
  for (int64_t i = 0; i < ya.numel(); ++i) ASSERT_NEAR(ya.f32()[i], yb.f32()[i], 1e-5f) << i;
  // Running variance: the biased variance of [x; x] is x's own, unbiased over the global count of
  // 2 * 48 values (not this rank's 48): running = (1 - m) * 1 + m * var * count / (count - 1).
  const double m = 0.1;  // BatchNorm2d's default momentum
  for (int c = 0; c < C; ++c) {
    double sum = 0, sq = 0;
    for (int n = 0; n < 3; ++n)
      for (int i = 0; i < 16; ++i) sum += x.f32()[(n * C + c) * 16 + i];
    const double mean = sum / 48;
    for (int n = 0; n < 3; ++n)
      for (int i = 0; i < 16; ++i) sq += std::pow(x.f32()[(n * C + c) * 16 + i] - mean, 2);
    const double var = sq / 48;
    EXPECT_NEAR(plain->buffers()[1]->value.f32()[c], (1 - m) + m * var * 48 / 47, 1e-6) << c;
    EXPECT_NEAR(synced->buffers()[1]->value.f32()[c], (1 - m) + m * var * 96 / 95, 1e-6) << c;
    EXPECT_NEAR(synced->buffers()[0]->value.f32()[c], m * mean, 1e-6) << c;
  }
  Tensor da = plain->backward(dy), db = synced->backward(dy);
  // [x; x] with [dy; dy]: each half's input gradient equals the single batch's.
  for (int64_t i = 0; i < da.numel(); ++i) ASSERT_NEAR(da.f32()[i], db.f32()[i], 1e-5f) << i;
  for (size_t p = 0; p < 2; ++p)
    for (int c = 0; c < C; ++c)
      EXPECT_NEAR(plain->params()[p]->grad.f32()[c], synced->params()[p]->grad.f32()[c], 1e-5f);
}

TEST(SyncBatchNorm, SynchronizeEveryBnLayerOfANetwork) {
  Sequential G = make_dcgan_generator(tiny_spec()), plain = make_dcgan_generator(tiny_spec());
  dcgan_init(G, 0.02f, 4, 1);
  dcgan_init(plain, 0.02f, 4, 1);
  CountingCommunicator comm;
  int bn_layers = 0;
  for (size_t i = 0; i < G.size(); ++i) bn_layers += G.layer(i).kind() == "BatchNorm2d" ? 1 : 0;
  ASSERT_GT(bn_layers, 0);
  G.set_batch_stats_reducer(sum_over_ranks(comm), comm.world_size());
  // A training forward sums each layer's statistics over the ranks twice (mean, then squared
  // deviations), the backward once (both gradient sums in one call); with one rank the bits are the
  // plain network's.
  const Tensor z = random_tensor({4, 8, 1, 1}, 42);
  const Tensor y = G.forward(z, Mode::train), y_plain = plain.forward(z, Mode::train);
  EXPECT_EQ(comm.all_reduces, 2 * bn_layers);
  EXPECT_TRUE(same_bits(y, y_plain));
  const Tensor dy = random_tensor(y.shape(), 43);
  EXPECT_TRUE(same_bits(G.backward(dy), plain.backward(dy)));
  EXPECT_EQ(comm.all_reduces, 3 * bn_layers);
  // Eval mode uses the running statistics: nothing to reduce.
  G.forward(z, Mode::eval);
  EXPECT_EQ(comm.all_reduces, 3 * bn_layers);
  // Unhooked again: training forwards no longer reach the communicator.
  G.set_batch_stats_reducer(nullptr, 1);
  G.forward(z, Mode::train);
  EXPECT_EQ(comm.all_reduces, 3 * bn_layers);
}

// generate_across_ranks over a simulated world of P ranks in one process: each rank's all-gather is
// served from the parts that every rank sent in a first pass. Every rank must return all n images in
// order, whatever n is against P (fewer rows than ranks, one each, a remainder).
class SimulatedRank final : public Communicator {
 public:
  SimulatedRank(int rank, int world, std::vector<std::vector<float>>& parts, bool record)
      : rank_(rank), world_(world), parts_(parts), record_(record) {}
  std::string backend() const override { return "simulated"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_rank() const override { return rank_; }
  int local_size() const override { return world_; }
  std::string host() const override { return "test"; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
  void all_reduce_bytes(const void*, void*, int64_t, ElemType, ReduceOp) override { ADD_FAILURE(); }
  std::unique_ptr<PendingCollective> start_all_reduce_bytes(const void*, void*, int64_t, ElemType, ReduceOp) override {
    ADD_FAILURE();
    return nullptr;
  }
  void all_gather_bytes(const void* s, void* r, int64_t n, ElemType t) override {
    ASSERT_EQ(t, ElemType::f32);
    const float* mine = static_cast<const float*>(s);
    float* out = static_cast<float*>(r);
    if (record_) {
      parts_[static_cast<size_t>(rank_)].assign(mine, mine + n);
      std::fill_n(out, n * world_, std::nanf(""));
      return;
    }
    for (int q = 0; q < world_; ++q) {
      ASSERT_EQ(parts_[static_cast<size_t>(q)].size(), static_cast<size_t>(n)) << "rank " << q << "'s part";
      std::copy_n(parts_[static_cast<size_t>(q)].data(), n, out + q * n);
    }
  }
  void broadcast_bytes(void*, int64_t, ElemType, int) override { ADD_FAILURE(); }

 private:
  int rank_, world_;
  std::vector<std::vector<float>>& parts_;
  bool record_;
};

TEST(GenerateAcrossRanks, EveryRankGetsTheWholeGridInOrder) {
  // A generator that works row by row, so the expected grid is exact: image i is 2 z_i + 1.
  int calls = 0;
  auto generate_rows = [&calls](const Tensor& z) {
    ++calls;
    Tensor out({z.dim(0), z.dim(1), 1, 1});
    for (int64_t i = 0; i < z.numel(); ++i) out.f32()[i] = 2 * z.f32()[i] + 1;
    return out;
  };
  const int P = 3;
  for (int n : {1, P, 2 * P + 1}) {
    const Tensor z = random_tensor({n, 5}, 41 + n);
    std::vector<std::vector<float>> parts(P);
    for (int r = 0; r < P; ++r) {
      SimulatedRank rank(r, P, parts, /*record=*/true);
      generate_across_ranks(generate_rows, z, rank);
    }
    for (int r = 0; r < P; ++r) {
      SimulatedRank rank(r, P, parts, /*record=*/false);
      calls = 0;
      const Tensor all = generate_across_ranks(generate_rows, z, rank);
      EXPECT_EQ(calls, 1) << "each rank generates its share once";
      ASSERT_EQ(all.shape(), (Shape{n, 5, 1, 1})) << "n " << n << " rank " << r;
      for (int64_t i = 0; i < all.numel(); ++i)
        ASSERT_EQ(all.f32()[i], 2 * z.f32()[i] + 1) << "n " << n << " rank " << r << " element " << i;
    }
  }
}

}  // namespace
}  // namespace gt
