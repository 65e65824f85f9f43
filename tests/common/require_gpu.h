// GT_REQUIRE_GPU(): the first line of every GPU test; skips, saying why, where no GPU is usable, but fails where one is expected (GANTRAIN_EXPECT_GPU=1).
#pragma once
#include <gtest/gtest.h>

#include "cuda/device.h"

// Skipping on a machine that should have a GPU would let the GPU check pass without running anything:
// a driver/runtime mismatch or an empty CUDA_VISIBLE_DEVICES reads as "no device". So with
// GANTRAIN_EXPECT_GPU=1 the absence is a failure that prints the CUDA error. In SetUp a fatal failure
// keeps the test body from running, as a skip does.
#define GT_REQUIRE_GPU()                                                                                          \
  do {                                                                                                            \
    const ::gt::cuda::DeviceReport gt_report_ = ::gt::cuda::query_devices();                                     \
    if (gt_report_.count == 0) {                                                                                  \
      if (::gt::cuda::gpu_expected())                                                                             \
        FAIL() << "GANTRAIN_EXPECT_GPU is set, but there is no usable CUDA device: " << gt_report_.reason;      \
      GTEST_SKIP() << "no usable CUDA device: " << gt_report_.reason;                                            \
    }                                                                                                             \
  } while (0)
