// The GPU error-check macros (these run without a GPU) and device memory: DeviceBuffer round trips and the bump arena (these skip without one).
#include <gtest/gtest.h>

#ifdef GANTRAIN_HAVE_CUDA

#include <cublas_v2.h>
#include <cudnn.h>
#ifdef GANTRAIN_HAVE_NCCL
#include <nccl.h>
#endif

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/arena.h"
#include "cuda/check.h"
#include "core/error.h"
#include "common/require_gpu.h"
#include "cuda/device.h"

namespace {

// The message a failing check throws, or "" when it does not throw.
template <class F>
std::string failure_of(F f) {
  try {
    f();
  } catch (const gt::RuntimeError& e) {
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

TEST(GpuChecks, CudaCheckNamesTheErrorTheCallAndTheLine) {
  const int line = __LINE__ + 1;
  const std::string m = failure_of([] { CUDA_CHECK(cudaErrorInvalidValue); });
  expect_contains(m, "CUDA error cudaErrorInvalidValue");
  expect_contains(m, "invalid argument");  // cudaGetErrorString's text
  expect_contains(m, "in cudaErrorInvalidValue at ");
  expect_contains(m, "test_gpu_memory.cpp:" + std::to_string(line));
  EXPECT_TRUE(failure_of([] { CUDA_CHECK(cudaSuccess); }).empty());
}

TEST(GpuChecks, CudnnCheckUsesCudnnsName) {
  const std::string m = failure_of([] { CUDNN_CHECK(CUDNN_STATUS_BAD_PARAM); });
  expect_contains(m, "cuDNN error CUDNN_STATUS_BAD_PARAM");
  expect_contains(m, "test_gpu_memory.cpp:");
  EXPECT_TRUE(failure_of([] { CUDNN_CHECK(CUDNN_STATUS_SUCCESS); }).empty());
}

TEST(GpuChecks, CublasCheckUsesCublasNameAndMessage) {
  const std::string m = failure_of([] { CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE); });
  expect_contains(m, "cuBLAS error CUBLAS_STATUS_INVALID_VALUE");
  expect_contains(m, "in CUBLAS_STATUS_INVALID_VALUE at ");  // the checked expression
  EXPECT_TRUE(failure_of([] { CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS); }).empty());
}

#ifdef GANTRAIN_HAVE_NCCL
TEST(GpuChecks, NcclCheckUsesNcclsMessage) {
  const std::string m = failure_of([] { NCCL_CHECK(ncclInvalidArgument); });
  expect_contains(m, "NCCL error");
  expect_contains(m, "test_gpu_memory.cpp:");
}
#endif

class DeviceMemory : public ::testing::Test {
 protected:
  void SetUp() override {
    GT_REQUIRE_GPU();
  }
};

TEST_F(DeviceMemory, BufferRoundTripKeepsEveryValue) {
  std::vector<float> host(100003);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.5f - 7.f;
  gt::cuda::DeviceBuffer<float> d(host.size());
  d.upload(host.data(), host.size());
  std::vector<float> back(host.size(), -1.f);
  d.download(back.data(), back.size());
  EXPECT_EQ(back, host);
  gt::cuda::DeviceBuffer<float> moved = std::move(d);
  EXPECT_EQ(d.data(), nullptr);
  EXPECT_EQ(moved.size(), host.size());
}

TEST_F(DeviceMemory, ArenaBumpsAlignsRewindsAndNamesItsSizeWhenFull) {
  const size_t capacity = size_t{1} << 20;
  gt::cuda::DeviceArena arena(capacity);
  float* a = arena.allocate<float>(3);
  double* b = arena.allocate<double>(5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % gt::cuda::DeviceArena::kAlignment, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % gt::cuda::DeviceArena::kAlignment, 0u);
  EXPECT_EQ(reinterpret_cast<std::byte*>(b) - reinterpret_cast<std::byte*>(a),
            static_cast<ptrdiff_t>(gt::cuda::DeviceArena::kAlignment));
  const size_t mark = arena.mark();
  float* c = arena.allocate<float>(1000);
  arena.rewind(mark);
  EXPECT_EQ(arena.allocate<float>(1000), c);  // the same memory again after the rewind
  EXPECT_GE(arena.high_water(), arena.used());
  const std::string m = failure_of([&] { arena.allocate_bytes(capacity); });
  expect_contains(m, std::to_string(capacity));
  expect_contains(m, "make the arena larger");
  arena.reset();
  EXPECT_EQ(arena.used(), 0u);
  // Arena memory is real device memory: a copy through it comes back intact.
  std::vector<int32_t> host{1, -2, 3, 40000, 5};
  int32_t* d = arena.allocate<int32_t>(host.size());
  gt::cuda::copy_host_to_device(d, host.data(), host.size() * sizeof(int32_t), nullptr);
  std::vector<int32_t> back(host.size());
  gt::cuda::copy_device_to_host(back.data(), d, back.size() * sizeof(int32_t), nullptr);
  EXPECT_EQ(back, host);
}

}  // namespace

#else
TEST(GpuMemory, NotBuilt) { GTEST_SKIP() << "built without CUDA (GANTRAIN_CUDA=OFF)"; }
#endif
