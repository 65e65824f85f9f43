// Image sources, epoch order and batch assembly: deterministic, rank-split invariant, in range.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/test_util.h"
#include "config/config.h"
#include "data/image_source.h"
#include "io/idx.h"

namespace gt {
namespace {

DataConfig synthetic(int64_t count) {
  DataConfig c;
  c.source = "synthetic";
  c.synthetic_count = count;
  return c;
}

TEST(BatchPlan, EpochIsAPermutationAndEpochsDiffer) {
  BatchPlan plan(100, 10, 7);
  ASSERT_EQ(plan.steps_per_epoch(), 10);
  std::set<int64_t> seen;
  std::vector<int64_t> epoch0, epoch1;
  for (int64_t s = 0; s < 10; ++s)
    for (int64_t i : plan.indices(s, 0, 10)) {
      seen.insert(i);
      epoch0.push_back(i);
    }
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_EQ(*seen.begin(), 0);
  EXPECT_EQ(*seen.rbegin(), 99);
  for (int64_t s = 10; s < 20; ++s)
    for (int64_t i : plan.indices(s, 0, 10)) epoch1.push_back(i);
  EXPECT_NE(epoch0, epoch1);
}

TEST(BatchPlan, SplitOverRanksEqualsWholeBatch) {
  BatchPlan whole(1000, 64, 3), split(1000, 64, 3);
  for (int64_t step : {0, 5, 15, 16, 40}) {
    std::vector<int64_t> all = whole.indices(step, 0, 64), parts;
    for (int r = 0; r < 4; ++r) {
      auto p = split.indices(step, r * 16, 16);
      parts.insert(parts.end(), p.begin(), p.end());
    }
    EXPECT_EQ(all, parts) << "step " << step;
  }
}

TEST(BatchPlan, BatchLargerThanDataIsAUserError) {
  EXPECT_THROW(BatchPlan(10, 11, 1), UserError);
}

TEST(SyntheticSource, DeterministicInRangeAndVaried) {
  auto a = open_image_source(synthetic(50), 3, 32, 9);
  auto b = open_image_source(synthetic(50), 3, 32, 9);
  std::vector<float> x(3 * 32 * 32), y(x.size()), z(x.size());
  a->get(17, x.data());
  b->get(17, y.data());
  a->get(18, z.data());
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  for (float v : x) {
    EXPECT_GE(v, -1.f);
    EXPECT_LE(v, 1.f);
  }
}

TEST(LoadBatch, FlipsAreKeyedBySampleAndMirrorImages) {
  auto src = open_image_source(synthetic(64), 1, 32, 5);
  BatchPlan plan(64, 16, 5);
  Tensor plain({16, 1, 32, 32}), flipped({16, 1, 32, 32}), again({16, 1, 32, 32});
  load_batch(*src, plan, 3, 0, 16, false, 5, plain);
  load_batch(*src, plan, 3, 0, 16, true, 5, flipped);
  load_batch(*src, plan, 3, 0, 16, true, 5, again);
  EXPECT_EQ(0, std::memcmp(flipped.raw(), again.raw(), flipped.nbytes()));
  int n_flipped = 0;
  for (int i = 0; i < 16; ++i) {
    const float* p = plain.f32() + i * 1024;
    const float* f = flipped.f32() + i * 1024;
    bool same = std::equal(p, p + 1024, f);
    bool mirrored = true;
    for (int y = 0; y < 32 && mirrored; ++y)
      for (int x = 0; x < 32; ++x)
        if (p[y * 32 + x] != f[y * 32 + 31 - x]) {
          mirrored = false;
          break;
        }
    EXPECT_TRUE(same || mirrored) << "image " << i;
    n_flipped += !same;
  }
  EXPECT_GT(n_flipped, 0);
  EXPECT_LT(n_flipped, 16);
}

TEST(FashionMnistSource, PadsTo32AndScales) {
  if (!std::filesystem::exists(std::string(kFashionMnistDefaultDir) + "/train-images-idx3-ubyte.gz"))
    GT_SKIP_MISSING("the Debian package dataset-fashion-mnist is not installed");
  DataConfig c;
  c.source = "fashion-mnist";
  auto src = open_image_source(c, 1, 32, 1);
  ASSERT_EQ(src->size(), 60000);
  IdxImages raw = read_idx_images(fashion_mnist_train_images(kFashionMnistDefaultDir));
  std::vector<float> img(32 * 32);
  src->get(123, img.data());
  for (int x = 0; x < 32; ++x) EXPECT_EQ(img[x], -1.f);  // padding rows are black
  const uint8_t* r = raw.pixels.data() + 123 * 784;
  for (int y = 0; y < 28; ++y)
    for (int x = 0; x < 28; ++x) ASSERT_FLOAT_EQ(img[(y + 2) * 32 + x + 2], r[y * 28 + x] / 127.5f - 1.f);
  auto rgb64 = open_image_source(c, 3, 64, 1);
  std::vector<float> big(3 * 64 * 64);
  rgb64->get(123, big.data());
  EXPECT_FLOAT_EQ(big[2 * 4096 + (2 * 10 + 1) * 64 + 2 * 10], img[10 * 32 + 10]);
}

TEST(Tensor, AdoptWrapsCallerMemoryAndFreesItWithItsDeleter) {
  int freed = 0;
  alignas(64) static std::byte storage[2 * 3 * 4 * sizeof(float)];
  std::fill(std::begin(storage), std::end(storage), std::byte{0x3f});
  {
    Tensor t = Tensor::adopt({2, 3, 4}, DType::f32, std::shared_ptr<std::byte>(storage, [&](std::byte*) { ++freed; }));
    EXPECT_EQ(t.raw(), storage);
    EXPECT_EQ(t.device(), Device::cpu);
    EXPECT_EQ(t.str(), "f32[2, 3, 4]");
    EXPECT_EQ(t.nbytes(), sizeof(storage));
    uint32_t bits;
    std::memcpy(&bits, t.f32(), 4);
    EXPECT_EQ(bits, 0x3f3f3f3fu);  // the caller's contents are kept, not zeroed
    t.f32()[5] = 2.5f;
    Tensor view = t.reshaped({24});
    t = Tensor();
    EXPECT_EQ(freed, 0) << "a view still shares the memory";
    EXPECT_EQ(view.f32()[5], 2.5f);
  }
  EXPECT_EQ(freed, 1);
  EXPECT_THROW(Tensor::adopt({4}, DType::u8, nullptr), RuntimeError);
  EXPECT_THROW(Tensor::adopt({4}, DType::f32, std::shared_ptr<std::byte>(storage + 1, [](std::byte*) {})),
               RuntimeError);  // not aligned for floats
}

TEST(FashionMnistSource, MissingDirectoryIsAUserErrorNamingIt) {
  DataConfig c;
  c.source = "fashion-mnist";
  c.path = "/nonexistent/fmnist";
  try {
    open_image_source(c, 1, 32, 1);
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/fmnist"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gt
