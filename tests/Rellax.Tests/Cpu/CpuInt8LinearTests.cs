using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Tests.Oracle;
using TorchSharp;

namespace Rellax.Tests.Cpu;

/// <summary>
/// The CPU int8 linear layer (<see cref="Primitives.QuantizeInt8(Tensor)"/> and <see cref="Primitives.LinearInt8"/>) on each dot strategy (AVX-VNNI, AVX-512BW, scalar) against
/// <see cref="PrimitivesReference.LinearInt8"/> and a TorchSharp float64 transcription of LLM.int8(); the strategies
/// bit-for-bit against each other; accuracy against the fp32 layer with injected outlier columns; argument errors.
/// </summary>
[TestFixture]
public sealed class CpuInt8LinearTests
{
    private CpuBackend _backend = null!;
    private Primitives P => _backend.Primitives;

    [OneTimeSetUp] public void CreateBackend() => _backend = new CpuBackend(2);
    [OneTimeTearDown] public void DisposeBackend() => _backend.Dispose();

    internal static readonly (int M, int K, int N)[] OddShapes =
    [
        (1, 1, 1), (1, 37, 15), (5, 3, 17), (6, 4, 16), (7, 259, 33), (13, 1031, 70), (100, 130, 49), (97, 513, 131),
    ];

    /// <summary>Random inputs in [-1, 1] with columns 2 and k/3 scaled to ±8 (outliers at the default threshold 6).</summary>
    internal static float[] InputWithOutliers(int m, int k, int seed)
    {
        var x = RandomData.Uniform(m * k, seed);
        if (m > 0 && k > 3)
            foreach (int c in new[] { 2, k / 3 })
                for (int t = 0; t < m; t++) x[t * k + c] *= 8f;
        return x;
    }

    private float[] RunInt8(float[] x, float[] w, float[]? bias, int m, int k, int n, float threshold, DType dtype = DType.F32,
        int groupSize = Primitives.DefaultInt8GroupSize)
    {
        using var q = P.QuantizeInt8(LinearOracleTests.Upload(_backend, dtype, w, n, k), groupSize);
        var y = _backend.Zeros(m, n);
        P.LinearInt8(_backend.Tensor(x, m, k), q, bias is null ? null : _backend.Tensor(bias, n), y, threshold);
        return y.ToArray<float>();
    }

    /// <summary>The instruction-set option that selects int8 linear strategy <paramref name="s"/>.</summary>
    internal static CpuInstructionSet SetFor(CpuInt8Linear.DotStrategy s) => s switch
    {
        CpuInt8Linear.DotStrategy.AvxVnni => CpuInstructionSet.AvxVnni,
        CpuInt8Linear.DotStrategy.Avx512BW => CpuInstructionSet.Avx512,
        _ => CpuInstructionSet.Scalar,
    };

    /// <summary>Runs <paramref name="body"/> with <see cref="_backend"/> replaced by a backend whose options select
    /// strategy <paramref name="s"/> (clamped to the CPU: an unsupported one falls back, as the backend reports).</summary>
    private void WithStrategy(CpuInt8Linear.DotStrategy s, Action body)
    {
        var saved = _backend;
        using var backend = new CpuBackend(new CpuBackendOptions { Threads = 2, InstructionSet = SetFor(s) });
        if (CpuBackendOptions.Supports(SetFor(s)))
            Assert.That(backend.Int8Dots, Is.EqualTo(s), $"the backend built for {s}");
        _backend = backend;
        try { body(); }
        finally { _backend = saved; }
    }

    private static void RequireStrategy(CpuInt8Linear.DotStrategy s)
    {
        bool ok = s switch
        {
            CpuInt8Linear.DotStrategy.AvxVnni => System.Runtime.Intrinsics.X86.AvxVnni.IsSupported,
            CpuInt8Linear.DotStrategy.Avx512BW => System.Runtime.Intrinsics.X86.Avx512BW.IsSupported && System.Runtime.Intrinsics.X86.Bmi2.X64.IsSupported,
            _ => true,
        };
        if (!ok) Assert.Ignore($"this CPU has no {s}");
    }

    [Test]
    public void ReferenceQuantizesAsWrittenByHand()
    {
        // max |v| = 2: scale 2/127; v·63.5 = 127, -31.75 → -32, 15.875 → 16, 31.75 → 32, 0.5·63.5 = 31.75 → 32, -63.5 → -64 (half to even).
        var q = new sbyte[6];
        float s = PrimitivesReference.QuantizeRowInt8([2f, -0.5f, 0.25f, 0.5f, 0.5f, -1f], q);
        Assert.That(s, Is.EqualTo(2f / 127f));
        Assert.That(q, Is.EqualTo(new sbyte[] { 127, -32, 16, 32, 32, -64 }));
        Assert.That(PrimitivesReference.QuantizeRowInt8([0f, 0f], q), Is.EqualTo(0f));
        Assert.That(float.IsNaN(PrimitivesReference.QuantizeRowInt8([1f, float.NaN], q)), Is.True);

        // One row x = [1, 10] (column 1 is an outlier at threshold 6), w = [[127, 1], [-127, 2]] with scale 1 per row
        // (the reference takes the int8 values and scales as given): int8 part 127·(1/127)·127 = 127 and -127, fp32 part
        // 10·1 and 10·2: y = [137, -107] (+ bias [0.5, -0.5]).
        var y = new float[2];
        PrimitivesReference.LinearInt8([1f, 10f], [127, 1, -127, 2], [1f, 1f], [0.5f, -0.5f], y, 1, 2, 2, 6f);
        Assert.That(y, Is.EqualTo(new[] { 137.5f, -107.5f }).Within(1e-5f));

        // Activation groups of 4: x = [1, 0, 0, 0 | 0.01, 0, 0, 0.004] gets scales 1/127 and 0.01/127, so 0.01 → 127 and
        // 0.004 → round(50.8) = 51 in its own group; w row 0 = [1, 0, 0, 0, 1, 0, 0, 0], row 1 = [0, 0, 0, 0, 0, 0, 0, 2],
        // scale 1: y = [1/127·127 + 0.01/127·127, 0.01/127·51·2] = [1.01, 0.0080315]. One scale for the whole row (groups
        // of 8) would round 0.01 to 1 and 0.004 to 1: y = [1 + 1/127, 2/127] = [1.007874, 0.015748].
        var grouped = new float[2];
        sbyte[] wq = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        float[] xg = [1f, 0f, 0f, 0f, 0.01f, 0f, 0f, 0.004f];
        PrimitivesReference.LinearInt8(xg, wq, [1f, 1f], [], grouped, 1, 8, 2, 6f, groupSize: 4);
        Assert.That(grouped, Is.EqualTo(new[] { 1.01f, 0.01f / 127f * 51f * 2f }).Within(1e-6f));
        PrimitivesReference.LinearInt8(xg, wq, [1f, 1f], [], grouped, 1, 8, 2, 6f, groupSize: 8);
        Assert.That(grouped, Is.EqualTo(new[] { 1f + 1f / 127f, 2f / 127f }).Within(1e-6f));
    }

    [Test]
    public void QuantizedWeightsMatchTheReference([Values(DType.F32, DType.F16, DType.BF16)] DType dtype)
    {
        foreach (var (n, k) in new[] { (1, 1), (17, 37), (33, 259) })
        {
            var w = LinearOracleTests.RoundTo(dtype, RandomData.Uniform(n * k, 7 + k));
            for (int c = 0; c < k; c++) w[c] = 0f; // row 0 all zero: scale 0
            using var q = P.QuantizeInt8(LinearOracleTests.Upload(_backend, dtype, w, n, k));
            var values = q.ReadValues();
            var scales = q.ReadScales();
            var expected = new sbyte[k];
            for (int j = 0; j < n; j++)
            {
                float s = PrimitivesReference.QuantizeRowInt8(w.AsSpan(j * k, k), expected);
                Assert.That(scales[j], Is.EqualTo(s), $"scale of row {j}, {dtype} [{n}, {k}]");
                Assert.That(values.AsSpan(j * k, k).ToArray(), Is.EqualTo(expected), $"values of row {j}, {dtype} [{n}, {k}]");
            }
            Assert.That(q.SizeInBytes, Is.LessThan((long)n * k + 64L * k + 8L * n + 64), "one byte per weight plus padding, scales and row sums");
        }
    }

    [Test]
    public void MatchesReferenceOnOddShapes([Values("AvxVnni", "Avx512BW", "Scalar")] string name,
        [Values(4, 36, Primitives.DefaultInt8GroupSize, Primitives.MaxInt8GroupSize)] int groupSize)
    {
        var strategy = Enum.Parse<CpuInt8Linear.DotStrategy>(name);
        RequireStrategy(strategy);
        WithStrategy(strategy, () =>
        {
            foreach (var (m, k, n) in OddShapes)
                foreach (bool withBias in new[] { false, true })
                {
                    float[] x = InputWithOutliers(m, k, 11 + m), w = RandomData.Uniform(n * k, 12 + k);
                    float[]? bias = withBias ? RandomData.Uniform(n, 13) : null;
                    var actual = RunInt8(x, w, bias, m, k, n, Primitives.DefaultOutlierThreshold, groupSize: groupSize);
                    using var q = P.QuantizeInt8(_backend.Tensor(w, n, k), groupSize);
                    Assert.That(q.GroupSize, Is.EqualTo(groupSize));
                    var expected = new float[m * n];
                    PrimitivesReference.LinearInt8(x, q.ReadValues(), q.ReadScales(), bias ?? [], expected, m, k, n, Primitives.DefaultOutlierThreshold, groupSize);
                    RandomData.AssertClose(actual, expected, 1e-5 * Math.Sqrt(k), 1e-5, $"{strategy} G = {groupSize}, M = {m}, K = {k}, N = {n}, bias = {withBias}");
                }
        });
    }

    [Test]
    public void StrategiesAreBitIdentical()
    {
        foreach (int groupSize in new[] { 4, Primitives.DefaultInt8GroupSize })
        foreach (var (m, k, n) in OddShapes.Append((64, 2048, 96)))
        {
            float[] x = InputWithOutliers(m, k, 21 + k), w = RandomData.Uniform(n * k, 22 + n), bias = RandomData.Uniform(n, 23);
            float[]? first = null;
            string firstName = "";
            foreach (var s in new[] { CpuInt8Linear.DotStrategy.Scalar, CpuInt8Linear.DotStrategy.Avx512BW, CpuInt8Linear.DotStrategy.AvxVnni })
            {
                float[] y = [];
                WithStrategy(s, () => y = RunInt8(x, w, bias, m, k, n, Primitives.DefaultOutlierThreshold, groupSize: groupSize));
                if (first is null) { first = y; firstName = s.ToString(); continue; }
                for (int i = 0; i < y.Length; i++)
                    if (BitConverter.SingleToInt32Bits(y[i]) != BitConverter.SingleToInt32Bits(first[i]))
                        Assert.Fail($"G = {groupSize}, M = {m}, K = {k}, N = {n}: {s} gives {y[i]:R} at {i}, {firstName} {first[i]:R}");
            }
        }
        TestContext.Out.WriteLine($"compared on a CPU with {CpuInt8Linear.Describe()} (unsupported strategies fall back to scalar)");
    }

    [Test]
    public void MatchesTorchTranscriptionOfLlmInt8()
    {
        foreach (int groupSize in new[] { 36, Primitives.DefaultInt8GroupSize })
        foreach (var (m, k, n) in new[] { (7, 259, 33), (100, 130, 49), (13, 1031, 70) })
        {
            float[] x = InputWithOutliers(m, k, 31 + m), w = RandomData.Uniform(n * k, 32 + k), bias = RandomData.Uniform(n, 33);
            var actual = RunInt8(x, w, bias, m, k, n, Primitives.DefaultOutlierThreshold, groupSize: groupSize);
            var expected = TorchLlmInt8(x, w, bias, m, k, n, Primitives.DefaultOutlierThreshold, groupSize);
            RandomData.AssertClose(actual, expected, 1e-5 * Math.Sqrt(k), 1e-5, $"torch G = {groupSize}, M = {m}, K = {k}, N = {n}");
        }
    }

    /// <summary>
    /// LLM.int8() written with torch ops (as bitsandbytes' MatMul8bitLt computes it, with our rounding and per-group
    /// activation scales): weight rows quantized absmax/127 in float32, activations absmax/127 per row and group of G
    /// columns (x zero-padded to whole groups and viewed [M, groups, G]), the outlier columns' fp32 product with the
    /// dequantized weight, the scaled integer products summed in float64.
    /// </summary>
    private static float[] TorchLlmInt8(float[] x, float[] w, float[] bias, int m, int k, int n, float threshold, int groupSize)
    {
        using var scope = torch.NewDisposeScope();
        var xt = TorchOps.T(x, m, k);
        var wt = TorchOps.T(w, n, k);
        var wmax = wt.abs().amax([1L], keepdim: true);
        var wq = torch.where(wmax > 0, (wt * (127f / wmax)).round().clamp(-127, 127), torch.zeros_like(wt));
        var sw = (wmax / 127f).to(torch.float64);
        var outlier = xt.abs().amax([0L], keepdim: true) > threshold;
        var xi = xt.masked_fill(outlier, 0f);
        long groups = (k + groupSize - 1) / groupSize;
        var xg = torch.nn.functional.pad(xi, [0, groups * groupSize - k]).view(m, groups, groupSize);
        var xmax = xg.abs().amax([2L], keepdim: true);
        var xq = torch.where(xmax > 0, (xg * (127f / xmax)).round().clamp(-127, 127), torch.zeros_like(xg));
        var sx = (xmax / 127f).to(torch.float64);
        var scaled = (xq.to(torch.float64) * sx).view(m, groups * groupSize).narrow(1, 0, k);
        var acc = scaled.mm(wq.to(torch.float64).t());
        var fp = (xt - xi).to(torch.float64).mm(wq.to(torch.float64).t());
        var y = (acc + fp) * sw.t() + TorchOps.T(bias, n).to(torch.float64);
        return TorchOps.Data(y.to(torch.float32));
    }

    [Test]
    public void CloseToFp32WithInjectedOutlierColumns()
    {
        // A projection-sized layer with LLM-like activations: most |x| ≲ 1, a few columns with magnitudes 20 to 60.
        const int m = 64, k = 1024, n = 384;
        var x = RandomData.Uniform(m * k, 41);
        var rng = new Random(42);
        foreach (int c in new[] { 5, 77, 300, 811 })
            for (int t = 0; t < m; t++) x[t * k + c] = (float)(20 + 40 * rng.NextDouble()) * (rng.Next(2) * 2 - 1);
        var w = RandomData.Uniform(n * k, 43, -0.05f, 0.05f);
        var fp32 = new float[m * n];
        PrimitivesReference.Linear(x, w, [], fp32, m, k, n);

        double with = Cosine(RunInt8(x, w, null, m, k, n, Primitives.DefaultOutlierThreshold), fp32);
        double without = Cosine(RunInt8(x, w, null, m, k, n, 1e30f), fp32);
        TestContext.Out.WriteLine($"cosine to fp32: {with:F6} with outlier decomposition, {without:F6} without");
        Assert.That(with, Is.GreaterThanOrEqualTo(0.999), "per-layer cosine with outlier decomposition");
        Assert.That(without, Is.LessThan(with), "the outlier columns must be what int8 alone loses");
    }

    [Test]
    public void GroupScalesFollowHeavyTailedRows()
    {
        // down_proj's input is a SwiGLU product: dense, heavy-tailed, no systematic outlier column. Rows of |x| ≲ 0.3 with a
        // few scattered values of 2 to 5 (below the threshold, at random columns): one scale per row makes their step coarse
        // for the whole row; groups of 32 confine it to the group that holds the spike.
        const int m = 48, k = 256, n = 64;
        var x = RandomData.Uniform(m * k, 81, -0.3f, 0.3f);
        var rng = new Random(82);
        for (int t = 0; t < m; t++)
            for (int s = 0; s < 2; s++) x[t * k + rng.Next(k)] = (float)(2 + 3 * rng.NextDouble()) * (rng.Next(2) * 2 - 1);
        var w = RandomData.Uniform(n * k, 83, -0.05f, 0.05f);
        var fp32 = new float[m * n];
        PrimitivesReference.Linear(x, w, [], fp32, m, k, n);
        double Error(int groupSize)
        {
            var y = RunInt8(x, w, null, m, k, n, Primitives.DefaultOutlierThreshold, groupSize: groupSize);
            double num = 0, den = 0;
            for (int i = 0; i < y.Length; i++) { num += Math.Pow(y[i] - fp32[i], 2); den += Math.Pow(fp32[i], 2); }
            return Math.Sqrt(num / den);
        }
        double perRow = Error(k), group32 = Error(32), group128 = Error(128), groupDefault = Error(Primitives.DefaultInt8GroupSize);
        TestContext.Out.WriteLine($"relative L2 error to fp32: one scale per row {perRow:E3}, groups of 128 {group128:E3}, " +
            $"groups of {Primitives.DefaultInt8GroupSize} (default) {groupDefault:E3}, groups of 32 {group32:E3}");
        Assert.That(group128, Is.LessThan(perRow), "groups of 128 vs one scale per row");
        Assert.That(groupDefault, Is.LessThan(perRow), "the default group size vs one scale per row");
        Assert.That(group32, Is.LessThan(0.75 * perRow), "groups of 32 vs one scale per row");
    }

    /// <summary>
    /// A threshold below every |x| sends every column to fp32 (W8A32): the CPU then runs the fp32 GEMM over the weight
    /// dequantized while packing; it must equal the reference and fp32 <see cref="Primitives.Linear"/> on the dequantized
    /// weight (small M takes the same blocked path: the GEMV has no int8 reader).
    /// </summary>
    [Test]
    public void EveryColumnAnOutlierIsTheFp32LayerOnTheDequantizedWeight()
    {
        foreach (var (m, k, n) in new[] { (1, 37, 15), (3, 259, 33), (97, 513, 131) })
        {
            float[] x = RandomData.Uniform(m * k, 91 + m), w = RandomData.Uniform(n * k, 92 + k), bias = RandomData.Uniform(n, 93);
            using var q = P.QuantizeInt8(_backend.Tensor(w, n, k));
            var y = _backend.Zeros(m, n);
            P.LinearInt8(_backend.Tensor(x, m, k), q, _backend.Tensor(bias, n), y, 1e-30f);
            var expected = new float[m * n];
            PrimitivesReference.LinearInt8(x, q.ReadValues(), q.ReadScales(), bias, expected, m, k, n, 1e-30f);
            RandomData.AssertClose(y.ToArray<float>(), expected, 1e-5 * Math.Sqrt(k), 1e-5, $"W8A32 vs reference, [{m}, {k}, {n}]");
            var values = q.ReadValues();
            var scales = q.ReadScales();
            var dequantized = new float[n * k];
            for (int j = 0; j < n; j++)
                for (int c = 0; c < k; c++) dequantized[j * k + c] = values[j * k + c] * scales[j];
            var fp32 = _backend.Zeros(m, n);
            P.Linear(_backend.Tensor(x, m, k), _backend.Tensor(dequantized, n, k), _backend.Tensor(bias, n), fp32);
            RandomData.AssertClose(y.ToArray<float>(), fp32.ToArray<float>(), 1e-6 * Math.Sqrt(k), 1e-6, $"W8A32 vs fp32 Linear on the dequantized weight, [{m}, {k}, {n}]");
        }
    }

    [Test]
    public void GroupSizeOutsideItsRangeIsNamed()
    {
        var w = _backend.Tensor(RandomData.Uniform(6 * 5, 1), 6, 5);
        foreach (int bad in new[] { 0, 2, 6, Primitives.MaxInt8GroupSize + 4 })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => P.QuantizeInt8(w, bad))!;
            Assert.That(e.ParamName, Is.EqualTo("groupSize"));
            Assert.That(e.Message, Does.Contain("multiple of 4"));
        }
    }

    private static double Cosine(float[] a, float[] b)
    {
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
        return ab / Math.Sqrt(aa * bb);
    }

    [Test]
    public void EmbeddingGatherMatchesReference()
    {
        foreach (var (v, h) in new[] { (1, 1), (40, 37), (33, 260) })
        {
            var table = RandomData.Uniform(v * h, 61 + h);
            using var q = P.QuantizeInt8(_backend.Tensor(table, v, h));
            int[] ids = RandomData.Ints(9, v, 62);
            var y = _backend.Zeros(ids.Length, h);
            P.EmbeddingInt8(_backend.Tensor(ids, ids.Length), q, y);
            var expected = new float[ids.Length * h];
            PrimitivesReference.EmbeddingInt8(ids, q.ReadValues(), q.ReadScales(), expected, h);
            Assert.That(y.ToArray<float>(), Is.EqualTo(expected), $"[{v}, {h}]");
            // and within half a quantization step of the f32 table
            var scales = q.ReadScales();
            var got = y.ToArray<float>();
            for (int t = 0; t < ids.Length; t++)
                for (int i = 0; i < h; i++)
                    Assert.That(Math.Abs(got[t * h + i] - table[ids[t] * h + i]), Is.LessThanOrEqualTo(scales[ids[t]] * 0.5f * 1.0001f));
        }
        using var small = P.QuantizeInt8(_backend.Tensor(RandomData.Uniform(12, 63), 3, 4));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => P.EmbeddingInt8(_backend.Tensor(new[] { 3 }, 1), small, _backend.Zeros(1, 4)))!;
        Assert.That(e.Message, Does.Contain("outside the embedding table of 3 rows"));
        Assert.Throws<ArgumentException>(() => P.EmbeddingInt8(_backend.Tensor(new[] { 0 }, 1), small, _backend.Zeros(1, 5)));
    }

    [Test]
    public void Int8BaseComposesWithFp32Adapter([Values(DType.F32, DType.BF16)] DType adapterType, [Values(3, 40)] int rows)
    {
        // y = LinearInt8(x, W8) + scale · B G_sᵀ A x: the int8 reference plus the CFLoRA reference with W0 = 0.
        const int din = 70, dout = 37, r = 4, samples = 2;
        var x = InputWithOutliers(rows, din, 71);
        var w = RandomData.Uniform(dout * din, 72);
        var bias = RandomData.Uniform(dout, 73);
        var a = LinearOracleTests.RoundTo(adapterType, RandomData.Uniform(r * din, 74, -0.2f, 0.2f));
        var b = LinearOracleTests.RoundTo(adapterType, RandomData.Uniform(dout * r, 75, -0.5f, 0.5f));
        var g = RandomData.Uniform(samples * r * r, 76);
        var sampleOfRow = Enumerable.Range(0, rows).Select(t => t * samples / rows).ToArray();
        const float scale = 2f;

        using var q = P.QuantizeInt8(_backend.Tensor(w, dout, din));
        var y = _backend.Zeros(rows, dout);
        var xt = _backend.Tensor(x, rows, din);
        P.LinearInt8(xt, q, _backend.Tensor(bias, dout), y);
        using var batch = CfloraBatch.FromRowIndex(sampleOfRow, samples);
        _backend.Cflora.AddAdapter(xt, LinearOracleTests.Upload(_backend, adapterType, a, r, din),
            LinearOracleTests.Upload(_backend, adapterType, b, dout, r), _backend.Tensor(g, samples, r, r), scale, batch, y);

        var expected = new float[rows * dout];
        PrimitivesReference.LinearInt8(x, q.ReadValues(), q.ReadScales(), bias, expected, rows, din, dout, Primitives.DefaultOutlierThreshold);
        var adapter = new float[rows * dout];
        CfloraReference.Forward(x, new float[dout * din], [], a, b, g, sampleOfRow, scale, adapter, din, dout, r);
        for (int i = 0; i < expected.Length; i++) expected[i] += adapter[i];
        RandomData.AssertClose(y.ToArray<float>(), expected, 1e-4, 1e-5, $"int8 base + {adapterType} adapter, {rows} rows");
        Assert.That(adapter.Max(Math.Abs), Is.GreaterThan(0.05f), "the adapter term is not negligible");

        var e = Assert.Throws<ArgumentException>(() => _backend.Cflora.AddAdapter(xt, _backend.Tensor(a, r, din),
            _backend.Tensor(b, dout, r), _backend.Tensor(g, samples, r, r), scale, batch, _backend.Zeros(rows, dout + 1)))!;
        Assert.That(e.ParamName, Is.EqualTo("b"));
    }

    [Test]
    public void NaNInAnInt8ColumnPoisonsOnlyItsRow()
    {
        const int m = 3, k = 40, n = 20;
        var x = RandomData.Uniform(m * k, 51);
        x[1 * k + 7] = float.NaN;
        var y = RunInt8(x, RandomData.Uniform(n * k, 52), null, m, k, n, Primitives.DefaultOutlierThreshold);
        Assert.That(y.Skip(n).Take(n).All(float.IsNaN), Is.True, "row 1");
        Assert.That(y.Take(n).Concat(y.Skip(2 * n)).All(float.IsFinite), Is.True, "rows 0 and 2");
    }

    [Test]
    public void BadArgumentsAreNamed()
    {
        using var w = P.QuantizeInt8(_backend.Tensor(RandomData.Uniform(6 * 5, 1), 6, 5));
        var x = _backend.Tensor(RandomData.Uniform(2 * 5, 2), 2, 5);
        var y = _backend.Zeros(2, 6);
        foreach (float bad in new[] { 0f, -1f, float.NaN, float.PositiveInfinity })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => P.LinearInt8(x, w, null, y, bad))!;
            Assert.That(e.ParamName, Is.EqualTo("outlierThreshold"));
            Assert.That(e.Message, Does.Contain("finite number > 0"));
        }
        var shape = Assert.Throws<ArgumentException>(() => P.LinearInt8(x, w, null, _backend.Zeros(2, 7)))!;
        Assert.That(shape.Message, Does.Contain("int8[6, 5]").And.Contain("f32[2, 7]"));
        var biasError = Assert.Throws<ArgumentException>(() => P.LinearInt8(x, w, _backend.Zeros(5), y))!;
        Assert.That(biasError.ParamName, Is.EqualTo("bias"));

        var poisoned = RandomData.Uniform(4 * 3, 3);
        poisoned[2 * 3 + 1] = float.PositiveInfinity;
        var nonFinite = Assert.Throws<ArgumentException>(() => P.QuantizeInt8(_backend.Tensor(poisoned, 4, 3)))!;
        Assert.That(nonFinite.Message, Does.Contain("row 2").And.Contain("non-finite"));
        Assert.Throws<ArgumentException>(() => P.QuantizeInt8(_backend.Tensor(new int[6], 2, 3)));

        using var other = new CpuBackend(1);
        var foreign = Assert.Throws<ArgumentException>(() => other.Primitives.LinearInt8(other.Tensor(RandomData.Uniform(10, 4), 2, 5), w, null, other.Zeros(2, 6)))!;
        Assert.That(foreign.ParamName, Is.EqualTo("w"));
        w.Dispose();
        Assert.Throws<ObjectDisposedException>(() => P.LinearInt8(x, w, null, y));
    }
}
