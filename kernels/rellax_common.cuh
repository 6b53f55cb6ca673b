// rellax_common.cuh: helpers shared by every kernel in kernels/.
//
// Compiled two ways: by nvcc (CMake, kernels/tests) and by NVRTC at run time (the C# side passes this file as an
// in-memory header). So: no standard or CUDA toolkit headers here (NVRTC has none without a toolkit, and the CI
// NVRTC 11.8 has no built-in cuda_fp16.h); only builtins.
#pragma once

#define RELLAX_WARP_SIZE 32
#define RELLAX_FULL_MASK 0xffffffffu

// Sum of `v` over the 32 lanes of the calling warp; every lane gets the result.
// All 32 lanes must call it.
__device__ __forceinline__ float rellax_warp_reduce_sum(float v) {
    #pragma unroll
    for (int offset = RELLAX_WARP_SIZE / 2; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(RELLAX_FULL_MASK, v, offset);
    }
    return v;
}

// Max of `v` over the 32 lanes of the calling warp; every lane gets the result.
__device__ __forceinline__ float rellax_warp_reduce_max(float v) {
    #pragma unroll
    for (int offset = RELLAX_WARP_SIZE / 2; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(RELLAX_FULL_MASK, v, offset));
    }
    return v;
}

// Sum of `v` over the whole (1-D) block; every thread gets the result.
// blockDim.x must be a multiple of 32 and at most 1024. All threads must call it (it synchronizes).
// `scratch` is shared memory of at least 32 floats; it may be reused after the call returns.
__device__ __forceinline__ float rellax_block_reduce_sum(float v, float* scratch /* [32] */) {
    const int lane = threadIdx.x % RELLAX_WARP_SIZE;
    const int warp = threadIdx.x / RELLAX_WARP_SIZE;
    const int num_warps = blockDim.x / RELLAX_WARP_SIZE;
    v = rellax_warp_reduce_sum(v);
    __syncthreads();  // scratch may still be read by a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (lane < num_warps) ? scratch[lane] : 0.0f;
    return rellax_warp_reduce_sum(v);
}

// Max of `v` over the whole (1-D) block; same rules as rellax_block_reduce_sum.
__device__ __forceinline__ float rellax_block_reduce_max(float v, float* scratch /* [32] */) {
    const int lane = threadIdx.x % RELLAX_WARP_SIZE;
    const int warp = threadIdx.x / RELLAX_WARP_SIZE;
    const int num_warps = blockDim.x / RELLAX_WARP_SIZE;
    v = rellax_warp_reduce_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (lane < num_warps) ? scratch[lane] : -__int_as_float(0x7f800000);  // -inf
    return rellax_warp_reduce_max(v);
}
