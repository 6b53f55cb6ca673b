// cflora.cu: the fused CFLoRA linear layer (SPEC section 4), serving the whole LoRA family (LoRA, iLoRA, RecLoRA,
// CFLoRA) through a per-sample r x r interaction matrix G. For token row t of sample s = row_sample[t]:
//
//   u    = A x[t]                               (r values)
//   v[j] = scale * sum_i u[i] * G[s][i][j]      (C_s = G_s^T, the reference code's convention)
//   y[t] = W0 x[t] (+ bias) + B v
//
// Two kernels: rellax_cflora_down (u and v per row) then rellax_cflora_gemm, the base GEMM over the K-augmented
// problem [x | v] . [W0 | B]^T, so the adapter is r more K steps of the base GEMM's loop and y is written once.
// x, v, G, bias, y are fp32; W0, A, B are fp32, f16 or bf16 (a runtime dtype code, uniform over the grid), widened
// by hand (no cuda_fp16.h: the CI NVRTC 11.8 lacks it). Accumulation is fp32. The C# reference is CfloraReference.
#include "rellax_common.cuh"

#define RELLAX_CFLORA_DTYPE_F32 0
#define RELLAX_CFLORA_DTYPE_F16 1
#define RELLAX_CFLORA_DTYPE_BF16 2
#define RELLAX_CFLORA_MAX_RANK 256

// Element i of a weight stored as `dtype` (one of RELLAX_CFLORA_DTYPE_*), widened to float.
__device__ __forceinline__ float rellax_cflora_load_weight(const void* w, int dtype, long long i) {
    if (dtype == RELLAX_CFLORA_DTYPE_F32) return ((const float*)w)[i];
    const unsigned short h = ((const unsigned short*)w)[i];
    return dtype == RELLAX_CFLORA_DTYPE_F16 ? rellax_f16_to_f32(h) : rellax_bf16_to_f32(h);
}

// Kernel 1: one block per token row t. Warp w computes u[i] for i = w, w + num_warps, ... (lanes stride over d_in:
// coalesced reads of the A row and of x[t], then a warp shuffle reduction); u lives in shared memory. Then threads
// stride over j for v[t, j] (reads of G[s] coalesced across j).
// Launch: grid (T), block (256) (any multiple of 32 up to 1024); static shared memory 1 KiB.
// Roofline: 2 r d_in + 2 r^2 FLOPs per row; reads d_in floats of x, r d_in weights of A (L2-resident across rows)
// and r^2 floats of G, writes r floats. Small next to the GEMM (r << d_out): latency-bound.
extern "C" __global__ void rellax_cflora_down(
    const float* x,           // x is (T, d_in), row-major
    const void* a,            // a is (r, d_in), row-major, dtype a_dtype
    int a_dtype,              // RELLAX_CFLORA_DTYPE_* of a
    const float* g,           // g is (S, r, r), row-major: g[s][i][j]
    const int* row_sample,    // row_sample is (T), each in [0, S)
    float* v,                 // v is (T, r), row-major; output, already multiplied by scale
    int T,
    int d_in,
    int r,                    // 1 <= r <= RELLAX_CFLORA_MAX_RANK
    float scale) {
    __shared__ float u[RELLAX_CFLORA_MAX_RANK];
    const int t = blockIdx.x;
    if (t >= T) return;  // uniform per block
    const int lane = threadIdx.x % RELLAX_WARP_SIZE;
    const int warp = threadIdx.x / RELLAX_WARP_SIZE;
    const int num_warps = blockDim.x / RELLAX_WARP_SIZE;
    const float* xt = x + (long long)t * d_in;  // xt is (d_in)

    for (int i = warp; i < r; i += num_warps) {
        const long long row = (long long)i * d_in;
        float acc = 0.0f;
        for (int c = lane; c < d_in; c += RELLAX_WARP_SIZE) {
            acc += rellax_cflora_load_weight(a, a_dtype, row + c) * xt[c];
        }
        acc = rellax_warp_reduce_sum(acc);
        if (lane == 0) u[i] = acc;
    }
    __syncthreads();

    const float* gs = g + (long long)row_sample[t] * r * r;  // gs is (r, r)
    float* vt = v + (long long)t * r;                         // vt is (r)
    for (int j = threadIdx.x; j < r; j += blockDim.x) {
        float acc = 0.0f;
        for (int i = 0; i < r; i++) acc += u[i] * gs[(long long)i * r + j];
        vt[j] = scale * acc;
    }
}

// Kernel 2: y = [x | v] . [W0 | B]^T (+ bias) over the augmented K = d_in + r, register-blocked.
// Block tile 64 (rows of y) x 64 (columns of y), K step 16; 256 threads as 16 x 16, each thread owns a 4 x 4
// micro-tile at rows ty + 16 m and columns tx + 16 n (m, n < 4): shared reads are broadcasts (As) or 16
// consecutive words (Ws), stores to y are coalesced along tx. Each K step stages 64 x 16 activations and
// 64 x 16 weights (4 loads per thread each, 16 consecutive k per row: 64-byte segments for fp32), transposed into
// k-major shared tiles; weights are widened to fp32 while staging. Tiles may straddle d_in: each element picks
// x/W0 below d_in and v/B above.
// Launch: grid (ceil(d_out / 64), ceil(T / 64)), block (256); static shared memory 2 * 16 * 68 floats (8.5 KiB).
// Roofline: 2 T d_out (d_in + r) FLOPs; global reads T (d_in + r) ceil(d_out / 64) activations +
// d_out (d_in + r) ceil(T / 64) weights (2 bytes each for f16/bf16), writes T d_out floats. Decode and short
// prompts (T <= 64) stream each weight once: memory-bound at the weight bandwidth; long prompts reach
// 64 x 64 x 2 / (128 x 4) = 16 FLOP/byte of L2 traffic per tile: fp32 FMA-bound on the CUDA cores (a tensor-core
// mma path would be the next step). The adapter adds r / d_in to both (about 0.2% at r = 8, d_in = 4096).
#define RELLAX_CFLORA_BM 64
#define RELLAX_CFLORA_BN 64
#define RELLAX_CFLORA_BK 16
#define RELLAX_CFLORA_PAD 4

extern "C" __global__ void __launch_bounds__(256) rellax_cflora_gemm(
    const float* x,        // x is (T, d_in), row-major
    const float* v,        // v is (T, r), row-major (rellax_cflora_down's output, scale included)
    const void* w0,        // w0 is (d_out, d_in), row-major, dtype w0_dtype
    int w0_dtype,          // RELLAX_CFLORA_DTYPE_* of w0
    const void* b,         // b is (d_out, r), row-major, dtype b_dtype
    int b_dtype,           // RELLAX_CFLORA_DTYPE_* of b
    const float* bias,     // bias is (d_out), or null for none
    float* y,              // y is (T, d_out), row-major; must not alias any input
    int T,
    int d_out,
    int d_in,
    int r) {
    __shared__ float As[RELLAX_CFLORA_BK][RELLAX_CFLORA_BM + RELLAX_CFLORA_PAD];  // As[k][row]
    __shared__ float Ws[RELLAX_CFLORA_BK][RELLAX_CFLORA_BN + RELLAX_CFLORA_PAD];  // Ws[k][col]
    const int tid = threadIdx.x;
    const int tx = tid % 16;
    const int ty = tid / 16;
    const int row0 = blockIdx.y * RELLAX_CFLORA_BM;
    const int col0 = blockIdx.x * RELLAX_CFLORA_BN;
    const int k_total = d_in + r;

    float acc[4][4];
    #pragma unroll
    for (int m = 0; m < 4; m++) {
        #pragma unroll
        for (int n = 0; n < 4; n++) acc[m][n] = 0.0f;
    }

    for (int k0 = 0; k0 < k_total; k0 += RELLAX_CFLORA_BK) {
        // Stage: element e = tid + 256 q of each 64 x 16 tile is (row e / 16, k e % 16).
        #pragma unroll
        for (int q = 0; q < 4; q++) {
            const int e = tid + 256 * q;
            const int rr = e / RELLAX_CFLORA_BK;
            const int kk = k0 + e % RELLAX_CFLORA_BK;
            const int row = row0 + rr;
            const int col = col0 + rr;  // the weight row staged is output column col
            float xv = 0.0f, wv = 0.0f;
            if (kk < d_in) {
                if (row < T) xv = x[(long long)row * d_in + kk];
                if (col < d_out) wv = rellax_cflora_load_weight(w0, w0_dtype, (long long)col * d_in + kk);
            } else if (kk < k_total) {
                const int j = kk - d_in;
                if (row < T) xv = v[(long long)row * r + j];
                if (col < d_out) wv = rellax_cflora_load_weight(b, b_dtype, (long long)col * r + j);
            }
            As[e % RELLAX_CFLORA_BK][rr] = xv;
            Ws[e % RELLAX_CFLORA_BK][rr] = wv;
        }
        __syncthreads();

        #pragma unroll
        for (int k = 0; k < RELLAX_CFLORA_BK; k++) {
            float xr[4], wr[4];
            #pragma unroll
            for (int m = 0; m < 4; m++) xr[m] = As[k][ty + 16 * m];
            #pragma unroll
            for (int n = 0; n < 4; n++) wr[n] = Ws[k][tx + 16 * n];
            #pragma unroll
            for (int m = 0; m < 4; m++) {
                #pragma unroll
                for (int n = 0; n < 4; n++) acc[m][n] += xr[m] * wr[n];
            }
        }
        __syncthreads();  // the tiles are rewritten by the next K step
    }

    #pragma unroll
    for (int m = 0; m < 4; m++) {
        const int row = row0 + ty + 16 * m;
        if (row >= T) continue;
        #pragma unroll
        for (int n = 0; n < 4; n++) {
            const int col = col0 + tx + 16 * n;
            if (col < d_out) {
                y[(long long)row * d_out + col] = bias != nullptr ? acc[m][n] + bias[col] : acc[m][n];
            }
        }
    }
}
