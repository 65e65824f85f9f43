// Sliced Wasserstein Distance: the pyramid, the patch descriptors (Philox-keyed positions), and the sorted projections (OpenBLAS sgemm, a radix sort, OpenMP over directions).
#include "eval/swd.h"

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "io/image.h"

namespace gt {
namespace {

constexpr float kBlur[5] = {1.f / 16, 4.f / 16, 6.f / 16, 4.f / 16, 1.f / 16};
constexpr int kHalfPatch = kSwdPatch / 2;
// Directions are projected kSwdDirectionBlock at a time (swd.h): one sgemm each, the unit OpenMP shares
// out, and projection buffers of 2 * 16 * rows floats per thread.

// The order-preserving 32-bit key of a float (not NaN): negative floats reversed below the positive ones.
uint32_t float_key(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  return u ^ ((u >> 31) ? 0xFFFFFFFFu : 0x80000000u);
}
float key_float(uint32_t k) { return std::bit_cast<float>(k ^ ((k >> 31) ? 0x80000000u : 0xFFFFFFFFu)); }

// Sorts v[0, n) ascending, as std::sort does values that are not NaN (the sorted values are the same
// whatever the algorithm, so the distance is too): an LSD radix sort over float_key in 3 passes of 11
// bits, through `keys` and `spare` (n each). A measurement sorts 2 x 512 projections of every level's
// descriptors (2048 images: 262,144 each), which std::sort made most of the time of a measurement;
// this sort takes about a tenth of std::sort's time on such a row (docs/benchmarks.md).
void sort_projections(float* v, int64_t n, std::vector<uint32_t>& keys, std::vector<uint32_t>& spare) {
  constexpr int kBits = 11, kBuckets = 1 << kBits, kPasses = 3;
  keys.resize(static_cast<size_t>(n));
  spare.resize(static_cast<size_t>(n));
  int64_t count[kPasses][kBuckets] = {};
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t k = float_key(v[i]);
    keys[static_cast<size_t>(i)] = k;
    for (int p = 0; p < kPasses; ++p) ++count[p][(k >> (p * kBits)) & (kBuckets - 1)];
  }
  uint32_t* from = keys.data();
  uint32_t* to = spare.data();
  for (int p = 0; p < kPasses; ++p) {
    int64_t at = 0;
    for (int64_t& c : count[p]) {
      const int64_t here = c;
      c = at;
      at += here;
    }
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t k = from[i];
      to[count[p][(k >> (p * kBits)) & (kBuckets - 1)]++] = k;
    }
    std::swap(from, to);
  }
  for (int64_t i = 0; i < n; ++i) v[i] = key_float(from[i]);
}

// scipy.ndimage's "mirror" border: reflect about the edge sample, which is not repeated.
int mirror(int i, int n) {
  if (i < 0) i = -i;
  if (i >= n) i = 2 * (n - 1) - i;
  return i;
}

// out = in convolved with gain * kBlur along x, then along y (size x size, mirrored borders).
void blur(const float* in, int size, float gain, float* out) {
  std::vector<float> rows(static_cast<size_t>(size) * size);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      float s = 0;
      for (int t = -2; t <= 2; ++t) s += gain * kBlur[t + 2] * in[y * size + mirror(x + t, size)];
      rows[static_cast<size_t>(y) * size + x] = s;
    }
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      float s = 0;
      for (int t = -2; t <= 2; ++t) s += gain * kBlur[t + 2] * rows[static_cast<size_t>(mirror(y + t, size)) * size + x];
      out[static_cast<size_t>(y) * size + x] = s;
    }
}

// A patch coordinate in [3, side - 3) from 32 random bits (multiply-shift; the bias, below side / 2^32,
// is far under anything the metric can see).
int patch_coordinate(uint32_t bits, int side) {
  const auto range = static_cast<uint64_t>(side - 2 * kHalfPatch);
  return kHalfPatch + static_cast<int>((static_cast<uint64_t>(bits) * range) >> 32);
}

// Descriptors of image `image` of the set, given as float planes [C][R][R] of byte values 0..255, into
// rows image * per_image ... of every level.
void add_image(SwdDescriptors& set, const std::vector<float>& planes, int64_t image, uint64_t seed) {
  const int R = set.resolution, C = set.channels, L = set.level_count(), P = set.descriptors_per_image;
  std::vector<std::vector<std::vector<float>>> pyramids(C);  // [channel][level]
  for (int c = 0; c < C; ++c) pyramids[c] = swd_laplacian_pyramid(planes.data() + static_cast<size_t>(c) * R * R, R, L);
  uint32_t k0, k1;
  rng_key(seed, RngStream::eval_patches, &k0, &k1);
  const int dim = set.dim();
  for (int l = 0; l < L; ++l) {
    const int side = R >> l;
    float* out = set.levels[l].data() + static_cast<size_t>(image - set.first_image) * P * dim;
    Philox4 words{};
    for (int p = 0; p < P; ++p) {
      // Counter (image lo, image hi, level, p / 2): two patches per Philox block, x then y.
      if (p % 2 == 0)
        words = philox4x32_10(Philox4{{static_cast<uint32_t>(image), static_cast<uint32_t>(image >> 32),
                                       static_cast<uint32_t>(l), static_cast<uint32_t>(p / 2)}},
                              k0, k1);
      const int x = patch_coordinate(words.v[2 * (p % 2)], side);
      const int y = patch_coordinate(words.v[2 * (p % 2) + 1], side);
      float* row = out + static_cast<size_t>(p) * dim;
      for (int c = 0; c < C; ++c) {
        const float* level = pyramids[c][l].data();
        for (int dy = 0; dy < kSwdPatch; ++dy)
          for (int dx = 0; dx < kSwdPatch; ++dx)
            *row++ = level[(y - kHalfPatch + dy) * side + (x - kHalfPatch + dx)];
      }
    }
  }
}

// Grows every level for `count` more images; returns the first new image's row index.
int64_t grow(SwdDescriptors& set, int64_t count) {
  GT_CHECK(!set.normalized, "swd: images added to a set after swd_normalize");
  GT_CHECK(count >= 0, "swd: negative image count {}", count);
  const int64_t first = set.images;
  set.images += count;
  for (auto& level : set.levels) level.resize(static_cast<size_t>(set.rows()) * set.dim());
  return first;
}

void blas_single_threaded() {
  // Each OpenMP thread runs its own sgemm (as nn/cpu/gemm.cpp does); OpenBLAS's own threads would compete.
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

}  // namespace

int swd_level_count(int resolution) {
  int levels = 0;
  for (int r = resolution; r >= kSwdMinResolution; r /= 2) ++levels;
  return levels;
}

void swd_check_image_size(int height, int width, const std::string& what) {
  if (height != width) user_error("{} has {}x{} images; the SWD metric needs square images", what, height, width);
  if (height < kSwdMinResolution)
    user_error("{} has {}x{} images; the SWD metric needs at least {}x{} (its coarsest pyramid level)", what, height,
               width, kSwdMinResolution, kSwdMinResolution);
  const int levels = swd_level_count(height);
  for (int l = 0; l + 1 < levels; ++l)
    if ((height >> l) % 2 != 0)
      user_error("{} has {}x{} images; the SWD pyramid halves them down to {}x{}, so {} must be divisible by {}", what,
                 height, width, height >> (levels - 1), height >> (levels - 1), height, 1 << (levels - 1));
}

void swd_pyr_down(const float* in, int size, float* out) {
  GT_CHECK(size >= 3 && size % 2 == 0, "swd_pyr_down: size {} must be even and >= 3", size);
  std::vector<float> blurred(static_cast<size_t>(size) * size);
  blur(in, size, 1.f, blurred.data());
  const int half = size / 2;
  for (int y = 0; y < half; ++y)
    for (int x = 0; x < half; ++x) out[y * half + x] = blurred[static_cast<size_t>(2 * y) * size + 2 * x];
}

void swd_pyr_up(const float* in, int size, float* out) {
  const int full = 2 * size;
  std::vector<float> spread(static_cast<size_t>(full) * full, 0.f);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) spread[static_cast<size_t>(2 * y) * full + 2 * x] = in[y * size + x];
  blur(spread.data(), full, 2.f, out);  // 2 per direction: the kernel's weight of 4 over the zeros
}

std::vector<std::vector<float>> swd_laplacian_pyramid(const float* plane, int size, int levels) {
  GT_CHECK(levels >= 1, "swd_laplacian_pyramid: {} levels", levels);
  std::vector<std::vector<float>> out;
  out.emplace_back(plane, plane + static_cast<size_t>(size) * size);
  for (int l = 1; l < levels; ++l) {
    const int side = size >> (l - 1);
    std::vector<float> down(static_cast<size_t>(side / 2) * (side / 2));
    swd_pyr_down(out.back().data(), side, down.data());
    std::vector<float> up(static_cast<size_t>(side) * side);
    swd_pyr_up(down.data(), side / 2, up.data());
    for (size_t i = 0; i < up.size(); ++i) out.back()[i] -= up[i];
    out.push_back(std::move(down));
  }
  return out;
}

std::vector<float> swd_reconstruct(const std::vector<std::vector<float>>& levels, int size) {
  const int L = static_cast<int>(levels.size());
  std::vector<float> image = levels.back();
  for (int l = L - 2; l >= 0; --l) {
    const int side = size >> l;
    std::vector<float> up(static_cast<size_t>(side) * side);
    swd_pyr_up(image.data(), side / 2, up.data());
    for (size_t i = 0; i < up.size(); ++i) up[i] += levels[l][i];
    image = std::move(up);
  }
  return image;
}

SwdDescriptors swd_descriptor_set(int resolution, int channels, const SwdOptions& options) {
  swd_check_image_size(resolution, resolution, "swd_descriptor_set");
  GT_CHECK(channels >= 1, "swd: {} channels", channels);
  GT_CHECK(options.descriptors_per_image >= 1 && options.dir_repeats >= 1 && options.dirs_per_repeat >= 1,
           "swd: bad options ({} descriptors per image, {} x {} directions)", options.descriptors_per_image,
           options.dir_repeats, options.dirs_per_repeat);
  SwdDescriptors set;
  set.resolution = resolution;
  set.channels = channels;
  set.descriptors_per_image = options.descriptors_per_image;
  set.levels.resize(swd_level_count(resolution));
  return set;
}

void swd_add_images_u8(SwdDescriptors& set, const uint8_t* nhwc, int64_t count, const SwdOptions& options) {
  GT_CHECK(set.descriptors_per_image == options.descriptors_per_image, "swd: options differ from the set's");
  const int64_t first = grow(set, count);
  const int R = set.resolution, C = set.channels;
  const size_t plane = static_cast<size_t>(R) * R;
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* image = nhwc + static_cast<size_t>(i) * plane * C;
    std::vector<float> planes(plane * C);
    for (size_t p = 0; p < plane; ++p)
      for (int c = 0; c < C; ++c) planes[c * plane + p] = image[p * C + c];
    add_image(set, planes, set.first_image + first + i, options.seed);
  }
}

void swd_add_images_f32(SwdDescriptors& set, const float* nchw, int64_t count, const SwdOptions& options) {
  GT_CHECK(set.descriptors_per_image == options.descriptors_per_image, "swd: options differ from the set's");
  const int64_t first = grow(set, count);
  const size_t values = static_cast<size_t>(set.resolution) * set.resolution * set.channels;
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t i = 0; i < count; ++i) {
    const float* image = nchw + static_cast<size_t>(i) * values;
    std::vector<float> planes(values);
    for (size_t v = 0; v < values; ++v) planes[v] = float_to_pixel(image[v]);
    add_image(set, planes, set.first_image + first + i, options.seed);
  }
}

void swd_normalize(SwdDescriptors& set) {
  GT_CHECK(!set.normalized, "swd: the set is already normalized");
  GT_CHECK(set.rows() > 0, "swd: normalizing an empty set");
  const int C = set.channels, dim = set.dim(), per_channel = kSwdPatch * kSwdPatch;
  const int64_t rows = set.rows();
  for (auto& level : set.levels) {
    for (int c = 0; c < C; ++c) {
      double sum = 0, sum_sq = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const float* v = level.data() + static_cast<size_t>(r) * dim + c * per_channel;
        for (int k = 0; k < per_channel; ++k) sum += v[k];
      }
      const double n = static_cast<double>(rows) * per_channel;
      const double mean = sum / n;
      for (int64_t r = 0; r < rows; ++r) {
        const float* v = level.data() + static_cast<size_t>(r) * dim + c * per_channel;
        for (int k = 0; k < per_channel; ++k) sum_sq += (v[k] - mean) * (v[k] - mean);
      }
      const double std = std::sqrt(sum_sq / n);
      const double scale = std > 0 ? 1.0 / std : 1.0;
      for (int64_t r = 0; r < rows; ++r) {
        float* v = level.data() + static_cast<size_t>(r) * dim + c * per_channel;
        for (int k = 0; k < per_channel; ++k) v[k] = static_cast<float>((v[k] - mean) * scale);
      }
    }
  }
  set.normalized = true;
}

std::vector<float> swd_directions(int level, int dim, const SwdOptions& options) {
  const int64_t count = static_cast<int64_t>(options.dir_repeats) * options.dirs_per_repeat;
  std::vector<float> dirs(static_cast<size_t>(count) * dim);
  fill_normal(dirs.data(), static_cast<int64_t>(dirs.size()), 0.f, 1.f, options.seed, RngStream::eval_directions,
              static_cast<uint64_t>(level) * static_cast<uint64_t>(count) * static_cast<uint64_t>(dim));
  for (int64_t d = 0; d < count; ++d) {
    float* v = dirs.data() + static_cast<size_t>(d) * dim;
    double norm = 0;
    for (int k = 0; k < dim; ++k) norm += static_cast<double>(v[k]) * v[k];
    norm = std::sqrt(norm);
    for (int k = 0; k < dim; ++k) v[k] = static_cast<float>(v[k] / norm);
  }
  return dirs;
}

int swd_direction_blocks(const SwdOptions& options) {
  return (options.dir_repeats * options.dirs_per_repeat + kSwdDirectionBlock - 1) / kSwdDirectionBlock;
}

std::vector<std::vector<double>> swd_direction_means(const SwdDescriptors& a, const SwdDescriptors& b,
                                                     const SwdOptions& options, int first_block, int blocks) {
  GT_CHECK(a.normalized && b.normalized, "swd_distance needs normalized sets (swd_normalize)");
  GT_CHECK(a.resolution == b.resolution && a.channels == b.channels && a.level_count() == b.level_count(),
           "swd_distance: sets of {}x{}x{} and {}x{}x{} images", a.resolution, a.resolution, a.channels, b.resolution,
           b.resolution, b.channels);
  GT_CHECK(a.rows() == b.rows(), "swd_distance: the sets hold {} and {} descriptors; they must hold as many",
           a.rows(), b.rows());
  blas_single_threaded();
  const int dim = a.dim();
  const int64_t rows = a.rows();
  GT_CHECK(rows <= INT32_MAX, "swd_distance: {} descriptors exceed what one sgemm takes", rows);
  const int directions = options.dir_repeats * options.dirs_per_repeat;
  const int first = std::min(first_block * kSwdDirectionBlock, directions);
  const int end = std::min((first_block + std::max(blocks, 0)) * kSwdDirectionBlock, directions);
  const int chunks = (end - first + kSwdDirectionBlock - 1) / kSwdDirectionBlock;
  std::vector<std::vector<double>> means(static_cast<size_t>(a.level_count()));
  for (int l = 0; l < a.level_count(); ++l) {
    const std::vector<float> dirs = swd_directions(l, dim, options);
    std::vector<double>& per_direction = means[static_cast<size_t>(l)];  // mean |a - b| of each direction
    per_direction.assign(static_cast<size_t>(end - first), 0.0);
#pragma omp parallel
    {
      std::vector<float> pa(static_cast<size_t>(kSwdDirectionBlock) * rows), pb(pa.size());
      std::vector<uint32_t> keys, spare;
#pragma omp for schedule(dynamic, 1)
      for (int chunk = 0; chunk < chunks; ++chunk) {
        const int d0 = first + chunk * kSwdDirectionBlock;
        const int nd = std::min(kSwdDirectionBlock, end - d0);
        const float* d = dirs.data() + static_cast<size_t>(d0) * dim;
        // [nd, rows] = dirs[nd, dim] x set[rows, dim]^T: each direction's projections are one contiguous row.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nd, static_cast<int>(rows), dim, 1.f, d, dim,
                    a.levels[l].data(), dim, 0.f, pa.data(), static_cast<int>(rows));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nd, static_cast<int>(rows), dim, 1.f, d, dim,
                    b.levels[l].data(), dim, 0.f, pb.data(), static_cast<int>(rows));
        for (int k = 0; k < nd; ++k) {
          float* ra = pa.data() + static_cast<size_t>(k) * rows;
          float* rb = pb.data() + static_cast<size_t>(k) * rows;
          sort_projections(ra, rows, keys, spare);
          sort_projections(rb, rows, keys, spare);
          double sum = 0;
          for (int64_t r = 0; r < rows; ++r) sum += std::fabs(static_cast<double>(ra[r]) - rb[r]);
          per_direction[static_cast<size_t>(d0 - first + k)] = sum / static_cast<double>(rows);
        }
      }
    }
  }
  return means;
}

SwdResult swd_from_direction_means(const SwdDescriptors& a, const std::vector<std::vector<double>>& means) {
  GT_CHECK(static_cast<int>(means.size()) == a.level_count(), "swd: {} levels of direction means for {} levels",
           means.size(), a.level_count());
  SwdResult result;
  for (int l = 0; l < a.level_count(); ++l) {
    const std::vector<double>& per_direction = means[static_cast<size_t>(l)];
    GT_CHECK(!per_direction.empty(), "swd: no direction means for level {}", l);
    double level_sum = 0;
    for (double v : per_direction) level_sum += v;
    result.resolutions.push_back(a.level_resolution(l));
    result.per_level.push_back(level_sum / static_cast<double>(per_direction.size()));
  }
  double total = 0;
  for (double v : result.per_level) total += v;
  result.average = total / static_cast<double>(result.per_level.size());
  return result;
}

SwdResult swd_distance(const SwdDescriptors& a, const SwdDescriptors& b, const SwdOptions& options) {
  return swd_from_direction_means(a, swd_direction_means(a, b, options, 0, swd_direction_blocks(options)));
}

}  // namespace gt
