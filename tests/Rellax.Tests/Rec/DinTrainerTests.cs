using Rellax.Runtime;
using NUnit.Framework;
using Rellax.Kernels.Cpu;
using Rellax.Kernels.Ilgpu;
using Rellax.Rec;
using Rellax.Runtime.Training;
using TorchSharp;
using static TorchSharp.torch;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Rellax.Tests.Rec;

/// <summary>
/// The DIN trainer: the gradient of the batch's mean BCE w.r.t. every parameter against float64 TorchSharp autograd
/// (<see cref="TorchDin"/>, the reference's literal padded-and-masked form) on a small random config with odd sizes,
/// empty and padded histories; the SGD lr = 1 step through the loop (each tensor moves by exactly minus its gradient);
/// the training forward's loss against <see cref="DinModel.Forward"/>; a written checkpoint that <see cref="DinModel.Load(string, RatingDataset)"/>
/// reads back with the same scores as the trainer's evaluation; and training on a synthetic set raising valid AUC.
/// </summary>
[TestFixture]
public sealed class DinTrainerTests
{
    /// <summary>The caller's backend every test passes (two threads); the trainer never disposes it.</summary>
    private CpuBackend _cpu = null!;

    [OneTimeSetUp]
    public void CreateBackend() => _cpu = new CpuBackend(threads: 2);

    [OneTimeTearDown]
    public void DisposeBackend() => _cpu.Dispose();

    /// <summary>E = 7, attention [13, 6], tower [11, 9, 5]; fields user 5, item 13, gender 3, genre 5, ratings 1..5 (V = 31).</summary>
    private static DinConfig Config() => new()
    {
        EmbedDim = 7,
        Fields =
        [
            new DinField("user", 5),
            new DinField("item", 13),
            new DinField("gender", 3, ["F", "M"]),
            new DinField("genre", 5, ["Comedy", "Drama", "Horror", "Western"]),
        ],
        RatingValues = [1, 2, 3, 4, 5],
        AttentionSizes = [13, 6],
        TowerSizes = [11, 9, 5],
    };

    /// <summary>Random encoded samples over <see cref="Config"/>: history lengths 0..6 (sample 0 empty), labels mixed.</summary>
    private static DinEncodedSamples Samples(int count, int seed)
    {
        var random = new Random(seed);
        var fieldRows = new int[count * 4];
        var starts = new int[count + 1];
        var items = new List<int>();
        var ratings = new List<int>();
        var labels = new float[count];
        for (int s = 0; s < count; s++)
        {
            fieldRows[s * 4] = random.Next(0, 5);
            fieldRows[s * 4 + 1] = random.Next(5, 18);
            fieldRows[s * 4 + 2] = random.Next(18, 21);
            fieldRows[s * 4 + 3] = random.Next(21, 26);
            int length = s == 0 ? 0 : random.Next(1, 7);
            for (int j = 0; j < length; j++) { items.Add(random.Next(5, 18)); ratings.Add(random.Next(26, 31)); }
            starts[s + 1] = items.Count;
            labels[s] = s % 3 == 0 ? 0 : 1;
        }
        return new DinEncodedSamples(count, fieldRows, starts, [.. items], [.. ratings], labels, [.. Enumerable.Range(0, count)]);
    }

    /// <summary>The oracle with the trainer's current parameters (by name: the state_dict keys are the tensor names).</summary>
    private static TorchDin Oracle(DinTrainer trainer)
    {
        var c = trainer.Config;
        var oracle = new TorchDin(c.NumFeatures, c.EmbedDim, c.Fields.Count, c.ItemFieldIndex, [.. c.AttentionSizes], [.. c.TowerSizes]);
        oracle.to(float64);
        var source = new Dictionary<string, TorchTensor>();
        foreach (var p in trainer.Parameters)
            source[p.Name] = torch.tensor(p.Value, [.. p.Shape.Select(d => (long)d)], dtype: float32).to(float64);
        oracle.load_state_dict(source, strict: true);
        return oracle;
    }

    /// <summary>The oracle's mean BCE over <paramref name="batch"/> (padded with random rows, masked), after backward.</summary>
    private static double OracleLossAndBackward(TorchDin oracle, DinEncodedSamples data, int[] batch)
    {
        int longest = Math.Max(1, batch.Max(s => data.Starts[s + 1] - data.Starts[s]));
        var random = new Random(5);
        int n = batch.Length;
        var x = new long[n * 4];
        var ids = new long[n * longest];
        var rates = new long[n * longest];
        var mask = new double[n * longest];
        var y = new double[n];
        for (int b = 0; b < n; b++)
        {
            int s = batch[b];
            for (int f = 0; f < 4; f++) x[b * 4 + f] = data.FieldRows[s * 4 + f];
            for (int j = 0; j < longest; j++)
            {
                int p = data.Starts[s] + j;
                bool real = p < data.Starts[s + 1];
                ids[b * longest + j] = real ? data.ItemRows[p] : random.Next(31);
                rates[b * longest + j] = real ? data.RatingRows[p] : random.Next(31);
                mask[b * longest + j] = real ? 1 : 0;
            }
            y[b] = data.Labels[s];
        }
        var (_, logits) = oracle.Run(torch.tensor(x, [n, 4]), torch.tensor(ids, [n, longest]), torch.tensor(rates, [n, longest]),
            torch.tensor(mask, [n, longest], dtype: float64));
        var loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(y, dtype: float64));
        loss.backward();
        return loss.item<double>();
    }

    [Test]
    public void GradientOfTheMeanBceMatchesTorchAutograd()
    {
        using var scope = torch.NewDisposeScope();
        var data = Samples(23, 1);
        int[] batch = [4, 0, 17, 9, 22, 3, 11, 1, 12, 8, 19];   // scrambled, includes the empty history
        using var trainer = new DinTrainer(_cpu, Config(), data, null, maxBatch: 16, seed: 7);
        double loss = trainer.ComputeGradients(batch);
        var oracle = Oracle(trainer);
        double expected = OracleLossAndBackward(oracle, data, batch);
        Assert.That(loss, Is.EqualTo(expected).Within(1e-5).Percent, "mean BCE");
        var grads = oracle.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.contiguous().data<double>().ToArray());
        Assert.That(grads.Keys.Order(), Is.EqualTo(trainer.Parameters.Select(p => p.Name).Order()));
        foreach (var p in trainer.Parameters)
        {
            var g = grads[p.Name];
            double scale = g.Max(Math.Abs);
            Assert.That(scale, Is.GreaterThan(0), $"{p.Name}: the oracle's gradient is not all zero");
            var expectedF = g.Select(v => (float)v).ToArray();
            RandomData.AssertClose(p.Grad, expectedF, 1e-4 * scale, 1e-4, $"d{p.Name}");
        }
        // Only the rows the batch used have a table gradient: rows no sample of the batch touches stay zero.
        var used = new HashSet<int>();
        foreach (int s in batch)
        {
            for (int f = 0; f < 4; f++) used.Add(data.FieldRows[s * 4 + f]);
            for (int p = data.Starts[s]; p < data.Starts[s + 1]; p++) { used.Add(data.ItemRows[p]); used.Add(data.RatingRows[p]); }
        }
        var table = trainer.Parameter(DinModel.TableName);
        for (int r = 0; r < 31; r++)
            if (!used.Contains(r)) Assert.That(table.Grad.AsSpan(r * 7, 7).ToArray(), Is.All.EqualTo(0f), $"row {r} is unused");
    }

    /// <summary>
    /// With tower dropout the gradient is that of the model with the same masks: the oracle's tower is run by hand from
    /// its Linear layers (dnn.dnn.0, .3, .6), multiplying each ReLU output by the trainer's mask of that step.
    /// </summary>
    [Test]
    public void GradientWithTowerDropoutMatchesTorchWithTheSameMasks()
    {
        using var scope = torch.NewDisposeScope();
        var data = Samples(23, 4);
        int[] batch = [3, 7, 1, 0, 15, 22, 9, 12];
        using var trainer = new DinTrainer(_cpu, Config(), data, null, maxBatch: 8, seed: 7, dropout: 0.3f);
        double loss = trainer.ComputeGradients(batch);
        var masks = trainer.DropoutMasks;
        Assert.That(masks[0].Take(8 * 11).Count(m => m == 0), Is.InRange(5, 50), "some units dropped");
        var oracle = Oracle(trainer);
        int n = batch.Length, longest = batch.Max(s => data.Starts[s + 1] - data.Starts[s]);
        var x = new long[n * 4];
        var ids = new long[n * longest];
        var rates = new long[n * longest];
        var mask = new double[n * longest];
        for (int b = 0; b < n; b++)
        {
            int s = batch[b];
            for (int f = 0; f < 4; f++) x[b * 4 + f] = data.FieldRows[s * 4 + f];
            for (int j = 0; j < data.Starts[s + 1] - data.Starts[s]; j++)
            {
                ids[b * longest + j] = data.ItemRows[data.Starts[s] + j];
                rates[b * longest + j] = data.RatingRows[data.Starts[s] + j];
                mask[b * longest + j] = 1;
            }
        }
        var xt = torch.tensor(x, [n, 4]);
        var feat = oracle.embed.embedding.forward(xt);
        var hist = oracle.hist_mapping.forward(torch.cat([oracle.embed.embedding.forward(torch.tensor(ids, [n, longest])),
            oracle.embed.embedding.forward(torch.tensor(rates, [n, longest]))], -1));
        var u = oracle.attention_layer.Run(feat[.., 1, ..], hist, torch.tensor(mask, [n, longest], dtype: float64));
        var h = torch.cat([feat, u.unsqueeze(1)], 1).flatten(1);
        var layers = oracle.dnn.dnn.children().ToList();
        int[] widths = [11, 9, 5];
        for (int i = 0; i < 3; i++)
        {
            var linear = (TorchSharp.Modules.Linear)layers[3 * i];
            var m = torch.tensor(masks[i].Take(n * widths[i]).Select(v => (double)v).ToArray(), [n, widths[i]], dtype: float64);
            h = nn.functional.relu(linear.forward(h)) * m;
        }
        var logits = oracle.fc_out.forward(h).squeeze(-1);
        var y = torch.tensor(batch.Select(s => (double)data.Labels[s]).ToArray(), dtype: float64);
        var expected = nn.functional.binary_cross_entropy_with_logits(logits, y);
        expected.backward();
        Assert.That(loss, Is.EqualTo(expected.item<double>()).Within(1e-5).Percent);
        foreach (var (name, parameter) in oracle.named_parameters())
        {
            var g = parameter.grad!.contiguous().data<double>().ToArray();
            double scale = Math.Max(1e-8, g.Max(Math.Abs));
            RandomData.AssertClose(trainer.Parameter(name).Grad, [.. g.Select(v => (float)v)], 1e-4 * scale, 1e-4, $"d{name}");
        }
    }

    [Test]
    public void SgdStepWithLrOneMovesEveryTensorByMinusItsGradient()
    {
        var data = Samples(9, 2);
        int[] all = [.. Enumerable.Range(0, 9)];
        using var reference = new DinTrainer(_cpu, Config(), data, null, maxBatch: 9, seed: 3);
        var before = reference.Parameters.ToDictionary(p => p.Name, p => (float[])p.Value.Clone());
        reference.ComputeGradients(all);    // the loop shuffles, but one batch of everything has the same mean gradient up to rounding
        using var trained = new DinTrainer(_cpu, Config(), data, null, maxBatch: 9, seed: 3);
        new TrainingLoop(trained, new TrainingOptions { Epochs = 1, BatchSize = 9, LearningRate = 1, Optimizer = "sgd", Patience = 0 }).Run();
        foreach (var p in trained.Parameters)
        {
            var expected = new float[p.Length];
            var g = reference.Parameter(p.Name).Grad;
            for (int i = 0; i < p.Length; i++) expected[i] = before[p.Name][i] - g[i];
            double scale = Math.Max(1e-6, g.Max(Math.Abs));
            // The shuffled batch sums the same terms in another order: float rounding only.
            RandomData.AssertClose(p.Value, expected, 1e-5 * scale, 1e-6, p.Name);
            Assert.That(p.Value, Is.Not.EqualTo(before[p.Name]), $"{p.Name} changed");
        }
        // And exactly: the optimizer alone, from the trainer's own gradient.
        var q = reference.Parameters[^3];
        var start = (float[])q.Value.Clone();
        new Sgd().Step(reference.Parameters, 1f);
        for (int i = 0; i < q.Length; i++) Assert.That(q.Value[i], Is.EqualTo(start[i] - q.Grad[i]));
    }

    [Test]
    public void TrainingForwardLossMatchesDinModelForward()
    {
        var data = Samples(40, 3);
        using var trainer = new DinTrainer(_cpu, Config(), data, null, maxBatch: 40, seed: 9);
        int[] all = [.. Enumerable.Range(0, 40)];
        double loss = trainer.ComputeGradients(all);
        var p = trainer.Predict(data);
        double expected = 0;
        for (int i = 0; i < 40; i++) expected -= data.Labels[i] > 0 ? Math.Log(p[i]) : Math.Log(1 - p[i]);
        Assert.That(loss, Is.EqualTo(expected / 40).Within(1e-4).Percent);
    }

    private static SampleSet Synthetic(int users, int seed) =>
        ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = users, Seed = seed }));

    [Test]
    public void CheckpointIsReadBackWithTheTrainersScores()
    {
        var set = Synthetic(40, 5);
        string dir = Directory.CreateTempSubdirectory("rellax-din-train-").FullName;
        try
        {
            var options = new DinTrainingOptions
            {
                K = 10, EmbedDim = 8,
                Loop = new TrainingOptions { Epochs = 2, BatchSize = 32, LearningRate = 3e-3f, Patience = 0, Seed = 1 },
            };
            var result = DinTraining.Train(_cpu, set, options, dir);
            Assert.That(File.Exists(Path.Combine(dir, DinTraining.LogFile)), Is.True);
            var lines = File.ReadAllLines(Path.Combine(dir, DinTraining.LogFile)).Where(l => l.Contains("valid_auc")).ToList();
            Assert.That(lines, Has.Count.EqualTo(2), "one epoch line per epoch");
            var model = DinModel.Load(dir, set.Dataset);
            var (ids, labels, p) = DinTraining.Score(_cpu, model, set, SampleSplit.Test, 10);
            var m = CtrMetrics.Compute(p, labels);
            Assert.That(result.Test, Is.Not.Null);
            Assert.That(ids, Is.EqualTo(set.InSplit(SampleSplit.Test).Select(s => s.Index).ToArray()));
            Assert.That((m.Auc, m.LogLoss, m.Accuracy), Is.EqualTo((result.Test!.Value.Auc, result.Test.Value.LogLoss, result.Test.Value.Accuracy)),
                "the loaded checkpoint scores exactly as the trainer's own evaluation");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// The synthetic users like items of their two favourite categories; the history holds item ids and ratings only, so
    /// DIN must learn item embeddings that cluster by category: 300 users and 8 items per category give it enough samples
    /// per item to do so in a few epochs (a one-feature heuristic, the share of history items in the target's category,
    /// reaches about 0.74 on such a split).
    /// </summary>
    [Test]
    public void TrainingOnSyntheticDataRaisesValidAuc()
    {
        var set = ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions
        {
            Users = 300, ItemsPerCategory = 8, MinRatingsPerUser = 20, MaxRatingsPerUser = 44, Seed = 8,
        }));
        string dir = Directory.CreateTempSubdirectory("rellax-din-train-").FullName;
        try
        {
            var config = DinConfig.For(set.Dataset, 16);
            var encoding = DinEncoding.Create(config, set.Dataset);
            var valid = DinTraining.Encode(encoding, set, SampleSplit.Valid, 20);
            using (var untrained = new DinTrainer(_cpu, config, DinTraining.Encode(encoding, set, SampleSplit.Train, 20), valid, 64, seed: 2, embeddingInitStd: 0.01))
                TestContext.Out.WriteLine($"untrained valid AUC {untrained.Evaluate(valid).Auc:F3}");
            var options = new DinTrainingOptions
            {
                K = 20, EmbedDim = 16, EmbeddingInitStd = 0.01,
                Loop = new TrainingOptions { Epochs = 3, BatchSize = 64, LearningRate = 3e-3f, Patience = 0, Seed = 2 },
            };
            var result = DinTraining.Train(_cpu, set, options, dir);
            TestContext.Out.WriteLine($"valid AUC per epoch: {string.Join(", ", result.Loop.Epochs.Select(e => e.Valid!.Value.Auc.ToString("F3")))}");
            Assert.That(result.Valid!.Value.Auc, Is.GreaterThan(0.65), "well above chance");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void RefusesAnEmptyOrOneClassTrainSplit()
    {
        var set = Synthetic(20, 5);
        var onlyPositive = new SampleSet(set.Dataset, set.Options, TimelinesOf(set), StartsOf(set),
            [.. set.Samples.Select(s => s with { Label = true })]);
        string dir = Directory.CreateTempSubdirectory("rellax-din-train-").FullName;
        try
        {
            var e = Assert.Throws<ArgumentException>(() => DinTraining.Train(_cpu, onlyPositive, new DinTrainingOptions(), dir))!;
            Assert.That(e.Message, Does.Contain("all positive"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void TrainingRefusesAnotherBackendNamingTheArgumentAndLeavesTheCallersBackendUsable()
    {
        var set = Synthetic(20, 5);
        string dir = Directory.CreateTempSubdirectory("rellax-din-train-").FullName;
        try
        {
            using var emulator = new IlgpuBackend(IlgpuDeviceKind.CpuEmulator);
            var e = Assert.Throws<ArgumentException>(() => DinTraining.Train(emulator, set, new DinTrainingOptions(), dir))!;
            Assert.That(e.ParamName, Is.EqualTo("backend"));
            Assert.That(ExceptionText.OneLine(e), Does.StartWith("backend: DIN training runs on the CPU backend only").And.Contain($"'{emulator.Name}'"));
            Assert.That(Directory.EnumerateFileSystemEntries(dir), Is.Empty, "nothing written");
            Assert.That(() => new DinTrainer(emulator, Config(), Samples(4, 1), null, maxBatch: 4, seed: 1),
                Throws.ArgumentException.With.Property(nameof(ArgumentException.ParamName)).EqualTo("backend"));

            // A trainer on the caller's CPU backend leaves it usable after it is disposed.
            using (var trainer = new DinTrainer(_cpu, Config(), Samples(4, 1), null, maxBatch: 4, seed: 1)) trainer.Predict(Samples(4, 1));
            using var buffer = _cpu.Upload<float>([1f, 2f]);
            Assert.That(buffer.Length, Is.EqualTo(2));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static Rating[] TimelinesOf(SampleSet set) =>
        [.. Enumerable.Range(0, set.Dataset.UserKeys.Count).SelectMany(u => set.Timeline(u).ToArray())];

    private static int[] StartsOf(SampleSet set)
    {
        var s = new int[set.Dataset.UserKeys.Count + 1];
        for (int u = 0; u < set.Dataset.UserKeys.Count; u++) s[u + 1] = s[u] + set.Timeline(u).Length;
        return s;
    }
}
