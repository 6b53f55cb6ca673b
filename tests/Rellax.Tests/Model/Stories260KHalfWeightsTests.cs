using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Kernels.Ilgpu;
using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>
/// stories260K converted (in the test, into a temporary directory) to F16 and BF16 checkpoints, loaded in that dtype
/// (no widening: <see cref="Primitives.Linear"/> and <see cref="Primitives.Embedding"/> read half-precision weights),
/// against the F32 original; and the zero-copy load of every one of them on the CPU backend.
/// <para>
/// <b>Tolerance.</b> Rounding a weight to a format with p significand bits (f16: p = 11, bf16: p = 8, the implicit bit
/// included) changes it by a relative error of at most u = 2^-p (round to nearest: f16 4.9e-4, bf16 3.9e-3). A logit
/// is, to first order, a sum of contributions through the 5 layers' 7 matrices each, the embedding and the tied head;
/// perturbing every weight by a relative δ ≤ u moves each product's output by at most u times the sum of absolute
/// terms, and that sum is of the order of the largest logit magnitude (≈ 10 to 15 here). A bound of
/// 4·u·max|logit| allows for the compounding through the layers; with random rounding signs the observed error is
/// several times smaller (measured: see the assertion messages). The greedy text is compared over the first
/// <see cref="GreedyTokens"/> generated tokens; they all agree (measured for both dtypes), since the margins between the
/// top two logits along that path are far above the logit error.
/// </para>
/// </summary>
[TestFixture]
public sealed class Stories260KHalfWeightsTests
{
    /// <summary>Greedy tokens that must agree with F32 (all 60 documented ones; measured equal for F16 and BF16).</summary>
    private const int GreedyTokens = 60;

    private string _root = null!;

    [OneTimeSetUp]
    public void Convert()
    {
        string source = ModelPaths.Stories260KOrIgnore();
        _root = Directory.CreateTempSubdirectory("rellax-stories-half").FullName;
        using var file = SafeTensorsFile.Open(Path.Combine(source, "model.safetensors"));
        foreach (string dtype in new[] { "F16", "BF16" })
        {
            string dir = Path.Combine(_root, dtype);
            Directory.CreateDirectory(dir);
            var tensors = new Dictionary<string, (int[] Shape, float[] Data)>();
            foreach (var (name, info) in file.Tensors)
            {
                // Round to nearest (ties to even) as torch's .half() / .bfloat16() do; the writer then stores the exact bits.
                var data = file.ReadFloat32(name).Select(v => dtype == "F16" ? (float)(Half)v : (float)(BFloat16)v).ToArray();
                tensors[name] = (info.Shape, data);
            }
            SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors, dtype);
            CopyModelFiles(source, dir);
        }
    }

    [OneTimeTearDown] public void Delete() { if (_root is not null) Directory.Delete(_root, true); }

    private static void CopyModelFiles(string source, string dir)
    {
        foreach (var f in Directory.EnumerateFiles(source).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
    }

    /// <summary>Logits after each prefix of BOS + the first 40 documented ids, token by token through the KV cache.</summary>
    private static float[][] StepLogits(LlamaModel model)
    {
        int[] tokens = [1, .. Stories260KTests.DocumentedIds.Take(40)];
        using var session = model.CreateSession();
        return tokens.Select(t => session.Forward([t])).ToArray();
    }

    [TestCase("F16", 11)]
    [TestCase("BF16", 8)]
    public void LogitsStayWithinTheRoundingBoundOfF32(string dtype, int significandBits)
    {
        using var backend = new CpuBackend(2);
        using var f32 = LlamaModel.Load(ModelPaths.Stories260K, backend);
        using var half = LlamaModel.Load(Path.Combine(_root, dtype), backend);
        Assert.That(half.Weights.Layers[0].Q.DType, Is.EqualTo(dtype == "F16" ? DType.F16 : DType.BF16), "weights keep the checkpoint dtype");
        Assert.That(half.Weights.Embedding.DType, Is.EqualTo(half.Weights.Layers[0].Q.DType));
        Assert.That(half.Weights.FinalNorm.DType, Is.EqualTo(DType.F32), "norms are widened");

        var expected = StepLogits(f32);
        var actual = StepLogits(half);
        double u = Math.Pow(2, -significandBits);
        double maxLogit = expected.SelectMany(r => r).Max(v => Math.Abs((double)v));
        double worst = 0;
        for (int p = 0; p < expected.Length; p++)
            for (int v = 0; v < expected[p].Length; v++)
                worst = Math.Max(worst, Math.Abs(actual[p][v] - (double)expected[p][v]));
        double bound = 4 * u * maxLogit;
        TestContext.Out.WriteLine($"{dtype}: max |Δlogit| = {worst:E3} over {expected.Length} positions; max |logit| = {maxLogit:F2}; bound 4·u·max = {bound:E3}");
        Assert.That(worst, Is.LessThanOrEqualTo(bound), $"max |Δlogit| {worst:E3} (max |logit| {maxLogit:F2}, u = 2^-{significandBits})");
        Assert.That(worst, Is.GreaterThan(0), "the half-precision model really is different weights");
    }

    [TestCase("F16")]
    [TestCase("BF16")]
    public void GreedyTextMatchesF32(string dtype)
    {
        using var backend = new CpuBackend(2);
        using var half = LlamaModel.Load(Path.Combine(_root, dtype), backend);
        using var session = half.CreateSession();
        var ids = GreedyGenerator.Generate(session, [half.Tokenizer.BosId!.Value], GreedyTokens, []).ToArray();
        int agree = ids.Zip(Stories260KTests.DocumentedIds).TakeWhile(p => p.First == p.Second).Count();
        TestContext.Out.WriteLine($"{dtype}: {agree} of {GreedyTokens} greedy tokens equal to F32's");
        Assert.That(ids, Is.EqualTo(Stories260KTests.DocumentedIds.Take(GreedyTokens)));
    }

    [Test]
    public void EmulatorReadsBf16WeightsLikeTheCpu()
    {
        // The ILGPU kernels read the half weights too (uploaded, not mapped). One position only: a forward on the
        // emulator takes tens of seconds. Same weights, fp32 accumulation in another order: 1e-4 as in Stories260KTests.
        using var cpu = new CpuBackend(1);
        using var emulator = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        using var onCpu = LlamaModel.Load(Path.Combine(_root, "BF16"), cpu);
        using var onEmulator = LlamaModel.Load(Path.Combine(_root, "BF16"), emulator);
        Assert.That(onEmulator.Weights.BytesMapped, Is.Zero, "GPU-style backends upload");
        using var a = onCpu.CreateSession();
        using var b = onEmulator.CreateSession();
        var expected = a.Forward([1]);
        var actual = b.Forward([1]);
        Assert.That(actual, Is.EqualTo(expected).Within(1e-4));
        Assert.That(Array.IndexOf(actual, actual.Max()), Is.EqualTo(Stories260KTests.DocumentedIds[0]));
    }

    /// <summary>Bytes of every tensor in a checkpoint, and of its 1-D (norm) tensors.</summary>
    private static (long All, long Vectors) TensorBytes(string dir)
    {
        using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        return (file.Tensors.Values.Sum(i => i.ByteLength), file.Tensors.Values.Where(i => i.Shape.Length == 1).Sum(i => i.ByteLength));
    }

    [TestCase("F32")]
    [TestCase("F16")]
    [TestCase("BF16")]
    public void CpuLoadMapsEveryWeightWithoutCopying(string dtype)
    {
        string dir = dtype == "F32" ? ModelPaths.Stories260K : Path.Combine(_root, dtype);
        var (all, vectors) = TensorBytes(dir);
        using var backend = new CpuBackend(1);
        using var model = LlamaModel.Load(dir, backend);
        var w = model.Weights;
        TestContext.Out.WriteLine($"{dtype}: mapped {w.BytesMapped}, copied {w.BytesCopied}, widened {w.BytesWidened} of {all} bytes");
        Assert.That(w.BytesCopied, Is.Zero, "no weight copied");
        // F32 norms are mapped too; F16/BF16 norms (vectors) are widened to f32, everything else is mapped.
        Assert.That(w.BytesWidened, Is.EqualTo(dtype == "F32" ? 0 : vectors));
        Assert.That(w.BytesMapped + w.BytesWidened, Is.EqualTo(all), "every tensor of the file is used once");
        using var session = model.CreateSession();
        Assert.That(session.Forward([1]).All(float.IsFinite));
    }

    [Test]
    public void EmulatorLoadCopiesEverything()
    {
        var (all, _) = TensorBytes(Path.Combine(_root, "BF16"));
        using var backend = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
        using var model = LlamaModel.Load(Path.Combine(_root, "BF16"), backend);
        Assert.That(model.Weights.BytesMapped, Is.Zero);
        Assert.That(model.Weights.BytesCopied + model.Weights.BytesWidened, Is.EqualTo(all));
        Assert.That(model.Weights.Layers[0].Q.DType, Is.EqualTo(DType.BF16), "uploaded in the checkpoint dtype");
    }

    [Test]
    public void MisalignedTensorsAreCopiedAndGiveTheSameLogits()
    {
        // One more space in the header moves the data section to an odd offset: no F32 tensor is 4-byte aligned.
        string dir = Path.Combine(_root, "misaligned");
        Directory.CreateDirectory(dir);
        CopyModelFiles(ModelPaths.Stories260K, dir);
        byte[] bytes = File.ReadAllBytes(Path.Combine(ModelPaths.Stories260K, "model.safetensors"));
        ulong headerLength = BitConverter.ToUInt64(bytes, 0);
        using (var output = File.Create(Path.Combine(dir, "model.safetensors")))
        {
            output.Write(BitConverter.GetBytes(headerLength + 1));
            output.Write(bytes, 8, (int)headerLength);
            output.WriteByte((byte)' ');
            output.Write(bytes, 8 + (int)headerLength, bytes.Length - 8 - (int)headerLength);
        }

        using var backend = new CpuBackend(1);
        using var aligned = LlamaModel.Load(ModelPaths.Stories260K, backend);
        using var misaligned = LlamaModel.Load(dir, backend);
        Assert.That(misaligned.Weights.BytesMapped, Is.Zero, "nothing is aligned, so nothing is mapped");
        Assert.That(misaligned.Weights.BytesCopied, Is.EqualTo(aligned.Weights.BytesMapped));
        int[] tokens = [1, .. Stories260KTests.DocumentedIds.Take(10)];
        using var a = aligned.CreateSession();
        using var b = misaligned.CreateSession();
        Assert.That(b.Forward(tokens), Is.EqualTo(a.Forward(tokens)), "same weights, same kernels: bitwise equal");
    }

    [Test]
    public void MappedWeightsAreReadOnly()
    {
        using var backend = new CpuBackend(1);
        using var model = LlamaModel.Load(ModelPaths.Stories260K, backend);
        var q = model.Weights.Layers[0].Q.Dense!;
        Assert.That(() => q.CopyFrom<float>(new float[1]), Throws.InvalidOperationException.With.Message.Contains("read-only"));
    }
}
