// The CPU backend's GEMM: OpenBLAS sgemm on blocks of C, one block per OpenMP thread.
#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "nn/cpu/kernels.h"

namespace gt::cpu {
namespace {

// Below this many flops, splitting costs more than it saves.
constexpr double kParallelMinFlops = 4e6;
// Blocks are multiples of this many rows/columns, so each thread's part keeps whole SIMD panels.
constexpr int kBlockAlign = 16;

void blas_single_threaded() {
  // A function-local static initializes once, thread-safely.
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

void sgemm_block(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
              alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

void sgemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                  const float* B, int ldb, float beta, float* C, int ldc) {
  blas_single_threaded();
  sgemm_block(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc) {
  blas_single_threaded();
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const double flops = 2.0 * M * N * K;
  if (threads == 1 || flops < kParallelMinFlops) {
    sgemm_block(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the larger side of C; each thread's A (or B) panel is shared, read-only.
  const bool split_columns = N >= M;
  const int extent = split_columns ? N : M;
  int block = (extent + threads - 1) / threads;
  block = (block + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
  const int parts = std::max(1, (extent + block - 1) / block);
#pragma omp parallel for schedule(static) num_threads(parts)
  for (int part = 0; part < parts; ++part) {
    const int begin = part * block, size = std::min(block, extent - begin);
    if (split_columns) {
      const float* b = trans_b ? B + static_cast<int64_t>(begin) * ldb : B + begin;
      sgemm_block(trans_a, trans_b, M, size, K, alpha, A, lda, b, ldb, beta, C + begin, ldc);
    } else {
      const float* a = trans_a ? A + begin : A + static_cast<int64_t>(begin) * lda;
      sgemm_block(trans_a, trans_b, size, N, K, alpha, a, lda, B, ldb, beta, C + static_cast<int64_t>(begin) * ldc,
                  ldc);
    }
  }
}

}  // namespace gt::cpu
