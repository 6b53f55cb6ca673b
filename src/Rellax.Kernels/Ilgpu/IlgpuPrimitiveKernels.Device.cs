using ILGPU;
using ILGPU.Algorithms;

namespace Rellax.Kernels.Ilgpu;

// Device code of the ILGPU primitives: static kernels over ArrayViews, compiled by ILGPU for the accelerator.
// Row-major layouts as in Primitives; linear element indices are computed in long where products can pass 2^31.
internal partial class IlgpuPrimitiveKernels
{
    /// <summary>Edge of the square GEMM tile; the GEMM group is GemmTile x GemmTile = 256 threads.</summary>
    internal const int GemmTile = 16;

    /// <summary>Size of the shared scratch used by group reductions: the largest group any accelerator allows.</summary>
    internal const int MaxGroupSize = 1024;

    // ---------------------------------------------------------------------------------------------------------
    // Group reductions: shared-memory tree over Group.DimX threads (a power of two <= MaxGroupSize).
    // Every thread of the group must call them (they contain barriers); every thread gets the result.
    // ---------------------------------------------------------------------------------------------------------

    private static float GroupSum(ArrayView<float> scratch, float value)
    {
        int tid = Group.IdxX;
        scratch[tid] = value;
        Group.Barrier();
        for (int s = Group.DimX / 2; s > 0; s >>= 1)
        {
            if (tid < s) scratch[tid] += scratch[tid + s];
            Group.Barrier();
        }
        float result = scratch[0];
        Group.Barrier(); // scratch may be reused right after
        return result;
    }

    private static float GroupMax(ArrayView<float> scratch, float value)
    {
        int tid = Group.IdxX;
        scratch[tid] = value;
        Group.Barrier();
        for (int s = Group.DimX / 2; s > 0; s >>= 1)
        {
            if (tid < s) scratch[tid] = XMath.Max(scratch[tid], scratch[tid + s]);
            Group.Barrier();
        }
        float result = scratch[0];
        Group.Barrier();
        return result;
    }

    /// <summary>
    /// Single-precision erf, max error about 1 ulp (N. Juffa's minimax erff: a polynomial in x for |x| &lt; 0.9277,
    /// 1 - exp(polynomial) beyond). ILGPU's XMath has no erf.
    /// </summary>
    internal static float Erf(float a)
    {
        float t = XMath.Abs(a), s = a * a, r;
        if (t > 0.927734375f)
        {
            r = -1.72853470e-5f * t + 3.83197126e-4f;
            float u = -3.88396438e-3f * t + 2.42546219e-2f;
            r = r * s + u;
            r = r * t - 1.06777877e-1f;
            r = r * t - 6.34846687e-1f;
            r = r * t - 1.28717512e-1f;
            r = r * t - t;
            r = 1.0f - XMath.Exp(r);
            r = a < 0 ? -r : r;
        }
        else
        {
            r = -5.96761703e-4f;
            r = r * s + 4.99119423e-3f;
            r = r * s - 2.67681349e-2f;
            r = r * s + 1.12819925e-1f;
            r = r * s - 3.76125336e-1f;
            r = r * s + 1.28379166e-1f;
            r = r * a + a;
        }
        return r;
    }

    // GEMM y[M,N] = x[M,K] · w[N,K]ᵀ, tiled through shared memory.
    // Launch: grid (ceil(N/16), ceil(M/16)), group (16, 16); thread (tx, ty) computes y[row = 16·gy + ty, col = 16·gx + tx].
    // Each K-step stages a 16x16 tile of x (rows of y) and of w (columns of y), padded to 17 to avoid bank conflicts.
    // Roofline: 2·M·N·K FLOPs; global reads (M·K)·ceil(N/16) + (N·K)·ceil(M/16) floats, writes M·N floats
    // (arithmetic intensity about 16/4 = 4 FLOP/byte: memory-bound on modern GPUs; a register-blocked kernel or cuBLAS is faster).
    private static void GemmKernel(ArrayView<float> x, ArrayView<float> w, ArrayView<float> y, int m, int n, int k)
    {
        const int Pitch = GemmTile + 1;
        var xs = SharedMemory.Allocate<float>(GemmTile * Pitch);
        var ws = SharedMemory.Allocate<float>(GemmTile * Pitch);
        int tx = Group.IdxX, ty = Group.IdxY;
        int row = Grid.IdxY * GemmTile + ty;
        int col = Grid.IdxX * GemmTile + tx;
        int wRow = Grid.IdxX * GemmTile + ty; // the w row (output column) this thread stages
        float acc = 0f;
        for (int k0 = 0; k0 < k; k0 += GemmTile)
        {
            int kk = k0 + tx;
            float xv = 0f, wv = 0f;
            if (row < m && kk < k) xv = x[(long)row * k + kk];
            if (wRow < n && kk < k) wv = w[(long)wRow * k + kk];
            xs[ty * Pitch + tx] = xv;
            ws[ty * Pitch + tx] = wv;
            Group.Barrier();
            for (int p = 0; p < GemmTile; p++) acc += xs[ty * Pitch + p] * ws[tx * Pitch + p];
            Group.Barrier();
        }
        if (row < m && col < n) y[(long)row * n + col] = acc;
    }

    // RMSNorm, one group per row: y = x / sqrt(mean(x²) + eps) · weight.
    // Launch: grid R, group G = RowConfig (power of two from one warp up to RowGroupSize = min(256, device limit), by row length); threads stride over the row, tree-reduce the sum of squares.
    // Roofline: 3·N FLOPs per row; reads 2·N floats (x twice, mostly cached) + N (weight), writes N: memory-bound.
    private static void RmsNormKernel(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> y, int n, float eps)
    {
        var scratch = SharedMemory.Allocate<float>(MaxGroupSize);
        long b = (long)Grid.IdxX * n;
        float ss = 0f;
        for (int i = Group.IdxX; i < n; i += Group.DimX)
        {
            float v = x[b + i];
            ss += v * v;
        }
        float total = GroupSum(scratch, ss);
        float inv = 1f / XMath.Sqrt(total / n + eps);
        for (int i = Group.IdxX; i < n; i += Group.DimX) y[b + i] = x[b + i] * inv * weight[i];
    }

    // LayerNorm, one group per row, two-pass (mean, then centred variance) for accuracy.
    // Launch: grid R, group G = RowConfig(...). Roofline: about 6·N FLOPs per row; reads 3·N + 2·N floats, writes N: memory-bound.
    private static void LayerNormKernel(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias, ArrayView<float> y, int n, float eps)
    {
        var scratch = SharedMemory.Allocate<float>(MaxGroupSize);
        long b = (long)Grid.IdxX * n;
        float sum = 0f;
        for (int i = Group.IdxX; i < n; i += Group.DimX) sum += x[b + i];
        float mean = GroupSum(scratch, sum) / n;
        float sq = 0f;
        for (int i = Group.IdxX; i < n; i += Group.DimX)
        {
            float d = x[b + i] - mean;
            sq += d * d;
        }
        float inv = 1f / XMath.Sqrt(GroupSum(scratch, sq) / n + eps);
        for (int i = Group.IdxX; i < n; i += Group.DimX) y[b + i] = (x[b + i] - mean) * inv * weight[i] + bias[i];
    }

    // Softmax over rows, one group per row: max (tree), sum of exp (tree), then write.
    // Launch: grid R, group G = RowConfig(...). Roofline: about 3·N FLOPs + N exp per row; reads 3·N floats, writes N.
    private static void SoftmaxKernel(ArrayView<float> x, ArrayView<float> y, int n)
    {
        var scratch = SharedMemory.Allocate<float>(MaxGroupSize);
        long b = (long)Grid.IdxX * n;
        float max = float.NegativeInfinity;
        for (int i = Group.IdxX; i < n; i += Group.DimX) max = XMath.Max(max, x[b + i]);
        max = GroupMax(scratch, max);
        float sum = 0f;
        for (int i = Group.IdxX; i < n; i += Group.DimX) sum += XMath.Exp(x[b + i] - max);
        float inv = 1f / GroupSum(scratch, sum);
        for (int i = Group.IdxX; i < n; i += Group.DimX) y[b + i] = XMath.Exp(x[b + i] - max) * inv;
    }

    // RoPE (HF rotate_half), in place on x[T,H,D]: one thread per (t, h, i < D/2) rotates (x[i], x[i + D/2]) by
    // the angle at (positions[t], i). Positions outside [0, P) leave the pair unchanged (no device-side exception).
    // Launch: auto-grouped over T·H·D/2. Roofline: 6 FLOPs per pair; reads 2 + 2 floats, writes 2: memory-bound.
    private static void RopeKernel(Index1D index, ArrayView<float> x, ArrayView<int> positions, ArrayView<float> cos, ArrayView<float> sin,
        int heads, int half, int tablePositions)
    {
        int idx = index.X;
        int i = idx % half;
        int th = idx / half;
        int p = positions[th / heads];
        if (p < 0 || p >= tablePositions) return;
        long b = (long)th * (2 * half);
        long a = (long)p * half + i;
        float x1 = x[b + i], x2 = x[b + i + half], c = cos[a], s = sin[a];
        x[b + i] = x1 * c - x2 * s;
        x[b + i + half] = x2 * c + x1 * s;
    }

    // SwiGLU y = gate / (1 + e^-gate) · up. Launch: auto-grouped over the element count.
    // Roofline: about 4 FLOPs + 1 exp per element; reads 8 bytes, writes 4: memory-bound.
    private static void SwiGluKernel(Index1D i, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> y)
    {
        float g = gate[i];
        y[i] = g / (1f + XMath.Exp(-g)) * up[i];
    }

    // Exact GELU y = x/2 · (1 + erf(x/√2)). Launch: auto-grouped over the element count.
    // Roofline: about 20 FLOPs (+1 exp beyond |x/√2| > 0.93) per element; reads 4 bytes, writes 4.
    private static void GeluKernel(Index1D i, ArrayView<float> x, ArrayView<float> y)
    {
        float v = x[i];
        y[i] = 0.5f * v * (1f + Erf(v * 0.707106781186547524f));
    }

    // Embedding gather y[t, :] = table[ids[t], :], the table stored as `code` (IlgpuCfloraKernels.WeightF32/F16/Bf16:
    // the float view or the 16-bit view, the other a 1-element dummy), widened exactly. Ids outside [0, V) produce a
    // zero row (no device-side exception; the CPU backend throws instead). Launch: auto-grouped over T·H.
    // Roofline: no FLOPs; reads T·H table elements (4 or 2 bytes), writes 4·T·H bytes.
    private static void EmbeddingKernel(Index1D index, ArrayView<int> ids, ArrayView<float> tableF32, ArrayView<ushort> table16, int code,
        ArrayView<float> y, int hidden, int vocab)
    {
        int idx = index.X;
        int id = ids[idx / hidden];
        y[idx] = id >= 0 && id < vocab ? IlgpuCfloraKernels.LoadWeight(code, tableF32, table16, (long)id * hidden + idx % hidden) : 0f;
    }

    // Row scatter dst[rows[i], :] = src[i, :]. Rows outside [0, R) are skipped (no device-side exception; the CPU backend
    // throws). Launch: auto-grouped over n·H. Roofline: no FLOPs; reads and writes 4·n·H bytes.
    private static void ScatterRowsKernel(Index1D index, ArrayView<float> src, ArrayView<int> rows, ArrayView<float> dst, int hidden, int dstRows)
    {
        int idx = index.X;
        int row = rows[idx / hidden];
        if (row >= 0 && row < dstRows) dst[(long)row * hidden + idx % hidden] = src[idx];
    }

    // Elementwise y = a + b. Launch: auto-grouped over the element count. Roofline: 1 FLOP per 12 bytes.
    private static void AddKernel(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => y[i] = a[i] + b[i];
}
