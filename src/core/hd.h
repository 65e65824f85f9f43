// GT_HD marks inline math that both backends call, so CPU and CUDA compute the same thing.
#pragma once
#if defined(__CUDACC__)
#define GT_HD __host__ __device__ __forceinline__
#else
#define GT_HD inline
#endif
