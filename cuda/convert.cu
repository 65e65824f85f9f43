// Storage conversions of the GPU backend: element type (f32 <-> bf16), activation layout (NCHW <-> NHWC), and conv-weight packing for cuDNN and back.
#include <type_traits>

#include "core/error.h"
#include "cuda/kernel_util.cuh"
#include "cuda/kernels_typed.h"

namespace gt::cuda {
namespace {

using detail::grid_for;
using detail::kThreads;
using detail::load_f32;
using detail::store_f32;

template <class D, class S>
__global__ void convert_kernel(D* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_f32(dst + i, load_f32(src + i));
}

template <class S>
__global__ void accumulate_kernel(float* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    dst[i] += load_f32(src + i);
}

// Batched matrix transpose through a shared tile: each of `batches` planes is [rows, cols] in src and
// [cols, rows] in dst, so both the reads and the writes are coalesced. NCHW -> NHWC is rows = C,
// cols = HW; NHWC -> NCHW the reverse. Values pass through float (exact for f32 and bf16).
constexpr int kTile = 32, kTileRows = 8;

template <class D, class S>
__global__ void __launch_bounds__(kTile* kTileRows)
    transpose_kernel(D* dst, const S* src, int rows, int cols, int batches) {
  __shared__ float tile[kTile][kTile + 1];  // +1: no bank conflicts on the column reads
  const int64_t plane = static_cast<int64_t>(rows) * cols;
  const int c0 = static_cast<int>(blockIdx.x) * kTile, r0 = static_cast<int>(blockIdx.y) * kTile;
  for (int64_t b = blockIdx.z; b < batches; b += gridDim.z) {
    const S* s = src + b * plane;
    D* d = dst + b * plane;
    for (int k = threadIdx.y; k < kTile; k += kTileRows) {
      const int r = r0 + k, c = c0 + static_cast<int>(threadIdx.x);
      if (r < rows && c < cols) tile[k][threadIdx.x] = load_f32(s + static_cast<int64_t>(r) * cols + c);
    }
    __syncthreads();
    for (int k = threadIdx.y; k < kTile; k += kTileRows) {
      const int c = c0 + k, r = r0 + static_cast<int>(threadIdx.x);
      if (c < cols && r < rows) store_f32(d + static_cast<int64_t>(c) * rows + r, tile[threadIdx.x][k]);
    }
    __syncthreads();  // the tile is refilled for the next plane
  }
}

// dst_kcrs[i] += float(src[...]) with src packed KCRS (NCHW) or KRSC (NHWC); one thread per KCRS value.
template <class S, Layout L>
__global__ void accumulate_weight_kernel(float* dst, const S* src, int64_t total, int C, int RS) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t at = i;
    if constexpr (L == Layout::nhwc) {
      const int64_t k = i / (static_cast<int64_t>(C) * RS);
      const int c = static_cast<int>((i / RS) % C), rs = static_cast<int>(i % RS);
      at = (k * RS + rs) * C + c;
    }
    dst[i] += load_f32(src + at);
  }
}

template <class F>
void with_types(DataType a, DataType b, F&& f) {
  detail::with_type(a, [&](auto ta) { detail::with_type(b, [&](auto tb) { f(ta, tb); }); });
}

}  // namespace

void convert(void* dst, DataType dst_type, const void* src, DataType src_type, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  if (dst_type == src_type) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * data_type_size(dst_type), cudaMemcpyDeviceToDevice,
                               stream));
    return;
  }
  with_types(dst_type, src_type, [&](auto d, auto s) {
    using D = std::remove_pointer_t<decltype(d)>;
    using S = std::remove_pointer_t<decltype(s)>;
    convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<D*>(dst), static_cast<const S*>(src), n);
  });
  CUDA_CHECK_LAUNCH();
}

void accumulate_f32(float* dst, const void* src, DataType src_type, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  detail::with_type(src_type, [&](auto s) {
    using S = std::remove_pointer_t<decltype(s)>;
    accumulate_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, static_cast<const S*>(src), n);
  });
  CUDA_CHECK_LAUNCH();
}

void convert_activations(void* dst, const ActFormat& to, const void* src, const ActFormat& from, int N, int C, int H,
                         int W, cudaStream_t stream) {
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t total = static_cast<int64_t>(N) * C * HW;
  if (total <= 0) return;
  if (to.layout == from.layout) return convert(dst, to.type, src, from.type, total, stream);
  GT_CHECK(dst != src, "convert_activations cannot change the layout in place ([{}, {}, {}, {}])", N, C, H, W);
  // NCHW planes are [C, HW]; NHWC planes [HW, C].
  const bool to_nhwc = to.layout == Layout::nhwc;
  const int64_t rows = to_nhwc ? C : HW, cols = to_nhwc ? HW : C;
  const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
  GT_CHECK(row_tiles <= 65535 && HW <= (int64_t{1} << 31) - 1,
           "convert_activations: a plane of [{}, {}, {}, {}] is too large for one grid", N, C, H, W);
  const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(row_tiles),
                  static_cast<unsigned>(N < 65535 ? N : 65535));
  with_types(to.type, from.type, [&](auto d, auto s) {
    using D = std::remove_pointer_t<decltype(d)>;
    using S = std::remove_pointer_t<decltype(s)>;
    transpose_kernel<<<grid, dim3(kTile, kTileRows), 0, stream>>>(
        static_cast<D*>(dst), static_cast<const S*>(src), static_cast<int>(rows), static_cast<int>(cols), N);
  });
  CUDA_CHECK_LAUNCH();
}

// KCRS is an NCHW tensor [K, C, R, S] and KRSC the same tensor in NHWC: packing is a layout conversion.
void pack_conv_weight(void* dst, const float* src_kcrs, int K, int C, int R, int S, const ActFormat& fmt,
                      cudaStream_t stream) {
  convert_activations(dst, fmt, src_kcrs, ActFormat{DataType::f32, Layout::nchw}, K, C, R, S, stream);
}

void accumulate_conv_weight_grad(float* dst_kcrs, const void* src, int K, int C, int R, int S, const ActFormat& fmt,
                                 cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(K) * C * R * S;
  if (total <= 0) return;
  detail::with_format(fmt, [&](auto t, auto l) {
    using T = std::remove_pointer_t<decltype(t)>;
    accumulate_weight_kernel<T, decltype(l)::value>
        <<<grid_for(total), kThreads, 0, stream>>>(dst_kcrs, static_cast<const T*>(src), total, C, R * S);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace gt::cuda
