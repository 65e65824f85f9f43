// The large-batch plan: shares and micro-batches from the global batch, the memory budget and the configured micro-batch, with the errors that name their key.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "nn/dcgan.h"
#include "train/large_batch.h"

namespace gt {
namespace {

std::string error_of(int64_t batch, int world, int64_t micro, double budget, double per_image) {
  try {
    plan_large_batch(batch, world, micro, budget, per_image, "test budget");
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(LargeBatch, WithoutBudgetTheShareIsOnePass) {
  const LargeBatchPlan p = plan_large_batch(1024, 4, 0, 0, 1e6, "");
  EXPECT_EQ(p.local_batch, 256);
  EXPECT_EQ(p.micro_batch, 256);
  EXPECT_EQ(p.accumulation, 1);
  EXPECT_NE(p.describe().find("batch 1024 = 4 ranks x 256 in one pass"), std::string::npos) << p.describe();
}

TEST(LargeBatch, TheBudgetPicksTheLargestDivisorThatFits) {
  // 1 MB per image, 100 MB: 96 of a share of 256 would fit, but micro-batches split the share evenly: 64.
  const LargeBatchPlan p = plan_large_batch(1024, 4, 0, 100e6, 1e6, "test budget");
  EXPECT_EQ(p.micro_batch, 64);
  EXPECT_EQ(p.accumulation, 4);
  EXPECT_NE(p.describe().find("4 micro-batches of 64 accumulated"), std::string::npos) << p.describe();
  EXPECT_NE(p.describe().find("test budget"), std::string::npos) << p.describe();
  // A share that fits whole stays whole; a prime share that does not falls to micro-batches of 1.
  EXPECT_EQ(plan_large_batch(1024, 4, 0, 300e6, 1e6, "b").micro_batch, 256);
  EXPECT_EQ(plan_large_batch(13, 1, 0, 5e6, 1e6, "b").micro_batch, 1);
}

TEST(LargeBatch, AConfiguredMicroBatchWinsOverTheBudget) {
  const LargeBatchPlan p = plan_large_batch(64, 2, 8, 1.0, 1e6, "b");
  EXPECT_EQ(p.micro_batch, 8);
  EXPECT_EQ(p.accumulation, 4);
  EXPECT_EQ(p.basis, "train.micro_batch");
}

TEST(LargeBatch, BadPlansNameTheirKey) {
  EXPECT_NE(error_of(1000, 3, 0, 0, 1).find("train.batch_size 1000 does not divide over 3 ranks"), std::string::npos);
  const std::string micro = error_of(96, 2, 10, 0, 1);
  EXPECT_NE(micro.find("train.micro_batch 10 does not divide a rank's share of the batch, 48"), std::string::npos)
      << micro;
  EXPECT_NE(micro.find("e.g. 8"), std::string::npos) << micro;
  const std::string budget = error_of(64, 1, 0, 1e6, 2e6);
  EXPECT_NE(budget.find("train.memory_mb"), std::string::npos) << budget;
  EXPECT_NE(budget.find("test budget"), std::string::npos) << budget;
}

TEST(LargeBatch, TheEstimateGrowsWithTheModelAndThePenalty) {
  DcganSpec small{16, 8, 8, 32, 1, 0.2f}, wide{16, 32, 32, 32, 1, 0.2f};
  Sequential gs = make_dcgan_generator(small), ds = make_dcgan_discriminator(small);
  Sequential gw = make_dcgan_generator(wide), dw = make_dcgan_discriminator(wide);
  GanObjective plain, penalty;
  penalty.gp_weight = 10.f;
  const double a = step_bytes_per_image(gs, ds, 16, plain), b = step_bytes_per_image(gw, dw, 16, plain);
  EXPECT_GT(a, 4.0 * 2 * 32 * 32);  // at least the image and its gradient, in floats
  EXPECT_GT(b, 3.0 * a);            // 4x the channels: nearly 4x the activations
  EXPECT_GT(step_bytes_per_image(gs, ds, 16, penalty), a);
}

}  // namespace
}  // namespace gt
