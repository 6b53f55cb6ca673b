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

// ---------------------------------------------------------------------------------------------------------------
// The backward (training). For the forward above and the upstream gradient dY (T, d_out), with u = A x, z = B^T dY:
//   du[t]  = scale * G_s z[t]          dX = dY . W0 + du . A            (W0, A frozen or not: dX needs both)
//   v[t]   = scale * G_s^T u[t]        dA = du^T . x,  dB = dY^T . v     (LoRA training)
//   dG_s   = scale * sum_{t of s} u[t] (x) z[t]                          (CFLoRA generator training)
// Identity G (plain LoRA) is g == nullptr: du = scale z, v = scale u, no r x r work. The C# reference is
// CfloraReference.Backward; kernels/tests/sim/cflora_sim.cpp runs these on the CPU against a double reference.

// Kernel B1: one block per row t: u[t] = A x[t] and z[t] = B^T dY[t] (warp w computes ranks i = w, w + warps, ...,
// lanes striding over d_in for u and over d_out for z, warp-shuffle reductions), then du[t] and v[t] from G[s].
// Launch: grid (T), block (256); static shared memory 2 KiB. Outputs u, z, du, v are (T, r) fp32.
// Roofline: 2 r (d_in + d_out) + 4 r^2 FLOPs per row; reads x[t], dY[t] once and A, B (L2-resident across rows).
extern "C" __global__ void rellax_cflora_back_down(
    const float* x,           // x is (T, d_in)
    const float* dy,          // dy is (T, d_out)
    const void* a,            // a is (r, d_in), dtype ab_dtype
    const void* b,            // b is (d_out, r), dtype ab_dtype
    int ab_dtype,
    const float* g,           // g is (S, r, r), or nullptr for the identity
    const int* row_sample,    // row_sample is (T)
    float* u, float* z,       // each (T, r): A x[t], B^T dY[t]
    float* du, float* v,      // each (T, r): scale G_s z[t], scale G_s^T u[t]
    int T, int d_in, int d_out, int r, float scale) {
    __shared__ float su[RELLAX_CFLORA_MAX_RANK];
    __shared__ float sz[RELLAX_CFLORA_MAX_RANK];
    const int t = blockIdx.x;
    if (t >= T) return;  // uniform per block
    const int lane = threadIdx.x % RELLAX_WARP_SIZE;
    const int warp = threadIdx.x / RELLAX_WARP_SIZE;
    const int num_warps = blockDim.x / RELLAX_WARP_SIZE;
    const float* xt = x + (long long)t * d_in;
    const float* dyt = dy + (long long)t * d_out;
    for (int i = warp; i < r; i += num_warps) {
        float ua = 0.0f, za = 0.0f;
        for (int c = lane; c < d_in; c += RELLAX_WARP_SIZE) ua += rellax_cflora_load_weight(a, ab_dtype, (long long)i * d_in + c) * xt[c];
        for (int o = lane; o < d_out; o += RELLAX_WARP_SIZE) za += rellax_cflora_load_weight(b, ab_dtype, (long long)o * r + i) * dyt[o];
        ua = rellax_warp_reduce_sum(ua);
        za = rellax_warp_reduce_sum(za);
        if (lane == 0) {
            su[i] = ua;
            sz[i] = za;
        }
    }
    __syncthreads();
    const long long rb = (long long)t * r;
    const float* gs = g != nullptr ? g + (long long)row_sample[t] * r * r : nullptr;  // gs is (r, r)
    for (int i = threadIdx.x; i < r; i += blockDim.x) {
        float dua = 0.0f, va = 0.0f;
        if (gs == nullptr) {
            dua = sz[i];
            va = su[i];
        } else {
            for (int j = 0; j < r; j++) {
                dua += gs[(long long)i * r + j] * sz[j];
                va += su[j] * gs[(long long)j * r + i];
            }
        }
        u[rb + i] = su[i];
        z[rb + i] = sz[i];
        du[rb + i] = scale * dua;
        v[rb + i] = scale * va;
    }
}

// Kernel B2: dG[s][i][j] = scale * sum_{t : row_sample[t] = s} u[t][i] z[t][j]. One block per sample s; thread k
// owns the pairs (i, j) = k, k + blockDim, ... of the r x r matrix and walks every row (T row_sample reads per
// thread; the batch's rows are few thousand). Launch: grid (S), block (256). Overwrites dG (zeros for empty samples).
extern "C" __global__ void rellax_cflora_back_dg(
    const float* u, const float* z,  // each (T, r)
    const int* row_sample,           // (T)
    float* dg,                       // dg is (S, r, r)
    int T, int r, float scale) {
    const int s = blockIdx.x;
    const int r2 = r * r;
    for (int k = threadIdx.x; k < r2; k += blockDim.x) {
        const int i = k / r, j = k % r;
        float acc = 0.0f;
        for (int t = 0; t < T; t++)
            if (row_sample[t] == s) acc += u[(long long)t * r + i] * z[(long long)t * r + j];
        dg[(long long)s * r2 + k] = scale * acc;
    }
}

// Kernel B3: out = sum_t a[t][i] * bm[t][n] for i < ra, n < nb: dA = du^T x (out (r, d_in)) or dB^T = v^T dY stored
// transposed (out (d_out, r) when transposed != 0). One thread per output, consecutive threads on consecutive n
// (coalesced reads of bm rows; a[t][i] is a broadcast). Launch: grid (ceil(ra * nb / 256)), block (256).
// Roofline: 2 T FLOPs per output; bm is read ra times from L2 (ra = r is small).
extern "C" __global__ void rellax_cflora_back_outer(
    const float* a,   // a is (T, ra)
    const float* bm,  // bm is (T, nb)
    float* out,       // (ra, nb), or (nb, ra) when transposed
    int T, int ra, int nb, int transposed) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)ra * nb) return;
    const int i = (int)(idx / nb), n = (int)(idx % nb);
    float acc = 0.0f;
    for (int t = 0; t < T; t++) acc += a[(long long)t * ra + i] * bm[(long long)t * nb + n];
    out[transposed ? (long long)n * ra + i : idx] = acc;
}

// Kernel B4: dX (+)= [dY | du] . [W0 ; A] over the augmented K = d_out + r: the forward's register-blocked GEMM with
// the weight read transposed (W'[k][col] = W0[k][col] below d_out, A[k - d_out][col] above: consecutive columns are
// consecutive addresses, so the staging loads are coalesced along the column). Block tile 64 x 64, K step 16, 256
// threads with 4 x 4 outputs each, as rellax_cflora_gemm. accumulate != 0 adds to dX (the second and later modules
// sharing x). Launch: grid (ceil(d_in / 64), ceil(T / 64)), block (256); static shared memory 8.5 KiB.
// Roofline: 2 T d_in (d_out + r) FLOPs, as the forward's base GEMM.
extern "C" __global__ void __launch_bounds__(256) rellax_cflora_back_dx(
    const float* dy,   // dy is (T, d_out)
    const float* du,   // du is (T, r)
    const void* w0,    // w0 is (d_out, d_in), dtype w0_dtype
    int w0_dtype,
    const void* a,     // a is (r, d_in), dtype a_dtype
    int a_dtype,
    float* dx,         // dx is (T, d_in)
    int T, int d_in, int d_out, int r, int accumulate) {
    __shared__ float As[RELLAX_CFLORA_BK][RELLAX_CFLORA_BM + RELLAX_CFLORA_PAD];  // As[k][row]
    __shared__ float Ws[RELLAX_CFLORA_BK][RELLAX_CFLORA_BN + RELLAX_CFLORA_PAD];  // Ws[k][col]
    const int tid = threadIdx.x;
    const int tx = tid % 16;
    const int ty = tid / 16;
    const int row0 = blockIdx.y * RELLAX_CFLORA_BM;
    const int col0 = blockIdx.x * RELLAX_CFLORA_BN;
    const int k_total = d_out + r;
    float acc[4][4];
    #pragma unroll
    for (int m = 0; m < 4; m++) {
        #pragma unroll
        for (int n = 0; n < 4; n++) acc[m][n] = 0.0f;
    }
    for (int k0 = 0; k0 < k_total; k0 += RELLAX_CFLORA_BK) {
        #pragma unroll
        for (int q = 0; q < 4; q++) {
            const int e = tid + 256 * q;
            // Activations: element e is (row e / 16, k e % 16), as the forward.
            const int rr = e / RELLAX_CFLORA_BK;
            const int ka = k0 + e % RELLAX_CFLORA_BK;
            const int row = row0 + rr;
            float xv = 0.0f;
            if (row < T) {
                if (ka < d_out) xv = dy[(long long)row * d_out + ka];
                else if (ka < k_total) xv = du[(long long)row * r + (ka - d_out)];
            }
            As[e % RELLAX_CFLORA_BK][rr] = xv;
            // Weights: element e is (k e / 64, column e % 64): 64 consecutive columns of one weight row per 64 threads.
            const int kw = k0 + e / RELLAX_CFLORA_BN;
            const int cc = e % RELLAX_CFLORA_BN;
            const int col = col0 + cc;
            float wv = 0.0f;
            if (col < d_in) {
                if (kw < d_out) wv = rellax_cflora_load_weight(w0, w0_dtype, (long long)kw * d_in + col);
                else if (kw < k_total) wv = rellax_cflora_load_weight(a, a_dtype, (long long)(kw - d_out) * d_in + col);
            }
            Ws[e / RELLAX_CFLORA_BN][cc] = wv;
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
        __syncthreads();
    }
    #pragma unroll
    for (int m = 0; m < 4; m++) {
        const int row = row0 + ty + 16 * m;
        if (row >= T) continue;
        #pragma unroll
        for (int n = 0; n < 4; n++) {
            const int col = col0 + tx + 16 * n;
            if (col < d_in) {
                float* out = dx + (long long)row * d_in + col;
                *out = accumulate ? *out + acc[m][n] : acc[m][n];
            }
        }
    }
}
