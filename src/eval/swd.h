// Sliced Wasserstein Distance between two image sets (Karras et al. 2018, appendix D): Laplacian-pyramid 7x7 patch descriptors and random 1-D projections.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gt {

// The metric's parameters; the defaults are those of the Progressive GAN paper's code.
struct SwdOptions {
  int descriptors_per_image = 128;  // 7x7 patches drawn from each image at each pyramid level
  int dir_repeats = 4;              // repeats x dirs_per_repeat random directions per level (4 x 128 = 512)
  int dirs_per_repeat = 128;
  uint64_t seed = 0;                // keys the patch positions and the directions (Philox, core/rng.h)
};

inline constexpr int kSwdPatch = 7;           // patch side: a descriptor is 7 * 7 * C values
inline constexpr int kSwdMinResolution = 16;  // the coarsest pyramid level

// Number of pyramid levels of a square image of side `resolution`: R, R/2, ... down to the last one
// >= 16 (64 -> 3 levels: 64, 32, 16). 0 when R < 16.
int swd_level_count(int resolution);
// UserError with a sentence naming `what` when height x width images cannot be measured: not square,
// smaller than 16x16, or a level that must be halved has an odd side.
void swd_check_image_size(int height, int width, const std::string& what);

// --- The Laplacian pyramid of one image plane (size x size floats, row-major) -----------------------
// Gaussian 5x5 kernel [1,4,6,4,1]/16 in each direction, borders mirrored about the edge pixel
// (d c b | a b c d | c b a), as cv2.pyrDown/pyrUp and the paper's code.
// in [size x size] (size even) -> out [size/2 x size/2]: blur, keep even rows and columns.
void swd_pyr_down(const float* in, int size, float* out);
// in [size x size] -> out [2size x 2size]: zeros between the samples, blur with 4x the kernel.
void swd_pyr_up(const float* in, int size, float* out);
// levels[0] = plane - up(down(plane)), ..., levels[L-1] = the plane blurred and halved L-1 times.
std::vector<std::vector<float>> swd_laplacian_pyramid(const float* plane, int size, int levels);
// The plane back from its pyramid: up(coarsest) + next level, repeated.
std::vector<float> swd_reconstruct(const std::vector<std::vector<float>>& levels, int size);

// --- Descriptors ----------------------------------------------------------------------------------
// One image set's descriptors, level by level: level l is a row-major matrix [images *
// descriptors_per_image, 7*7*C], each row a patch of that level laid out (channel, y, x). Image i of
// the set (numbered in the order added, from first_image on) draws its patch positions from (seed,
// level, first_image + i) alone, so a set built batch by batch, or share by share, equals one built at once.
struct SwdDescriptors {
  int resolution = 0, channels = 0;
  int descriptors_per_image = 0;
  int64_t images = 0;
  // The number of the set's first image in a larger set that is measured in shares (one rank's part of
  // the images): patch positions follow the larger set's numbering, so the shares' rows put together
  // equal the rows of the whole set built at once.
  int64_t first_image = 0;
  bool normalized = false;  // swd_normalize ran; no more images may be added
  std::vector<std::vector<float>> levels;

  int level_count() const { return static_cast<int>(levels.size()); }
  int level_resolution(int level) const { return resolution >> level; }
  int dim() const { return kSwdPatch * kSwdPatch * channels; }
  int64_t rows() const { return images * descriptors_per_image; }
};

// An empty set for square images of side `resolution` (swd_check_image_size) with `channels` channels.
SwdDescriptors swd_descriptor_set(int resolution, int channels, const SwdOptions& options);
// Adds `count` images as the dataset stores them: uint8 NHWC [count, R, R, C].
void swd_add_images_u8(SwdDescriptors& set, const uint8_t* nhwc, int64_t count, const SwdOptions& options);
// Adds `count` images as G makes them: float NCHW [count, C, R, R] in [-1, 1], first turned into the
// bytes a dataset would hold (io/image.h float_to_pixel: the inverse of v / 127.5 - 1), so real and
// generated images are measured alike.
void swd_add_images_f32(SwdDescriptors& set, const float* nchw, int64_t count, const SwdOptions& options);
// Per level and channel: subtracts the mean and divides by the standard deviation (population) over
// every descriptor of the set and every patch position; a channel with no spread is only centred.
void swd_normalize(SwdDescriptors& set);

// --- The distance -----------------------------------------------------------------------------------
// The random unit directions of one level: [dir_repeats * dirs_per_repeat, dim] row-major, standard
// normal draws keyed by (seed, level, direction) scaled to length 1 (in double, then rounded to float).
std::vector<float> swd_directions(int level, int dim, const SwdOptions& options);

struct SwdResult {
  std::vector<int> resolutions;  // the side of each level, finest first
  std::vector<double> per_level;  // SWD of each level (not scaled; the paper prints x1e3)
  double average = 0;             // mean of per_level
};

// SWD of two normalized sets of the same resolution, channels and number of descriptors. Per level:
// project both sets on every direction (sgemm), sort each direction's projections, and average
// |a_sorted - b_sorted| over descriptors and directions.
SwdResult swd_distance(const SwdDescriptors& a, const SwdDescriptors& b, const SwdOptions& options);

// The same in parts, so that ranks can share the directions. Directions go in blocks of
// kSwdDirectionBlock (one sgemm each); a share is whole blocks, so a direction's projections, and its
// mean, are the same bits whichever share computes it.
inline constexpr int kSwdDirectionBlock = 16;
int swd_direction_blocks(const SwdOptions& options);
// Per level, the mean |a_sorted - b_sorted| of each direction in blocks [first_block, first_block + blocks)
// (clipped to the directions there are): [level][direction - first_block * kSwdDirectionBlock].
std::vector<std::vector<double>> swd_direction_means(const SwdDescriptors& a, const SwdDescriptors& b,
                                                     const SwdOptions& options, int first_block, int blocks);
// The distance from every direction's mean ([level][direction], all directions in order), summed as
// swd_distance sums them.
SwdResult swd_from_direction_means(const SwdDescriptors& a, const std::vector<std::vector<double>>& means);

}  // namespace gt
