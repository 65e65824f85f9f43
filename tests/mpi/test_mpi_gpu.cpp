// Communicators over device buffers on real ranks (run by tests/mpi/test_mpi_gpu.py through mpirun -np 2): MPI staged through pinned memory, and NCCL.
//
//   test_mpi_gpu --probe                                     what this machine has (no MPI): "gpus N", "nccl yes|no"
//   mpirun -np 2 test_mpi_gpu --gtest_filter='StagedMpi.*'   ranks may share one GPU
//   mpirun -np 2 test_mpi_gpu --gtest_filter='NcclMpi.*'     one GPU per rank; on a node with fewer GPUs than
//                                                            ranks, checks the error that names node and counts
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/mpi_test_util.h"
#include "common/test_util.h"
#include "cuda/check.h"
#include "cuda/device.h"
#include "parallel/agreement.h"
#include "parallel/communicator.h"
#include "parallel/gpu_placement.h"
#include "parallel/launch.h"
#include "cuda/staged_communicator.h"
#ifdef GANTRAIN_HAVE_NCCL
#include "cuda/nccl_communicator.h"
#endif


namespace gt {
namespace {

Communicator* g_host = nullptr;  // the MPI communicator of this process, set by main()
Communicator& host() { return *g_host; }
int P() { return host().world_size(); }
int R() { return host().rank(); }

template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(int64_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&p_, static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T))); }
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* data() { return p_; }
  void upload(const std::vector<T>& v) { CUDA_CHECK(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download(int64_t n) const {
    std::vector<T> v(static_cast<size_t>(n));
    CUDA_CHECK(cudaMemcpy(v.data(), p_, v.size() * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  T* p_ = nullptr;
  int64_t n_;
};

// Rank r contributes (r + 1) * (i % 7 + 1): every result is an exact small integer in every type.
double contribution(int rank, int64_t i) { return (rank + 1) * static_cast<double>(i % 7 + 1); }

double expected(ReduceOp op, int64_t i) {
  const double unit = static_cast<double>(i % 7 + 1);
  switch (op) {
    case ReduceOp::sum: return P() * (P() + 1) / 2.0 * unit;
    case ReduceOp::avg: return (P() + 1) / 2.0 * unit;
    case ReduceOp::max: return P() * unit;
    case ReduceOp::min: return unit;
  }
  return 0;
}

template <class T>
void check_all_reduce(Communicator& comm, int64_t n) {
  std::vector<ReduceOp> ops = {ReduceOp::sum, ReduceOp::max, ReduceOp::min};
  if (std::is_floating_point_v<T>) ops.push_back(ReduceOp::avg);
  for (ReduceOp op : ops) {
    for (bool in_place : {false, true}) {
      SCOPED_TRACE(std::string(elem_type_name(elem_type_of<T>())) + " " + reduce_op_name(op) + " n " +
                   std::to_string(n) + (in_place ? " in place" : ""));
      std::vector<T> in(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) in[static_cast<size_t>(i)] = static_cast<T>(contribution(R(), i));
      DeviceArray<T> send(n), recv(n);
      send.upload(in);
      if (in_place) comm.all_reduce(send.data(), n, op);
      else comm.all_reduce(send.data(), recv.data(), n, op);
      const std::vector<T> got = (in_place ? send : recv).download(n);
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; ++i) wrong += static_cast<double>(got[static_cast<size_t>(i)]) != expected(op, i);
      EXPECT_EQ(wrong, 0);
    }
  }
}

void check_every_collective(Communicator& comm) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{(1 << 20) + 3}}) {
    check_all_reduce<float>(comm, n);
    check_all_reduce<double>(comm, n);
    check_all_reduce<int64_t>(comm, n);
    check_all_reduce<uint8_t>(comm, n);
  }
  // Two non-blocking all-reduces in flight, completed in the other order.
  const int64_t n = 300000;
  std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) a[static_cast<size_t>(i)] = b[static_cast<size_t>(i)] = static_cast<float>(contribution(R(), i));
  DeviceArray<float> da(n), db(n);
  da.upload(a);
  db.upload(b);
  auto first = comm.start_all_reduce(da.data(), n, ReduceOp::sum);
  auto second = comm.start_all_reduce(db.data(), n, ReduceOp::avg);
  second->wait();
  first->wait();
  const std::vector<float> ga = da.download(n), gb = db.download(n);
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i)
    wrong += (ga[static_cast<size_t>(i)] != expected(ReduceOp::sum, i)) + (gb[static_cast<size_t>(i)] != expected(ReduceOp::avg, i));
  EXPECT_EQ(wrong, 0);
  // All-gather: rank r's block is r * 1000 + i, in rank order.
  const int64_t m = 777;
  std::vector<int64_t> mine(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) mine[static_cast<size_t>(i)] = R() * 1000 + i;
  DeviceArray<int64_t> send(m), all(m * P());
  send.upload(mine);
  comm.all_gather(send.data(), all.data(), m);
  const std::vector<int64_t> got = all.download(m * P());
  for (int r = 0; r < P(); ++r)
    for (int64_t i = 0; i < m; ++i) ASSERT_EQ(got[static_cast<size_t>(r * m + i)], r * 1000 + i) << "rank " << r << " i " << i;
  // Broadcast from the last rank.
  std::vector<double> data(5000, static_cast<double>(R() + 1));
  DeviceArray<double> d(5000);
  d.upload(data);
  comm.broadcast(d.data(), 5000, P() - 1);
  for (double v : d.download(5000)) ASSERT_EQ(v, static_cast<double>(P()));
  comm.barrier();
}

TEST(StagedMpi, EveryCollectiveOnDeviceBuffersWithRanksSharingGpus) {
  EXPECT_GE(P(), 2) << "run with mpirun -np 2 or more";
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    std::unique_ptr<Communicator> comm = cuda::make_host_staged_communicator(make_mpi_communicator(60), stream);
    EXPECT_EQ(comm->backend(), "mpi");
    check_every_collective(*comm);
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

#ifdef GANTRAIN_HAVE_NCCL
TEST(NcclMpi, EveryCollectiveOnePerGpuOrTheErrorNamingNodeAndCounts) {
  EXPECT_GE(P(), 2) << "run with mpirun -np 2 or more";
  // The fewest GPUs any node offers its ranks, against the ranks it runs.
  int64_t gpus = cuda::query_devices().count, shortfall = host().local_size() > gpus;
  host().all_reduce(&shortfall, 1, ReduceOp::max);
  if (shortfall) {
    try {
      cuda::make_nccl_communicator(make_mpi_communicator(60), 60);
      FAIL() << "NCCL opened with more ranks than GPUs on a node";
    } catch (const AgreedUserError& e) {
      const std::string m = e.what();
      EXPECT_CONTAINS(m, "runs " + std::to_string(host().local_size()) + " ranks but they see only");
      EXPECT_CONTAINS(m, host_name());
      EXPECT_CONTAINS(m, "NCCL allows one rank per GPU");
      if (R() == 0) std::printf("expected error on this node: %s\n", m.c_str());
    }
    return;
  }
  std::unique_ptr<cuda::NcclCommunicator> comm = cuda::make_nccl_communicator(make_mpi_communicator(60), 60);
  if (R() == 0) std::printf("%s\n", comm->describe().c_str());
  EXPECT_EQ(comm->world_size(), P());
  EXPECT_EQ(comm->rank(), R());
  check_every_collective(*comm);
}
#endif

int probe() {
  const cuda::DeviceReport r = cuda::query_devices();
  std::printf("gpus %d\n", r.count);
  if (r.count == 0) std::printf("reason %s\n", r.reason.c_str());
#ifdef GANTRAIN_HAVE_NCCL
  std::printf("nccl yes\n");
#else
  std::printf("nccl no\n");
#endif
  return 0;
}

}  // namespace
}  // namespace gt

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--probe") == 0) return gt::probe();
  gt::MpiRuntime mpi(&argc, &argv);
  try {
    auto host = gt::open_communicator(gt::DistBackend::mpi, 60);
    gt::g_host = host.get();
    // Ranks may share a GPU here (the staged path); the mapping is the one training uses.
    gt::RankDeviceView mine{host->host(), {host->local_rank(), gt::cuda::query_devices().count,
                                           gt::cuda_visible_devices(gt::process_env())}};
    const auto placed = gt::gather_and_place(*host, mine, /*exclusive=*/false);
    CUDA_CHECK(cudaSetDevice(placed[static_cast<size_t>(host->rank())].ordinal));
    testing::InitGoogleTest(&argc, argv);
    gt::test::quiet_other_ranks(host->rank());
    const int rc = gt::test::run_all_tests_on_every_rank(*host);
    host.reset();
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%stest_mpi_gpu: %s\n", gt::rank_prefix(mpi.rank(), mpi.world_size(), gt::host_name()).c_str(),
                 e.what());
    if (!gt::is_agreed(e)) mpi.abort(1);
    return 1;
  }
}
