// subr_topk.cu: SUBR semantic user-behaviour retrieval (SPEC section 2), one fused pass per sample: gather the
// history rows of the item-embedding table, dot each with the target row, and keep the k best, without ever writing
// the B x L score matrix. The C# contract is ISubrKernels (src/Rellax.Kernels/Subr), the ground truth SubrReference.
//
//   score(p) = dot(E[target[b]], E[history[offsets[b] + p]])     f32 / f16 (widened) tables, fp32 accumulation
//   score(p) = (float)(sum_c q_t[c] q_h[c]) * (scale[t] * scale[h]) i8 tables: exact int32 dot, two fp32 multiplies
//   keep the n = min(L, k) best positions by (score desc, position desc: the more recent event wins a tie), write
//   them chronologically (position ascending) or best first; slots n..k-1 get position -1 and score NaN.
//
// Algorithm (rellax_subr_topk_{f32,f16,i8}, one block per sample, grid-stride over samples, 256 threads = 8 warps):
//   1. Rows are scored in tiles of blockDim.x rows: warp w scores positions base + 32 w + j (j < 32). The 32 ids of a
//      warp are one coalesced 128-byte load (lane j holds id j, broadcast by __shfl_sync), and the next tile's ids are
//      loaded before the current tile is scored (a prefetch one tile deep).
//   2. One warp per row: lanes stride over the row in 16-byte vectors (float4 for f32, 8 halves as a uint4 widened by
//      PTX cvt.f32.f16 for f16, 16 int8 as an int4 with 4 x dp4a for i8), coalesced 512-byte warp loads; a scalar
//      path per type when d is not a multiple of the vector width or the table is not 16-byte aligned. A warp scores
//      1 (f32), 2 (f16) or 4 (i8) rows per step in one loop, so about 2 KiB of rows are in flight per warp at d = 512.
//      Partial sums are combined by an xor-shuffle butterfly. The operation order depends only on (d, dtype,
//      alignment), never on the warp, the step or the row's place in a tile: two occurrences of an item, or two
//      identical rows, score bitwise-equal.
//      The target row is re-read by every warp from global memory (2 KiB at d = 512: an L1 hit after the first row).
//   3. Selection: a (score, position) pair is packed into one 64-bit key that orders exactly like (score desc,
//      position desc): high word = the float's bits mapped to an unsigned order (-0 folded onto +0, NaN lowest), low
//      word = the position. Shared memory holds keys[2048] (16 KiB): [0, cnt) are the current best (cnt <= k), then a
//      queue [cnt, cnt + q). A row whose key is >= the threshold (the k-th best key once cnt = k, else 0: accept all)
//      is appended by its warp's lane 0 through a shared atomicAdd. Keys are unique (positions are), and later rows
//      have larger positions, so a row that ties the k-th best score beats it, as the order demands.
//      Before a tile, if cnt + q + tile could exceed `limit` (the next power of two >= k + tile, clamped to
//      [512, 2048]), the list and the queue are merged: a bitonic sort (descending) of all cnt + q keys padded to a
//      power of two in shared memory, keep the first min(k, cnt + q), threshold = the k-th. Random scores make
//      O(k log(L / k)) rows pass the threshold, so merges are rare after the first few tiles; an adversarial
//      ascending-score history merges every (limit - k) / tile tiles.
//   4. At the end a last merge leaves the n best sorted best first; for chronological order the keys are re-packed
//      as (INT_MAX - position, score) and bitonic-sorted again. Threads write positions and scores (coalesced), and
//      -1 / NaN in slots n..k-1.
//
// Launch: grid (min(B, 262144)), block (256; any multiple of 32 up to 256 works, tiles are blockDim.x rows);
// static shared memory 16 KiB + 16 bytes. Registers (ptxas, sm_90): 38 (f32), 40 (f16), 60 (i8), i.e. 6, 6 and 4
// resident blocks (48, 48, 32 warps) per SM.
//
// Roofline, per sample: L d elem bytes of gathered rows (elem = 4 / 2 / 1 for f32 / f16 / i8; plus 4 bytes of scale
// per row for i8) + 4 L bytes of ids + d elem for the target + 8 k bytes written; 2 L d FLOPs (int8 ops for i8).
// At d = 512 that is 2048 / 1024 / 516 bytes per row against 1024 FLOPs: 0.5 / 1 / 2 FLOP per byte, far below the
// H100's ridge point (~20 fp32 FLOP/byte at 67 TFLOP/s and 3.35 TB/s HBM3), so the kernel is bound by the random-row
// gather. Rows are 512 to 2048 contiguous bytes, i.e. whole 32-byte sectors, so the gather runs near streaming
// bandwidth when enough bytes are in flight: 32 to 48 warps per SM x ~2 KiB each = 64 to 96 KiB per SM, above the
// ~20 KiB per SM that Little's law asks for (3.35 TB/s x ~0.8 us / 132 SMs). Expected floor at B = 1024,
// L = 2000, d = 512: 4.2 GB / 3.35 TB/s = 1.25 ms (f32), 0.32 ms (i8). Hot items (repeated in a history, or shared
// between samples) come from L2 and go faster. Selection costs O(L) shared-memory compares plus the rare merges.
// Limits: one block per sample, so a batch whose time is dominated by one very long history uses one SM for it;
// warp-per-row leaves lanes idle for d < 128 (f32).
#include "rellax_common.cuh"

#define RELLAX_SUBR_MAX_K 1024
#define RELLAX_SUBR_SLOTS 2048  // keys in shared memory: the best k plus the candidate queue

// Dot-product paths: by dtype, vectorised (16-byte loads) or scalar.
#define RELLAX_SUBR_PATH_F32_VEC 0
#define RELLAX_SUBR_PATH_F32 1
#define RELLAX_SUBR_PATH_F16_VEC 2
#define RELLAX_SUBR_PATH_F16 3
#define RELLAX_SUBR_PATH_I8_VEC 4
#define RELLAX_SUBR_PATH_I8 5

// Sum of the two halves of a 32-bit word (low half first) multiplied pairwise, accumulated into acc in a fixed order.
__device__ __forceinline__ float rellax_subr_fma_half2(unsigned int t, unsigned int h, float acc) {
    acc = fmaf(rellax_f16_to_f32((unsigned short)(t & 0xffffu)), rellax_f16_to_f32((unsigned short)(h & 0xffffu)), acc);
    acc = fmaf(rellax_f16_to_f32((unsigned short)(t >> 16)), rellax_f16_to_f32((unsigned short)(h >> 16)), acc);
    return acc;
}

// The scores of R table rows h[0..R) against target row t, computed by the whole warp (all 32 lanes must call; every
// lane gets the results). The R rows share one loop so that their loads are in flight together; each row's own
// operation order depends only on PATH and d (not on R, nor on which warp or slot computes it).
template <int PATH, int R>
__device__ __forceinline__ void rellax_subr_scores(const void* table, const float* scales, long long t, const int* h /* [R] */,
                                                   int d, int lane, float* out /* [R] */) {
    if constexpr (PATH == RELLAX_SUBR_PATH_I8_VEC || PATH == RELLAX_SUBR_PATH_I8) {
        int acc[R];
        #pragma unroll
        for (int r = 0; r < R; r++) acc[r] = 0;
        if (PATH == RELLAX_SUBR_PATH_I8_VEC) {
            const int4* tv = (const int4*)((const signed char*)table + t * d);  // tv is (d / 16), 16 int8 each
            const int nv = d / 16;
            for (int v = lane; v < nv; v += RELLAX_WARP_SIZE) {
                const int4 a = tv[v];
                int4 b[R];
                #pragma unroll
                for (int r = 0; r < R; r++) b[r] = ((const int4*)((const signed char*)table + (long long)h[r] * d))[v];
                #pragma unroll
                for (int r = 0; r < R; r++) {
                    acc[r] = rellax_dp4a(a.x, b[r].x, acc[r]);
                    acc[r] = rellax_dp4a(a.y, b[r].y, acc[r]);
                    acc[r] = rellax_dp4a(a.z, b[r].z, acc[r]);
                    acc[r] = rellax_dp4a(a.w, b[r].w, acc[r]);
                }
            }
        } else {
            const signed char* tr = (const signed char*)table + t * d;  // tr is (d)
            for (int c = lane; c < d; c += RELLAX_WARP_SIZE) {
                const int a = tr[c];
                #pragma unroll
                for (int r = 0; r < R; r++) acc[r] += a * (int)((const signed char*)table)[(long long)h[r] * d + c];
            }
        }
        const float st = scales[t];
        #pragma unroll
        for (int r = 0; r < R; r++) {
            const int dot = rellax_warp_reduce_sum_int(acc[r]);  // exact: |dot| <= 127^2 d < 2^31 for d <= SubrTable.MaxInt8Dim
            const float s = st * scales[h[r]];
            out[r] = (float)dot * s;
        }
    } else {
        float acc[R];
        #pragma unroll
        for (int r = 0; r < R; r++) acc[r] = 0.0f;
        if (PATH == RELLAX_SUBR_PATH_F32_VEC) {
            const float4* tv = (const float4*)((const float*)table + t * d);  // tv is (d / 4)
            const int nv = d / 4;
            #pragma unroll 4
            for (int v = lane; v < nv; v += RELLAX_WARP_SIZE) {
                const float4 a = tv[v];
                float4 b[R];
                #pragma unroll
                for (int r = 0; r < R; r++) b[r] = ((const float4*)((const float*)table + (long long)h[r] * d))[v];
                #pragma unroll
                for (int r = 0; r < R; r++) {
                    acc[r] = fmaf(a.x, b[r].x, acc[r]);
                    acc[r] = fmaf(a.y, b[r].y, acc[r]);
                    acc[r] = fmaf(a.z, b[r].z, acc[r]);
                    acc[r] = fmaf(a.w, b[r].w, acc[r]);
                }
            }
        } else if (PATH == RELLAX_SUBR_PATH_F32) {
            const float* tr = (const float*)table + t * d;  // tr is (d)
            #pragma unroll 4
            for (int c = lane; c < d; c += RELLAX_WARP_SIZE) {
                const float a = tr[c];
                #pragma unroll
                for (int r = 0; r < R; r++) acc[r] = fmaf(a, ((const float*)table)[(long long)h[r] * d + c], acc[r]);
            }
        } else if (PATH == RELLAX_SUBR_PATH_F16_VEC) {
            const uint4* tv = (const uint4*)((const unsigned short*)table + t * d);  // tv is (d / 8), 8 halves each
            const int nv = d / 8;
            #pragma unroll 2
            for (int v = lane; v < nv; v += RELLAX_WARP_SIZE) {
                const uint4 a = tv[v];
                uint4 b[R];
                #pragma unroll
                for (int r = 0; r < R; r++) b[r] = ((const uint4*)((const unsigned short*)table + (long long)h[r] * d))[v];
                #pragma unroll
                for (int r = 0; r < R; r++) {
                    acc[r] = rellax_subr_fma_half2(a.x, b[r].x, acc[r]);
                    acc[r] = rellax_subr_fma_half2(a.y, b[r].y, acc[r]);
                    acc[r] = rellax_subr_fma_half2(a.z, b[r].z, acc[r]);
                    acc[r] = rellax_subr_fma_half2(a.w, b[r].w, acc[r]);
                }
            }
        } else {  // RELLAX_SUBR_PATH_F16
            const unsigned short* tr = (const unsigned short*)table + t * d;  // tr is (d)
            #pragma unroll 4
            for (int c = lane; c < d; c += RELLAX_WARP_SIZE) {
                const float a = rellax_f16_to_f32(tr[c]);
                #pragma unroll
                for (int r = 0; r < R; r++)
                    acc[r] = fmaf(a, rellax_f16_to_f32(((const unsigned short*)table)[(long long)h[r] * d + c]), acc[r]);
            }
        }
        #pragma unroll
        for (int r = 0; r < R; r++) out[r] = rellax_warp_reduce_sum(acc[r]);
    }
}

// Rows scored together by one warp: about 2 KiB of row data in flight per warp at d = 512 (f32: one row of 4 float4
// per lane; f16: 2 rows; i8: 4 rows of one int4 per lane). Scalar paths (odd shapes) take one row at a time.
template <int PATH>
__device__ constexpr int rellax_subr_rows_per_step() {
    return PATH == RELLAX_SUBR_PATH_I8_VEC ? 4 : PATH == RELLAX_SUBR_PATH_F16_VEC ? 2 : 1;
}

// (score, position) -> a 64-bit key whose unsigned order is (score asc, position asc), so larger = better.
// -0 is folded onto +0 (they compare equal as floats) and NaN sorts below everything.
__device__ __forceinline__ unsigned long long rellax_subr_key(float score, int position) {
    unsigned int u;
    if (score != score) {
        u = 0u;
    } else {
        if (score == 0.0f) score = 0.0f;
        const unsigned int bits = __float_as_uint(score);
        u = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    }
    return ((unsigned long long)u << 32) | (unsigned int)position;
}

// The score of a key's high word (NaN for the NaN key 0).
__device__ __forceinline__ float rellax_subr_key_score(unsigned int u) {
    return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

// Sorts keys[0, n) descending, n a power of two (1 to RELLAX_SUBR_SLOTS). All threads call; synchronizes at the end.
__device__ __forceinline__ void rellax_subr_bitonic_desc(unsigned long long* keys, int n) {
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < (n >> 1); t += blockDim.x) {
                const int i = 2 * t - (t & (stride - 1));  // i has bit `stride` clear, j = i + stride
                const int j = i + stride;
                const unsigned long long a = keys[i], b = keys[j];
                const bool descending = (i & size) == 0;
                if (descending ? a < b : a > b) {
                    keys[i] = b;
                    keys[j] = a;
                }
            }
            __syncthreads();
        }
    }
    __syncthreads();
}

__device__ __forceinline__ int rellax_subr_pow2_at_least(int n) {
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

// Merges the best list keys[0, *cnt) with the queue keys[*cnt, *cnt + *queued): afterwards keys[0, *cnt) holds the
// min(k, cnt + queued) best, sorted best first, the queue is empty and *threshold is the k-th best key (0 while fewer
// than k are known). All threads call; the shared counters must be stable (no atomicAdd in flight). Synchronizes.
__device__ __forceinline__ void rellax_subr_merge(unsigned long long* keys, int* cnt, int* queued,
                                                  unsigned long long* threshold, int k) {
    const int total = *cnt + *queued;
    const int n = rellax_subr_pow2_at_least(total);
    for (int i = total + threadIdx.x; i < n; i += blockDim.x) keys[i] = 0ull;  // padding sorts last
    __syncthreads();  // padding written; every thread has read the counters
    rellax_subr_bitonic_desc(keys, n);
    if (threadIdx.x == 0) {
        const int kept = total < k ? total : k;
        *cnt = kept;
        *queued = 0;
        *threshold = kept == k ? keys[k - 1] : 0ull;
    }
    __syncthreads();
}

// The kernel body for one dot-product path. The shared state comes from rellax_subr_topk_dtype (declared once there,
// so the vector and scalar instantiations do not each reserve 16 KiB): keys (RELLAX_SUBR_SLOTS), the threshold and two
// counters.
template <int PATH>
__device__ __forceinline__ void rellax_subr_topk_impl(
    const void* table, const float* scales, const int* history, const int* offsets, const int* targets,
    int B, int d, int k, int by_score, int* positions, float* scores,
    unsigned long long* keys, unsigned long long& s_threshold, int& s_cnt, int& s_queued) {
    const int lane = threadIdx.x % RELLAX_WARP_SIZE;
    const int warp = threadIdx.x / RELLAX_WARP_SIZE;
    const int tile = blockDim.x;  // rows per tile: 32 per warp
    int limit = rellax_subr_pow2_at_least(k + tile);
    if (limit < 512) limit = 512;
    if (limit > RELLAX_SUBR_SLOTS) limit = RELLAX_SUBR_SLOTS;

    for (int b = blockIdx.x; b < B; b += gridDim.x) {
        if (threadIdx.x == 0) {
            s_cnt = 0;
            s_queued = 0;
            s_threshold = 0ull;
        }
        __syncthreads();
        const int start = offsets[b];
        const int L = offsets[b + 1] - start;
        const long long target = targets[b];
        const int* hist = history + start;  // hist is (L)

        int my_id = warp * RELLAX_WARP_SIZE + lane < L ? hist[warp * RELLAX_WARP_SIZE + lane] : 0;
        for (int base = 0; base < L; base += tile) {
            if (s_cnt + s_queued + tile > limit) rellax_subr_merge(keys, &s_cnt, &s_queued, &s_threshold, k);
            const unsigned long long threshold = s_threshold;
            const int cnt = s_cnt;
            __syncthreads();  // every thread has read the counters before any atomicAdd below

            const int next = base + tile + warp * RELLAX_WARP_SIZE + lane;
            const int next_id = next < L ? hist[next] : 0;  // prefetch the next tile's ids
            const int first = base + warp * RELLAX_WARP_SIZE;
            const int rows = L - first < RELLAX_WARP_SIZE ? L - first : RELLAX_WARP_SIZE;  // may be <= 0
            constexpr int R = rellax_subr_rows_per_step<PATH>();
            int j = 0;
            for (; j + R <= rows; j += R) {
                int row[R];
                float score[R];
                #pragma unroll
                for (int r = 0; r < R; r++) row[r] = __shfl_sync(RELLAX_FULL_MASK, my_id, j + r);
                rellax_subr_scores<PATH, R>(table, scales, target, row, d, lane, score);
                if (lane == 0) {
                    #pragma unroll
                    for (int r = 0; r < R; r++) {
                        const unsigned long long key = rellax_subr_key(score[r], first + j + r);
                        if (key >= threshold) keys[cnt + atomicAdd(&s_queued, 1)] = key;
                    }
                }
            }
            for (; j < rows; j++) {  // the warp's last rows (fewer than R)
                const int row = __shfl_sync(RELLAX_FULL_MASK, my_id, j);
                float score;
                rellax_subr_scores<PATH, 1>(table, scales, target, &row, d, lane, &score);
                if (lane == 0) {
                    const unsigned long long key = rellax_subr_key(score, first + j);
                    if (key >= threshold) keys[cnt + atomicAdd(&s_queued, 1)] = key;
                }
            }
            my_id = next_id;
            __syncthreads();  // the queue is complete before the next tile's counters are read
        }
        rellax_subr_merge(keys, &s_cnt, &s_queued, &s_threshold, k);
        const int n = s_cnt;

        if (!by_score && n > 1) {
            // Re-key as (INT_MAX - position, score bits): descending order is then position ascending.
            const int m = rellax_subr_pow2_at_least(n);
            for (int i = threadIdx.x; i < m; i += blockDim.x) {
                if (i < n) {
                    const unsigned long long key = keys[i];
                    keys[i] = ((unsigned long long)(0x7fffffffu - (unsigned int)(key & 0xffffffffu)) << 32) | (key >> 32);
                } else {
                    keys[i] = 0ull;
                }
            }
            __syncthreads();
            rellax_subr_bitonic_desc(keys, m);
        }
        int* out_pos = positions + (long long)b * k;  // out_pos is (k)
        float* out_score = scores + (long long)b * k;  // out_score is (k)
        for (int i = threadIdx.x; i < k; i += blockDim.x) {
            if (i < n) {
                const unsigned long long key = keys[i];
                if (by_score || n == 1) {
                    out_pos[i] = (int)(unsigned int)(key & 0xffffffffu);
                    out_score[i] = rellax_subr_key_score((unsigned int)(key >> 32));
                } else {
                    out_pos[i] = (int)(0x7fffffffu - (unsigned int)(key >> 32));
                    out_score[i] = rellax_subr_key_score((unsigned int)(key & 0xffffffffu));
                }
            } else {
                out_pos[i] = -1;
                out_score[i] = __int_as_float(0x7fc00000);  // NaN
            }
        }
        __syncthreads();  // keys and counters are reused by the next sample
    }
}

// One table dtype: the vectorised path when the table is 16-byte aligned and d is a multiple of the vector width
// (`width` elements of 16 bytes), else the scalar path. Declares the shared state once for both paths.
template <int VEC_PATH, int SCALAR_PATH>
__device__ __forceinline__ void rellax_subr_topk_dtype(
    int width, const void* table, const float* scales, const int* history, const int* offsets, const int* targets,
    int B, int d, int k, int by_score, int* positions, float* scores) {
    __shared__ unsigned long long keys[RELLAX_SUBR_SLOTS];
    __shared__ unsigned long long s_threshold;
    __shared__ int s_cnt, s_queued;
    const bool aligned16 = ((unsigned long long)table & 15ull) == 0ull;
    if (aligned16 && d % width == 0)
        rellax_subr_topk_impl<VEC_PATH>(table, scales, history, offsets, targets, B, d, k, by_score, positions, scores,
                                        keys, s_threshold, s_cnt, s_queued);
    else
        rellax_subr_topk_impl<SCALAR_PATH>(table, scales, history, offsets, targets, B, d, k, by_score, positions, scores,
                                           keys, s_threshold, s_cnt, s_queued);
}

// Entry points, one per table dtype (separate kernels, so each gets the registers its own paths need: about 38 for
// f32, 40 for f16, 60 for i8 on sm_90, against 63 for one kernel holding all six paths). Same arguments for all:
//   const void*  table      table is (N, d), row-major, of the entry point's dtype
//   const float* scales     scales is (N): the row dequantisation scales of an i8 table; unused (may be null) otherwise
//   const int*   history    history is (offsets[B]): the rows of every history, each in time order
//   const int*   offsets    offsets is (B + 1)
//   const int*   targets    targets is (B)
//   int B, int d            d >= 1
//   int k                   1 <= k <= RELLAX_SUBR_MAX_K
//   int by_score            0: chronological output, else best first
//   int*   positions        positions is (B, k), output
//   float* scores           scores is (B, k), output
// One block per sample (grid-stride when gridDim.x < B), blockDim.x a multiple of 32, at most 256 (the
// __launch_bounds__; 256 intended). All arguments are validated by the caller (SubrTopK): rows in [0, N), offsets
// non-decreasing with offsets[0] = 0, 1 <= k <= RELLAX_SUBR_MAX_K, finite table.
#define RELLAX_SUBR_ENTRY_PARAMS                                                                                     \
    const void *table, const float *scales, const int *history, const int *offsets, const int *targets, int B, int d, \
        int k, int by_score, int *positions, float *scores
#define RELLAX_SUBR_ENTRY_ARGS table, scales, history, offsets, targets, B, d, k, by_score, positions, scores

extern "C" __global__ void __launch_bounds__(256) rellax_subr_topk_f32(RELLAX_SUBR_ENTRY_PARAMS) {
    rellax_subr_topk_dtype<RELLAX_SUBR_PATH_F32_VEC, RELLAX_SUBR_PATH_F32>(4, RELLAX_SUBR_ENTRY_ARGS);
}

extern "C" __global__ void __launch_bounds__(256) rellax_subr_topk_f16(RELLAX_SUBR_ENTRY_PARAMS) {
    rellax_subr_topk_dtype<RELLAX_SUBR_PATH_F16_VEC, RELLAX_SUBR_PATH_F16>(8, RELLAX_SUBR_ENTRY_ARGS);
}

extern "C" __global__ void __launch_bounds__(256) rellax_subr_topk_i8(RELLAX_SUBR_ENTRY_PARAMS) {
    rellax_subr_topk_dtype<RELLAX_SUBR_PATH_I8_VEC, RELLAX_SUBR_PATH_I8>(16, RELLAX_SUBR_ENTRY_ARGS);
}
