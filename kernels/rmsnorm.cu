// rmsnorm.cu: RMSNorm over the last dimension (Llama-family).
//
//   y[r, i] = x[r, i] / sqrt(mean_j(x[r, j]^2) + eps) * weight[i]
//
// fp32 in, fp32 out, fp32 accumulation. The CPU reference is PrimitivesReference (C#) and
// kernels/tests/rmsnorm_test.cu (C++); both must agree with this kernel.
#include "rellax_common.cuh"

// Version 1: one block per row; each thread strides over the row, block-wide sum of squares,
// then each thread writes its strided elements. blockDim.x: a multiple of 32, at most 1024.
extern "C" __global__ void rellax_rmsnorm_f32(
    const float* x,       // x is (rows, n), row-major
    const float* weight,  // weight is (n)
    float* y,             // y is (rows, n), row-major; may alias x
    int rows,
    int n,
    float eps) {
    __shared__ float scratch[32];
    const int row = blockIdx.x;
    if (row >= rows) return;  // uniform per block: no thread skips the reduction's barriers
    const float* xr = x + (long long)row * n;  // xr is (n)
    float* yr = y + (long long)row * n;        // yr is (n)

    float sum_sq = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i];
        sum_sq += v * v;
    }
    sum_sq = rellax_block_reduce_sum(sum_sq, scratch);
    const float inv_rms = rsqrtf(sum_sq / (float)n + eps);

    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        yr[i] = xr[i] * inv_rms * weight[i];
    }
}
