using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Rec;
using Rellax.Runtime;
using Rellax.Runtime.Training;
using Rellax.Tests.Model;

namespace Rellax.Tests.Api;

/// <summary>
/// Issue 21 item 4: every long library call takes <c>IProgress&lt;WorkProgress&gt;? progress</c> (where it has measurable
/// progress) and a last <c>CancellationToken</c>. For each call: a token cancelled before the call throws
/// <see cref="OperationCanceledException"/> before any unit of work is reported; a token cancelled from the progress
/// callback at the first report stops the call before its stage's total is reached; and an uncancelled run reports, per
/// stage, a fixed total and a done count that never falls and ends at the total. Tiny inputs and stories260K keep it fast.
/// </summary>
[TestFixture]
public sealed class CancellationTests
{
    private CpuBackend _backend = null!;
    private LlamaModel _model = null!;
    private SampleSet _set = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        _backend = new CpuBackend(threads: 2);
        _model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), _backend);
        _set = ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 12, Seed = 3 }));
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        _model?.Dispose();
        _backend?.Dispose();
    }

    // ---- the three checks, shared by every call ------------------------------------------------------------------------

    /// <summary>Collects reports synchronously (unlike <see cref="Progress{T}"/>, which posts them) and can cancel.</summary>
    private sealed class Recorder(CancellationTokenSource? cancelAtFirst = null) : IProgress<WorkProgress>
    {
        public List<WorkProgress> Reports { get; } = [];

        public void Report(WorkProgress value)
        {
            lock (Reports) Reports.Add(value);
            cancelAtFirst?.Cancel();
        }
    }

    /// <summary>Runs the three checks on <paramref name="call"/>; returns the full run's reports.</summary>
    /// <param name="call">The call, given the progress sink and the token.</param>
    /// <param name="stages">The stages the full run must report, in order of first appearance.</param>
    private static List<WorkProgress> Check(Action<IProgress<WorkProgress>?, CancellationToken> call, params string[] stages)
    {
        // 1. Cancelled before the call: throws, having reported nothing.
        using (var cancelled = new CancellationTokenSource())
        {
            cancelled.Cancel();
            var early = new Recorder();
            Assert.That(() => call(early, cancelled.Token), Throws.InstanceOf<OperationCanceledException>(), "a cancelled token throws");
            Assert.That(early.Reports, Is.Empty, "a cancelled token stops the call before its first unit of work");
        }

        // 2. The full run: per stage a fixed total, done rising to it.
        var full = new Recorder();
        call(full, CancellationToken.None);
        CheckMonotone(full.Reports, stages);

        // 3. Cancelled from the first report: throws before the first stage's total.
        using (var cts = new CancellationTokenSource())
        {
            var mid = new Recorder(cts);
            Assert.That(() => call(mid, cts.Token), Throws.InstanceOf<OperationCanceledException>(), "cancelled mid-run");
            Assert.That(mid.Reports, Is.Not.Empty);
            var first = mid.Reports[0];
            Assert.That(first.Done, Is.LessThan(first.Total), $"the first report of '{first.Stage}' leaves work to cancel (a test set-up check)");
            var reached = mid.Reports.Where(r => r.Stage == first.Stage).Max(r => r.Done);
            Assert.That(reached, Is.LessThan(first.Total), $"stage '{first.Stage}' stopped short of its total after cancellation");
            Assert.That(mid.Reports.Select(r => r.Stage).Distinct(), Is.EqualTo(new[] { first.Stage }), "no later stage started");
        }
        return full.Reports;
    }

    /// <summary>Reports come stage by stage (in <paramref name="stages"/>' order); within a run of one stage the total is
    /// fixed and positive, done never falls, never passes the total, and the run ends at the total.</summary>
    private static void CheckMonotone(IReadOnlyList<WorkProgress> reports, string[] stages)
    {
        Assert.That(reports, Is.Not.Empty, "the call reports progress");
        var seen = new List<string>();
        for (int i = 0; i < reports.Count;)
        {
            var r = reports[i];
            int j = i;
            for (; j < reports.Count && reports[j].Stage == r.Stage; j++)
            {
                Assert.That(reports[j].Total, Is.EqualTo(r.Total).And.GreaterThan(0), $"stage '{r.Stage}': a fixed total");
                Assert.That(reports[j].Done, Is.InRange(1, r.Total), $"stage '{r.Stage}': done within 1..total");
                if (j > i) Assert.That(reports[j].Done, Is.GreaterThanOrEqualTo(reports[j - 1].Done), $"stage '{r.Stage}': done never falls");
            }
            Assert.That(reports[j - 1].Done, Is.EqualTo(r.Total), $"stage '{r.Stage}' ends at its total");
            if (!seen.Contains(r.Stage)) seen.Add(r.Stage);
            i = j;
        }
        Assert.That(seen, Is.EqualTo(stages), "the stages, in order");
    }

    private static string NewDir(string name) => Directory.CreateTempSubdirectory($"rellax-cancel-{name}-").FullName;

    // ---- Rellax.Runtime -------------------------------------------------------------------------------------------------

    [Test]
    public void ModelLoad()
    {
        var reports = Check((p, ct) => LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), _backend, null, p, ct).Dispose(), "load");
        Assert.That(reports[^1].Total, Is.EqualTo(_model.Config.NumHiddenLayers + 2));
    }

    [Test]
    public void CtrScorerScore()
    {
        using var scorer = new CtrScorer(_model, options: new ScoringOptions { BatchSize = 2, Template = PromptTemplate.None });
        CtrRequest[] requests = [.. Enumerable.Range(0, 7).Select(i => new CtrRequest($"Lily saw {i} red balls. Will she like the blue ball?"))];
        var reports = Check((p, ct) => scorer.Score(requests, p, ct), "score");
        Assert.That(reports.Select(r => r.Done), Is.EqualTo(new[] { 2, 4, 6, 7 }));
    }

    [Test]
    public void ItemEmbedderEmbed()
    {
        using var embedder = new ItemEmbedder(_model, PromptTemplate.None, batchSize: 3);
        string[] texts = [.. Enumerable.Range(0, 8).Select(i => $"a story about {i} cats")];
        var reports = Check((p, ct) => embedder.Embed(texts, p, ct), "embed");
        Assert.That(reports.Select(r => r.Done), Is.EqualTo(new[] { 3, 6, 8 }));
    }

    [Test]
    public void GreedyGeneration()
    {
        using var session = _model.CreateSession();
        var prompt = _model.Tokenizer.Encode("Once upon a time");
        using (var cancelled = new CancellationTokenSource())
        {
            cancelled.Cancel();
            session.Reset();
            Assert.That(() => GreedyGenerator.Generate(session, prompt, 8, [], cancelled.Token).ToList(), Throws.InstanceOf<OperationCanceledException>());
            Assert.That(session.Position, Is.Zero, "nothing ran, not even the prefill");
        }
        session.Reset();
        Assert.That(GreedyGenerator.Generate(session, prompt, 8, []).Count(), Is.EqualTo(8), "uncancelled, all 8 tokens (progress is the enumeration)");
        using var cts = new CancellationTokenSource();
        session.Reset();
        var got = new List<int>();
        Assert.That(() =>
        {
            foreach (int token in GreedyGenerator.Generate(session, prompt, 8, [], cts.Token))
            {
                got.Add(token);
                cts.Cancel();
            }
        }, Throws.InstanceOf<OperationCanceledException>());
        Assert.That(got, Has.Count.EqualTo(1), "cancelled after the first token, no second forward pass");
    }

    [Test]
    public void AdapterTrainingTrain()
    {
        var adapter = AdapterInit.Create(_model.Config, new AdapterInitOptions { Rank = 2, Alpha = 4, Seed = 1 });
        CtrExample[] train = [.. Enumerable.Range(0, 6).Select(i => new CtrExample(new CtrRequest($"Tom had {i} dogs. Will he like cats?"), i % 2))];
        var options = new TrainingOptions { Epochs = 1, BatchSize = 2, LearningRate = 1e-3f, Patience = 0, Seed = 1 };
        var reports = Check((p, ct) =>
        {
            string dir = NewDir("adapter");
            try
            {
                using var trainer = new AdapterTrainer(_model, adapter, train, null,
                    new AdapterTrainingOptions { Trainable = AdapterParts.Lora, Scoring = new ScoringOptions { Template = PromptTemplate.None } });
                AdapterTraining.Train(trainer, options, dir, progress: p, cancellationToken: ct);
            }
            finally { Directory.Delete(dir, recursive: true); }
        }, "train");
        Assert.That(reports.Select(r => r.Done), Is.EqualTo(new[] { 1, 2, 3 }));
    }

    // ---- Rellax.Rec: data -----------------------------------------------------------------------------------------------

    [Test]
    public void DatasetReadSampleBuildAndPreparedDataset()
    {
        string root = NewDir("data");
        try
        {
            // MovieLens-100K's files, tiny: two users, three items, one genre.
            File.WriteAllText(Path.Combine(root, "u.item"), "1|A (1995)|01-Jan-1995||x|1\n2|B (1996)|01-Jan-1996||x|1\n3|C (1997)|01-Jan-1997||x|1\n");
            File.WriteAllText(Path.Combine(root, "u.genre"), "unknown|0\n");
            File.WriteAllText(Path.Combine(root, "u.user"), "1|20|M|x|1\n2|30|F|y|2\n");
            File.WriteAllText(Path.Combine(root, "u.data"), "1\t1\t5\t10\n1\t2\t3\t11\n1\t3\t4\t12\n2\t1\t1\t13\n2\t2\t2\t14\n2\t3\t5\t15\n");
            using var cancelled = new CancellationTokenSource();
            cancelled.Cancel();
            Assert.That(() => DatasetReader.Read(DatasetKind.MovieLens100K, root, null, cancelled.Token), Throws.InstanceOf<OperationCanceledException>());
            var dataset = DatasetReader.Read(DatasetKind.MovieLens100K, root);
            Assert.That(dataset.Ratings.Length, Is.EqualTo(6), "the uncancelled read");
            Assert.That(() => ReLLaSamples.Build(dataset, null, cancelled.Token), Throws.InstanceOf<OperationCanceledException>());

            // Save: cancelled, nothing is left behind (OutputFile.WriteFolder); then the real save and Load's checks.
            string prepared = Path.Combine(root, "prepared");
            Assert.That(() => PreparedDataset.Save(_set, prepared, cancelled.Token), Throws.InstanceOf<OperationCanceledException>());
            Assert.That(Directory.GetFileSystemEntries(root).Select(Path.GetFileName).Order(),
                Is.EqualTo(new[] { "u.data", "u.genre", "u.item", "u.user" }), "a cancelled save leaves no folder or temporary file");
            PreparedDataset.Save(_set, prepared);
            var reports = Check((p, ct) => PreparedDataset.Load(prepared, p, ct), "load");
            Assert.That(reports.Select(r => r.Done), Is.EqualTo(new[] { 1, 2, 3, 4, 5 }));
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    /// <summary>Read has no progress to cancel from, so its in-loop checks are driven directly: with the reader's token
    /// cancelled, both line sources stop at line 4096 (<see cref="DatasetReader.CancelCheckLines"/>) of a longer file.</summary>
    [Test]
    public void DatasetReadChecksTheTokenEvery4096Lines()
    {
        string dir = NewDir("lines");
        try
        {
            string path = Path.Combine(dir, "lines.csv");
            File.WriteAllLines(path, Enumerable.Range(0, 3 * DatasetReader.CancelCheckLines).Select(i => $"{i},x"));
            using var cancelled = new CancellationTokenSource();
            cancelled.Cancel();
            int lines = 0, records = 0;
            DatasetReader.Cancellation = cancelled.Token;
            try
            {
                Assert.That(() => { foreach (var _ in DatasetReader.SourceLines(path, System.Text.Encoding.UTF8)) lines++; },
                    Throws.InstanceOf<OperationCanceledException>());
                using var csv = new CsvRecordReader(path, System.Text.Encoding.UTF8);
                Assert.That(() => { while (csv.Read()) records++; }, Throws.InstanceOf<OperationCanceledException>());
            }
            finally { DatasetReader.Cancellation = default; }
            Assert.That((lines, records), Is.EqualTo((DatasetReader.CancelCheckLines - 1, DatasetReader.CancelCheckLines - 1)));
            lines = 0;
            foreach (var _ in DatasetReader.SourceLines(path, System.Text.Encoding.UTF8)) lines++;
            Assert.That(lines, Is.EqualTo(3 * DatasetReader.CancelCheckLines), "outside a cancelled Read, every line");
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    // ---- Rellax.Rec: SUBR -----------------------------------------------------------------------------------------------

    private float[] RandomVectors(int rows, int dim)
    {
        var random = new Random(4);
        return [.. Enumerable.Range(0, rows * dim).Select(_ => (float)(random.NextDouble() * 2 - 1))];
    }

    [Test]
    public void SubrIndexBuildAndPca()
    {
        int rows = _set.Dataset.Items.Count, dim = 24;
        var vectors = RandomVectors(rows, dim);
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.That(() => SubrIndex.Build(_backend, vectors, rows, dim, default, new SubrIndexOptions { PcaComponents = 8 }, cancelled.Token),
            Throws.InstanceOf<OperationCanceledException>());
        using (var index = SubrIndex.Build(_backend, vectors, rows, dim, default, new SubrIndexOptions { PcaComponents = 8 }))
            Assert.That(index.Count, Is.EqualTo(rows), "the uncancelled build");

        // Mid-run: the chunked PCA's reader cancels during the first pass; the next pass does not start.
        int reads = 0;
        using var cts = new CancellationTokenSource();
        var options = new PcaOptions { Components = 4, ChunkRows = 16 };
        Assert.That(() => Pca.Fit(_backend, rows, dim, (first, destination) =>
        {
            reads++;
            vectors.AsSpan((int)first * dim, destination.Length).CopyTo(destination);
            cts.Cancel();
        }, options, cts.Token), Throws.InstanceOf<OperationCanceledException>());
        int chunks = (rows + 15) / 16;
        Assert.That(reads, Is.EqualTo(chunks), "the first pass ran to its end, and no other pass started");
    }

    [Test]
    public void SampleRetrievalSubr()
    {
        int rows = _set.Dataset.Items.Count, dim = 16;
        using var index = SubrIndex.Build(_backend, RandomVectors(rows, dim), rows, dim);
        var samples = _set.Samples.Take(10).ToList();
        var reports = Check((p, ct) => SampleRetrieval.Subr(index, _set, samples, 3, batchSize: 4, progress: p, cancellationToken: ct), "retrieve");
        Assert.That(reports.Select(r => r.Done), Is.EqualTo(new[] { 4, 8, 10 }));
    }

    // ---- Rellax.Rec: evaluation and training data -----------------------------------------------------------------------

    private static EvaluationOptions Evaluation => new()
    {
        K = 3, Limit = 5, Retrieval = HistoryRetrieval.Subr, PcaComponents = 8, ItemTemplate = PromptTemplate.None, EmbedBatchSize = 16,
        Scoring = new ScoringOptions { Template = PromptTemplate.None, BatchSize = 2 },
    };

    [Test]
    public void CtrEvaluationRun()
    {
        var reports = Check((p, ct) => CtrEvaluation.Run(_model, null, _set, null, Evaluation, p, null, ct), "embed", "retrieve", "forward");
        Assert.That(reports.Where(r => r.Stage == "embed").Select(r => r.Total).Distinct(), Is.EqualTo(new[] { _set.Dataset.Items.Count }));
        Assert.That(reports[^1], Is.EqualTo(new WorkProgress("forward", 5, 5)));
    }

    [Test]
    public void CtrTrainingDataBuild()
    {
        using var scorer = new CtrScorer(_model, null, Evaluation.Scoring);
        var samples = _set.InSplit(SampleSplit.Train).Take(4).ToList();
        Check((p, ct) => CtrTrainingData.Build(scorer, _set, samples, null, Evaluation, mixed: false, p, null, ct), "embed", "retrieve");
    }

    [Test]
    public void AdapterArmsRun()
    {
        var options = new AdapterArmOptions
        {
            K = 2, TrainRows = 6, ValidRows = 2, TestLimit = 3, Steps = 3, BatchSize = 2, ValidateEvery = 0, Rank = 2,
            Evaluation = Evaluation,
        };
        var reports = Check((p, ct) =>
        {
            string dir = NewDir("arm");
            try { AdapterArms.Run(_model, _set, null, AdapterArm.LoraRecent, null, options, dir, progress: p, cancellationToken: ct); }
            finally { Directory.Delete(dir, recursive: true); }
        }, "train", "forward");
        Assert.That(reports.Where(r => r.Stage == "train").Select(r => r.Done), Is.EqualTo(new[] { 1, 2, 3 }));
    }

    // ---- Rellax.Rec: DIN ------------------------------------------------------------------------------------------------

    [Test]
    public void DinTrainingTrainScoreAndFeaturize()
    {
        var set = ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 120, Seed = 5 }));
        var options = new DinTrainingOptions
        {
            K = 5, EmbedDim = 4, EvaluateTest = false,
            Loop = new TrainingOptions { Epochs = 1, BatchSize = 1024, LearningRate = 1e-3f, Patience = 0, Seed = 1 },
        };
        using var backend = new CpuBackend(2);
        var train = Check((p, ct) =>
        {
            string dir = NewDir("din");
            try { DinTraining.Train(backend, set, options, dir, progress: p, cancellationToken: ct); }
            finally { Directory.Delete(dir, recursive: true); }
        }, "train");
        int trainCount = set.CountOf(SampleSplit.Train);
        Assert.That(train[^1].Total, Is.EqualTo((trainCount + 1023) / 1024));

        var model = DinModel.CreateRandom(DinConfig.For(set.Dataset, 4), seed: 2);
        var scored = Check((p, ct) => DinTraining.Score(backend, model, set, SampleSplit.Train, 5, p, ct), "score");
        Assert.That(scored[^1].Total, Is.EqualTo(trainCount));
        var featurized = Check((p, ct) => model.Featurize(backend, set, set.Samples, 5, p, ct), "featurize");
        Assert.That(featurized[^1].Total, Is.EqualTo(set.Samples.Count));
    }
}
