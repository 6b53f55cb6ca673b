using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>
/// The runtime with int8 attention (<see cref="LlamaModel.CreateSession"/> with <see cref="AttentionPrecision.Int8"/>:
/// an <see cref="Int8KvCache"/> per layer, SageAttention-style scores) on the embedded stories260K (5 layers, 8 query
/// heads, 4 KV heads, D = 8), against the documented fp32 greedy ids and the session's own fp32 logits.
/// </summary>
[TestFixture]
public sealed class Stories260KInt8AttentionTests
{
    private static IEnumerable<TestCaseData> Backends() =>
        TestBackends.Factories().Select(f => new TestCaseData(f).SetArgDisplayNames(f.Name));

    /// <summary>Greedy arg-max, top-2 gap (top1 - top2) of a logits row.</summary>
    private static (int Best, float Gap) Top2(float[] logits)
    {
        int best = GreedyGenerator.ArgMax(logits);
        float second = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
            if (i != best) second = Math.Max(second, logits[i]);
        return (best, logits[best] - second);
    }

    private static float MaxAbsDiff(float[] a, float[] b)
    {
        float max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    /// <summary>
    /// Issue 5: greedy text from BOS with int8 attention is identical to fp32 for the first 60 tokens (the documented
    /// ids). Both runs are stepped side by side, so a divergence is reported with the step, the fp32 run's top-2 logit
    /// gap there and the largest |logit difference| before it. Run once by hand to 200 tokens on the CPU backend, the
    /// two texts part at generated token 185, a near tie: fp32 picks 279 over 336 by a top-2 gap of 0.0042, while the
    /// int8 logits there differ from fp32 by up to 0.153 (0.69 at most over the 185 tokens before).
    /// </summary>
    [TestCaseSource(nameof(Backends))]
    public void Int8GreedyTextMatchesFp32ForSixtyTokens(BackendFactory factory)
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = factory.Create();
        using var model = LlamaModel.Load(dir, backend);
        using var fp32 = model.CreateSession();
        using var int8 = model.CreateSession(attention: AttentionPrecision.Int8);
        Assert.That(int8.Attention, Is.EqualTo(AttentionPrecision.Int8));
        int count = factory.Emulated ? 3 : Stories260KTests.DocumentedIds.Length;
        int bos = model.Tokenizer.BosId!.Value;

        float[] fLogits = fp32.Forward([bos]), qLogits = int8.Forward([bos]);
        var ids = new List<int>();
        float maxDiff = 0, minGap = float.PositiveInfinity, maxLogit = 0;
        int minGapStep = -1;
        var trace = new List<string>();
        for (int step = 0; step < count; step++)
        {
            var (fBest, gap) = Top2(fLogits);
            int qBest = GreedyGenerator.ArgMax(qLogits);
            float diff = MaxAbsDiff(fLogits, qLogits);
            if (fBest != qBest)
                Assert.Fail($"int8 greedy diverges from fp32 at generated token {step} (position {step + 1}): fp32 picks {fBest}, int8 {qBest}; " +
                            $"fp32 top-2 gap there {gap:G4}, |logit difference| there {diff:G4}, max |logit difference| before it {maxDiff:G4}");
            maxDiff = Math.Max(maxDiff, diff);
            maxLogit = Math.Max(maxLogit, fLogits.Max(Math.Abs));
            trace.Add($"{step}:{diff:F3}/{gap:F2}");
            if (gap < minGap) (minGap, minGapStep) = (gap, step);
            ids.Add(qBest);
            if (step + 1 < count)
            {
                fp32.Forward([fBest], fLogits);
                int8.Forward([qBest], qLogits);
            }
        }
        TestContext.Out.WriteLine($"{factory.Name}: {count} tokens identical; max |logit difference| int8 vs fp32 {maxDiff:G4}; " +
                                  $"smallest fp32 top-2 gap {minGap:G4} at token {minGapStep}; max |fp32 logit| {maxLogit:G4}");
        TestContext.Out.WriteLine("token:|logit difference|/fp32 top-2 gap " + string.Join(" ", trace));
        Assert.That(ids, Is.EqualTo(Stories260KTests.DocumentedIds.Take(count)), "the documented fp32 ids");
        Assert.That(maxDiff, Is.GreaterThan(0f), "int8 logits equal to fp32 bit for bit: the int8 path did not run");
        // Measured on the CPU backend: 0.018 at token 0 (one key: only V's int8 rounding), then 0.08 to 0.3, at most 0.505
        // (token 23), against logits up to 22 in magnitude (2.3 %). 1.0 is twice that.
        Assert.That(maxDiff, Is.LessThan(1.0f), "int8 logits stay near fp32");
    }

    /// <summary>
    /// A prompt (BOS + 40 tokens) fed in two chunks against one shot, under int8. The chunked run's key-smoothing mean
    /// comes from its first chunk only, so its int8 keys (k - mean, rounded per token to 8 levels of 1/127 of the row's
    /// max) differ from the one-shot run's: not bitwise equal. Smoothing is exact in real arithmetic, so the gap is pure
    /// int8 rounding noise, the same kind as int8 against fp32. Measured on the CPU backend (next-token logits, up to
    /// ~20 in magnitude): max |chunked - one-shot| 0.198 (first chunk 20) and 0.176 (first chunk 1, BOS alone, as
    /// generation does), max |int8 - fp32| 0.099 (one shot) and 0.16 (chunked). The tolerance, 0.4, is twice the
    /// largest; the arg-max must agree exactly.
    /// </summary>
    [TestCase(20)]
    [TestCase(1)]
    public void ChunkedInt8PrefillAgreesWithOneShot(int firstChunk)
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend();
        using var model = LlamaModel.Load(dir, backend);
        int[] tokens = [1, .. Stories260KTests.DocumentedIds.Take(40)];

        using var fp32 = model.CreateSession();
        var exact = fp32.Forward(tokens);
        using var oneShot = model.CreateSession(attention: AttentionPrecision.Int8);
        var whole = oneShot.Forward(tokens);
        using var chunked = model.CreateSession(attention: AttentionPrecision.Int8);
        chunked.Forward(tokens.AsSpan(0, firstChunk));
        var parts = chunked.Forward(tokens.AsSpan(firstChunk));
        Assert.That(chunked.Position, Is.EqualTo(tokens.Length));

        float chunkGap = MaxAbsDiff(parts, whole), wholeErr = MaxAbsDiff(whole, exact), partsErr = MaxAbsDiff(parts, exact);
        TestContext.Out.WriteLine($"first chunk {firstChunk}: max |chunked - one-shot| {chunkGap:G4}; max |one-shot - fp32| {wholeErr:G4}; " +
                                  $"max |chunked - fp32| {partsErr:G4}");
        Assert.That(parts, Is.EqualTo(whole).Within(0.4f), "chunked vs one-shot int8");
        Assert.That(whole, Is.EqualTo(exact).Within(0.4f), "one-shot int8 vs fp32");
        Assert.That(parts, Is.EqualTo(exact).Within(0.4f), "chunked int8 vs fp32");
        Assert.That(GreedyGenerator.ArgMax(parts), Is.EqualTo(GreedyGenerator.ArgMax(exact)));
        Assert.That(GreedyGenerator.ArgMax(whole), Is.EqualTo(GreedyGenerator.ArgMax(exact)));
    }

    /// <summary>
    /// <see cref="LlamaSession.ForwardHidden"/> (what item embedding reads) under int8 is the fp32 hidden states up to
    /// int8 noise. Measured on the CPU backend over BOS + 30 tokens: max |int8 - fp32| 0.139 per element, against
    /// elements up to 12.1 in magnitude (1.1 %); 0.010 on the first row, where attention sees one key and only V's
    /// int8 rounding (at most 1/254 of each value row's max) separates the two. The tolerance, 0.3, is about twice that.
    /// </summary>
    [Test]
    public void Int8HiddenStatesStayCloseToFp32()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend();
        using var model = LlamaModel.Load(dir, backend);
        int[] tokens = [1, .. Stories260KTests.DocumentedIds.Take(30)];
        using var fp32 = model.CreateSession();
        using var int8 = model.CreateSession(attention: AttentionPrecision.Int8);
        var exact = fp32.ForwardHidden(tokens);
        var approx = int8.ForwardHidden(tokens);
        Assert.That(approx, Has.Length.EqualTo(tokens.Length * model.Config.HiddenSize));
        TestContext.Out.WriteLine($"max |int8 - fp32| hidden {MaxAbsDiff(approx, exact):G4}; first row {MaxAbsDiff(approx[..64], exact[..64]):G4}; max |fp32| {exact.Max(Math.Abs):G4}");
        Assert.That(approx, Is.EqualTo(exact).Within(0.3f));
        Assert.That(approx, Is.Not.EqualTo(exact), "the int8 path ran");
    }

    [Test]
    public void ResetFixesTheSmoothingAgainAndRepeatsBitForBit()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend();
        using var model = LlamaModel.Load(dir, backend);
        int[] tokens = [1, .. Stories260KTests.DocumentedIds.Take(12)];
        using var session = model.CreateSession(attention: AttentionPrecision.Int8);
        var first = session.Forward(tokens);
        session.Forward([5, 6]);
        session.Reset();
        Assert.That(session.Position, Is.EqualTo(0));
        var again = session.Forward(tokens);
        Assert.That(again, Is.EqualTo(first), "a reset session is a fresh one");
        using var fresh = model.CreateSession(attention: AttentionPrecision.Int8);
        Assert.That(fresh.Forward(tokens), Is.EqualTo(first));
    }

    [Test]
    public void Int8SessionRejectsBadTokensAndOverflowWithoutAdvancing()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend();
        using var model = LlamaModel.Load(dir, backend);
        using var session = model.CreateSession(maxPositions: 4, attention: AttentionPrecision.Int8);
        Assert.That(() => session.Forward([1, 512]), Throws.InstanceOf<ArgumentOutOfRangeException>());
        var logits = session.Forward([1, 2, 3]);
        Assert.That(() => session.Forward([4, 5]), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("exceed"));
        Assert.That(session.Position, Is.EqualTo(3));
        // The session still works after the refusals: the last position fits, and the logits are finite.
        session.Forward([4], logits);
        Assert.That(session.Position, Is.EqualTo(4));
        Assert.That(logits.All(float.IsFinite));
        Assert.That(() => model.CreateSession(attention: (AttentionPrecision)7), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    /// <summary>
    /// The KV cache's device memory, worked out by hand for stories260K (5 layers, 512 positions, 4 KV heads, D = 8):
    /// f32 = 5 · 512 · 4 · 8 · 4 B · 2 (K and V) = 655,360 B; int8 = 5 · (512 · 4 · (8 + 8 + 4 + 4 + 4) B (int8 key and
    /// value, key scale, key sum, value scale) + 4 · 8 · 4 B (mean) + 4 B (padding)) = 287,380 B.
    /// </summary>
    [Test]
    public void Int8CacheIsSmallerByTheDocumentedAmount()
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend();
        using var model = LlamaModel.Load(dir, backend);
        using var fp32 = model.CreateSession();
        using var int8 = model.CreateSession(attention: AttentionPrecision.Int8);
        Assert.That(fp32.Attention, Is.EqualTo(AttentionPrecision.Fp32));
        Assert.That(fp32.KvCacheBytes, Is.EqualTo(655_360));
        Assert.That(int8.KvCacheBytes, Is.EqualTo(287_380));
    }
}
