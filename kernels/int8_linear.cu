// int8_linear.cu: the int8 linear layer (LLM.int8()-style W8A8, issue 19), y[M,N] = x[M,K] · dequant(W8[N,K])ᵀ (+ bias),
// with the semantics of PrimitivesReference.LinearInt8 (C#) and the same layout as the ILGPU kernels (IlgpuInt8Linear):
//   W8  int   [N, Kq]  row-major, Kq = ceil(K/4), 4 signed bytes per int (byte 0 lowest), K padded with zeros
//   sw  float [N]      per-row scale (max|w_j| / 127), rows quantized by rellax_int8_quantize_weights
//   x8  int   [M, Kq]  activations quantized per token and group of G columns (G a multiple of 4 in [4, 256], so a group
//                      owns whole ints) with the outlier columns zeroed, sx float [M, groups] their scales, groups = ceil(K/G)
// Quantization of a row v: amax = max|v|, inv = 127 / amax (IEEE division: no fast math), q = clamp(rn(v·inv), ±127)
// (cvt.rni: round half to even), scale = amax / 127; a non-finite value gives scale NaN and q = 0; a zero row scale 0.
// These are the operations of the C# quantizer, so the integers agree with the CPU and ILGPU backends.
//
// Entry points, in call order for one Linear (the host queues all five on one stream; no host synchronization):
//   rellax_int8_outlier_flags   grid ceil(K/256), block 256: flags[c] = max_t |x[t,c]| > threshold (NaN never counts)
//   rellax_int8_compact         grid 1, block 32: list[0] = count, list[1..] = flagged columns ascending (lane 0 scans;
//                               O(K) serial steps, ~K/1000 µs at K = 5632: small next to the GEMM, to be replaced by a scan)
//   rellax_int8_quantize_rows   grid (groups, M), block 32: one warp per row and group (max by warp reduction, then
//                               quantize and pack)
//   rellax_int8_linear          grid (ceil(N/64), ceil(M/64)), block 256: the GEMM, below
// plus rellax_int8_quantize_weights (grid N, block 32, f32/f16/bf16 source) at load and rellax_int8_embedding.
//
// GEMM (rellax_int8_linear): a block computes a 64 × 64 tile of y, each of its 256 threads a 4 × 4 sub-tile (rows
// ty + 16·i, columns tx + 16·j). Per step of 16 ints (64 k values) the block stages x8[64][16] and W8[64][16] in shared
// memory (4 ints per thread each, coalesced along Kq; rows padded to 17 ints against bank conflicts), then each thread
// runs 4·4·16 = 256 dp4a from shared memory. Each activation group's sum is exact in int32 (|acc| ≤ G·127²); at the
// group's last int (a block-uniform branch) every thread folds it into an f32 accumulator, f += (float)acc · sx[t, g], and
// restarts acc at 0, as the C# kernels do group by group.
// Epilogue per output, in the C# kernels' order: v = f · sw[j]; v += x[t,c] · ((float)q[j,c] · sw[j]) for each outlier
// column c ascending; v += bias[j]. (nvcc/NVRTC may contract these into FMAs: not bitwise equal to the CPU, within float
// rounding.)
// Roofline: 2·M·N·K int ops (M·N·K/4 dp4a). Per 16-int step a thread makes 8 shared-memory loads for 16 dp4a, and a block
// reads 2·64·64 bytes from global memory (L2) per 64·64·64 MACs, i.e. 64 MACs per byte: bound by dp4a issue (4 int8 MACs
// per lane per instruction), roughly a quarter of what mma.sync s8 (m16n8k32, tensor cores) reaches; the mma path is the
// next step. Not yet run on a GPU: checked by kernels/tests/sim/int8_linear_sim.cpp and compiled by NVRTC in the tests.
#include "rellax_common.cuh"

#define RELLAX_INT8_TILE 64
#define RELLAX_INT8_KSTEP 16  // ints (64 k values) per shared-memory step
#define RELLAX_INT8_DTYPE_F32 0
#define RELLAX_INT8_DTYPE_F16 1
#define RELLAX_INT8_DTYPE_BF16 2

__device__ __forceinline__ int rellax_int8_byte(int packed, int c) { return (packed << (24 - 8 * (c & 3))) >> 24; }

__device__ __forceinline__ int rellax_int8_pack(int q0, int q1, int q2, int q3) {
    return (q0 & 0xff) | ((q1 & 0xff) << 8) | ((q2 & 0xff) << 16) | (int)((unsigned)q3 << 24);
}

__device__ __forceinline__ int rellax_int8_quantize(float v, float inv) {
    int q = __float2int_rn(v * inv);
    return q < -127 ? -127 : q > 127 ? 127 : q;
}

__device__ __forceinline__ float rellax_int8_load(const void* w, int dtype, long long i) {
    if (dtype == RELLAX_INT8_DTYPE_F32) return ((const float*)w)[i];
    const unsigned short h = ((const unsigned short*)w)[i];
    return dtype == RELLAX_INT8_DTYPE_F16 ? rellax_f16_to_f32(h) : rellax_bf16_to_f32(h);
}

// One warp quantizes row `row` of a [rows, K] source (element c at base + c) into packed [Kq] ints: columns whose
// skip[c] != 0 (skip may be null) are zeroed, as LinearInt8 zeroes the outlier columns. Returns the scale on every lane.
__device__ __forceinline__ float rellax_int8_quantize_row_warp(const void* src, int dtype, long long base, int k,
                                                              const int* skip, int* packed /* [Kq] */) {
    const int lane = threadIdx.x % RELLAX_WARP_SIZE;
    float amax = 0.0f;
    int finite = 1;
    for (int c = lane; c < k; c += RELLAX_WARP_SIZE) {
        if (skip != nullptr && skip[c] != 0) continue;
        const float a = fabsf(rellax_int8_load(src, dtype, base + c));
        if (!(a <= 3.402823466e38f)) finite = 0;
        else amax = amax > a ? amax : a;
    }
    amax = rellax_warp_reduce_max(amax);
    finite = rellax_warp_reduce_sum_int(finite) == RELLAX_WARP_SIZE;
    const float inv = !finite || amax == 0.0f ? 0.0f : 127.0f / amax;
    const int kq = (k + 3) / 4;
    for (int p = lane; p < kq; p += RELLAX_WARP_SIZE) {
        int q[4] = {0, 0, 0, 0};
        for (int e = 0; e < 4; e++) {
            const int c = 4 * p + e;
            if (c < k && finite && (skip == nullptr || skip[c] == 0)) q[e] = rellax_int8_quantize(rellax_int8_load(src, dtype, base + c), inv);
        }
        packed[p] = rellax_int8_pack(q[0], q[1], q[2], q[3]);
    }
    return finite ? amax / 127.0f : __int_as_float(0x7fc00000);
}

// w: [N, K] as dtype (finite); packed [N, Kq], scales [N], sums [N] (Σ q of the row). Grid N, block 32.
extern "C" __global__ void rellax_int8_quantize_weights(const void* w, int dtype, int n, int k, int* packed, float* scales, int* sums) {
    const int j = blockIdx.x;
    if (j >= n) return;
    const int kq = (k + 3) / 4;
    int* row = packed + (long long)j * kq;
    const float s = rellax_int8_quantize_row_warp(w, dtype, (long long)j * k, k, nullptr, row);
    __syncwarp();
    int sum = 0;
    for (int p = threadIdx.x; p < kq; p += RELLAX_WARP_SIZE)
        for (int e = 0; e < 4; e++) sum += rellax_int8_byte(row[p], e);
    sum = rellax_warp_reduce_sum_int(sum);
    if (threadIdx.x == 0) { scales[j] = s; sums[j] = sum; }
}

// x: [M, K]; flags: [K]. Grid ceil(K/256), block 256.
extern "C" __global__ void rellax_int8_outlier_flags(const float* x, int m, int k, float threshold, int* flags) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= k) return;
    float mx = 0.0f;
    for (int t = 0; t < m; t++) {
        const float a = fabsf(x[(long long)t * k + c]);
        if (a > mx) mx = a;
    }
    flags[c] = mx > threshold ? 1 : 0;
}

// flags: [K]; list: [K + 1]. Grid 1, block 32.
extern "C" __global__ void rellax_int8_compact(const int* flags, int k, int* list) {
    if (threadIdx.x != 0) return;
    int count = 0;
    for (int c = 0; c < k; c++)
        if (flags[c] != 0) list[1 + count++] = c;
    list[0] = count;
}

// x: [M, K]; flags: [K]; x8: [M, Kq]; sx: [M, groups], groups = ceil(K / group). Grid (groups, M), block 32: warp (g, t)
// quantizes columns [g·group, min(K, (g+1)·group)) of row t.
extern "C" __global__ void rellax_int8_quantize_rows(const float* x, int m, int k, int group, const int* flags, int* x8, float* sx) {
    const int t = blockIdx.y, g = blockIdx.x, groups = (k + group - 1) / group;
    if (t >= m || g >= groups) return;
    const int c0 = g * group, len = (k < c0 + group ? k : c0 + group) - c0;
    const float s = rellax_int8_quantize_row_warp(x, RELLAX_INT8_DTYPE_F32, (long long)t * k + c0, len, flags + c0,
                                                  x8 + (long long)t * ((k + 3) / 4) + c0 / 4);
    if (threadIdx.x == 0) sx[(long long)t * groups + g] = s;
}

// x8 [M, Kq], sx [M, groups], w8 [N, Kq], sw [N], list [1 + count] (outlier columns), x [M, K] (f32, for the outlier
// columns), bias [N] or null, y [M, N]; group: activation columns per scale (a multiple of 4). Grid (ceil(N/64),
// ceil(M/64)), block 256.
extern "C" __global__ void __launch_bounds__(256) rellax_int8_linear(const int* x8, const float* sx, const int* w8, const float* sw,
                                                                    const int* list, const float* x, const float* bias, float* y,
                                                                    int m, int n, int k, int group) {
    __shared__ int xs[RELLAX_INT8_TILE][RELLAX_INT8_KSTEP + 1];
    __shared__ int ws[RELLAX_INT8_TILE][RELLAX_INT8_KSTEP + 1];
    const int kq = (k + 3) / 4, gq = group / 4, groups = (k + group - 1) / group;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int row0 = blockIdx.y * RELLAX_INT8_TILE, col0 = blockIdx.x * RELLAX_INT8_TILE;
    int acc[4][4];
    float f[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) { acc[i][j] = 0; f[i][j] = 0.0f; }
    for (int p0 = 0; p0 < kq; p0 += RELLAX_INT8_KSTEP) {
        // Stage: element e = tid + 256·s of the 64 × 16 tile is (r = e / 16, q = e % 16): 16 consecutive ints per row.
        for (int s = 0; s < 4; s++) {
            const int e = tid + 256 * s, r = e / RELLAX_INT8_KSTEP, q = e % RELLAX_INT8_KSTEP, p = p0 + q;
            const int xr = row0 + r, wr = col0 + r;
            xs[r][q] = xr < m && p < kq ? x8[(long long)xr * kq + p] : 0;
            ws[r][q] = wr < n && p < kq ? w8[(long long)wr * kq + p] : 0;
        }
        __syncthreads();
        for (int q = 0; q < RELLAX_INT8_KSTEP; q++) {
            int a[4], b[4];
            for (int i = 0; i < 4; i++) a[i] = xs[ty + 16 * i][q];
            for (int j = 0; j < 4; j++) b[j] = ws[tx + 16 * j][q];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] = rellax_dp4a(a[i], b[j], acc[i][j]);
            const int p = p0 + q;
            if (p < kq && ((p + 1) % gq == 0 || p + 1 == kq)) {  // the last int of group p / gq: the same p for the whole block
                const int g = p / gq;
                for (int i = 0; i < 4; i++) {
                    const int t = row0 + ty + 16 * i;
                    const float s = t < m ? sx[(long long)t * groups + g] : 0.0f;
                    for (int j = 0; j < 4; j++) { f[i][j] += (float)acc[i][j] * s; acc[i][j] = 0; }
                }
            }
        }
        __syncthreads();
    }
    const int no = list[0];
    for (int i = 0; i < 4; i++) {
        const int t = row0 + ty + 16 * i;
        if (t >= m) continue;
        for (int j = 0; j < 4; j++) {
            const int c0 = col0 + tx + 16 * j;
            if (c0 >= n) continue;
            const float s = sw[c0];
            float v = f[i][j] * s;
            const signed char* wrow = (const signed char*)(w8 + (long long)c0 * kq);
            for (int o = 0; o < no; o++) {
                const int c = list[1 + o];
                v += x[(long long)t * k + c] * ((float)wrow[c] * s);
            }
            if (bias != nullptr) v += bias[c0];
            y[(long long)t * n + c0] = v;
        }
    }
}

// ids [T] (outside [0, rows): a zero row), w8 [rows, Kq], scales [rows], y [T, K]. Grid ceil(T·K/256), block 256.
extern "C" __global__ void rellax_int8_embedding(const int* ids, const int* w8, const float* scales, float* y, int t, int k, int rows) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)t * k) return;
    const int id = ids[idx / k], c = (int)(idx % k);
    y[idx] = id >= 0 && id < rows ? (float)((const signed char*)(w8 + (long long)id * ((k + 3) / 4)))[c] * scales[id] : 0.0f;
}
