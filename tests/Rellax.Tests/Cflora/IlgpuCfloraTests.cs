using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Ilgpu;

namespace Rellax.Tests.Cflora;

/// <summary>
/// The ILGPU CFLoRA kernels against <see cref="CfloraReference"/> (double accumulation): always on the CPU-emulator
/// backend at small odd shapes (the emulator is slow); on a GPU machine also on ILGPU's CUDA accelerator and on the
/// CUDA backend (whose forward is <c>kernels/cflora.cu</c>), plus larger shapes that cross the CUDA GEMM's 64-wide tiles.
/// f16/bf16 weights are drawn, rounded to the storage type, and the reference gets exactly the widened values, so every
/// dtype is held to the same fp32-accumulation tolerance.
/// Tolerances (|got - want| &lt;= atol + rtol·|want|): forward 2e-5 + 2e-5 at the small shapes (fp32 sums of at most
/// ~120 products of values in [-1, 1] plus the r-term adapter, against a double reference), 1e-4 + 1e-4 at the GPU
/// shapes (sums of ~330 products); generator 2e-5 + 2e-5 (LayerNorm, two fp32 linears of at most 2r² = 512 terms,
/// and the kernel erf accurate to about 1 ulp).
/// </summary>
[TestFixtureSource(nameof(Backends))]
public sealed class IlgpuCfloraTests(BackendFactory factory)
{
    private ComputeBackend _backend = null!;

    /// <summary>The emulator, and the CUDA backends where a device is present (CPU backends have no CFLoRA kernels yet).</summary>
    public static IEnumerable<TestFixtureData> Backends() => TestBackends.Factories()
        .Where(f => f.Name is "ilgpu-emulator" or "ilgpu-cuda" or "cuda")
        .Select(f => new TestFixtureData(f).SetArgDisplayNames(f.Name));

    [OneTimeSetUp]
    public void CreateBackend() => _backend = factory.Create();

    [OneTimeTearDown]
    public void DisposeBackend() => _backend.Dispose();

    private const double Atol = 2e-5, Rtol = 2e-5;

    /// <summary>Values of a weight in storage <paramref name="dtype"/>: the f32 values it holds exactly and a device tensor.</summary>
    private sealed class Weight(float[] values, DeviceBuffer buffer, int[] shape) : IDisposable
    {
        public float[] Values { get; } = values;
        public Tensor Tensor { get; } = buffer.AsTensor(shape);
        public void Dispose() => buffer.Dispose();
    }

    private Weight MakeWeight(DType dtype, int seed, float lo, float hi, params int[] shape)
    {
        var raw = RandomData.Uniform(RandomData.Product(shape), seed, lo, hi);
        switch (dtype)
        {
            case DType.F32:
                return new Weight(raw, _backend.Upload<float>(raw), shape);
            case DType.F16:
            {
                var h = raw.Select(v => (Half)v).ToArray();
                return new Weight(h.Select(v => (float)v).ToArray(), _backend.Upload<Half>(h), shape);
            }
            case DType.BF16:
            {
                var b = raw.Select(v => (BFloat16)v).ToArray();
                return new Weight(b.Select(v => (float)v).ToArray(), _backend.Upload<BFloat16>(b), shape);
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }
    }

    /// <summary>One module's host data, device tensors and expected output.</summary>
    private sealed class ModuleCase : IDisposable
    {
        private readonly List<IDisposable> _owned = [];
        public required CfloraModule Module { get; init; }
        public required float[] Expected { get; init; }
        public void Own(IDisposable d) => _owned.Add(d);
        public void Dispose() { foreach (var d in _owned) d.Dispose(); }
    }

    private ModuleCase MakeModule(float[] x, int din, int dout, int r, DType w0Type, DType abType, bool bias,
        CfloraBatch batch, int seed, float scale, Func<int, int, int, float>? gOf = null)
    {
        int rows = batch.Rows, samples = batch.Samples;
        var w0 = MakeWeight(w0Type, seed, -1f, 1f, dout, din);
        var a = MakeWeight(abType, seed + 1, -1f, 1f, r, din);
        var b = MakeWeight(abType, seed + 2, -1f, 1f, dout, r);
        var gHost = gOf is null
            ? RandomData.Uniform(samples * r * r, seed + 3)
            : Enumerable.Range(0, samples * r * r).Select(k => gOf(k / (r * r), k / r % r, k % r)).ToArray();
        var biasHost = bias ? RandomData.Uniform(dout, seed + 4) : [];
        var gBuf = _backend.Upload<float>(gHost);
        var yBuf = _backend.Allocate(DType.F32, rows, dout);
        var biasBuf = bias ? _backend.Upload<float>(biasHost) : null;
        var expected = new float[rows * dout];
        CfloraReference.Forward(x, w0.Values, biasHost, a.Values, b.Values, gHost, batch.SampleOfRow, scale, expected, din, dout, r);
        var c = new ModuleCase
        {
            Module = new CfloraModule(w0.Tensor, biasBuf?.AsTensor(dout), a.Tensor, b.Tensor, gBuf.AsTensor(samples, r, r), scale, yBuf.AsTensor(rows, dout)),
            Expected = expected,
        };
        c.Own(w0); c.Own(a); c.Own(b); c.Own(gBuf); c.Own(yBuf);
        if (biasBuf is not null) c.Own(biasBuf);
        return c;
    }

    private void RunAndCheck(float[] x, int din, CfloraBatch batch, params ModuleCase[] cases) =>
        RunAndCheck(x, din, batch, Atol, Rtol, cases);

    private void RunAndCheck(float[] x, int din, CfloraBatch batch, double atol, double rtol, params ModuleCase[] cases)
    {
        using var xBuf = _backend.Upload<float>(x);
        _backend.Cflora.Forward(xBuf.AsTensor(batch.Rows, din), cases.Select(c => c.Module).ToArray(), batch);
        for (int m = 0; m < cases.Length; m++)
        {
            var got = cases[m].Module.Y.ToArray<float>();
            var want = cases[m].Expected;
            Assert.That(want.Any(v => Math.Abs(v) > 1e-3), $"module {m}: the reference output is trivially zero");
            RandomData.AssertClose(got, want, atol, rtol, $"module {m}");
        }
    }

    private static CfloraBatch ContiguousBatch(params int[] lengths) => CfloraBatch.FromLengths(lengths);

    private static CfloraBatch ShuffledBatch(int rows, int samples, int seed)
    {
        var index = RandomData.Ints(rows, samples, seed);
        for (int s = 0; s < Math.Min(samples, rows); s++) index[s] = s; // every sample present
        new Random(seed + 1).Shuffle(index);
        return CfloraBatch.FromRowIndex(index, samples);
    }

    [TestCase(1, DType.F32, DType.F32, true)]
    [TestCase(8, DType.F32, DType.F32, false)]
    [TestCase(16, DType.F32, DType.F32, true)]
    [TestCase(8, DType.F16, DType.F16, true)]
    [TestCase(16, DType.BF16, DType.BF16, false)]
    [TestCase(1, DType.BF16, DType.F16, true)]
    [TestCase(8, DType.F16, DType.BF16, false)]
    [TestCase(8, DType.BF16, DType.F32, true)]
    public void ForwardContiguous(int r, DType w0Type, DType abType, bool bias)
    {
        const int din = 37, dout = 45;
        using var batch = ContiguousBatch(3, 5, 1, 4); // 13 rows, 4 samples
        var x = RandomData.Uniform(batch.Rows * din, 11);
        using var c = MakeModule(x, din, dout, r, w0Type, abType, bias, batch, seed: 100 + r, scale: 16f / r);
        RunAndCheck(x, din, batch, c);
    }

    [TestCase(1)]
    [TestCase(8)]
    [TestCase(16)]
    public void ForwardShuffledRows(int r)
    {
        const int din = 50, dout = 33;
        using var batch = ShuffledBatch(rows: 19, samples: 5, seed: r);
        var x = RandomData.Uniform(batch.Rows * din, 12);
        using var c = MakeModule(x, din, dout, r, DType.F32, DType.F32, bias: true, batch, seed: 200 + r, scale: 2f);
        RunAndCheck(x, din, batch, c);
    }

    [Test]
    public void ForwardTwoModulesSharingInput()
    {
        const int din = 40;
        using var batch = ShuffledBatch(rows: 17, samples: 3, seed: 5);
        var x = RandomData.Uniform(batch.Rows * din, 13);
        // Different d_out, r, dtypes, bias and scale per module; the larger r first, so the shared v scratch is reused.
        using var q = MakeModule(x, din, dout: 48, r: 16, DType.F16, DType.F16, bias: true, batch, seed: 300, scale: 1f);
        using var v = MakeModule(x, din, dout: 24, r: 8, DType.F32, DType.BF16, bias: false, batch, seed: 400, scale: 2f);
        RunAndCheck(x, din, batch, q, v);
    }

    [TestCase(40)]
    [TestCase(128)]
    public void ForwardRankAboveOneGroupPass(int r)
    {
        // More ranks than the down kernels have teams (ILGPU: 256 / lanes, e.g. 8 teams of 32 on CUDA; CUDA: 8 warps):
        // several passes over the ranks (for r = 128 wherever the warp, hence the minimum team, is wider than 2 lanes).
        const int din = 24, dout = 20;
        using var batch = ContiguousBatch(2, 3);
        var x = RandomData.Uniform(batch.Rows * din, 14);
        using var c = MakeModule(x, din, dout, r, DType.F32, DType.F32, bias: false, batch, seed: 500, scale: 0.5f);
        RunAndCheck(x, din, batch, c);
    }

    [Test]
    public void IdentityInteractionIsVanillaLora()
    {
        // G = I: y = W0 x + scale · B A x; checked against the reference with G = I and against a zero-scale run.
        const int din = 30, dout = 26, r = 8;
        using var batch = ShuffledBatch(rows: 9, samples: 2, seed: 6);
        var x = RandomData.Uniform(batch.Rows * din, 15);
        using var c = MakeModule(x, din, dout, r, DType.F32, DType.F32, bias: true, batch, seed: 600, scale: 2f,
            gOf: (_, i, j) => i == j ? 1f : 0f);
        using var zero = MakeModule(x, din, dout, r, DType.F32, DType.F32, bias: true, batch, seed: 600, scale: 0f,
            gOf: (_, i, j) => i == j ? 1f : 0f);
        RunAndCheck(x, din, batch, c, zero);
        var withAdapter = c.Module.Y.ToArray<float>();
        var baseOnly = zero.Module.Y.ToArray<float>();
        Assert.That(withAdapter.Zip(baseOnly).Max(p => Math.Abs(p.First - p.Second)), Is.GreaterThan(1e-2),
            "the adapter term changed nothing");
    }

    [Test]
    public void PerSampleMatricesAreApplied()
    {
        // Two samples, G_0 = 0 and G_1 random: rows of sample 0 must equal the base layer exactly as the reference says.
        const int din = 21, dout = 18, r = 4;
        using var batch = CfloraBatch.FromRowIndex([1, 0, 1, 0, 0], 2);
        var x = RandomData.Uniform(batch.Rows * din, 16);
        var rng = new Random(7);
        using var c = MakeModule(x, din, dout, r, DType.F32, DType.F32, bias: false, batch, seed: 700, scale: 3f,
            gOf: (s, _, _) => s == 0 ? 0f : rng.NextSingle() * 2 - 1);
        RunAndCheck(x, din, batch, c);
    }

    [TestCase(DType.F32, DType.F32)]
    [TestCase(DType.F16, DType.F16)]
    [TestCase(DType.BF16, DType.BF16)]
    [TestCase(DType.BF16, DType.F32)]
    public void ForwardGpuShapes(DType w0Type, DType abType)
    {
        if (factory.Emulated) Assert.Ignore("GPU-sized shapes are too slow on the emulator; the small shapes cover it");
        // T = 130 and d_out = 200 cross the 64-wide CUDA GEMM tiles with ragged edges; d_in + r = 316 is not a
        // multiple of 16, and the augmented K tile at 304..319 straddles x and v.
        const int din = 300, r = 16;
        using var batch = ShuffledBatch(rows: 130, samples: 7, seed: 8);
        var x = RandomData.Uniform(batch.Rows * din, 17);
        using var q = MakeModule(x, din, dout: 200, r, w0Type, abType, bias: true, batch, seed: 800, scale: 2f);
        using var k = MakeModule(x, din, dout: 64, r: 8, w0Type, abType, bias: false, batch, seed: 900, scale: 1f);
        RunAndCheck(x, din, batch, 1e-4, 1e-4, q, k);
    }

    [Test]
    public void CudaBackendUsesTheHandWrittenForward()
    {
        if (_backend is not Rellax.Kernels.Cuda.CudaBackend)
            Assert.Ignore("only the CUDA backend replaces the forward");
        Assert.That(_backend.CfloraKernels, Is.InstanceOf<Rellax.Kernels.Cuda.CudaCfloraKernels>());
    }

    [TestCase(2, 8, 1)]
    [TestCase(5, 32, 8)]
    [TestCase(3, 20, 16)]
    public void Generate(int samples, int dh, int r)
    {
        int r2 = r * r, hidden = 2 * r2;
        var h = RandomData.Uniform(samples * dh, 21, -2f, 2f);
        var lnW = RandomData.Uniform(dh, 22, 0.5f, 1.5f);
        var lnB = RandomData.Uniform(dh, 23, -0.5f, 0.5f);
        var w1 = RandomData.Uniform(hidden * dh, 24, -0.5f, 0.5f);
        var b1 = RandomData.Uniform(hidden, 25, -0.5f, 0.5f);
        var w2 = RandomData.Uniform(r2 * hidden, 26, -0.3f, 0.3f);
        var b2 = RandomData.Uniform(r2, 27, -0.5f, 0.5f);
        var want = new float[samples * r2];
        CfloraReference.Generate(h, lnW, lnB, 1e-5f, w1, b1, w2, b2, want, dh, r);

        using var hb = _backend.Upload<float>(h);
        using var lnWb = _backend.Upload<float>(lnW);
        using var lnBb = _backend.Upload<float>(lnB);
        using var w1b = _backend.Upload<float>(w1);
        using var b1b = _backend.Upload<float>(b1);
        using var w2b = _backend.Upload<float>(w2);
        using var b2b = _backend.Upload<float>(b2);
        using var gb = _backend.Allocate(DType.F32, samples, r, r);
        _backend.Cflora.Generate(hb.AsTensor(samples, dh), lnWb.AsTensor(dh), lnBb.AsTensor(dh), 1e-5f,
            w1b.AsTensor(hidden, dh), b1b.AsTensor(hidden), w2b.AsTensor(r2, hidden), b2b.AsTensor(r2), gb.AsTensor(samples, r, r));
        var got = gb.AsTensor(samples, r, r).ToArray<float>();
        Assert.That(want.Any(v => Math.Abs(v) > 1e-2), "the reference output is trivially small");
        RandomData.AssertClose(got, want, Atol, Rtol, "generator");
    }

    [Test]
    public void ScratchGrowsAndBackendDisposesCleanly()
    {
        // A second backend of the same kind: a small call, then a larger one (the v scratch grows: the stream is synchronized
        // before the old buffer goes), then dispose with the scratch alive; the CFLoRA kernels are then unreachable.
        var backend = factory.Create();
        var saved = _backend;
        _backend = backend;
        try
        {
            foreach (var (rows, r) in new[] { (2, 1), (7, 16) })
            {
                using var batch = ContiguousBatch(rows);
                var x = RandomData.Uniform(rows * 12, rows);
                using var c = MakeModule(x, 12, 10, r, DType.F32, DType.F32, bias: false, batch, seed: 1000 + r, scale: 1f);
                RunAndCheck(x, 12, batch, c);
            }
        }
        finally
        {
            _backend = saved;
            backend.Dispose();
        }
        Assert.Throws<ObjectDisposedException>(() => _ = backend.CfloraKernels);
    }

    [Test]
    public void HalfWideningIsExact()
    {
        // Every finite f16 bit pattern (and ±inf) widens exactly as System.Half does; NaN stays NaN.
        for (int bits = 0; bits < 0x10000; bits++)
        {
            var want = (float)BitConverter.UInt16BitsToHalf((ushort)bits);
            var got = IlgpuCfloraKernels.HalfBitsToFloat((ushort)bits);
            if (float.IsNaN(want)) Assert.That(float.IsNaN(got), $"0x{bits:X4}");
            else if (BitConverter.SingleToUInt32Bits(got) != BitConverter.SingleToUInt32Bits(want))
                Assert.Fail($"f16 0x{bits:X4}: got {got:R}, want {want:R}");
        }
    }
}
