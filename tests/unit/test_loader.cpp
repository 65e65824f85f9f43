// The prefetching shard loader: rank shards tile the global batch, same batches as load_batch, uint8 batches,
// errors and shutdown.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "config/config.h"
#include "data/dataset_h5.h"
#include "data/image_source.h"
#include "data/loader.h"

namespace gt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::unique_ptr<ImageSource> synthetic_source(int64_t count, int channels, int resolution, uint64_t seed) {
  DataConfig c;
  c.source = "synthetic";
  c.synthetic_count = count;
  return open_image_source(c, channels, resolution, seed);
}

LoaderOptions options(int64_t batch, int rank, int world, int prefetch, bool flip, uint64_t seed, int threads = 1) {
  LoaderOptions o;
  o.threads = threads;
  o.global_batch = batch;
  o.rank = rank;
  o.world_size = world;
  o.prefetch_batches = prefetch;
  o.flip = flip;
  o.seed = seed;
  return o;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// The pixel (y, x, c) of image i in the test datasets: a value no two nearby pixels share.
uint8_t pattern(int64_t i, int y, int x, int c) { return static_cast<uint8_t>(i * 37 + y * 11 + x * 3 + c * 101); }

// A dataset file of `count` images side x side x channels with pattern() pixels, removed at the end.
class PatternDataset {
 public:
  PatternDataset(int64_t count, int side, int channels) : side_(side), channels_(channels) {
    path_ = (fs::temp_directory_path() /
             fmt::format("gt_loader_{}_{}_{}.h5", ::getpid(), count, std::chrono::steady_clock::now().time_since_epoch().count()))
                .string();
    DatasetWriter writer(path_, side, side, channels, false);
    std::vector<uint8_t> image(static_cast<size_t>(side) * side * channels);
    for (int64_t i = 0; i < count; ++i) {
      for (int y = 0; y < side; ++y)
        for (int x = 0; x < side; ++x)
          for (int c = 0; c < channels; ++c) image[(y * side + x) * channels + c] = pattern(i, y, x, c);
      writer.append(image.data());
    }
    writer.finish("loader test pattern");
  }
  ~PatternDataset() { fs::remove(path_); }
  std::unique_ptr<ImageSource> source(int model_channels) const {
    DataConfig c;
    c.source = "hdf5";
    c.path = path_;
    return open_image_source(c, model_channels, side_, 1);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int side_, channels_;
};

// ---- conversion ----------------------------------------------------------------------------------

TEST(PixelConversion, HwcBytesBecomeChwUnitFloatsMirroredOnRequest) {
  const int h = 3, w = 4, c = 3;
  std::vector<uint8_t> hwc(h * w * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int ch = 0; ch < c; ++ch) hwc[(y * w + x) * c + ch] = pattern(0, y, x, ch);
  hwc[0] = 0;
  hwc[1] = 255;
  std::vector<float> plain(c * h * w), mirrored(c * h * w);
  hwc_u8_to_chw_f32(hwc.data(), h, w, c, c, false, plain.data());
  hwc_u8_to_chw_f32(hwc.data(), h, w, c, c, true, mirrored.data());
  for (int ch = 0; ch < c; ++ch)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const float expected = hwc[(y * w + x) * c + ch] * (2.0f / 255.0f) - 1.0f;
        EXPECT_NEAR(plain[(ch * h + y) * w + x], expected, 1e-6f) << ch << "," << y << "," << x;
        EXPECT_EQ(mirrored[(ch * h + y) * w + (w - 1 - x)], plain[(ch * h + y) * w + x]);
      }
  EXPECT_EQ(plain[0], -1.0f);         // byte 0 -> -1 exactly
  EXPECT_EQ(plain[h * w], 1.0f);      // byte 255 (channel 1 of pixel 0) -> +1 exactly
}

TEST(PixelConversion, GrayIsRepeatedOverThreeChannels) {
  const std::vector<uint8_t> gray = {0, 50, 100, 150, 200, 255};
  std::vector<float> rgb(3 * 6);
  hwc_u8_to_chw_f32(gray.data(), 2, 3, 1, 3, false, rgb.data());
  for (int ch = 0; ch < 3; ++ch)
    for (int p = 0; p < 6; ++p) EXPECT_NEAR(rgb[ch * 6 + p], gray[p] / 127.5f - 1.f, 1e-6f);
}

// ---- what each rank gets -------------------------------------------------------------------------

TEST(Loader, OneRankGetsWhatLoadBatchAssembles) {
  auto src = synthetic_source(40, 3, 32, 4);
  Loader loader(*src, options(8, 0, 1, 2, true, 4));
  BatchPlan plan(40, 8, 4);
  Tensor got, want({8, 3, 32, 32});
  for (int64_t step = 0; step < 12; ++step) {  // 5 steps per epoch: crosses two epoch boundaries
    ASSERT_EQ(loader.next(got), step);
    load_batch(*src, plan, step, 0, 8, true, 4, want);
    EXPECT_TRUE(same_bytes(got, want)) << "step " << step;
  }
}

TEST(Loader, RankShardsTileTheGlobalBatch) {
  // B = 10 over 1..4 ranks, including uneven splits (10/3, 10/4); with flips and across epochs.
  PatternDataset data(47, 8, 3);
  auto src = data.source(3);
  const int64_t B = 10, per_image = 3 * 8 * 8;
  Loader whole(*src, options(B, 0, 1, 3, true, 9));
  std::vector<Tensor> reference;
  for (int64_t step = 0; step < 9; ++step) {
    Tensor t;
    whole.next(t);
    reference.push_back(t.clone());
  }
  for (int world = 2; world <= 4; ++world) {
    int64_t covered = 0;
    for (int rank = 0; rank < world; ++rank) {
      Loader shard(*src, options(B, rank, world, 2, true, 9));
      EXPECT_EQ(shard.shard_first(), rank * B / world);
      EXPECT_EQ(shard.shard_size(), (rank + 1) * B / world - rank * B / world);
      covered += shard.shard_size();
      Tensor t;
      for (int64_t step = 0; step < 9; ++step) {
        ASSERT_EQ(shard.next(t), step);
        const float* expected = reference[step].f32() + shard.shard_first() * per_image;
        EXPECT_EQ(0, std::memcmp(t.f32(), expected, t.nbytes())) << "rank " << rank << "/" << world << " step " << step;
      }
    }
    EXPECT_EQ(covered, B) << world << " ranks";
  }
}

TEST(Loader, HdfImagesArriveAsUnitFloatsInEpochOrderWithKeyedFlips) {
  PatternDataset data(30, 6, 3);
  auto src = data.source(3);
  Loader loader(*src, options(6, 1, 2, 2, true, 21));  // rank 1 of 2: positions 3..5
  BatchPlan plan(30, 6, 21);
  Tensor t;
  int flipped = 0;
  for (int64_t step = 0; step < 7; ++step) {
    loader.next(t);
    const std::vector<int64_t> idx = plan.indices(step, 3, 3);
    for (int k = 0; k < 3; ++k) {
      const bool flip = flip_drawn(21, step, 3 + k);
      flipped += flip;
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 6; ++y)
          for (int x = 0; x < 6; ++x) {
            const int source_x = flip ? 5 - x : x;
            const float expected = pattern(idx[k], y, source_x, c) / 127.5f - 1.f;
            ASSERT_EQ(t.f32()[((k * 3 + c) * 6 + y) * 6 + x], expected) << step << " " << k;
          }
    }
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 21);
}

TEST(Loader, GrayDatasetFeedsAnRgbModel) {
  PatternDataset data(12, 4, 1);
  auto src = data.source(3);
  EXPECT_EQ(src->channels(), 3);
  Loader loader(*src, options(4, 0, 1, 1, false, 2));
  Tensor t;
  loader.next(t);
  ASSERT_EQ(t.shape(), (Shape{4, 3, 4, 4}));
  for (int k = 0; k < 4; ++k)
    EXPECT_EQ(0, std::memcmp(t.f32() + (k * 3 + 0) * 16, t.f32() + (k * 3 + 2) * 16, 16 * sizeof(float)));
}

TEST(Loader, ThreadCountAndReadAheadDoNotChangeTheBatches) {
  PatternDataset data(70, 8, 3);
  auto hdf5 = data.source(3);
  auto synthetic = synthetic_source(64, 1, 32, 8);
  for (const ImageSource* src : {hdf5.get(), synthetic.get()}) {
    SCOPED_TRACE(src->describe());
    Loader inline_reads(*src, options(16, 0, 1, 0, true, 8));
    Loader one_thread(*src, options(16, 0, 1, 4, true, 8));
    Loader three_threads(*src, options(16, 0, 1, 4, true, 8, 3));
    Loader capped(*src, options(16, 0, 1, 2, true, 8, 5));
    EXPECT_EQ(inline_reads.threads(), 0);
    EXPECT_EQ(one_thread.threads(), 1);
    EXPECT_EQ(three_threads.threads(), 3);
    EXPECT_EQ(capped.threads(), 2);  // no more threads than batches in the window
    Tensor a, b, c, d;
    for (int64_t step = 0; step < 12; ++step) {
      ASSERT_EQ(inline_reads.next(a), step);
      ASSERT_EQ(one_thread.next(b), step);
      ASSERT_EQ(three_threads.next(c), step);
      ASSERT_EQ(capped.next(d), step);
      EXPECT_TRUE(same_bytes(a, b)) << step;
      EXPECT_TRUE(same_bytes(a, c)) << step;
      EXPECT_TRUE(same_bytes(a, d)) << step;
    }
  }
}

TEST(Loader, ResumedLoaderContinuesTheSameSequence) {
  auto src = synthetic_source(50, 1, 32, 3);
  Loader from_start(*src, options(10, 0, 1, 2, true, 3));
  LoaderOptions later = options(10, 0, 1, 2, true, 3);
  later.first_step = 7;
  Loader resumed(*src, later);
  Tensor a, b;
  for (int i = 0; i < 8; ++i) from_start.next(a);
  ASSERT_EQ(resumed.next(b), 7);
  EXPECT_TRUE(same_bytes(a, b));
}

// ---- uint8 batches (output_u8) -------------------------------------------------------------------

// What a consumer of uint8 batches does (the GPU engine's u8_nhwc_to_f32_nchw), written out here on
// its own: u8 [n, R, R, in_c] NHWC -> f32 [n, out_c, R, R] as v / 127.5 - 1, image i mirrored where
// flip_drawn(seed, step, first + i) says (if flip), gray repeated over RGB.
Tensor convert_like_a_consumer(const Tensor& u8, int out_c, bool flip, uint64_t seed, int64_t step, int64_t first) {
  const int64_t n = u8.dim(0), h = u8.dim(1), w = u8.dim(2), in_c = u8.dim(3);
  Tensor out({n, out_c, h, w});
  for (int64_t i = 0; i < n; ++i) {
    const bool mirrored = flip && flip_drawn(seed, step, first + i);
    for (int c = 0; c < out_c; ++c)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const int64_t sx = mirrored ? w - 1 - x : x, sc = in_c == 1 ? 0 : c;
          const uint8_t v = u8.u8()[((i * h + y) * w + sx) * in_c + sc];
          out.f32()[((i * out_c + c) * h + y) * w + x] = static_cast<float>(v) / 127.5f - 1.f;
        }
  }
  return out;
}

// A Fashion-MNIST directory with `count` pattern() images in an uncompressed idx3-ubyte file.
class FashionMnistDir {
 public:
  explicit FashionMnistDir(int64_t count) {
    dir_ = fs::temp_directory_path() /
           fmt::format("gt_loader_fmnist_{}_{}", ::getpid(), std::chrono::steady_clock::now().time_since_epoch().count());
    fs::create_directories(dir_);
    std::ofstream f(dir_ / "train-images-idx3-ubyte", std::ios::binary);
    const auto be32 = [&](uint32_t v) {
      const char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
      f.write(b, 4);
    };
    be32(0x803);
    be32(static_cast<uint32_t>(count));
    be32(28);
    be32(28);
    for (int64_t i = 0; i < count; ++i)
      for (int y = 0; y < 28; ++y)
        for (int x = 0; x < 28; ++x) f.put(static_cast<char>(pattern(i, y, x, 0)));
  }
  ~FashionMnistDir() { fs::remove_all(dir_); }
  std::unique_ptr<ImageSource> source(int channels, int resolution) const {
    DataConfig c;
    c.source = "fashion-mnist";
    c.path = dir_.string();
    return open_image_source(c, channels, resolution, 1);
  }

 private:
  fs::path dir_;
};

TEST(LoaderU8, ConvertedBytesEqualTheFloatBatchesForEverySourceAndRank) {
  PatternDataset rgb(29, 8, 3), gray(23, 8, 1);
  FashionMnistDir fmnist(21);
  std::vector<std::pair<std::string, std::unique_ptr<ImageSource>>> sources;
  sources.emplace_back("synthetic rgb", synthetic_source(27, 3, 32, 6));
  sources.emplace_back("synthetic gray", synthetic_source(27, 1, 32, 6));
  sources.emplace_back("hdf5 rgb", rgb.source(3));
  sources.emplace_back("hdf5 gray -> rgb", gray.source(3));
  sources.emplace_back("hdf5 gray", gray.source(1));
  sources.emplace_back("fashion-mnist gray 32", fmnist.source(1, 32));
  sources.emplace_back("fashion-mnist rgb 64", fmnist.source(3, 64));
  const int64_t B = 6;  // 3 or 4 steps per epoch: 9 steps cross two epoch boundaries
  for (const auto& [name, src] : sources) {
    for (int world : {1, 2}) {
      for (int rank = 0; rank < world; ++rank) {
        SCOPED_TRACE(fmt::format("{}, rank {} of {}", name, rank, world));
        for (auto [prefetch, threads] : {std::pair{0, 1}, {3, 2}}) {
          LoaderOptions o = options(B, rank, world, prefetch, true, 11, threads);
          Loader floats(*src, o);
          o.output_u8 = true;
          Loader bytes(*src, o);
          EXPECT_EQ(bytes.batch_dtype(), DType::u8);
          EXPECT_EQ(bytes.shard_first(), floats.shard_first());
          const int64_t r = src->resolution();
          ASSERT_EQ(bytes.batch_shape(), (Shape{floats.shard_size(), r, r, src->u8_channels()}));
          Tensor f, u;
          for (int64_t step = 0; step < 9; ++step) {
            ASSERT_EQ(floats.next(f), step);
            ASSERT_EQ(bytes.next(u), step);
            ASSERT_EQ(u.shape(), bytes.batch_shape());
            ASSERT_EQ(u.dtype(), DType::u8);
            const Tensor converted =
                convert_like_a_consumer(u, src->channels(), true, 11, step, bytes.shard_first());
            EXPECT_TRUE(same_bytes(converted, f)) << "step " << step << " prefetch " << prefetch;
          }
        }
      }
    }
  }
}

TEST(LoaderU8, BytesAreStoredUnflippedAndAreAQuarterOfTheFloats) {
  PatternDataset data(30, 8, 3);
  auto src = data.source(3);
  LoaderOptions o = options(6, 0, 1, 2, true, 5);
  o.output_u8 = true;
  Loader with_flips(*src, o);
  o.flip = false;
  Loader without(*src, o);
  BatchPlan plan(30, 6, 5);
  Tensor a, b;
  for (int64_t step = 0; step < 7; ++step) {
    with_flips.next(a);
    without.next(b);
    EXPECT_TRUE(same_bytes(a, b)) << "flips must be left to the consumer, step " << step;
    const std::vector<int64_t> idx = plan.indices(step, 0, 6);
    for (int k = 0; k < 6; ++k)  // as stored: pattern() of the dataset image, HWC
      ASSERT_EQ(a.u8()[((k * 8 + 3) * 8 + 5) * 3 + 2], pattern(idx[k], 3, 5, 2)) << step << " " << k;
  }
  LoaderOptions fo = options(6, 0, 1, 2, true, 5);
  Loader floats(*src, fo);
  EXPECT_EQ(with_flips.memory_bytes_limit(), 3 * 6 * 8 * 8 * 3u);
  EXPECT_EQ(floats.memory_bytes_limit(), 4 * with_flips.memory_bytes_limit());
}

TEST(LoaderU8, FillsAnAdoptedTensorInPlaceAndAllocatesThroughTheHook) {
  auto src = synthetic_source(40, 3, 32, 2);
  LoaderOptions o = options(8, 0, 1, 0, true, 2);
  o.output_u8 = true;
  Loader reference(*src, o);
  Loader inline_reads(*src, o);
  // Caller-owned memory (the GPU engine's cudaHostAlloc) handed to the loader as the batch to fill.
  int freed = 0;
  const size_t n = 8 * 32 * 32 * 3;
  Tensor batch = Tensor::adopt({8, 32, 32, 3}, DType::u8,
                               std::shared_ptr<std::byte>(new std::byte[n], [&](std::byte* p) {
                                 ++freed;
                                 delete[] p;
                               }));
  const void* memory = batch.raw();
  Tensor want;
  for (int64_t step = 0; step < 6; ++step) {
    reference.next(want);
    ASSERT_EQ(inline_reads.next(batch), step);
    EXPECT_EQ(batch.raw(), memory) << "read in place";
    EXPECT_TRUE(same_bytes(batch, want)) << step;
  }
  batch = Tensor();
  EXPECT_EQ(freed, 1);

  // With reading threads, every buffer the loader uses comes from options.allocate.
  int made = 0, released = 0;
  std::set<const void*> allocated;
  std::set<std::thread::id> allocating_threads;
  o.prefetch_batches = 3;
  o.threads = 2;
  o.allocate = [&](const Shape& shape, DType dtype) {
    ++made;
    allocating_threads.insert(std::this_thread::get_id());
    const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    Tensor t = Tensor::adopt(shape, dtype, std::shared_ptr<std::byte>(new std::byte[bytes], [&](std::byte* p) {
                               ++released;
                               delete[] p;
                             }));
    allocated.insert(t.raw());
    return t;
  };
  {
    Loader threaded(*src, o);
    Loader plain_reference(*src, options(8, 0, 1, 0, true, 2));
    LoaderOptions ro = options(8, 0, 1, 0, true, 2);
    ro.output_u8 = true;
    Loader u8_reference(*src, ro);
    Tensor got;
    for (int64_t step = 0; step < 20; ++step) {
      ASSERT_EQ(threaded.next(got), step);
      EXPECT_TRUE(allocated.count(got.raw())) << "step " << step << " uses memory the hook did not make";
      u8_reference.next(want);
      EXPECT_TRUE(same_bytes(got, want)) << step;
    }
    EXPECT_EQ(made, 3 + 1);  // the window plus the caller's batch, recycled
  }
  // All made up front by the constructor, on this thread (a CUDA allocator needs its device current).
  EXPECT_EQ(allocating_threads, std::set<std::thread::id>{std::this_thread::get_id()});
  EXPECT_GT(made, 0);
  EXPECT_EQ(released, made);  // the loader and the caller's batch are gone: every buffer went back
}

TEST(LoaderU8, ASourceWithoutBytesIsRefused) {
  // A source that only knows floats keeps the default has_u8() false.
  struct FloatOnly final : ImageSource {
    std::string describe() const override { return "float-only test source"; }
    int64_t size() const override { return 16; }
    int channels() const override { return 1; }
    int resolution() const override { return 4; }
    void get(int64_t, float* out) const override { std::fill(out, out + 16, 0.f); }
  } src;
  LoaderOptions o = options(4, 0, 1, 1, false, 1);
  o.output_u8 = true;
  try {
    Loader loader(src, o);
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("float-only test source"), std::string::npos) << e.what();
  }
  EXPECT_THROW(src.get_many_u8(std::vector<int64_t>{0}, nullptr), UserError);
}

// ---- bounded memory, errors, shutdown ------------------------------------------------------------

// Wraps a source: counts get_many calls, can sleep in them and can fail on one batch of indices.
class InstrumentedSource final : public ImageSource {
 public:
  explicit InstrumentedSource(std::unique_ptr<ImageSource> inner) : inner_(std::move(inner)) {}
  std::string describe() const override { return "instrumented " + inner_->describe(); }
  int64_t size() const override { return inner_->size(); }
  int channels() const override { return inner_->channels(); }
  int resolution() const override { return inner_->resolution(); }
  void get(int64_t index, float* out) const override { inner_->get(index, out); }
  void get_many(std::span<const int64_t> indices, std::span<const uint8_t> flips, float* out) const override {
    const int call = calls.fetch_add(1);
    if (std::equal(indices.begin(), indices.end(), fail_on_indices.begin(), fail_on_indices.end()))
      runtime_error("read error in call {} (injected)", call);
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    inner_->get_many(indices, flips, out);
  }
  mutable std::atomic<int> calls{0};
  std::vector<int64_t> fail_on_indices;  // the batch whose read fails
  std::chrono::milliseconds delay{0};

 private:
  std::unique_ptr<ImageSource> inner_;
};

TEST(Loader, ReadsAtMostPrefetchBatchesAhead) {
  InstrumentedSource src(synthetic_source(100, 1, 32, 1));
  Loader loader(src, options(5, 0, 1, 3, false, 1));
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (src.calls.load() < 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(src.calls.load(), 3) << "the queue holds 3 batches; nothing more is read until one is taken";
  Tensor t;
  loader.next(t);
  const auto deadline2 = std::chrono::steady_clock::now() + 5s;
  while (src.calls.load() < 4 && std::chrono::steady_clock::now() < deadline2) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(src.calls.load(), 4);
}

TEST(Loader, BuffersAreRecycledWithinTheMemoryBudget) {
  auto src = synthetic_source(64, 1, 32, 1);
  for (int threads : {1, 2}) {
    const int prefetch = 3;
    Loader loader(*src, options(8, 0, 1, prefetch, false, 1, threads));
    std::set<const void*> buffers;
    Tensor t;
    for (int step = 0; step < 40; ++step) {
      loader.next(t);
      buffers.insert(t.raw());
    }
    EXPECT_LE(buffers.size(), static_cast<size_t>(prefetch + 1)) << threads << " threads";
    EXPECT_EQ(loader.memory_bytes_limit(), (prefetch + 1) * t.nbytes());
  }
}

TEST(Loader, AReadErrorReachesTheConsumerAtItsStep) {
  for (auto [prefetch, threads] : {std::pair{0, 1}, {3, 1}, {4, 3}}) {
    SCOPED_TRACE(fmt::format("prefetch {} threads {}", prefetch, threads));
    InstrumentedSource src(synthetic_source(64, 1, 32, 1));
    src.fail_on_indices = BatchPlan(64, 8, 1).indices(2, 0, 8);  // step 2 fails, whichever thread reads it
    Loader loader(src, options(8, 0, 1, prefetch, false, 1, threads));
    Tensor t;
    EXPECT_EQ(loader.next(t), 0);
    EXPECT_EQ(loader.next(t), 1);
    try {
      loader.next(t);
      FAIL() << "the injected error did not reach next()";
    } catch (const RuntimeError& e) {
      EXPECT_NE(std::string(e.what()).find("injected"), std::string::npos) << e.what();
    }
    EXPECT_THROW(loader.next(t), RuntimeError);  // stays failed
  }
}

TEST(Loader, StopsPromptlyWithAFullQueueOrAReadInFlight) {
  using clock = std::chrono::steady_clock;
  {
    auto src = synthetic_source(64, 1, 32, 1);
    auto loader = std::make_unique<Loader>(*src, options(8, 0, 1, 4, false, 1));
    std::this_thread::sleep_for(50ms);  // let it fill the queue and block
    const auto t0 = clock::now();
    loader.reset();
    EXPECT_LT(clock::now() - t0, 1s);
  }
  {
    InstrumentedSource src(synthetic_source(64, 1, 32, 1));
    src.delay = 200ms;
    auto loader = std::make_unique<Loader>(src, options(8, 0, 1, 4, false, 1));
    std::this_thread::sleep_for(20ms);  // a read is in flight
    const auto t0 = clock::now();
    loader.reset();
    EXPECT_LT(clock::now() - t0, 1s);  // waits for the current read only
    EXPECT_LE(src.calls.load(), 2);
  }
}

TEST(Loader, StopsAtTheEndStep) {
  InstrumentedSource src(synthetic_source(64, 1, 32, 1));
  LoaderOptions o = options(8, 0, 1, 4, false, 1);
  o.end_step = 3;
  Loader loader(src, o);
  Tensor t;
  for (int step = 0; step < 3; ++step) EXPECT_EQ(loader.next(t), step);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(src.calls.load(), 3);
  EXPECT_THROW(loader.next(t), RuntimeError);
}

TEST(Loader, MoreRanksThanImagesPerBatchIsAUserError) {
  auto src = synthetic_source(64, 1, 32, 1);
  EXPECT_THROW(Loader(*src, options(3, 0, 4, 1, false, 1)), UserError);
}

TEST(Hdf5Source, ADatasetThatDoesNotFitTheModelIsAUserError) {
  PatternDataset data(12, 8, 3);
  DataConfig c;
  c.source = "hdf5";
  c.path = data.path();
  EXPECT_THROW(open_image_source(c, 3, 32, 1), UserError);  // 8x8 images, 32x32 model
  EXPECT_THROW(open_image_source(c, 1, 8, 1), UserError);   // RGB images, gray model
  c.path = "";
  EXPECT_THROW(open_image_source(c, 3, 8, 1), UserError);   // no path
}

}  // namespace
}  // namespace gt
