using ILGPU;

namespace Rellax.Kernels.Ilgpu;

// Device code of the ILGPU CFLoRA kernels: static kernels over ArrayViews, compiled by ILGPU for the accelerator.
// Weights (W0, A, B) arrive in one of three storages, chosen by a uniform dtype code (one branch per element load,
// the same for every thread of the grid, so no divergence): WeightF32 reads the float view, WeightF16 and WeightBf16
// read 16-bit words from the ushort view and widen them by hand (exact; no reliance on System.Half inside kernels).
// The view a code does not use is a 1-element dummy. Accumulation is always fp32.
internal partial class IlgpuCfloraKernels
{
    /// <summary>Weight storage code: f32 (float view).</summary>
    internal const int WeightF32 = 0;

    /// <summary>Weight storage code: IEEE f16 bits (ushort view).</summary>
    internal const int WeightF16 = 1;

    /// <summary>Weight storage code: bfloat16 bits (ushort view).</summary>
    internal const int WeightBf16 = 2;

    /// <summary>Largest adapter rank r the down kernel supports (u lives in shared memory).</summary>
    internal const int MaxRank = 256;

    /// <summary>Size of the shared scratch of the group reductions: the largest group any accelerator allows.</summary>
    private const int MaxGroupSize = IlgpuPrimitiveKernels.MaxGroupSize;

    /// <summary>Edge of the fused GEMM tile; the group is Tile x Tile = 256 threads.</summary>
    internal const int Tile = IlgpuPrimitiveKernels.GemmTile;

    /// <summary>IEEE binary16 bits to float, exactly (normals, subnormals, ±0, ±inf, NaN), without denormal floats.</summary>
    internal static float HalfBitsToFloat(ushort bits)
    {
        uint h = bits;
        uint sign = (h & 0x8000u) << 16;
        uint em = h & 0x7FFFu;
        uint magnitude;
        if (em >= 0x7C00u) magnitude = 0x7F800000u | ((em & 0x3FFu) << 13); // inf / NaN (payload kept)
        else if (em >= 0x0400u) magnitude = (em << 13) + ((127u - 15u) << 23); // normal: rebias the exponent
        else magnitude = ILGPU.Interop.FloatAsInt(em * 5.9604644775390625e-8f); // subnormal or zero: em · 2^-24, exact
        return ILGPU.Interop.IntAsFloat(sign | magnitude);
    }

    /// <summary>bfloat16 bits to float (exact: the upper half of a binary32).</summary>
    internal static float Bf16BitsToFloat(ushort bits) => ILGPU.Interop.IntAsFloat((uint)bits << 16);

    /// <summary>Element <paramref name="i"/> of a weight stored as <paramref name="code"/>, widened to float.</summary>
    internal static float LoadWeight(int code, ArrayView<float> f32, ArrayView<ushort> bits16, long i) =>
        code == WeightF32 ? f32[i]
        : code == WeightF16 ? HalfBitsToFloat(bits16[i])
        : Bf16BitsToFloat(bits16[i]);

    // Kernel 1, adapter down-projection and interaction, one group per token row t (s = rowSample[t]):
    //   u = A x[t] (r values, shared memory), then v[t, j] = scale · Σ_i u[i] · G[s][i][j].
    // The group (G threads, a power of two) is split into G/lanes teams of `lanes` threads (lanes a power of two,
    // at least one warp where the group allows: coalesced reads of an A row); team k computes u[i] for
    // i = k, k + teams, ... by striding over d_in and tree-reducing its lanes in shared memory. Then threads stride
    // over j for v (reads of G[s] coalesced across j).
    // Launch: grid T, group G = min(256, device limit); shared (MaxGroupSize + MaxRank) floats (5 KiB).
    // Roofline: 2·r·d_in + 2·r² FLOPs per row; reads d_in (x) + r·d_in (A, cached across rows) + r² (G) values,
    // writes r floats. Tiny next to the base GEMM (r ≪ d_out): latency-bound; its output feeds kernel 2's K loop.
    private static void DownKernel(ArrayView<float> x, ArrayView<float> aF32, ArrayView<ushort> a16, int aCode,
        ArrayView<float> g, ArrayView<int> rowSample, ArrayView<float> v, int din, int r, int lanes, float scale)
    {
        var partial = SharedMemory.Allocate<float>(MaxGroupSize);
        var u = SharedMemory.Allocate<float>(MaxRank);
        int tid = Group.IdxX, size = Group.DimX;
        int t = Grid.IdxX;
        long xb = (long)t * din;
        int teams = size / lanes, team = tid / lanes, lane = tid % lanes;
        for (int i0 = 0; i0 < r; i0 += teams)
        {
            int i = i0 + team;
            float acc = 0f;
            if (i < r)
            {
                long ab = (long)i * din;
                for (int c = lane; c < din; c += lanes) acc += LoadWeight(aCode, aF32, a16, ab + c) * x[xb + c];
            }
            partial[tid] = acc;
            Group.Barrier();
            for (int s = lanes / 2; s > 0; s >>= 1)
            {
                if (lane < s) partial[tid] += partial[tid + s];
                Group.Barrier();
            }
            if (lane == 0 && i < r) u[i] = partial[tid];
            Group.Barrier(); // publishes u[i]; partial is rewritten by the next pass
        }
        int sample = rowSample[t];
        long gb = (long)sample * r * r;
        for (int j = tid; j < r; j += size)
        {
            float acc = 0f;
            for (int i = 0; i < r; i++) acc += u[i] * g[gb + (long)i * r + j];
            v[(long)t * r + j] = scale * acc;
        }
    }

    // Kernel 2, the base GEMM with the adapter fused into its K loop: over the augmented K = d_in + r,
    //   y[t, o] = Σ_k [x[t] | v[t]]_k · [W0[o] | B[o]]_k (+ bias[o])
    // (v already carries the scale), so the adapter costs r more K steps and y is written once.
    // Tiled through shared memory like the primitive GEMM: 16x16 tiles of the augmented x and w per K step,
    // padded to 17 (no bank conflicts); each tile element picks x/W0 below d_in and v/B above (tiles may straddle).
    // Launch: grid (ceil(d_out/16), ceil(T/16)), group (16, 16); thread (tx, ty) computes y[16·gy + ty, 16·gx + tx].
    // Roofline: 2·T·d_out·(d_in + r) FLOPs; global reads about T·(d_in + r)·ceil(d_out/16) activations +
    // d_out·(d_in + r)·ceil(T/16) weights, writes T·d_out floats. For decode-sized T the weight stream dominates
    // (memory-bound: 16-bit weights halve it); intensity about 4 FLOP/byte for large T, so a register-blocked tile
    // (kernels/cflora.cu) is faster on real GPUs.
    // flags = W0 code | B code << 4 | has-bias << 8 (packed: ILGPU delegates take at most 16 arguments).
    // With r = 0 (v and B unused 1-element dummies) it is the primitive Linear, y = x W0ᵀ (+ bias) (IlgpuPrimitiveKernels.Linear).
    internal static void FusedGemmKernel(ArrayView<float> x, ArrayView<float> v,
        ArrayView<float> w0F32, ArrayView<ushort> w016, ArrayView<float> bF32, ArrayView<ushort> b16,
        ArrayView<float> bias, ArrayView<float> y, int flags, int m, int n, int din, int r)
    {
        int w0Code = flags & 0xF, bCode = (flags >> 4) & 0xF, hasBias = (flags >> 8) & 1;
        const int Pitch = Tile + 1;
        var xs = SharedMemory.Allocate<float>(Tile * Pitch);
        var ws = SharedMemory.Allocate<float>(Tile * Pitch);
        int tx = Group.IdxX, ty = Group.IdxY;
        int row = Grid.IdxY * Tile + ty;
        int col = Grid.IdxX * Tile + tx;
        int wRow = Grid.IdxX * Tile + ty; // the weight row (output column) this thread stages
        int kTotal = din + r;
        float acc = 0f;
        for (int k0 = 0; k0 < kTotal; k0 += Tile)
        {
            int kk = k0 + tx;
            float xv = 0f, wv = 0f;
            if (kk < din)
            {
                if (row < m) xv = x[(long)row * din + kk];
                if (wRow < n) wv = LoadWeight(w0Code, w0F32, w016, (long)wRow * din + kk);
            }
            else if (kk < kTotal)
            {
                int j = kk - din;
                if (row < m) xv = v[(long)row * r + j];
                if (wRow < n) wv = LoadWeight(bCode, bF32, b16, (long)wRow * r + j);
            }
            xs[ty * Pitch + tx] = xv;
            ws[ty * Pitch + tx] = wv;
            Group.Barrier();
            for (int p = 0; p < Tile; p++) acc += xs[ty * Pitch + p] * ws[tx * Pitch + p];
            Group.Barrier();
        }
        if (row < m && col < n) y[(long)row * n + col] = hasBias != 0 ? acc + bias[col] : acc;
    }

    // Generator step 2 (after the primitive LayerNorm): mid[s, k] = GELU(b1[k] + Σ_c w1[k, c] · ln[s, c]), exact erf GELU.
    // Launch: auto-grouped over S·2r², one thread per output. Roofline: 2·d_h FLOPs per output; reads d_h + d_h
    // floats (w1 row, ln row: both cache-resident for the small generator), writes 1. The generator runs once per
    // batch (S ≪ T): latency-bound, negligible next to the forward.
    private static void LinearGeluKernel(Index1D index, ArrayView<float> input, ArrayView<float> w, ArrayView<float> b,
        ArrayView<float> output, int inner, int outer)
    {
        int s = index.X / outer, k = index.X % outer;
        long ib = (long)s * inner, wb = (long)k * inner;
        float acc = b[k];
        for (int c = 0; c < inner; c++) acc += w[wb + c] * input[ib + c];
        output[index] = 0.5f * acc * (1f + IlgpuPrimitiveKernels.Erf(acc * 0.707106781186547524f));
    }

    // Generator step 3: g[s, o] = b2[o] + Σ_k w2[o, k] · mid[s, k] (g read row-major as G[s] of r x r).
    // Launch: auto-grouped over S·r², one thread per output. Roofline: 2·2r² FLOPs per output; reads 2·2r² floats, writes 1.
    private static void LinearKernel(Index1D index, ArrayView<float> input, ArrayView<float> w, ArrayView<float> b,
        ArrayView<float> output, int inner, int outer)
    {
        int s = index.X / outer, o = index.X % outer;
        long ib = (long)s * inner, wb = (long)o * inner;
        float acc = b[o];
        for (int k = 0; k < inner; k++) acc += w[wb + k] * input[ib + k];
        output[index] = acc;
    }
}
