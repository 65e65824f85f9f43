// The CUDA build links and reports devices; GPU tests skip with the reason where there is none.
#include <gtest/gtest.h>

#ifdef GANTRAIN_HAVE_CUDA
#include "cuda/device.h"

TEST(CudaDevice, QueryNeverThrowsAndExplainsAbsence) {
  gt::cuda::DeviceReport r = gt::cuda::query_devices();
  if (r.count == 0) {
    EXPECT_FALSE(r.reason.empty());
    GTEST_SKIP() << "no usable CUDA device: " << r.reason;
  }
  EXPECT_FALSE(r.name.empty());
  EXPECT_GE(r.cc_major, 7);
}
#else
TEST(CudaDevice, NotBuilt) { GTEST_SKIP() << "built without CUDA (GANTRAIN_CUDA=OFF)"; }
#endif
