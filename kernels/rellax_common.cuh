// rellax_common.cuh: helpers shared by every kernel in kernels/.
//
// Compiled two ways: by nvcc (CMake, kernels/tests) and by NVRTC at run time (the C# side passes this file as an
// in-memory header). So: no standard or CUDA toolkit headers here (NVRTC has none without a toolkit, and the CI
// NVRTC 11.8 has no built-in cuda_fp16.h); only builtins.
#pragma once

#define RELLAX_WARP_SIZE 32
#define RELLAX_FULL_MASK 0xffffffffu

// IEEE binary16 bits -> float (exact). On the device: the PTX conversion instruction cuda_fp16.h uses (NVRTC 11.8 has
// no cuda_fp16.h). Elsewhere (kernels/tests/sim, which runs these kernels on the CPU): the same bit manipulation as
// the ILGPU kernels (IlgpuCfloraKernels.HalfBitsToFloat, checked against System.Half on all 65536 patterns).
__device__ __forceinline__ float rellax_f16_to_f32(unsigned short h) {
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    const unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    const unsigned int em = (unsigned int)h & 0x7fffu;
    unsigned int magnitude;
    if (em >= 0x7c00u) magnitude = 0x7f800000u | ((em & 0x3ffu) << 13);  // inf / NaN
    else if (em >= 0x0400u) magnitude = (em << 13) + ((127u - 15u) << 23);  // normal: rebias
    else magnitude = __float_as_uint((float)em * 5.9604644775390625e-8f);   // subnormal or zero: em * 2^-24
    return __uint_as_float(sign | magnitude);
#endif
}

// bfloat16 bits -> float (exact: the upper half of a binary32).
__device__ __forceinline__ float rellax_bf16_to_f32(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

// c + the sum of the four signed byte products of a and b. On the device: the PTX dp4a instruction (sm_61+), inline
// because NVRTC without the toolkit headers has no definition of the __dp4a intrinsic. Elsewhere: the same in C.
__device__ __forceinline__ int rellax_dp4a(int a, int b, int c) {
#if defined(__CUDA_ARCH__)
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#else
    for (int i = 0; i < 4; i++) c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
#endif
}

// Sum of an int over the 32 lanes of the calling warp; every lane gets the result. All 32 lanes must call it.
__device__ __forceinline__ int rellax_warp_reduce_sum_int(int v) {
    #pragma unroll
    for (int offset = RELLAX_WARP_SIZE / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(RELLAX_FULL_MASK, v, offset);
    return v;
}

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
