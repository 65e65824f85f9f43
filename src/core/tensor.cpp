// Tensor storage and helpers.
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

namespace gt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::u8: return 1;
    case DType::i64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::u8: return "u8";
    case DType::i64: return "i64";
  }
  return "?";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

Tensor::Tensor(Shape shape, DType dtype) : shape_(std::move(shape)), dtype_(dtype) {
  for (int64_t d : shape_) GT_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape_));
  size_t bytes = nbytes();
  size_t alloc = ((bytes + 63) / 64) * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) runtime_error("out of memory allocating {} bytes for tensor {}", alloc, shape_str(shape_));
  std::memset(p, 0, alloc);
  buf_ = std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
}

Tensor Tensor::full(Shape shape, float value) {
  Tensor t(std::move(shape));
  t.fill(value);
  return t;
}

Tensor Tensor::from(Shape shape, const std::vector<float>& values) {
  Tensor t(std::move(shape));
  GT_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "{} values for shape {}", values.size(), t.str());
  std::memcpy(t.f32(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::adopt(Shape shape, DType dtype, std::shared_ptr<std::byte> buffer) {
  for (int64_t d : shape) GT_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
  GT_CHECK(buffer != nullptr, "Tensor::adopt of {}{} with no buffer", dtype_name(dtype), shape_str(shape));
  GT_CHECK(reinterpret_cast<uintptr_t>(buffer.get()) % dtype_size(dtype) == 0,
           "Tensor::adopt: buffer at {} is not aligned for {}", static_cast<const void*>(buffer.get()),
           dtype_name(dtype));
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.buf_ = std::move(buffer);
  return t;
}

Tensor Tensor::borrow(Shape shape, DType dtype, Device device, void* data) {
  for (int64_t d : shape) GT_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
  GT_CHECK(data != nullptr || shape_numel(shape) == 0, "Tensor::borrow of {}{} with no memory", dtype_name(dtype),
           shape_str(shape));
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.buf_ = std::shared_ptr<std::byte>(static_cast<std::byte*>(data), [](std::byte*) {});
  return t;
}

Tensor Tensor::view(int64_t offset, Shape shape) const {
  GT_CHECK(defined(), "view of an undefined tensor");
  GT_CHECK(offset >= 0 && offset + shape_numel(shape) <= numel(), "view of {} elements at {} in {}",
           shape_numel(shape), offset, str());
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.buf_ = std::shared_ptr<std::byte>(buf_, buf_.get() + static_cast<size_t>(offset) * dtype_size(dtype_));
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  int j = i < 0 ? n + i : i;
  GT_CHECK(j >= 0 && j < n, "dim {} of tensor {}", i, str());
  return shape_[j];
}

std::string Tensor::str() const { return std::string(dtype_name(dtype_)) + shape_str(shape_); }

Tensor Tensor::reshaped(Shape shape) const {
  GT_CHECK(shape_numel(shape) == numel(), "cannot reshape {} to {}", str(), shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  if (!defined()) return Tensor();
  GT_CHECK(device_ == Device::cpu, "clone of {} on another device", str());
  Tensor t(shape_, dtype_);
  std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

void Tensor::zero() {
  GT_CHECK(device_ == Device::cpu, "zero() of {} on another device", str());
  if (defined()) std::memset(raw(), 0, nbytes());
}

void Tensor::fill(float v) {
  float* p = f32();
  int64_t n = numel();
  for (int64_t i = 0; i < n; ++i) p[i] = v;
}

void Tensor::copy_from(const Tensor& src) {
  GT_CHECK(src.numel() == numel() && src.dtype() == dtype_, "copy {} into {}", src.str(), str());
  GT_CHECK(device_ == Device::cpu && src.device_ == Device::cpu, "copy_from between devices ({} into {})", src.str(),
           str());
  std::memcpy(raw(), src.raw(), nbytes());
}

}  // namespace gt
