using ILGPU;
using ILGPU.Runtime;

namespace Rellax.Kernels.Ilgpu;

// The CFLoRA backward on ILGPU (contract ICfloraKernels.Backward, ground truth CfloraReference.Backward). Per module:
//   1. RankKernel     u[t, i] = A[i] · x[t],  z[t, i] = B[:, i] · dY[t]          one thread per (t, i)
//   2. MixKernel      du[t] = scale · G_s z[t],  v[t] = scale · G_sᵀ u[t]      one thread per (t, i); identity skips G
//   3. DgKernel       dG[s, i, j] = scale · Σ_{t of s} u[t, i] z[t, j]           one thread per (s, i, j), only if wanted
//   4. OuterSumKernel dA = duᵀ x, dB = (vᵀ dY)ᵀ                                   one thread per output, only if wanted
//   5. DxKernel       dX[t, n] (+)= Σ_o dY[t, o] W0[o, n] + Σ_j du[t, j] A[j, n]  one thread per output; the first
//                     module writes, the others accumulate (same stream, in order)
// These are plain one-thread-per-output kernels, correct on every accelerator and checked on the CPU emulator; they
// are not tuned for a GPU (the dX product, 2·T·d_out·d_in FLOPs, wants the forward's tiled K-augmented GEMM with W0
// read transposed: the next step when a GPU is there to measure it).
internal partial class IlgpuCfloraKernels
{
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>,
        ArrayView<float>, ArrayView<ushort>, int, ArrayView<float>, ArrayView<float>, int, int, int> _bwRank = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
        ArrayView<float>, ArrayView<float>, int, int, float> _bwMix = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, float> _bwDg = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, int, ArrayView<float>, int, int, ArrayView<float>, int> _bwOuter = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>,
        ArrayView<float>, ArrayView<ushort>, int, ArrayView<float>, int, int, int, int> _bwDx = null!;

    private void LoadBackwardKernels(Accelerator acc)
    {
        _bwRank = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>,
            ArrayView<float>, ArrayView<ushort>, int, ArrayView<float>, ArrayView<float>, int, int, int>(RankKernel);
        _bwMix = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
            ArrayView<float>, ArrayView<float>, int, int, float>(MixKernel);
        _bwDg = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, float>(DgKernel);
        _bwOuter = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, int, ArrayView<float>, int, int, ArrayView<float>, int>(OuterSumKernel);
        _bwDx = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>,
            ArrayView<float>, ArrayView<ushort>, int, ArrayView<float>, int, int, int, int>(DxKernel);
    }

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">A size passes 32-bit indexing.</exception>
    public virtual void Backward(Tensor x, ReadOnlySpan<CfloraBackwardModule> modules, Tensor rowSample, int samples, Tensor? dx)
    {
        int rows = x.Dim(0), din = x.Dim(1);
        Count(x);
        int maxR = 0;
        foreach (var m in modules)
        {
            Count(m.W0); Count(m.DY);
            maxR = Math.Max(maxR, m.A.Dim(0));
        }
        if (4L * rows * maxR > int.MaxValue) throw new NotSupportedException($"the backward's rank scratch (4 x {rows} x {maxR}) passes 32-bit indexing");
        var scratch = IlgpuBuffer.ViewOf<float>(BackwardScratch(rows, maxR));
        var xv = IlgpuBuffer.ViewOf<float>(x);
        var rs = IlgpuBuffer.ViewOf<int>(rowSample);
        for (int mi = 0; mi < modules.Length; mi++)
        {
            var m = modules[mi];
            int r = m.A.Dim(0), dout = m.W0.Dim(0), n = rows * r;
            var u = scratch.SubView(0, n);
            var z = scratch.SubView((long)rows * maxR, n);
            var v = scratch.SubView(2L * rows * maxR, n);
            var du = scratch.SubView(3L * rows * maxR, n);
            var a = Weight(m.A);
            var b = Weight(m.B);
            var dy = IlgpuBuffer.ViewOf<float>(m.DY);
            _bwRank(Stream, n, xv, a.F32, a.Bits16, dy, b.F32, b.Bits16, a.Code | b.Code << 4, u, z, din, dout, r);
            bool identity = m.G is null;
            var g = identity ? (ArrayView<float>)_dummyF32.View : IlgpuBuffer.ViewOf<float>(m.G!.Value);
            _bwMix(Stream, n, u, z, g, rs, du, v, r, identity ? 1 : 0, m.Scale);
            if (m.DG is { } dg) _bwDg(Stream, samples * r * r, u, z, rs, IlgpuBuffer.ViewOf<float>(dg), rows, r, m.Scale);
            if (m.DA is { } da) _bwOuter(Stream, r * din, du, r, xv, din, rows, IlgpuBuffer.ViewOf<float>(da), 0);
            if (m.DB is { } db) _bwOuter(Stream, r * dout, v, r, dy, dout, rows, IlgpuBuffer.ViewOf<float>(db), 1);
            if (dx is { } d)
            {
                Count(d);
                var w0 = Weight(m.W0);
                _bwDx(Stream, rows * din, dy, du, w0.F32, w0.Bits16, a.F32, a.Bits16, w0.Code | a.Code << 4,
                    IlgpuBuffer.ViewOf<float>(d), din, dout, r, mi == 0 ? 0 : 1);
            }
        }
    }

    /// <summary>
    /// The f32 [4, T, r_max] scratch of the backward (u, z, v, du for one module at a time; each module's kernels consume
    /// it before the next module's overwrite it, same stream, in order).
    /// </summary>
    protected Tensor BackwardScratch(int rows, int maxR) => Scratch(ref _backScratch, 4, rows, maxR);

    // u[t, i] = Σ_c A[i, c] x[t, c] and z[t, i] = Σ_o B[o, i] dY[t, o]; index = t·r + i. codes = A code | B code << 4.
    // Roofline: 2·(d_in + d_out) FLOPs per thread; A and B rows are shared by all t (cache-resident), x/dY rows by all i.
    private static void RankKernel(Index1D index, ArrayView<float> x, ArrayView<float> aF32, ArrayView<ushort> a16,
        ArrayView<float> dy, ArrayView<float> bF32, ArrayView<ushort> b16, int codes, ArrayView<float> u, ArrayView<float> z,
        int din, int dout, int r)
    {
        int t = index.X / r, i = index.X % r;
        int aCode = codes & 0xF, bCode = (codes >> 4) & 0xF;
        long xb = (long)t * din, ab = (long)i * din;
        float ua = 0f;
        for (int c = 0; c < din; c++) ua += LoadWeight(aCode, aF32, a16, ab + c) * x[xb + c];
        long yb = (long)t * dout;
        float za = 0f;
        for (int o = 0; o < dout; o++) za += LoadWeight(bCode, bF32, b16, (long)o * r + i) * dy[yb + o];
        u[index] = ua;
        z[index] = za;
    }

    // du[t, i] = scale · Σ_j G[s][i][j] z[t, j] and v[t, i] = scale · Σ_j u[t, j] G[s][j][i] (s = rowSample[t]);
    // identity ≠ 0: du = scale · z, v = scale · u (g is a dummy). Index = t·r + i. 4·r FLOPs per thread.
    private static void MixKernel(Index1D index, ArrayView<float> u, ArrayView<float> z, ArrayView<float> g, ArrayView<int> rowSample,
        ArrayView<float> du, ArrayView<float> v, int r, int identity, float scale)
    {
        int t = index.X / r, i = index.X % r;
        if (identity != 0)
        {
            du[index] = scale * z[index];
            v[index] = scale * u[index];
            return;
        }
        long gb = (long)rowSample[t] * r * r, rb = (long)t * r;
        float duAcc = 0f, vAcc = 0f;
        for (int j = 0; j < r; j++)
        {
            duAcc += g[gb + (long)i * r + j] * z[rb + j];
            vAcc += u[rb + j] * g[gb + (long)j * r + i];
        }
        du[index] = scale * duAcc;
        v[index] = scale * vAcc;
    }

    // dG[s, i, j] = scale · Σ_{t : rowSample[t] = s} u[t, i] z[t, j]; index = (s·r + i)·r + j. Reads every row's sample
    // (T per thread): fine for the S·r² threads of a batch, a per-sample segmented sum on a GPU would be the tuned form.
    private static void DgKernel(Index1D index, ArrayView<float> u, ArrayView<float> z, ArrayView<int> rowSample,
        ArrayView<float> dg, int rows, int r, float scale)
    {
        int r2 = r * r;
        int s = index.X / r2, i = index.X % r2 / r, j = index.X % r;
        float acc = 0f;
        for (int t = 0; t < rows; t++)
            if (rowSample[t] == s) acc += u[(long)t * r + i] * z[(long)t * r + j];
        dg[index] = scale * acc;
    }

    // out = Σ_t a[t, i] · b[t, n] for i < ra, n < nb; index = i·nb + n; stored out[i, n], or out[n, i] when transposed ≠ 0.
    // 2·T FLOPs per thread; consecutive threads read consecutive b elements (coalesced).
    private static void OuterSumKernel(Index1D index, ArrayView<float> a, int ra, ArrayView<float> b, int nb, int rows,
        ArrayView<float> output, int transposed)
    {
        int i = index.X / nb, n = index.X % nb;
        float acc = 0f;
        for (int t = 0; t < rows; t++) acc += a[(long)t * ra + i] * b[(long)t * nb + n];
        output[transposed != 0 ? (long)n * ra + i : index.X] = acc;
    }

    // dX[t, n] (+)= Σ_o dY[t, o] W0[o, n] + Σ_j du[t, j] A[j, n]; index = t·d_in + n. codes = W0 code | A code << 4.
    // Consecutive threads read consecutive W0 elements of one row (coalesced); 2·(d_out + r) FLOPs per thread.
    private static void DxKernel(Index1D index, ArrayView<float> dy, ArrayView<float> du, ArrayView<float> w0F32, ArrayView<ushort> w016,
        ArrayView<float> aF32, ArrayView<ushort> a16, int codes, ArrayView<float> dx, int din, int dout, int r, int accumulate)
    {
        int t = index.X / din, n = index.X % din;
        int w0Code = codes & 0xF, aCode = (codes >> 4) & 0xF;
        float acc = 0f;
        long yb = (long)t * dout;
        for (int o = 0; o < dout; o++) acc += dy[yb + o] * LoadWeight(w0Code, w0F32, w016, (long)o * din + n);
        long ub = (long)t * r;
        for (int j = 0; j < r; j++) acc += du[ub + j] * LoadWeight(aCode, aF32, a16, (long)j * din + n);
        dx[index] = accumulate != 0 ? dx[index] + acc : acc;
    }
}
