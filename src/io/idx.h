// Reader for the IDX files of MNIST and Fashion-MNIST (plain or gzip-compressed).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gt {

struct IdxImages {
  int64_t count = 0;
  int height = 0, width = 0;
  std::vector<uint8_t> pixels;  // [count, height, width]
};

// Reads an idx3-ubyte image file (".gz" or not). Bad or missing files raise UserError naming the file.
IdxImages read_idx_images(const std::string& path);
// Reads an idx1-ubyte label file.
std::vector<uint8_t> read_idx_labels(const std::string& path);

// Finds the training images of Fashion-MNIST in a directory (train-images-idx3-ubyte[.gz]).
std::string fashion_mnist_train_images(const std::string& dir);
constexpr const char* kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";

}  // namespace gt
