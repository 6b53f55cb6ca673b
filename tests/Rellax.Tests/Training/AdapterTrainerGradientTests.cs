using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Runtime;
using Rellax.Runtime.Training;
using Rellax.Tests.Model;

namespace Rellax.Tests.Training;

/// <summary>
/// The whole model's gradient (issue 17 item 5): for every trained tensor of <see cref="AdapterTrainer"/> (LoRA A/B, CFLoRA
/// generators, SPA projector), <see cref="AdapterTrainer.ComputeGradients"/> against <see cref="TorchAdapterOracle"/>'s float64
/// autograd of the same model, adapter, prompts and loss, relative error ≤ <see cref="RelativeTolerance"/> per tensor
/// (‖ours − oracle‖ / ‖oracle‖). Cases cover F32/F16/BF16 base weights, left-padded batches (prompts of different lengths),
/// GQA (Hkv &lt; Hq), Qwen2's q/k/v biases, plain LoRA on every module, CFLoRA + SPA, both losses, <c>Recompute</c> on and
/// off, and steps larger than <see cref="ScoringOptions.BatchSize"/> (micro-batches summed). The oracle always runs the whole
/// step as one padded batch. Also: one <see cref="TrainingLoop"/> step with SGD at lr 1 moves each trained tensor by exactly
/// minus its gradient and leaves everything frozen bit-identical.
/// </summary>
[TestFixture]
public sealed class AdapterTrainerGradientTests
{
    /// <summary>The issue's bound: fp32 trainer against the float64 oracle, per tensor.</summary>
    public const double RelativeTolerance = 1e-4;

    /// <summary>Relative tolerance of the batch's mean loss.</summary>
    public const double LossTolerance = 1e-5;

    private static readonly LlamaModule[] QV = [LlamaModule.QProj, LlamaModule.VProj];
    private static readonly LlamaModule[] AllModules =
        [LlamaModule.QProj, LlamaModule.KProj, LlamaModule.VProj, LlamaModule.OProj, LlamaModule.GateProj, LlamaModule.UpProj, LlamaModule.DownProj];

    /// <summary>One gradient case.</summary>
    /// <param name="Name">Shown in the test name.</param>
    /// <param name="Spec">The synthetic model, or null for stories260K.</param>
    /// <param name="DType">The synthetic model's weights: F32, F16 or BF16.</param>
    /// <param name="Modules">The adapted modules of every layer.</param>
    /// <param name="Rank">LoRA r.</param>
    /// <param name="InstanceDim">d_h of the CFLoRA generators, or null for plain LoRA.</param>
    /// <param name="CrmDim">E of the SPA projector (and markers in the prompts), or null.</param>
    /// <param name="Parts">The trained parts.</param>
    /// <param name="Loss">The loss.</param>
    /// <param name="Recompute">Activation checkpointing.</param>
    /// <param name="BatchSize">Prompts per micro-batch (the step is every example).</param>
    /// <param name="Template">The prompt template.</param>
    public sealed record Case(string Name, SyntheticModelSpec? Spec, string DType, LlamaModule[] Modules, int Rank, int? InstanceDim, int? CrmDim,
        AdapterParts Parts, CtrLoss Loss, bool Recompute, int BatchSize, PromptTemplate Template)
    {
        internal TrainingSetup Build() => Spec is null
            ? TrainingSetup.Stories(Modules, Rank, InstanceDim, CrmDim)
            : TrainingSetup.Synthetic(Spec, DType, Modules, Rank, InstanceDim, CrmDim);

        /// <inheritdoc/>
        public override string ToString() => Name;
    }

    private static IEnumerable<TestCaseData> Cases()
    {
        // TinyLlama's odd sizes and GQA 6:2, with D = 8: FlashAttention (scoring and training) needs a multiple of 8.
        var tinyLlama = SyntheticModelSpec.TinyLlama with { HeadDim = 8, MaxPositions = 256 };
        const AdapterParts GateProjector = AdapterParts.Gate | AdapterParts.Projector, Everything = AdapterParts.Lora | GateProjector;
        Case[] cases =
        [
            // stories260K (F32, MHA, tied head): CFLoRA + SPA as ReLLaX trains it, Vicuna template, one micro-batch.
            new("stories260K cflora+spa gate,projector bce", null, "F32", QV, 8, 16, 8, GateProjector, CtrLoss.Bce, false, 8, PromptTemplate.Vicuna),
            new("stories260K cflora+spa gate,projector lm recompute microbatch 2", null, "F32", QV, 8, 16, 8, GateProjector, CtrLoss.Lm, true, 2, PromptTemplate.Vicuna),
            // Plain LoRA on every module (ReLLa's stage), both losses.
            new("stories260K lora all modules bce microbatch 3", null, "F32", AllModules, 4, null, null, AdapterParts.Lora, CtrLoss.Bce, false, 3, PromptTemplate.None),
            new("stories260K lora all modules lm recompute", null, "F32", AllModules, 4, null, null, AdapterParts.Lora, CtrLoss.Lm, true, 8, PromptTemplate.Vicuna),
            // GQA 6:2, Hq·D = 48 ≠ H = 24, untied head, F16 / BF16 weights; everything trained at once.
            new("tinyllama gqa f16 lora,gate,projector all modules bce microbatch 2", tinyLlama, "F16", AllModules, 4, 8, 6, Everything, CtrLoss.Bce, false, 2, PromptTemplate.None),
            new("tinyllama gqa bf16 lora all modules lm recompute", tinyLlama, "BF16", AllModules, 4, null, null, AdapterParts.Lora, CtrLoss.Lm, true, 3, PromptTemplate.None),
            // Qwen2: q/k/v biases, GQA 4:2, rope_theta 1e6.
            new("qwen2 bf16 cflora+spa q,k,v,o gate,projector bce recompute", SyntheticModelSpec.Qwen2, "BF16",
                [LlamaModule.QProj, LlamaModule.KProj, LlamaModule.VProj, LlamaModule.OProj], 4, 8, 6, GateProjector, CtrLoss.Bce, true, 8, PromptTemplate.None),
            new("qwen2 f32 cflora+spa q,v lora,gate,projector lm microbatch 2", SyntheticModelSpec.Qwen2, "F32", QV, 4, 8, 6, Everything, CtrLoss.Lm, false, 2, PromptTemplate.None),
            // Mistral: GQA 4:1, F16; generators on the MLP; the projector frozen.
            new("mistral f16 cflora gate,up,down gate bce", SyntheticModelSpec.Mistral, "F16",
                [LlamaModule.GateProj, LlamaModule.UpProj, LlamaModule.DownProj], 4, 8, 6, AdapterParts.Gate, CtrLoss.Bce, false, 4, PromptTemplate.None),
        ];
        return cases.Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));
    }

    [TestCaseSource(nameof(Cases))]
    public void GradientsMatchTheOracle(Case c)
    {
        using var s = c.Build();
        AssertGradients(s, c, RelativeTolerance, LossTolerance);
    }

    /// <summary>
    /// Training on an int8 base (issue 19, QLoRA-style): the gradient is defined as the straight-through one, that of the fp32
    /// model with the dequantized weights (<see cref="BackwardOps.LinearInput"/>, <see cref="CfloraBackwardModule.W0Int8"/>).
    /// With an outlier threshold below every |x| the int8 forward is exactly that fp32 model (every column in the fp32 path,
    /// W8A32), so ours must match the float64 oracle on the dequantized weights as tightly as an fp32 base does. At the default
    /// threshold 6 the forward also quantizes the activations (LLM.int8()), so the loss and the activations the backward reads
    /// differ from the oracle's by that quantization's error. Measured there (5 prompts, BCE, CFLoRA + SPA): loss 3.3e-4
    /// relative, per-tensor gradient 0.20 to 0.44 relative (BCE gradients are differences of nearly equal terms, so small
    /// shifts in p_yes move them a lot): the bound below is only a sanity check (a dropped term or a wrong scale exceeds
    /// it); the exact cases above are the test of the backward.
    /// </summary>
    [TestCase(1e-30f, RelativeTolerance, LossTolerance, false)]
    [TestCase(1e-30f, RelativeTolerance, LossTolerance, true)]
    [TestCase(Primitives.DefaultOutlierThreshold, 0.75, 2e-3, false)]
    public void Int8BaseGradientsAreThoseOfTheDequantizedModel(float threshold, double relativeTolerance, double lossTolerance, bool loraAllModules)
    {
        var c = loraAllModules
            ? new Case("stories260K int8 base lora all modules lm", null, "F32", AllModules, 4, null, null, AdapterParts.Lora, CtrLoss.Lm, false, 8, PromptTemplate.Vicuna)
            : new Case("stories260K int8 base cflora+spa lora,gate,projector bce", null, "F32", QV, 8, 16, 8,
                AdapterParts.Lora | AdapterParts.Gate | AdapterParts.Projector, CtrLoss.Bce, false, 8, PromptTemplate.Vicuna);
        using var s = TrainingSetup.StoriesInt8(c.Modules, c.Rank, c.InstanceDim, c.CrmDim, threshold);
        Assert.That(s.Model.WeightFormat, Is.EqualTo(WeightFormat.Int8));
        TestContext.Out.WriteLine($"{c.Name}, outlier threshold {threshold}");
        AssertGradients(s, c, relativeTolerance, lossTolerance);
    }

    private static void AssertGradients(TrainingSetup s, Case c, double relativeTolerance, double lossTolerance)
    {
        var options = new AdapterTrainingOptions
        {
            Trainable = c.Parts, Loss = c.Loss, Recompute = c.Recompute,
            Scoring = new ScoringOptions { Template = c.Template, BatchSize = c.BatchSize },
        };
        var expectedNames = s.Oracle.Names(c.Parts);
        var batch = s.OracleBatch(c.Loss, options);
        if (c.BatchSize < batch.Count)
            Assert.That(batch.Select(e => e.Sample.Ids.Length).Distinct().Count(), Is.GreaterThan(1), "prompts of different lengths");
        var (expectedLoss, grads) = s.Oracle.Gradients(batch, c.Loss, expectedNames);
        TestContext.Out.WriteLine($"{batch.Count} prompts of {string.Join(" ", batch.Select(e => e.Sample.Ids.Length))} tokens" +
            (c.Loss == CtrLoss.Lm ? $" (answer tokens {string.Join(" ", batch.Select(e => e.Answer.Length))})" : "") +
            $"; oracle loss {expectedLoss:F6}; trained tensors {expectedNames.Length}");

        using var trainer = new AdapterTrainer(s.Model, s.Adapter, s.Examples, null, options);
        Assert.That(trainer.Trainable, Is.EqualTo(c.Parts));
        Assert.That(trainer.Parameters.Select(p => p.Name).Order(StringComparer.Ordinal), Is.EqualTo(expectedNames), "the trained tensors are exactly the parts'");

        // A first step on part of the batch, so the checked gradients must overwrite (not add to) what it left.
        trainer.ComputeGradients([0, 1]);
        double loss = trainer.ComputeGradients(s.All);

        TestContext.Out.WriteLine($"loss ours {loss:F8}, oracle {expectedLoss:F8}");
        var errors = new List<(string Name, double Error, double Norm)>();
        foreach (var p in trainer.Parameters)
        {
            var g = grads[p.Name];
            Assert.That(p.Length, Is.EqualTo(g.Length), $"{p.Name}: element count");
            double diff = 0, norm = 0;
            for (int i = 0; i < g.Length; i++)
            {
                diff += (p.Grad[i] - g[i]) * (p.Grad[i] - g[i]);
                norm += g[i] * g[i];
            }
            errors.Add((p.Name, Math.Sqrt(diff / norm), Math.Sqrt(norm)));
        }
        foreach (var (name, error, norm) in errors.OrderByDescending(e => e.Error).Take(6))
            TestContext.Out.WriteLine($"  {name}: relative error {error:E2} (‖oracle grad‖ {norm:E2})");
        Assert.That(loss, Is.EqualTo(expectedLoss).Within(lossTolerance * Math.Abs(expectedLoss)), "the batch's mean loss");
        Assert.Multiple(() =>
        {
            foreach (var (name, error, norm) in errors)
            {
                Assert.That(norm, Is.GreaterThan(1e-8), $"{name}: the oracle's gradient is not zero (the check has power)");
                Assert.That(error, Is.LessThanOrEqualTo(relativeTolerance), $"{name}: ‖ours − oracle‖ / ‖oracle‖");
            }
        });
    }

    /// <summary>
    /// One <see cref="TrainingLoop"/> epoch of one step (batch = every example) with SGD, lr 1, no weight decay, no clipping,
    /// no schedule: every trained value becomes exactly <c>old − grad</c> in float (the gradient the step left in
    /// <see cref="Parameter.Grad"/>), while the frozen adapter tensors (LoRA A/B and the projector here), the caller's adapter
    /// and every weight buffer of the model stay bit-identical.
    /// </summary>
    [Test]
    public void OneSgdStepAtLrOneSubtractsTheGradientExactly()
    {
        using var s = TrainingSetup.Stories(QV, rank: 8, instanceDim: 16, crmDim: 8);
        var callers = TorchAdapterOracle.NamedTensors(s.Adapter.Targets, s.Adapter.Projector);
        var adapterBefore = callers.ToDictionary(p => p.Key, p => p.Value.ToArray());
        var weightsBefore = TrainingSetup.WeightBytes(s.Model);
        var options = new AdapterTrainingOptions { Trainable = AdapterParts.Gate, Scoring = new ScoringOptions { Template = PromptTemplate.None } };
        using var trainer = new AdapterTrainer(s.Model, s.Adapter, s.Examples, null, options);
        var before = trainer.Parameters.ToDictionary(p => p.Name, p => p.Value.ToArray());
        var loop = new TrainingLoop(trainer, new TrainingOptions
        {
            Epochs = 1, BatchSize = s.Examples.Count, LearningRate = 1f, Optimizer = "sgd", WeightDecay = 0, ClipNorm = 0, Patience = 0,
        });
        int steps = 0;
        loop.StepCompleted += _ => steps++;
        loop.Run();
        Assert.That(steps, Is.EqualTo(1));

        long moved = 0;
        foreach (var p in trainer.Parameters)
        {
            var old = before[p.Name];
            for (int i = 0; i < p.Length; i++)
            {
                float expected = old[i] - p.Grad[i];
                if (BitConverter.SingleToInt32Bits(p.Value[i]) != BitConverter.SingleToInt32Bits(expected))
                    Assert.Fail($"{p.Name}[{i}]: {p.Value[i]:R} after the step, expected {old[i]:R} - {p.Grad[i]:R} = {expected:R}");
                if (p.Grad[i] != 0) moved++;
            }
        }
        Assert.That(moved, Is.GreaterThan(trainer.Parameters.Sum(p => p.Length) / 2), "most trained values have a nonzero gradient");

        var trained = trainer.ToAdapter();
        var after = TorchAdapterOracle.NamedTensors(trained.Targets, trained.Projector);
        var trainedNames = new HashSet<string>(trainer.Parameters.Select(p => p.Name));
        Assert.Multiple(() =>
        {
            Assert.That(after.Keys, Is.EquivalentTo(adapterBefore.Keys), "ToAdapter keeps every tensor");
            foreach (var (name, values) in adapterBefore)
            {
                Assert.That(callers[name], Is.EqualTo(values), $"{name}: the caller's adapter is not changed");
                if (trainedNames.Contains(name))
                    Assert.That(after[name], Is.EqualTo(trainer.Parameters.First(p => p.Name == name).Value), $"{name}: ToAdapter holds the trained values");
                else
                    Assert.That(after[name].Select(BitConverter.SingleToInt32Bits), Is.EqualTo(values.Select(BitConverter.SingleToInt32Bits)), $"{name}: frozen, bit-identical");
            }
            var weightsAfter = TrainingSetup.WeightBytes(s.Model);
            Assert.That(weightsAfter, Has.Count.EqualTo(weightsBefore.Count));
            for (int i = 0; i < weightsBefore.Count; i++)
                Assert.That(weightsAfter[i].AsSpan().SequenceEqual(weightsBefore[i]), $"model weight buffer {i} is bit-identical");
        });
    }
}
