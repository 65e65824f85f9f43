// The CUDA build links and reports devices; GPU tests skip with the reason where there is none (and fail where GANTRAIN_EXPECT_GPU=1 says there must be one).
#include <gtest/gtest.h>

#ifdef GANTRAIN_HAVE_CUDA
#include "common/require_gpu.h"
#include "cuda/device.h"

TEST(CudaDevice, QueryNeverThrowsAndExplainsAbsence) {
  gt::cuda::DeviceReport r = gt::cuda::query_devices();
  if (r.count == 0) {
    EXPECT_FALSE(r.reason.empty());
  }
  GT_REQUIRE_GPU();
  EXPECT_FALSE(r.name.empty());
  EXPECT_GE(r.cc_major, 7);
}
#else
TEST(CudaDevice, NotBuilt) { GTEST_SKIP() << "built without CUDA (GANTRAIN_CUDA=OFF)"; }
#endif
