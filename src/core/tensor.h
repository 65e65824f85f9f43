// Tensor: a shape, a dtype, a device and an owning (shared, 64-byte aligned) buffer. Views share the buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace gt {

enum class DType : uint8_t { f32, bf16, u8, i64 };
enum class Device : uint8_t { cpu, cuda };
using Shape = std::vector<int64_t>;

size_t dtype_size(DType t);
const char* dtype_name(DType t);
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // A zero-filled tensor on the CPU (the only device this class allocates; the CUDA backend has its arena).
  explicit Tensor(Shape shape, DType dtype = DType::f32);

  static Tensor zeros(Shape shape, DType dtype = DType::f32) { return Tensor(std::move(shape), dtype); }
  static Tensor full(Shape shape, float value);
  static Tensor from(Shape shape, const std::vector<float>& values);
  // A CPU tensor over memory the caller allocated (page-locked host memory for GPU uploads, say):
  // buffer must hold at least nbytes() of the shape and dtype, suitably aligned for dtype, and its
  // deleter is what frees it, when the last tensor or view sharing it goes. Contents are left as they are.
  static Tensor adopt(Shape shape, DType dtype, std::shared_ptr<std::byte> buffer);
  // A tensor over memory something else owns (device memory from an arena, say): nothing is freed
  // when it goes, so the owner keeps the memory alive while the tensor is used.
  static Tensor borrow(Shape shape, DType dtype, Device device, void* data);

  bool defined() const { return buf_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  std::string str() const;  // "f32[2, 3, 4]"

  float* f32() { return typed<float>(DType::f32); }
  const float* f32() const { return const_cast<Tensor*>(this)->typed<float>(DType::f32); }
  uint8_t* u8() { return typed<uint8_t>(DType::u8); }
  const uint8_t* u8() const { return const_cast<Tensor*>(this)->typed<uint8_t>(DType::u8); }
  int64_t* i64() { return typed<int64_t>(DType::i64); }
  const int64_t* i64() const { return const_cast<Tensor*>(this)->typed<int64_t>(DType::i64); }
  void* raw() { return buf_.get(); }
  const void* raw() const { return buf_.get(); }

  Tensor reshaped(Shape shape) const;  // same buffer, new shape (numel must match)
  // shape_numel(shape) elements of this tensor's buffer from element `offset` on, as a tensor of that
  // shape (same dtype and device); it shares ownership of the buffer.
  Tensor view(int64_t offset, Shape shape) const;
  Tensor clone() const;                // deep copy (CPU)
  void zero();                         // CPU
  void fill(float v);
  void copy_from(const Tensor& src);   // same numel and dtype (CPU)
  bool same_shape(const Tensor& o) const { return shape_ == o.shape_; }

 private:
  template <class T>
  T* typed(DType want) {
    GT_CHECK(dtype_ == want, "tensor {} accessed as {}", str(), dtype_name(want));
    GT_CHECK(device_ == Device::cpu, "tensor {} is not on the CPU", str());
    return reinterpret_cast<T*>(buf_.get());
  }

  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
  std::shared_ptr<std::byte> buf_;
};

}  // namespace gt
