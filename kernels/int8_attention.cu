// int8_attention.cu: SageAttention-style quantized attention (SPEC §7) for the CUDA backend.
//
// The ground truth is src/Rellax.Kernels/Attention/AttentionReference.cs; these kernels compute exactly its int8
// algorithm except for the softmax and P·V arithmetic (fp32 with exp2 and fp16 tensor cores here, fp64 there):
//   - a row x (D channels) is quantized as m = max|x| (NaN if any channel is NaN); when 0 < m < inf,
//     x̂_c = round_half_even(x_c * (127 / m)) clamped to ±127, else x̂ = 0; its scale is m / 127 * multiplier.
//   - queries use multiplier = softmax scale * log2(e) (base-2 logits, exp2 softmax); keys are smoothed first
//     (k - mean over the sequence's valid tokens, per (sequence, KV head), the mean accumulated in fp64 and stored as
//     f32); the logit of (query t, key j) is (float)(Σ_c q̂_c k̂_c) * qscale_t * kscale_j with an exact int32 dot.
//
// Kernels (all extern "C", launched by src/Rellax.Kernels/Cuda/CudaAttention.cs):
//   1. rellax_attn_key_mean: mean [B, H, D] of the valid key rows of every (sequence, head). One block per (b, h),
//      one thread per channel, fp64 sums in token order (bit-identical to the reference). Reads B·H·T·D·4 bytes.
//   2. rellax_attn_quantize_rows: any strided f32 [B, H, T, D] tensor (head-major or token-major through element
//      strides) minus an optional mean, to int8 rows [B, H, dst_T, dst_D] (channels D..dst_D zero) with f32 scales
//      and optional int32 sums. One warp per row. Used for Q and K before prefill (dst_D = D rounded up to 32, the
//      mma k-step) and for K and V appended to an Int8KvCache (dst_D = D, dst_start = the cache's count).
//      Reads 4·D and writes D + 8 bytes per row: memory-bound, ~1/8 of prefill's traffic at T = 4096.
//   3. rellax_attn_prefill_int8_d{64,128,256}: flash-style prefill of T queries against Tk >= T keys (query row t
//      sits at key position Tk - T + t: T = Tk for whole sequences, T < Tk for a chunk against cached keys; the
//      causal and padding masks compare key positions). A block of 4 warps owns 64 query rows of one
//      (b, query head); each warp owns 16 rows whose int8 Q fragments stay in registers. K tiles (KT = 64 keys, 32
//      at D > 128) are staged in shared memory as int8 rows (padded by 16 bytes against bank conflicts), V tiles as
//      f16, transposed ([D][KT + 8]). Per tile and warp: S = Q̂ K̂ᵀ with mma.sync.m16n8k32 s8·s8→s32 (exact int32),
//      logits in fp32, online softmax with ex2.approx, P (f32 → f16) · V with mma.sync.m16n8k16 f16·f16→f32. The
//      P accumulator fragment of m16n8k32 is the A fragment of m16n8k16, so P never leaves registers.
//      Masks: keys before the sequence's padding are never loaded (tiles start at the padding); causal tiles past a
//      block's last row are skipped; a warp skips 16-key chunks entirely after its last row, and the chunks that
//      straddle its diagonal go through fp32 FMAs with an explicit mask (a tensor core would compute 0 · v for a
//      masked key, and 0 · NaN would leak a later token's NaN into an earlier row). Padding query rows write 0.
//      Roofline (T tokens, causal, per (b, head)): Q·Kᵀ ≈ T²·D int8 MACs and P·V ≈ T²·D/2 f16 MACs (tensor cores:
//      ~2 PFLOP/s int8 and ~1 PFLOP/s f16 dense on H100 SXM), exp2 ≈ T²/2; bytes: Q̂ and O once, K̂ and f16 V once
//      per 64-row query tile (T/64 · T·(2·D) bytes), mostly L2 hits. Compute-bound from T ≈ 512 on.
//      Not tuned: no cp.async double buffering, no ldmatrix, one query tile per block.
//   4. rellax_attn_int8_decode: queries against an Int8KvCache (Tq usually 1). One warp per (b, query head, query
//      token); q quantized in the warp; each lane scores one key per 32-key chunk (dp4a over D/4 words of the int8
//      key row), chunk-wise online softmax, then the lanes split the channels for Σ p_j · v̂_j · vscale_j.
//      Memory-bound: reads (D + 8) bytes per cached token and KV head per query head (L2 catches the GQA reuse).
//
// Compiled by NVRTC (no toolkit headers: no cuda_fp16.h; f16 conversions and tensor-core instructions are inline
// PTX behind __CUDA_ARCH__) and by nvcc. The mma instructions need sm_80; older targets and the host simulator
// (kernels/tests/sim/attention_sim.cpp) take a shuffle-based fallback that gathers the warp's fragments and
// computes the same 16x8 tile per the PTX ISA fragment layouts, so the simulation checks the fragment indexing.
#include "rellax_common.cuh"

#define RELLAX_ATTN_WARPS 4                              // warps per prefill / decode block
#define RELLAX_ATTN_ROWS (16 * RELLAX_ATTN_WARPS)        // query rows per prefill block
#define RELLAX_ATTN_QUANT_WARPS 8                        // rows per quantize block (one warp each)
#define RELLAX_ATTN_MAX_D 256

// ---------------------------------------------------------------------------------------------------------------
// Small device helpers (each with a host fallback for the simulator).

// 2^x. Device: ex2.approx.ftz (max relative error 2^-22, ex2(-inf) = +0, NaN stays NaN).
__device__ __forceinline__ float rellax_attn_exp2(float x) {
#if defined(__CUDA_ARCH__)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#else
    return exp2f(x);
#endif
}

// float -> IEEE binary16 bits, round to nearest even (overflow to ±inf, NaN stays NaN).
__device__ __forceinline__ unsigned short rellax_attn_f32_to_f16(float f) {
#if defined(__CUDA_ARCH__)
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    const unsigned x = __float_as_uint(f);
    const unsigned sign = (x >> 16) & 0x8000u;
    unsigned ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);  // NaN
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u); // >= 65520 (or inf): inf
    if (ax >= 0x38800000u) {                                        // normal f16: rebias, round half to even
        ax += 0xc8000fffu + ((ax >> 13) & 1u);
        return (unsigned short)(sign | (ax >> 13));
    }
    // subnormal or zero: round(|f| * 2^24) half to even (the product is exact)
    return (unsigned short)(sign | (unsigned)__float2int_rn(__uint_as_float(ax) * 16777216.0f));
#endif
}

// Two floats -> an f16x2 register (lo in bits 0..15: the element with the smaller index).
__device__ __forceinline__ unsigned rellax_attn_pack_f16x2(float lo, float hi) {
    return (unsigned)rellax_attn_f32_to_f16(lo) | ((unsigned)rellax_attn_f32_to_f16(hi) << 16);
}

#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
// Fallback (pre-sm_80 devices, host simulator): every lane's n registers, lane-major: all[lane * n + r].
// The simulator exchanges the registers through its per-warp slots in one step instead of 32·n shuffles.
__device__ __forceinline__ void rellax_attn_warp_gather(const int* mine, int n, int* all) {
#if defined(RELLAX_CUDA_HOST_SIM)
    rellax_sim::warp_gather(mine, n, all);
#else
    for (int src = 0; src < 32; src++)
        for (int r = 0; r < n; r++) all[src * n + r] = __shfl_sync(RELLAX_FULL_MASK, mine[r], src);
#endif
}
#endif

// D(16x8, s32) += A(16x32, s8, row) · B(32x8, s8, col), per the PTX ISA fragment layout of m16n8k32 (g = lane / 4,
// i = lane % 4): a[0] = A[g][4i..4i+3], a[1] = A[g+8][4i..], a[2] = A[g][16+4i..], a[3] = A[g+8][16+4i..];
// b[0] = B[4i..4i+3][g], b[1] = B[16+4i..][g]; c[0..1] = D[g][2i, 2i+1], c[2..3] = D[g+8][2i, 2i+1].
// All 32 lanes must call it.
__device__ __forceinline__ void rellax_attn_mma_s8(int* c /*[4]*/, const int* a /*[4]*/, const int* b /*[2]*/) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    int fa[32 * 4], fb[32 * 2];
    rellax_attn_warp_gather(a, 4, fa);
    rellax_attn_warp_gather(b, 2, fb);
    const int lane = (int)(threadIdx.x % 32), g = lane / 4, i = lane % 4;
    for (int e = 0; e < 4; e++) {
        const int row = g + (e >= 2 ? 8 : 0), col = 2 * i + (e & 1);
        int sum = 0;
        for (int k = 0; k < 32; k++) {
            const int la = (row % 8) * 4 + (k % 16) / 4, ra = (row >= 8 ? 1 : 0) + (k >= 16 ? 2 : 0);
            const int lb = col * 4 + (k % 16) / 4, rb = k >= 16 ? 1 : 0;
            const int av = (int)(signed char)(fa[la * 4 + ra] >> (8 * (k % 4)));
            const int bv = (int)(signed char)(fb[lb * 2 + rb] >> (8 * (k % 4)));
            sum += av * bv;
        }
        c[e] += sum;
    }
#endif
}

// D(16x8, f32) += A(16x16, f16, row) · B(16x8, f16, col), per the PTX ISA layout of m16n8k16 (g = lane / 4,
// i = lane % 4): a[0] = A[g][2i, 2i+1], a[1] = A[g+8][2i..], a[2] = A[g][8+2i..], a[3] = A[g+8][8+2i..];
// b[0] = B[2i, 2i+1][g], b[1] = B[8+2i..][g]; c as for rellax_attn_mma_s8. All 32 lanes must call it.
__device__ __forceinline__ void rellax_attn_mma_f16(float* c /*[4]*/, const unsigned* a /*[4]*/, const unsigned* b /*[2]*/) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    int mine_a[4] = {(int)a[0], (int)a[1], (int)a[2], (int)a[3]}, mine_b[2] = {(int)b[0], (int)b[1]};
    int fa[32 * 4], fb[32 * 2];
    rellax_attn_warp_gather(mine_a, 4, fa);
    rellax_attn_warp_gather(mine_b, 2, fb);
    const int lane = (int)(threadIdx.x % 32), g = lane / 4, i = lane % 4;
    for (int e = 0; e < 4; e++) {
        const int row = g + (e >= 2 ? 8 : 0), col = 2 * i + (e & 1);
        float sum = c[e];
        for (int k = 0; k < 16; k++) {
            const int la = (row % 8) * 4 + (k % 8) / 2, ra = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
            const int lb = col * 4 + (k % 8) / 2, rb = k >= 8 ? 1 : 0;
            const float av = rellax_f16_to_f32((unsigned short)((unsigned)fa[la * 4 + ra] >> (16 * (k % 2))));
            const float bv = rellax_f16_to_f32((unsigned short)((unsigned)fb[lb * 2 + rb] >> (16 * (k % 2))));
            sum += av * bv;
        }
        c[e] = sum;
    }
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Key mean.

// mean[b, h, c] = (float)(Σ_{j = padding[b]}^{T-1} k[b, h, j, c] in fp64 / (T - padding[b])), 0 when no token is valid.
// grid (H, B), any block size (threads loop over channels).
extern "C" __global__ void rellax_attn_key_mean(
    const float* k,          // k is (B, H, T, D) through element strides: row (b, h, t) at b*k_bs + h*k_hs + t*k_ts
    long long k_bs, long long k_hs, long long k_ts,
    const int* padding,      // padding is (B): left-padding tokens of each sequence
    int H, int T, int D,
    float* mean) {           // mean is (B, H, D)
    const int h = blockIdx.x, b = blockIdx.y;
    const int first = padding[b];
    const float* base = k + b * k_bs + h * k_hs;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        double sum = 0.0;
        for (int j = first; j < T; j++) sum += (double)base[j * k_ts + c];
        mean[((long long)b * H + h) * D + c] = T > first ? (float)(sum / (double)(T - first)) : 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Row quantization.

// Row (b, h, t) of x (minus mean[b, h, :] when mean is not null) quantized as AttentionReference.QuantizeRow with
// `multiplier` into destination position p = dst_start + t; rows with p < padding[b] get zeros (scale 0, sum 0).
// One warp per row: grid.x = ceil(B·H·T / 8), block 256.
extern "C" __global__ void __launch_bounds__(32 * RELLAX_ATTN_QUANT_WARPS) rellax_attn_quantize_rows(
    const float* x,          // x is (B, H, T, D) through element strides: row (b, h, t) at b*x_bs + h*x_hs + t*x_ts
    long long x_bs, long long x_hs, long long x_ts,
    const float* mean,       // mean is (B, H, D), or null for no smoothing
    const int* padding,      // padding is (B), in destination positions
    int B, int H, int T, int D,
    float multiplier,
    signed char* xq,         // xq is (B, H, dst_T, dst_D) int8; channels [D, dst_D) written as 0
    float* scales,           // scales is (B, H, dst_T)
    int* sums,               // sums is (B, H, dst_T) Σ_c x̂_c, or null
    int dst_T, int dst_D, int dst_start) {
    const int lane = threadIdx.x % 32;
    const long long row = (long long)blockIdx.x * RELLAX_ATTN_QUANT_WARPS + threadIdx.x / 32;
    if (row >= (long long)B * H * T) return;  // whole warps leave together
    const int t = (int)(row % T), h = (int)((row / T) % H), b = (int)(row / ((long long)T * H));
    const int p = dst_start + t;
    const long long dst_row = ((long long)b * H + h) * dst_T + p;
    signed char* out = xq + dst_row * dst_D;
    constexpr int PER_LANE = RELLAX_ATTN_MAX_D / 32;
    if (p < padding[b]) {
        for (int c = lane; c < dst_D; c += 32) out[c] = 0;
        if (lane == 0) {
            scales[dst_row] = 0.0f;
            if (sums) sums[dst_row] = 0;
        }
        return;
    }
    const float* src = x + b * x_bs + h * x_hs + t * x_ts;
    const float* mu = mean ? mean + ((long long)b * H + h) * D : nullptr;
    float v[PER_LANE];
    float m = 0.0f;
    int nan = 0;
    #pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        const int c = lane + 32 * i;
        v[i] = 0.0f;
        if (c < D) {
            v[i] = mu ? src[c] - mu[c] : src[c];
            nan |= v[i] != v[i];
            m = fmaxf(m, fabsf(v[i]));
        }
    }
    m = rellax_warp_reduce_max(m);
    nan = rellax_warp_reduce_sum_int(nan);
    if (nan) m = __int_as_float(0x7fc00000);  // NaN: the row quantizes to 0 and its scale is NaN
    const bool usable = m > 0.0f && m < __int_as_float(0x7f800000);
    const float inv = usable ? 127.0f / m : 0.0f;
    int sum = 0;
    #pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        const int c = lane + 32 * i;
        if (c < dst_D) {
            int qv = 0;
            if (usable && c < D) {
                qv = __float2int_rn(v[i] * inv);
                qv = qv > 127 ? 127 : (qv < -127 ? -127 : qv);
            }
            out[c] = (signed char)qv;
            sum += qv;
        }
    }
    if (sums) sum = rellax_warp_reduce_sum_int(sum);
    if (lane == 0) {
        scales[dst_row] = m / 127.0f * multiplier;
        if (sums) sums[dst_row] = sum;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Prefill.

// DMAX: largest D this instantiation handles (registers: DMAX/32·4 Q words and DMAX/8·4 accumulators per thread);
// KT: keys per shared-memory tile (a multiple of 16).
template <int DMAX, int KT>
__device__ __forceinline__ void rellax_attn_prefill(
    const signed char* qq,   // qq is (B, Hq, T, Dp) int8 queries (Dp = D rounded up to 32, zero-padded)
    const float* qs,         // qs is (B, Hq, T): query scales (softmax scale · log2 e folded in)
    const signed char* kq,   // kq is (B, Hkv, Tk, Dp) int8 smoothed keys
    const float* ks,         // ks is (B, Hkv, Tk)
    const float* v,          // v is (B, Hkv, Tk, D) f32 through element strides
    long long v_bs, long long v_hs, long long v_ts,
    float* o,                // o is (B, Hq, T, D) f32 through element strides
    long long o_bs, long long o_hs, long long o_ts,
    const int* padding,      // padding is (B), in key positions
    int Hq, int Hkv, int T, int Tk, int D, int Dp, int causal) {
    // Query row r (of T) sits at key position r + shift (shift = Tk - T, 0 for a whole-sequence prefill).
    constexpr int KS = DMAX + 16;     // int8 key row stride in shared memory (bytes): conflict-free fragment loads
    constexpr int VS = KT + 8;        // f16 transposed value row stride (halves)
    constexpr int NT = KT / 8;        // n-tiles of keys per tile
    constexpr int NQ = DMAX / 32;     // k-steps of the Q·Kᵀ mma
    constexpr int ND = DMAX / 8;      // n-tiles of output channels
    __shared__ __align__(16) signed char k_tile[KT * KS];
    __shared__ __align__(16) unsigned short v_tile[DMAX * VS];
    __shared__ float k_scale[KT];
    __shared__ float p_tile[RELLAX_ATTN_WARPS][16][17];

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, qi = lane % 4;
    const int h = blockIdx.y, b = blockIdx.z, kvh = h / (Hq / Hkv);
    const int q0 = blockIdx.x * RELLAX_ATTN_ROWS, row0 = q0 + 16 * warp;
    const int pad = padding[b], shift = Tk - T;
    const int rA = row0 + g, rB = row0 + g + 8;
    const int nq = Dp / 32, nd = D / 8;

    // The warp's Q fragments (rows past T read as 0).
    const long long qrow = ((long long)b * Hq + h) * T;
    int qa[NQ][4];
    #pragma unroll
    for (int s = 0; s < NQ; s++) {
        #pragma unroll
        for (int r = 0; r < 4; r++) qa[s][r] = 0;
        if (s < nq) {
            const int col = s * 32 + qi * 4;
            if (rA < T) {
                qa[s][0] = *(const int*)(qq + (qrow + rA) * Dp + col);
                qa[s][2] = *(const int*)(qq + (qrow + rA) * Dp + col + 16);
            }
            if (rB < T) {
                qa[s][1] = *(const int*)(qq + (qrow + rB) * Dp + col);
                qa[s][3] = *(const int*)(qq + (qrow + rB) * Dp + col + 16);
            }
        }
    }
    const float qsA = rA < T ? qs[qrow + rA] : 0.0f, qsB = rB < T ? qs[qrow + rB] : 0.0f;

    float acc[ND][4];
    #pragma unroll
    for (int n = 0; n < ND; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    const float NEG_INF = -__int_as_float(0x7f800000);
    float mA = NEG_INF, mB = NEG_INF, lA = 0.0f, lB = 0.0f;

    const int kend = causal ? (q0 + RELLAX_ATTN_ROWS < T ? q0 + RELLAX_ATTN_ROWS : T) + shift : Tk;  // keys [pad, kend)
    const long long krow = ((long long)b * Hkv + kvh) * Tk;
    const float* vbase = v + b * v_bs + kvh * v_hs;
    const int pos0 = row0 + shift;  // key position of the warp's first row
    const bool warp_live = row0 < T && pos0 + 15 >= pad;  // some row of this warp is a real query
    for (int kt0 = pad; kt0 < kend; kt0 += KT) {
        __syncthreads();  // the previous tile is no longer read
        // Stage K̂ (int8 rows, 4 bytes per thread step), key scales and f16 Vᵀ; keys past kend are zero.
        for (int e = tid; e < KT * (Dp / 4); e += blockDim.x) {
            const int jj = e / (Dp / 4), w = e % (Dp / 4), j = kt0 + jj;
            *(int*)(k_tile + jj * KS + 4 * w) = j < kend ? *(const int*)(kq + (krow + j) * Dp + 4 * w) : 0;
        }
        for (int jj = tid; jj < KT; jj += blockDim.x) k_scale[jj] = kt0 + jj < kend ? ks[krow + kt0 + jj] : 0.0f;
        for (int e = tid; e < KT * D; e += blockDim.x) {
            const int jj = e / D, c = e % D, j = kt0 + jj;
            v_tile[c * VS + jj] = j < kend ? rellax_attn_f32_to_f16(vbase[j * v_ts + c]) : (unsigned short)0;
        }
        __syncthreads();
        if (!warp_live || (causal && kt0 > pos0 + 15)) continue;  // every key of the tile is masked for this warp

        // S = Q̂ K̂ᵀ (exact int32), then logits and the masked online softmax.
        float sc[NT][4];
        float tmA = NEG_INF, tmB = NEG_INF;
        #pragma unroll
        for (int n = 0; n < NT; n++) {
            int s32[4] = {0, 0, 0, 0};
            #pragma unroll
            for (int s = 0; s < NQ; s++) {
                if (s < nq) {
                    const signed char* kr = k_tile + (n * 8 + g) * KS + s * 32 + qi * 4;
                    const int bf[2] = {*(const int*)kr, *(const int*)(kr + 16)};
                    rellax_attn_mma_s8(s32, qa[s], bf);
                }
            }
            #pragma unroll
            for (int e = 0; e < 4; e++) {
                const int jj = n * 8 + 2 * qi + (e & 1), j = kt0 + jj, row = e < 2 ? rA : rB;
                const bool visible = j < kend && (!causal || j <= row + shift);
                sc[n][e] = visible ? (float)s32[e] * (e < 2 ? qsA : qsB) * k_scale[jj] : NEG_INF;
            }
            tmA = fmaxf(tmA, fmaxf(sc[n][0], sc[n][1]));
            tmB = fmaxf(tmB, fmaxf(sc[n][2], sc[n][3]));
        }
        #pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            tmA = fmaxf(tmA, __shfl_xor_sync(RELLAX_FULL_MASK, tmA, off));
            tmB = fmaxf(tmB, __shfl_xor_sync(RELLAX_FULL_MASK, tmB, off));
        }
        const float nmA = fmaxf(mA, tmA), nmB = fmaxf(mB, tmB);
        const float uA = nmA == NEG_INF ? 0.0f : nmA, uB = nmB == NEG_INF ? 0.0f : nmB;  // no visible key yet
        const float cA = rellax_attn_exp2(mA - uA), cB = rellax_attn_exp2(mB - uB);
        mA = nmA; mB = nmB;
        lA *= cA; lB *= cB;
        #pragma unroll
        for (int n = 0; n < ND; n++) {
            acc[n][0] *= cA; acc[n][1] *= cA; acc[n][2] *= cB; acc[n][3] *= cB;
        }
        #pragma unroll
        for (int n = 0; n < NT; n++) {
            sc[n][0] = rellax_attn_exp2(sc[n][0] - uA); sc[n][1] = rellax_attn_exp2(sc[n][1] - uA);
            sc[n][2] = rellax_attn_exp2(sc[n][2] - uB); sc[n][3] = rellax_attn_exp2(sc[n][3] - uB);
            lA += sc[n][0] + sc[n][1];
            lB += sc[n][2] + sc[n][3];
        }

        // O += P · V, 16 keys at a time: tensor cores where every key is visible to every row of the warp
        // (or none is: skipped); fp32 FMAs with the mask on the diagonal chunks.
        #pragma unroll
        for (int kk = 0; kk < KT / 16; kk++) {
            const int c0 = kt0 + kk * 16;
            if (c0 >= kend || (causal && c0 > pos0 + 15)) continue;  // warp-uniform
            if (!causal || c0 + 15 <= pos0) {
                const unsigned pa[4] = {rellax_attn_pack_f16x2(sc[2 * kk][0], sc[2 * kk][1]),
                                        rellax_attn_pack_f16x2(sc[2 * kk][2], sc[2 * kk][3]),
                                        rellax_attn_pack_f16x2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                                        rellax_attn_pack_f16x2(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
                #pragma unroll
                for (int n = 0; n < ND; n++) {
                    if (n < nd) {
                        const unsigned short* vr = v_tile + (n * 8 + g) * VS + kk * 16 + 2 * qi;
                        const unsigned bf[2] = {*(const unsigned*)vr, *(const unsigned*)(vr + 8)};
                        rellax_attn_mma_f16(acc[n], pa, bf);
                    }
                }
            } else {
                float(*pw)[17] = p_tile[warp];
                __syncwarp();
                pw[g][2 * qi] = sc[2 * kk][0]; pw[g][2 * qi + 1] = sc[2 * kk][1];
                pw[g + 8][2 * qi] = sc[2 * kk][2]; pw[g + 8][2 * qi + 1] = sc[2 * kk][3];
                pw[g][8 + 2 * qi] = sc[2 * kk + 1][0]; pw[g][9 + 2 * qi] = sc[2 * kk + 1][1];
                pw[g + 8][8 + 2 * qi] = sc[2 * kk + 1][2]; pw[g + 8][9 + 2 * qi] = sc[2 * kk + 1][3];
                __syncwarp();
                for (int k = 0; k < 16; k++) {
                    const int j = c0 + k;
                    const bool seeA = j < kend && j <= rA + shift, seeB = j < kend && j <= rB + shift;
                    if (!seeA && !seeB) continue;
                    const float pA = pw[g][k], pB = pw[g + 8][k];
                    #pragma unroll
                    for (int n = 0; n < ND; n++) {
                        if (n < nd) {
                            const float v0 = rellax_f16_to_f32(v_tile[(n * 8 + 2 * qi) * VS + kk * 16 + k]);
                            const float v1 = rellax_f16_to_f32(v_tile[(n * 8 + 2 * qi + 1) * VS + kk * 16 + k]);
                            if (seeA) { acc[n][0] += pA * v0; acc[n][1] += pA * v1; }
                            if (seeB) { acc[n][2] += pB * v0; acc[n][3] += pB * v1; }
                        }
                    }
                }
            }
        }
    }

    // Row sums over the quad, then O / l; padding rows write 0, rows past T nothing.
    #pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
        lA += __shfl_xor_sync(RELLAX_FULL_MASK, lA, off);
        lB += __shfl_xor_sync(RELLAX_FULL_MASK, lB, off);
    }
    const bool realA = rA + shift >= pad, realB = rB + shift >= pad;
    const float invA = realA && lA > 0.0f ? 1.0f / lA : 0.0f;
    const float invB = realB && lB > 0.0f ? 1.0f / lB : 0.0f;
    float* oA = o + b * o_bs + h * o_hs + (long long)rA * o_ts;
    float* oB = o + b * o_bs + h * o_hs + (long long)rB * o_ts;
    #pragma unroll
    for (int n = 0; n < ND; n++) {
        if (n < nd) {
            const int c = n * 8 + 2 * qi;
            if (rA < T) {
                oA[c] = realA ? acc[n][0] * invA : 0.0f;
                oA[c + 1] = realA ? acc[n][1] * invA : 0.0f;
            }
            if (rB < T) {
                oB[c] = realB ? acc[n][2] * invB : 0.0f;
                oB[c + 1] = realB ? acc[n][3] * invB : 0.0f;
            }
        }
    }
}

// Entry points: grid (ceil(T / 64), Hq, B), block 128. D <= the suffix; Dp = D rounded up to 32; T query rows, the
// last T of Tk >= T key positions. Written out (no macro) so that CudaKernelSources.FindEntryPoints sees them.
extern "C" __global__ void __launch_bounds__(32 * RELLAX_ATTN_WARPS) rellax_attn_prefill_int8_d64(
    const signed char* qq, const float* qs, const signed char* kq, const float* ks, const float* v, long long v_bs,
    long long v_hs, long long v_ts, float* o, long long o_bs, long long o_hs, long long o_ts, const int* padding, int Hq,
    int Hkv, int T, int Tk, int D, int Dp, int causal) {
    rellax_attn_prefill<64, 64>(qq, qs, kq, ks, v, v_bs, v_hs, v_ts, o, o_bs, o_hs, o_ts, padding, Hq, Hkv, T, Tk, D, Dp, causal);
}
extern "C" __global__ void __launch_bounds__(32 * RELLAX_ATTN_WARPS) rellax_attn_prefill_int8_d128(
    const signed char* qq, const float* qs, const signed char* kq, const float* ks, const float* v, long long v_bs,
    long long v_hs, long long v_ts, float* o, long long o_bs, long long o_hs, long long o_ts, const int* padding, int Hq,
    int Hkv, int T, int Tk, int D, int Dp, int causal) {
    rellax_attn_prefill<128, 64>(qq, qs, kq, ks, v, v_bs, v_hs, v_ts, o, o_bs, o_hs, o_ts, padding, Hq, Hkv, T, Tk, D, Dp, causal);
}
extern "C" __global__ void __launch_bounds__(32 * RELLAX_ATTN_WARPS) rellax_attn_prefill_int8_d256(
    const signed char* qq, const float* qs, const signed char* kq, const float* ks, const float* v, long long v_bs,
    long long v_hs, long long v_ts, float* o, long long o_bs, long long o_hs, long long o_ts, const int* padding, int Hq,
    int Hkv, int T, int Tk, int D, int Dp, int causal) {
    rellax_attn_prefill<256, 32>(qq, qs, kq, ks, v, v_bs, v_hs, v_ts, o, o_bs, o_hs, o_ts, padding, Hq, Hkv, T, Tk, D, Dp, causal);
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Decode against the int8 cache.

// Query t of Tq is cache position count - Tq + t; it sees positions j in [padding[b], count) with, when causal,
// j ≤ its position; positions inside the padding output 0. One warp per (b, h, t): grid.x = ceil(B·Hq·Tq / 4),
// block 128.
extern "C" __global__ void __launch_bounds__(32 * RELLAX_ATTN_WARPS) rellax_attn_int8_decode(
    const float* q,          // q is (B, Hq, Tq, D) f32 through element strides
    long long q_bs, long long q_hs, long long q_ts,
    const signed char* kc,   // kc is (B, Hkv, cap, D) int8 smoothed keys
    const float* kscale,     // kscale is (B, Hkv, cap)
    const signed char* vc,   // vc is (B, Hkv, cap, D) int8 values
    const float* vscale,     // vscale is (B, Hkv, cap)
    const int* padding,      // padding is (B)
    int B, int Hq, int Hkv, int Tq, int D, int cap, int count,
    float multiplier,        // softmax scale · log2 e
    int causal,
    float* o,                // o is (B, Hq, Tq, D) f32 through element strides
    long long o_bs, long long o_hs, long long o_ts) {
    constexpr int PER_LANE = RELLAX_ATTN_MAX_D / 32;
    __shared__ int q_words[RELLAX_ATTN_WARPS][RELLAX_ATTN_MAX_D / 4];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const long long item = (long long)blockIdx.x * RELLAX_ATTN_WARPS + warp;
    if (item >= (long long)B * Hq * Tq) return;  // whole warps leave together; no block-wide barrier below
    const int t = (int)(item % Tq), h = (int)((item / Tq) % Hq), b = (int)(item / ((long long)Tq * Hq));
    const int kvh = h / (Hq / Hkv), position = count - Tq + t, pad = padding[b];
    float* out = o + b * o_bs + h * o_hs + t * o_ts;
    if (position < pad) {
        for (int c = lane; c < D; c += 32) out[c] = 0.0f;
        return;
    }

    // Quantize the query row (as rellax_attn_quantize_rows) into this warp's shared words.
    const float* src = q + b * q_bs + h * q_hs + t * q_ts;
    float x[PER_LANE];
    float m = 0.0f;
    int nan = 0;
    #pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        const int c = lane + 32 * i;
        x[i] = c < D ? src[c] : 0.0f;
        nan |= x[i] != x[i];
        m = fmaxf(m, fabsf(x[i]));
    }
    m = rellax_warp_reduce_max(m);
    nan = rellax_warp_reduce_sum_int(nan);
    if (nan) m = __int_as_float(0x7fc00000);
    const bool usable = m > 0.0f && m < __int_as_float(0x7f800000);
    const float inv = usable ? 127.0f / m : 0.0f;
    const float qscale = m / 127.0f * multiplier;
    signed char* qbytes = (signed char*)q_words[warp];
    #pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        const int c = lane + 32 * i;
        if (c < D) {
            int qv = 0;
            if (usable) {
                qv = __float2int_rn(x[i] * inv);
                qv = qv > 127 ? 127 : (qv < -127 ? -127 : qv);
            }
            qbytes[c] = (signed char)qv;
        }
    }
    __syncwarp();

    const int last = causal ? position : count - 1;  // visible keys [pad, last]
    const long long base = ((long long)b * Hkv + kvh) * cap;
    const float NEG_INF = -__int_as_float(0x7f800000);
    float mrun = NEG_INF, lsum = 0.0f;
    float acc[PER_LANE];
    #pragma unroll
    for (int i = 0; i < PER_LANE; i++) acc[i] = 0.0f;
    const int words = D / 4;
    for (int j0 = pad; j0 <= last; j0 += 32) {
        const int j = j0 + lane;
        float logit = NEG_INF;
        if (j <= last) {
            const int* kr = (const int*)(kc + (base + j) * D);
            int dot = 0;
            for (int w = 0; w < words; w++) dot = rellax_dp4a(q_words[warp][w], kr[w], dot);
            logit = (float)dot * qscale * kscale[base + j];
        }
        const float cm = rellax_warp_reduce_max(logit);
        const float nm = fmaxf(mrun, cm);
        const float use = nm == NEG_INF ? 0.0f : nm;
        const float corr = rellax_attn_exp2(mrun - use);
        mrun = nm;
        const float p = j <= last ? rellax_attn_exp2(logit - use) : 0.0f;
        lsum = lsum * corr + rellax_warp_reduce_sum(p);
        #pragma unroll
        for (int i = 0; i < PER_LANE; i++) acc[i] *= corr;
        const int n = last - j0 + 1 < 32 ? last - j0 + 1 : 32;
        for (int k = 0; k < n; k++) {
            const float pk = __shfl_sync(RELLAX_FULL_MASK, p, k) * vscale[base + j0 + k];
            const signed char* vr = vc + (base + j0 + k) * D;
            #pragma unroll
            for (int i = 0; i < PER_LANE; i++) {
                const int c = lane + 32 * i;
                if (c < D) acc[i] += pk * (float)vr[c];
            }
        }
    }
    const float invl = lsum > 0.0f ? 1.0f / lsum : 0.0f;
    #pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        const int c = lane + 32 * i;
        if (c < D) out[c] = lsum != lsum ? lsum : acc[i] * invl;
    }
}
