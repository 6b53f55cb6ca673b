using NUnit.Framework;
using Rellax.Kernels.Cpu;
using Rellax.Rec;
using Rellax.Runtime;
using Rellax.Tests.Model;

namespace Rellax.Tests.Rec;

/// <summary>
/// <see cref="CtrEvaluation"/> on stories260K and the synthetic dataset: its scores must be the scorer's on requests
/// assembled here by hand (prompt, h_u from the CRM features, one CRM embedding per listed history item and the target),
/// its metrics the metrics of those scores, and a second run must come from the cache with the same result.
/// </summary>
[TestFixture]
public sealed class CtrEvaluationTests
{
    private const int K = 4, Limit = 12;

    [Test]
    public void EvaluationScoresAreTheScorersOnHandAssembledRequestsAndTheCacheRepeatsThem()
    {
        string modelDir = ModelPaths.Stories260KOrIgnore();
        string cacheDir = Directory.CreateTempSubdirectory("rellax-eval-cache-").FullName;
        try
        {
            using var backend = new CpuBackend(threads: 2);
            using var model = LlamaModel.Load(modelDir, backend);
            var data = SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 12, Seed = 3 });
            var set = ReLLaSamples.Build(data);
            var din = DinModel.CreateRandom(DinConfig.For(data, embedDim: 8), seed: 5);
            var test = set.InSplit(SampleSplit.Test).Take(Limit).ToList();
            var crm = din.Featurize(backend, set, test);
            var adapter = RandomAdapter.Create(model.Config, rank: 4, din.StateDim, din.EmbedDim, seed: 9);
            var options = new EvaluationOptions { K = K, Limit = Limit, PcaComponents = 16, CacheDirectory = cacheDir };

            var first = CtrEvaluation.Run(model, adapter, set, crm, options);
            Assert.That(first.Samples.Select(s => s.Index), Is.EqualTo(test.Select(s => s.Index)), "the first N test samples, in order");
            Assert.That(first.Stages.Select(s => s.Stage), Is.EqualTo(new[] { "embed", "pca", "retrieve", "prompts", "tokenize", "forward" }));
            Assert.That(first.Stages.Where(s => s.Stage is "embed" or "retrieve").Select(s => s.Cached), Is.All.False);

            // The same requests, assembled here from the prompts the evaluation built.
            var requests = first.Prompts.Select((p, i) =>
            {
                Assert.That(p.Text, Does.Contain("[hist]").And.Contain("[target]"), "an SPA adapter gets marked prompts");
                Assert.That(p.TargetItem, Is.EqualTo(test[i].Item));
                Assert.That(p.HistoryItems, Has.Length.EqualTo(Math.Min(K, test[i].HistoryLength)));
                return new CtrRequest(p.Text, crm.UserState(test[i].Index).ToArray(), p.HistoryItems.Select(item => crm.ItemEmbedding(item).ToArray()).ToArray(),
                    crm.ItemEmbedding(p.TargetItem).ToArray());
            }).ToList();
            using (var scorer = new CtrScorer(model, adapter))
            {
                var expected = scorer.Score(requests);
                Assert.That(first.Scores.Select(s => s.PYes), Is.EqualTo(expected.Select(s => s.PYes)).Within(1e-9));
            }
            var direct = CtrMetrics.Compute(first.Scores.Select(s => s.PYes).ToArray(), test.Select(s => s.Label).ToArray());
            Assert.That(first.Metrics, Is.EqualTo(direct));
            Assert.That(first.Quality.Listed, Is.InRange(0.0, 1.0));

            // Second run: item vectors and SUBR positions come from the cache, and nothing changes.
            var second = CtrEvaluation.Run(model, adapter, set, crm, options);
            Assert.That(second.Stages.Where(s => s.Stage is "embed" or "retrieve").Select(s => s.Cached), Is.All.True);
            Assert.That(second.Prompts.Select(p => p.Text), Is.EqualTo(first.Prompts.Select(p => p.Text)));
            Assert.That(second.Scores.Select(s => s.PYes), Is.EqualTo(first.Scores.Select(s => s.PYes)));

            // A different K misses the positions cache but reuses the item vectors.
            var other = CtrEvaluation.Run(model, adapter, set, crm, options with { K = K - 1 });
            Assert.That(other.Stages.Single(s => s.Stage == "embed").Cached, Is.True);
            Assert.That(other.Stages.Single(s => s.Stage == "retrieve").Cached, Is.False);
        }
        finally { Directory.Delete(cacheDir, recursive: true); }
    }

    [Test]
    public void RecentRetrievalListsTheLastKEventsAndSkipsTheSubrStages()
    {
        string modelDir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend(threads: 2);
        using var model = LlamaModel.Load(modelDir, backend);
        var set = ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 10, Seed = 4 }));
        var result = CtrEvaluation.Run(model, null, set, null, new EvaluationOptions { K = 3, Limit = 5, Retrieval = HistoryRetrieval.Recent });
        Assert.That(result.Stages.Select(s => s.Stage), Is.EqualTo(new[] { "prompts", "tokenize", "forward" }));
        for (int i = 0; i < result.Samples.Count; i++)
        {
            var history = set.History(result.Samples[i]).ToArray();
            Assert.That(result.Prompts[i].HistoryItems, Is.EqualTo(history[^3..].Select(r => r.Item)), $"sample {result.Samples[i].Index}");
            Assert.That(result.Prompts[i].Text, Does.Not.Contain("[hist]"), "no adapter, no markers");
        }
        Assert.That(result.Quality.Listed, Is.EqualTo(result.Quality.RecentK));
    }

    [Test]
    public void AnAdapterThatNeedsCrmFeaturesSaysSo()
    {
        string modelDir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend(threads: 1);
        using var model = LlamaModel.Load(modelDir, backend);
        var set = ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 8, Seed = 4 }));
        var adapter = RandomAdapter.Create(model.Config, rank: 2, instanceDim: 6, embedDim: 5, seed: 1);
        Assert.That(() => CtrEvaluation.Run(model, adapter, set, null, new EvaluationOptions { K = 3, Limit = 2, Retrieval = HistoryRetrieval.Recent }),
            Throws.ArgumentException.With.Message.Contains("CFLoRA generators").And.Message.Contains("d_h = 6"));
        var wrong = new CrmFeatures([0], new float[5], 5, [0], new float[7], 7);
        Assert.That(() => CtrEvaluation.Run(model, adapter, set, wrong, new EvaluationOptions { K = 3, Limit = 2, Retrieval = HistoryRetrieval.Recent }),
            Throws.ArgumentException.With.Message.Contains("7 values").And.Message.Contains("instance_dim = 6"));
        // Right sizes, but only sample -1 and item 0: the first scored sample is named.
        var partial = new CrmFeatures([0], new float[5], 5, [-1], new float[6], 6);
        int first = set.InSplit(SampleSplit.Test).First().Index;
        Assert.That(() => CtrEvaluation.Run(model, adapter, set, partial, new EvaluationOptions { K = 3, Limit = 2, Retrieval = HistoryRetrieval.Recent }),
            Throws.ArgumentException.With.Message.StartsWith($"sample {first}: the CRM features do not cover it"));
        Assert.That(() => CtrEvaluation.Run(model, null, set, null, new EvaluationOptions { Split = SampleSplit.Valid, Limit = 1, K = 3, Retrieval = HistoryRetrieval.Recent }),
            Throws.Nothing, "no adapter needs no CRM");
    }

    [Test]
    public void RetrieveSubrListsThePositionsTheEvaluationsPromptsUseAndNamesWhatIsMissing()
    {
        string modelDir = ModelPaths.Stories260KOrIgnore();
        using var backend = new CpuBackend(threads: 2);
        using var model = LlamaModel.Load(modelDir, backend);
        var set = ReLLaSamples.Build(SyntheticDataset.Create(new SyntheticDatasetOptions { Users = 10, Seed = 6 }));
        var samples = set.InSplit(SampleSplit.Test).Take(6).ToList();
        var options = new EvaluationOptions { K = 3, PcaComponents = 8 };

        // The SUBR stage alone gives the histories BuildPrompts lists (the same stage, the same order).
        var alone = CtrEvaluation.RetrieveSubr(backend, model, set, samples, options);
        using (var scorer = new CtrScorer(model, null, options.Scoring))
        {
            var built = CtrEvaluation.BuildPrompts(scorer, set, samples, null, options);
            Assert.That(alone.Positions, Is.EqualTo(built.Positions));
        }
        Assert.That(alone.Stages.Select(s => s.Stage), Is.EqualTo(new[] { "embed", "pca", "retrieve" }));
        Assert.That(alone.PcaExplainedVariance, Is.InRange(0.0, 1.0 + 1e-9));
        for (int i = 0; i < samples.Count; i++)
        {
            Assert.That(alone.Positions[i], Has.Length.EqualTo(Math.Min(3, samples[i].HistoryLength)), $"sample {samples[i].Index}");
            Assert.That(alone.Positions[i], Is.All.InRange(0, samples[i].HistoryLength - 1), "positions in the history");
            Assert.That(alone.Positions[i], Is.Ordered, "chronological order (the default)");
        }

        // Given vectors need no model; their rows must be the dataset's items. No vectors and no model is refused.
        var vectors = new ItemVectors(new float[set.Dataset.Items.Count * 4].Select((_, j) => (float)Math.Sin(j)).ToArray(), 4);
        var given = CtrEvaluation.RetrieveSubr(backend, null, set, samples, options with { ItemVectors = vectors, PcaComponents = null });
        Assert.That(given.Stages.Select(s => s.Stage), Is.EqualTo(new[] { "pca", "retrieve" }));
        Assert.That(given.Positions, Has.Length.EqualTo(samples.Count));
        Assert.That(() => CtrEvaluation.RetrieveSubr(backend, null, set, samples, options),
            Throws.ArgumentException.With.Property(nameof(ArgumentException.ParamName)).EqualTo("model"));
        Assert.That(() => CtrEvaluation.RetrieveSubr(backend, model, set, [], options),
            Throws.ArgumentException.With.Property(nameof(ArgumentException.ParamName)).EqualTo("samples"));
        Assert.That(() => CtrEvaluation.RetrieveSubr(backend, model, set, samples, options with { K = 0 }),
            Throws.ArgumentException.With.Message.StartsWith("K = 0 must be in [1, "));
    }
}
