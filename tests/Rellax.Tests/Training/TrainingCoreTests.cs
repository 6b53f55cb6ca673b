using NUnit.Framework;
using Rellax.Runtime.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Rellax.Tests.Training;

/// <summary>
/// The training core (<c>Rellax.Runtime.Training</c>): AdamW and clipping against TorchSharp's <c>optim.AdamW</c> and
/// <c>clip_grad_norm_</c>, SGD's exact step, the linear schedule's values, and the loop's early stopping, best-epoch
/// restore, step cap, validation every N steps, NaN stop (naming epoch and step) and cancellation, on scripted models.
/// </summary>
[TestFixture]
public sealed class TrainingCoreTests
{
    [Test]
    public void AdamWMatchesTorch([Values(0f, 0.1f)] float weightDecay)
    {
        using var scope = torch.NewDisposeScope();
        var a0 = RandomData.Uniform(37, 1);
        var b0 = RandomData.Uniform(5, 2);
        var pa = new Parameter("a", [37], a0);
        var pb = new Parameter("b", [5], b0);
        var ta = new TorchSharp.Modules.Parameter(torch.tensor(a0, dtype: float32));
        var tb = new TorchSharp.Modules.Parameter(torch.tensor(b0, dtype: float32));
        var opt = torch.optim.AdamW([ta, tb], lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: weightDecay);
        var ours = new AdamW(weightDecay);
        for (int step = 0; step < 5; step++)
        {
            var ga = RandomData.Uniform(37, 10 + step, -2, 2);
            var gb = RandomData.Uniform(5, 20 + step, -1e-3f, 1e-3f);   // tiny gradients: ε matters
            ga.CopyTo(pa.Grad, 0);
            gb.CopyTo(pb.Grad, 0);
            ours.Step([pa, pb], 0.01f);
            opt.zero_grad();
            ((ta * torch.tensor(ga)).sum() + (tb * torch.tensor(gb)).sum()).backward();
            opt.step();
        }
        RandomData.AssertClose(pa.Value, ta.detach().data<float>().ToArray(), 1e-6, 1e-5, "a");
        RandomData.AssertClose(pb.Value, tb.detach().data<float>().ToArray(), 1e-6, 1e-5, "b");
    }

    [Test]
    public void SgdStepIsMinusLrTimesGradient()
    {
        var p = new Parameter("w", [2, 3], [1, 2, 3, 4, 5, 6]);
        float[] g = [0.5f, -1, 0, 2, 0.25f, -3];
        g.CopyTo(p.Grad, 0);
        new Sgd().Step([p], 1f);
        Assert.That(p.Value, Is.EqualTo(new[] { 0.5f, 3, 3, 2, 4.75f, 9 }));
    }

    [Test]
    public void ClippingMatchesTorch()
    {
        using var scope = torch.NewDisposeScope();
        var ga = RandomData.Uniform(33, 3, -3, 3);
        var gb = RandomData.Uniform(7, 4, -3, 3);
        var pa = new Parameter("a", [33], new float[33]);
        var pb = new Parameter("b", [7], new float[7]);
        ga.CopyTo(pa.Grad, 0);
        gb.CopyTo(pb.Grad, 0);
        double norm = GradientClipping.ClipByGlobalNorm([pa, pb], 1.5);
        var ta = new TorchSharp.Modules.Parameter(torch.zeros(33));
        var tb = new TorchSharp.Modules.Parameter(torch.zeros(7));
        ((ta * torch.tensor(ga)).sum() + (tb * torch.tensor(gb)).sum()).backward();
        double torchNorm = torch.nn.utils.clip_grad_norm_([ta, tb], 1.5);
        Assert.That(norm, Is.EqualTo(torchNorm).Within(1e-5).Percent);
        RandomData.AssertClose(pa.Grad, ta.grad!.data<float>().ToArray(), 1e-7, 1e-5, "clipped a");
        RandomData.AssertClose(pb.Grad, tb.grad!.data<float>().ToArray(), 1e-7, 1e-5, "clipped b");
        // Below the limit nothing changes.
        var before = (float[])pa.Grad.Clone();
        GradientClipping.ClipByGlobalNorm([pa, pb], 100);
        Assert.That(pa.Grad, Is.EqualTo(before));
    }

    [Test]
    public void LinearScheduleWarmsUpThenDecays()
    {
        var s = new LinearSchedule(totalSteps: 10, warmupSteps: 4);
        Assert.That(Enumerable.Range(0, 11).Select(s.Factor).ToArray(),
            Is.EqualTo(new[] { 0f, 0.25f, 0.5f, 0.75f, 1f, 5f / 6, 4f / 6, 3f / 6, 2f / 6, 1f / 6, 0f }).Within(1e-6f));
        var noWarmup = new LinearSchedule(4);
        Assert.That(Enumerable.Range(0, 4).Select(noWarmup.Factor).ToArray(), Is.EqualTo(new[] { 1f, 0.75f, 0.5f, 0.25f }));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new LinearSchedule(3, 4));
    }

    /// <summary>
    /// A scripted model: one parameter whose gradient is always 1 (SGD with lr 1 then subtracts 1 per step, so the value
    /// counts the steps), validation AUCs from a script, and optionally a NaN loss at a given global step.
    /// </summary>
    private sealed class Scripted(int count, double[] aucs, int nanAtStep = -1) : ITrainable
    {
        public Parameter W { get; } = new("w", [1], [0f]);
        public IReadOnlyList<Parameter> Parameters => [W];
        public int TrainingCount => count;
        public int Steps { get; private set; }
        public int Epoch { get; private set; }
        public List<int> Seen { get; } = [];
        public Action? OnStep { get; set; }

        public double ComputeGradients(ReadOnlySpan<int> batch)
        {
            foreach (int i in batch) Seen.Add(i);
            Steps++;
            OnStep?.Invoke();
            W.Grad[0] = 1;
            return Steps == nanAtStep ? double.NaN : 0.5;
        }

        public ValidationResult? Validate(CancellationToken cancellationToken) =>
            aucs.Length == 0 ? null : new ValidationResult(aucs[Epoch++], 0.6, 0.7);
    }

    private static TrainingOptions Sgd(int epochs, int batch, int patience) =>
        new() { Epochs = epochs, BatchSize = batch, LearningRate = 1, Optimizer = "sgd", Patience = patience, Seed = 3 };

    [Test]
    public void StopsEarlyAndRestoresTheBestEpoch()
    {
        var model = new Scripted(10, [0.6, 0.7, 0.65, 0.64, 0.9]);
        var loop = new TrainingLoop(model, Sgd(epochs: 5, batch: 4, patience: 2));
        var bests = new List<int>();
        loop.BestChanged += r => bests.Add(r.Epoch);
        var result = loop.Run();
        Assert.That(result.Epochs, Has.Count.EqualTo(4), "stops after 2 epochs without improvement");
        Assert.That(result.StoppedEarly, Is.True);
        Assert.That(result.BestEpoch, Is.EqualTo(2));
        Assert.That(result.SelectedOn, Is.EqualTo("valid_auc"));
        Assert.That(bests, Is.EqualTo(new[] { 1, 2 }));
        // 3 steps per epoch (10 samples, batch 4): the best epoch's value is -6.
        Assert.That(model.W.Value[0], Is.EqualTo(-6f));
        Assert.That(model.Steps, Is.EqualTo(12));
    }

    [Test]
    public void ShufflesEveryEpochWithTheSeedAndVisitsEverySample()
    {
        var a = new Scripted(50, [0.5, 0.5]);
        new TrainingLoop(a, Sgd(2, 7, 0)).Run();
        var b = new Scripted(50, [0.5, 0.5]);
        new TrainingLoop(b, Sgd(2, 7, 0)).Run();
        Assert.That(a.Seen, Is.EqualTo(b.Seen), "same seed, same order");
        Assert.That(a.Seen.Take(50).Order(), Is.EqualTo(Enumerable.Range(0, 50)), "each sample once per epoch");
        Assert.That(a.Seen.Take(50), Is.Not.EqualTo(a.Seen.Skip(50)), "a new order each epoch");
        Assert.That(a.Seen.Take(50), Is.Not.EqualTo(Enumerable.Range(0, 50)), "shuffled");
    }

    [Test]
    public void SelectsOnLogLossWhenAucIsUndefinedAndOnTheLastEpochWithoutValidation()
    {
        var oneClass = new Scripted(4, [double.NaN, double.NaN]);
        Assert.That(new TrainingLoop(oneClass, Sgd(2, 4, 0)).Run().SelectedOn, Is.EqualTo("valid_logloss"));
        var none = new Scripted(4, []);
        var result = new TrainingLoop(none, Sgd(3, 4, 1)).Run();
        Assert.That((result.SelectedOn, result.BestEpoch, none.W.Value[0]), Is.EqualTo(("last_epoch", 3, -3f)));
    }

    [Test]
    public void NanLossStopsNamingEpochAndStepAndKeepsTheBest()
    {
        // 3 steps per epoch; the 5th step (epoch 2, step 2) returns NaN; epoch 1 was the best (value -3).
        var model = new Scripted(9, [0.6, 0.7], nanAtStep: 5);
        var e = Assert.Throws<TrainingDivergedException>(() => new TrainingLoop(model, Sgd(3, 3, 0)).Run())!;
        Assert.That((e.Epoch, e.Step), Is.EqualTo((2, 2)));
        Assert.That(e.Message, Does.Contain("epoch 2, step 2").And.Contain("NaN"));
        Assert.That(model.W.Value[0], Is.EqualTo(-3f));
    }

    [Test]
    public void AnUpdateThatOverflowsStopsNamingTheParameterAndKeepsTheBest()
    {
        // SGD with lr = float.MaxValue and gradient 1: w = -3.4e38 after step 1 (finite, validated at the epoch end), -∞
        // after step 2, whose loss was finite: the loop stops there, naming w, and restores step 1's value.
        var model = new Scripted(1, [0.6, 0.7]);
        var e = Assert.Throws<TrainingDivergedException>(() => new TrainingLoop(model, Sgd(3, 1, 0) with { LearningRate = float.MaxValue }).Run())!;
        Assert.That((e.Epoch, e.Step, e.Parameter), Is.EqualTo((2, 1, "w")));
        Assert.That(e.Message, Does.Contain("made w NaN or infinite"));
        Assert.That(model.W.Value[0], Is.EqualTo(-float.MaxValue));
    }

    [Test]
    public void CancellationStopsBetweenStepsAndKeepsTheBest()
    {
        using var cts = new CancellationTokenSource();
        var model = new Scripted(9, [0.6, 0.7, 0.8]);
        model.OnStep = () => { if (model.Steps == 4) cts.Cancel(); };
        Assert.Throws<OperationCanceledException>(() => new TrainingLoop(model, Sgd(3, 3, 0)).Run(cancellationToken: cts.Token));
        Assert.That(model.Steps, Is.EqualTo(4), "no step after the one that saw the cancellation");
        Assert.That(model.W.Value[0], Is.EqualTo(-3f), "epoch 1's parameters");
    }

    [Test]
    public void MaxStepsEndsTheRunMidEpochWithAValidationAndTheScheduleSpansIt()
    {
        // 10 examples, batch 4: 3 steps per epoch; a cap of 5 steps ends epoch 2 after its second step.
        var model = new Scripted(10, [0.6, 0.7, 0.8]);
        var lrs = new List<float>();
        var validated = new List<(int Step, bool End)>();
        var loop = new TrainingLoop(model, Sgd(10, 4, 0) with { MaxSteps = 5, LinearDecay = true });
        loop.StepCompleted += s => lrs.Add(s.LearningRate);
        loop.Validated += v => validated.Add((v.GlobalStep, v.EpochEnd));
        var result = loop.Run();
        Assert.That((result.Steps, result.ReachedMaxSteps, result.StoppedEarly), Is.EqualTo((5, true, false)));
        Assert.That(model.Steps, Is.EqualTo(5));
        Assert.That(result.Epochs.Select(e => (e.Epoch, e.GlobalStep)), Is.EqualTo(new[] { (1, 3), (2, 5) }), "epoch 2 is partial");
        Assert.That(validated, Is.EqualTo(new[] { (3, true), (5, true) }), "a validation at the cap");
        Assert.That((result.BestEpoch, result.BestStep), Is.EqualTo((2, 5)));
        // Linear decay to 0 over the 5 steps actually run, not over 10 epochs.
        Assert.That(lrs, Is.EqualTo(new[] { 1f, 0.8f, 0.6f, 0.4f, 0.2f }).Within(1e-6f));
        // lr decays, so the value is -(1 + 0.8 + 0.6 + 0.4 + 0.2).
        Assert.That(model.W.Value[0], Is.EqualTo(-3f).Within(1e-5f));
        // The last epoch's loss is the mean over the examples it saw (8 of 10).
        Assert.That(result.Epochs[1].TrainLoss, Is.EqualTo(0.5));
    }

    [Test]
    public void ValidateEveryKeepsTheBestStepAndPatienceCountsValidations()
    {
        // 10 examples, batch 2: 5 steps per epoch; validations at steps 2, 4, 5 (epoch end), 6, 8, 10 (epoch end).
        var model = new Scripted(10, [0.6, 0.8, 0.7, 0.75, 0.65, 0.7]);
        var bests = new List<int>();
        var validated = new List<(int Epoch, int Step, bool End)>();
        var loop = new TrainingLoop(model, Sgd(2, 2, 0) with { ValidateEvery = 2 });
        loop.BestChanged += v => bests.Add(v.GlobalStep);
        loop.Validated += v => validated.Add((v.Epoch, v.GlobalStep, v.EpochEnd));
        var result = loop.Run();
        Assert.That(validated, Is.EqualTo(new[] { (1, 2, false), (1, 4, false), (1, 5, true), (2, 6, false), (2, 8, false), (2, 10, true) }));
        Assert.That(bests, Is.EqualTo(new[] { 2, 4 }));
        Assert.That((result.BestEpoch, result.BestStep, result.Steps), Is.EqualTo((1, 4, 10)));
        Assert.That(model.W.Value[0], Is.EqualTo(-4f), "the parameters after step 4");
        Assert.That(result.Epochs.Select(e => e.IsBest), Is.EqualTo(new[] { false, false }), "neither epoch end was the best");

        // Patience 2 counts validations: 0.65 (step 5) and 0.6 (step 6) after the best at step 4 stop the run mid-epoch 2.
        var patient = new Scripted(10, [0.6, 0.7, 0.65, 0.6, 0.9, 0.9]);
        var stopped = new TrainingLoop(patient, Sgd(3, 2, 2) with { ValidateEvery = 2 }).Run();
        Assert.That((stopped.StoppedEarly, stopped.Steps, stopped.BestStep), Is.EqualTo((true, 6, 4)));
        Assert.That(stopped.Epochs.Select(e => (e.Epoch, e.GlobalStep)), Is.EqualTo(new[] { (1, 5), (2, 6) }), "epoch 2 ends at the stop");
        Assert.That(patient.Steps, Is.EqualTo(6));
        Assert.That(patient.W.Value[0], Is.EqualTo(-4f));
    }

    [Test]
    public void BadOptionsAreRefusedNamingTheSetting()
    {
        var model = new Scripted(4, []);
        foreach (var (options, name) in new[]
        {
            (Sgd(1, 4, 0) with { LearningRate = 0 }, "LearningRate"), (Sgd(1, 4, 0) with { LearningRate = float.NaN }, "LearningRate"),
            (Sgd(0, 4, 0), "Epochs"), (Sgd(1, 0, 0), "BatchSize"), (Sgd(1, 4, -1), "Patience"),
            (Sgd(1, 4, 0) with { WeightDecay = -1 }, "WeightDecay"), (Sgd(1, 4, 0) with { MaxSteps = -1 }, "MaxSteps"),
            (Sgd(1, 4, 0) with { ValidateEvery = -1 }, "ValidateEvery"),
        })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => new TrainingLoop(model, options).Run())!;
            Assert.That(e.ParamName, Is.EqualTo(name));
        }
        Assert.Throws<ArgumentException>(() => new TrainingLoop(model, Sgd(1, 4, 0) with { Optimizer = "lamb" }).Run());
    }
}
