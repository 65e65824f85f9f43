// The NCCL communicator with one rank on one GPU, device buffers staged through a host communicator, and dist.backend: nccl's errors; GPU cases skip with the reason.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/fake_env.h"
#include "common/test_util.h"
#include "config/config.h"
#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/launch.h"
#include "train/trainer.h"

#ifdef GANTRAIN_HAVE_CUDA
#include <cuda_runtime.h>

#include "common/require_gpu.h"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/staged_communicator.h"
#endif
#ifdef GANTRAIN_HAVE_NCCL
#include "cuda/nccl_communicator.h"
#endif


namespace gt {
namespace {

// ---- dist.backend: nccl, with or without a GPU ---------------------------------------------------

TEST(NcclBackend, SitsOnTheHostCommunicatorOrSaysWhatIsMissing) {
  // dist.backend nccl: the trainer and the CLI open the host communicator auto would (local here, MPI
  // under a launcher); NCCL goes on top of it for device buffers.
  std::unique_ptr<Communicator> host = open_communicator(DistBackend::nccl, 10);
  EXPECT_NE(host->backend(), "nccl");
  const std::string missing = cuda::nccl_unavailable_reason();
  if (!missing.empty()) {
    const std::string e =
        user_error_text([] { choose_device_collectives(DistBackend::nccl, 1, cuda::nccl_unavailable_reason()); });
    EXPECT_CONTAINS(e, "dist.backend is nccl, but ");
    EXPECT_CONTAINS(e, missing);
    EXPECT_CONTAINS(e, "use dist.backend: mpi or auto");
    return;
  }
#if GANTRAIN_HAVE_NCCL
  std::unique_ptr<cuda::NcclCommunicator> nccl = cuda::make_nccl_communicator(borrow_communicator(*host), 10);
  EXPECT_EQ(nccl->backend(), "nccl");
  EXPECT_EQ(nccl->world_size(), 1);
#endif
}

TEST(NcclBackend, TrainingTakesItOnTheGpuAndRefusesItOnTheCpu) {
  Config cfg = load_config(std::string(GT_SOURCE_DIR) + "/config/tiny.yaml",
                           {"train.max_steps=1", "log.sample_every_steps=0", "checkpoint.every_steps=0",
                            "run.out_dir=" + ::testing::TempDir() + "/gt_nccl_backend"});
  cfg.dist.backend = DistBackend::nccl;
  cfg.dist.timeout_s = 10;
  cfg.run.device = DeviceChoice::cpu;
  const std::string e = user_error_text([&] { train(cfg); });
  EXPECT_CONTAINS(e, "dist.backend is nccl");
  EXPECT_CONTAINS(e, "run.device is cpu");
  cfg.run.device = DeviceChoice::cuda;
  const cuda::DeviceReport gpus = cuda::query_devices();
  if (gpus.count == 0) {
    if (cuda::gpu_expected()) FAIL() << "GANTRAIN_EXPECT_GPU=1, but no usable GPU: " << gpus.reason;
    EXPECT_CONTAINS(user_error_text([&] { train(cfg); }), "no usable GPU");
    return;
  }
  EXPECT_EQ(train(cfg).steps, 1);
}

#ifdef GANTRAIN_HAVE_CUDA

std::string why_no_gpu() {
  const cuda::DeviceReport r = cuda::query_devices();
  return r.count == 0 ? "no usable CUDA device: " + r.reason : "";
}

// Device memory of count elements plus a guard of sentinels after them, so a collective that writes past
// its count (a wrong element size or count) is caught.
template <class T>
class GuardedDeviceArray {
 public:
  static constexpr int64_t kGuard = 64;
  explicit GuardedDeviceArray(int64_t count) : count_(count) {
    CUDA_CHECK(cudaMalloc(&data_, static_cast<size_t>(count + kGuard) * sizeof(T)));
    CUDA_CHECK(cudaMemset(data_, 0x5a, static_cast<size_t>(count + kGuard) * sizeof(T)));
  }
  ~GuardedDeviceArray() { cudaFree(data_); }
  GuardedDeviceArray(const GuardedDeviceArray&) = delete;
  GuardedDeviceArray& operator=(const GuardedDeviceArray&) = delete;

  T* data() { return data_; }
  void upload(const std::vector<T>& v) {
    CUDA_CHECK(cudaMemcpy(data_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> v(static_cast<size_t>(count_));
    CUDA_CHECK(cudaMemcpy(v.data(), data_, v.size() * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  bool guard_intact() const {
    std::vector<uint8_t> g(static_cast<size_t>(kGuard) * sizeof(T));
    CUDA_CHECK(cudaMemcpy(g.data(), data_ + count_, g.size(), cudaMemcpyDeviceToHost));
    for (uint8_t b : g)
      if (b != 0x5a) return false;
    return true;
  }

 private:
  T* data_ = nullptr;
  int64_t count_;
};

// Element i of rank 0: small integers in every type, so every op's result is exact.
template <class T>
std::vector<T> pattern(int64_t n, int salt) {
  std::vector<T> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<T>((i * 7 + salt) % 97);
  return v;
}

// With one rank every reduction returns its input: what this checks is the path through the library
// (types, counts, in and out of place, the guard after the buffer), not the arithmetic across ranks,
// which the 2-GPU case of tests/mpi/test_mpi_gpu.py covers.
template <class T>
void check_one_rank_all_reduce(Communicator& comm, int64_t n) {
  std::vector<ReduceOp> ops = {ReduceOp::sum, ReduceOp::max, ReduceOp::min};
  if (std::is_floating_point_v<T>) ops.push_back(ReduceOp::avg);
  for (ReduceOp op : ops) {
    SCOPED_TRACE(std::string(elem_type_name(elem_type_of<T>())) + " " + reduce_op_name(op) + " n " + std::to_string(n));
    const std::vector<T> in = pattern<T>(n, static_cast<int>(op));
    GuardedDeviceArray<T> send(n), recv(n);
    send.upload(in);
    comm.all_reduce(send.data(), recv.data(), n, op);
    EXPECT_EQ(recv.download(), in);
    EXPECT_TRUE(recv.guard_intact());
    comm.all_reduce(send.data(), n, op);  // in place
    EXPECT_EQ(send.download(), in);
    EXPECT_TRUE(send.guard_intact());
  }
}

void check_gather_and_broadcast(Communicator& comm) {
  const int64_t n = 1000;
  const std::vector<float> in = pattern<float>(n, 3);
  GuardedDeviceArray<float> send(n), recv(n);
  send.upload(in);
  comm.all_gather(send.data(), recv.data(), n);
  EXPECT_EQ(recv.download(), in);
  EXPECT_TRUE(recv.guard_intact());
  GuardedDeviceArray<int64_t> b(n);
  const std::vector<int64_t> root_data = pattern<int64_t>(n, 5);
  b.upload(root_data);
  comm.broadcast(b.data(), n, 0);
  EXPECT_EQ(b.download(), root_data);
  EXPECT_TRUE(b.guard_intact());
  EXPECT_THROW(comm.broadcast(b.data(), n, 1), RuntimeError);  // no rank 1 in a world of 1
  comm.barrier();
}

// ---- the NCCL communicator, one rank ------------------------------------------------------------

#ifdef GANTRAIN_HAVE_NCCL
class NcclOneRank : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!why_no_gpu().empty()) return;  // each test's SetUp skips or fails (GT_REQUIRE_GPU)
    comm_ = cuda::make_nccl_communicator(make_local_communicator(), 60).release();
    std::printf("%s\n", comm_->describe().c_str());  // the NCCL version in the test log
  }
  static void TearDownTestSuite() {
    delete comm_;  // before the CUDA runtime shuts down at exit
    comm_ = nullptr;
  }
  void SetUp() override {
    GT_REQUIRE_GPU();
    ASSERT_NE(comm_, nullptr) << "the NCCL communicator was not made in SetUpTestSuite";
  }
  static cuda::NcclCommunicator& comm() { return *comm_; }
  static cuda::NcclCommunicator* comm_;
};
cuda::NcclCommunicator* NcclOneRank::comm_ = nullptr;

TEST_F(NcclOneRank, DescribesVersionRankAndDevice) {
  EXPECT_EQ(comm().backend(), "nccl");
  EXPECT_EQ(comm().world_size(), 1);
  EXPECT_EQ(comm().rank(), 0);
  const std::string d = comm().describe();
  EXPECT_CONTAINS(d, "NCCL " + cuda::nccl_library_version());
  EXPECT_CONTAINS(d, "rank 0 on GPU " + std::to_string(comm().device()));
  int current = -1;
  CUDA_CHECK(cudaGetDevice(&current));
  EXPECT_EQ(current, comm().device());
}

TEST_F(NcclOneRank, AllReduceEveryTypeAndOpOnDeviceBuffers) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{(1 << 20) + 3}}) {
    check_one_rank_all_reduce<float>(comm(), n);
    check_one_rank_all_reduce<double>(comm(), n);
    check_one_rank_all_reduce<int64_t>(comm(), n);
    check_one_rank_all_reduce<uint8_t>(comm(), n);
  }
}

TEST_F(NcclOneRank, AllGatherBroadcastBarrier) { check_gather_and_broadcast(comm()); }

TEST_F(NcclOneRank, NonBlockingAllReduceRunsAfterTheComputeStreamAndSignalsItsEvent) {
  const int64_t n = int64_t{32} << 20;  // 128 MiB: the upload takes long enough to be caught unordered
  cudaStream_t compute = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  float* host = nullptr;
  CUDA_CHECK(cudaMallocHost(&host, static_cast<size_t>(n) * sizeof(float)));
  for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 1000);
  GuardedDeviceArray<float> data(n), out(n);
  comm().set_compute_stream(compute);
  // Queued, not finished: the all-reduce must wait for this upload on its own stream.
  CUDA_CHECK(cudaMemcpyAsync(data.data(), host, static_cast<size_t>(n) * sizeof(float), cudaMemcpyHostToDevice, compute));
  std::unique_ptr<PendingCollective> pending = comm().start_all_reduce(data.data(), out.data(), n, ReduceOp::sum);
  auto* on_stream = dynamic_cast<cuda::StreamCollective*>(pending.get());
  ASSERT_NE(on_stream, nullptr);
  // GPU work after the collective waits for its event; the host waits with wait().
  CUDA_CHECK(cudaStreamWaitEvent(compute, on_stream->done_event(), 0));
  pending->wait();
  EXPECT_TRUE(pending->test());
  const std::vector<float> got = out.download();
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) wrong += got[static_cast<size_t>(i)] != static_cast<float>(i % 1000);
  EXPECT_EQ(wrong, 0);
  comm().set_compute_stream(nullptr);
  CUDA_CHECK(cudaStreamSynchronize(compute));
  CUDA_CHECK(cudaStreamDestroy(compute));
  CUDA_CHECK(cudaFreeHost(host));
}

// Issue 17's overlap: the bucketer's finish() and synchronized batch norm ask for order_before_device_work, which
// must return without waiting for the collective (the host goes on queueing the optimizer), while GPU work queued
// after it still sees the result; the engine's end-of-step wait_event then has the deadline.
TEST_F(NcclOneRank, OrderedCollectivesDoNotBlockTheHostAndLaterDeviceWorkSeesTheirResult) {
  const int64_t n = int64_t{64} << 20;  // 256 MiB: an upload of tens of milliseconds ahead of the collective
  cudaStream_t compute = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  float* host = nullptr;
  CUDA_CHECK(cudaMallocHost(&host, static_cast<size_t>(n) * sizeof(float)));
  for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 977);
  GuardedDeviceArray<float> data(n), out(n), seen(n);  // each starts as 0x5a bytes: no value of i % 977
  EXPECT_TRUE(comm().orders_on_device());
  comm().set_compute_stream(compute);
  cudaEvent_t t0 = nullptr, t1 = nullptr, end = nullptr;
  for (cudaEvent_t* e : {&t0, &t1}) CUDA_CHECK(cudaEventCreate(e));
  CUDA_CHECK(cudaEventCreateWithFlags(&end, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(t0, compute));
  CUDA_CHECK(cudaMemcpyAsync(data.data(), host, static_cast<size_t>(n) * sizeof(float), cudaMemcpyHostToDevice, compute));
  CUDA_CHECK(cudaEventRecord(t1, compute));
  const auto h0 = std::chrono::steady_clock::now();
  std::unique_ptr<PendingCollective> pending = comm().start_all_reduce(data.data(), out.data(), n, ReduceOp::sum);
  EXPECT_TRUE(pending->order_before_device_work());
  const double host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - h0).count();
  pending.reset();  // the handle may go before the collective ends: the stream's wait was recorded
  // Device work after the collective reads its result: run early, it would copy the 0x5a pattern.
  CUDA_CHECK(cudaMemcpyAsync(seen.data(), out.data(), static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice,
                             compute));
  CUDA_CHECK(cudaEventRecord(end, compute));
  comm().wait_event(end, "the test's stream");
  float upload_ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&upload_ms, t0, t1));
  // The host call returned well before the upload that the collective waits for had finished.
  EXPECT_LT(host_ms, upload_ms / 2) << "order_before_device_work waited on the host (upload " << upload_ms << " ms)";
  const std::vector<float> got = seen.download();
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) wrong += got[static_cast<size_t>(i)] != static_cast<float>(i % 977);
  EXPECT_EQ(wrong, 0) << "device work after the ordered collective did not see its result";
  EXPECT_TRUE(seen.guard_intact());
  comm().set_compute_stream(nullptr);
  for (cudaEvent_t e : {t0, t1, end}) CUDA_CHECK(cudaEventDestroy(e));
  CUDA_CHECK(cudaStreamDestroy(compute));
  CUDA_CHECK(cudaFreeHost(host));
}

TEST_F(NcclOneRank, HostBuffersAreRefusedAndTheCommunicatorStaysUsable) {
  std::vector<float> host(16, 1.f);
  try {
    comm().all_reduce(host.data(), 16, ReduceOp::sum);
    FAIL() << "a host pointer was accepted";
  } catch (const RuntimeError& e) {
    EXPECT_CONTAINS(std::string(e.what()), "takes device buffers");
  }
  check_one_rank_all_reduce<float>(comm(), 10);
}
#else
TEST(NcclOneRank, NotBuilt) { GTEST_SKIP() << "built without NCCL (nccl.h/libnccl.so not found at configure time)"; }
#endif  // GANTRAIN_HAVE_NCCL

// ---- device buffers staged through a host communicator -------------------------------------------

class StagedOneRank : public ::testing::Test {
 protected:
  void SetUp() override {
    GT_REQUIRE_GPU();
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    comm_ = cuda::make_host_staged_communicator(make_local_communicator(), stream_);
  }
  void TearDown() override {
    comm_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Communicator> comm_;
};

TEST_F(StagedOneRank, AllReduceEveryTypeAndOp) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{(1 << 20) + 3}}) {
    check_one_rank_all_reduce<float>(*comm_, n);
    check_one_rank_all_reduce<double>(*comm_, n);
    check_one_rank_all_reduce<int64_t>(*comm_, n);
    check_one_rank_all_reduce<uint8_t>(*comm_, n);
  }
  EXPECT_EQ(comm_->backend(), "local");
}

TEST_F(StagedOneRank, AllGatherBroadcastBarrier) { check_gather_and_broadcast(*comm_); }

TEST_F(StagedOneRank, NonBlockingCopiesBackOnCompletion) {
  const int64_t n = 100000;
  const std::vector<double> in = pattern<double>(n, 9);
  GuardedDeviceArray<double> data(n);
  data.upload(in);
  std::unique_ptr<PendingCollective> a = comm_->start_all_reduce(data.data(), n, ReduceOp::avg);
  a->wait();
  EXPECT_TRUE(a->test());
  EXPECT_EQ(data.download(), in);
  EXPECT_TRUE(data.guard_intact());
}

#else
TEST(NcclOneRank, NotBuilt) { GTEST_SKIP() << "built without CUDA (GANTRAIN_CUDA=OFF)"; }
#endif  // GANTRAIN_HAVE_CUDA

}  // namespace
}  // namespace gt
