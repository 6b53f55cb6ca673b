using NUnit.Framework;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>
/// <see cref="CtrScorer"/> and <see cref="ItemEmbedder"/> on stories260K without an adapter: the batched, left-padded
/// forward against <see cref="LlamaSession"/> (itself checked against TorchSharp and the documented float64 logits), and
/// independence from batch size, batch composition and order. Adapter paths are checked against TorchSharp in
/// <c>ScoringTorchOracleTests</c>.
/// </summary>
[TestFixture]
public sealed class CtrScorerTests
{
    /// <summary>Prompts of different lengths (1 to ~60 tokens) so batches need left padding.</summary>
    private static readonly string[] Prompts =
    [
        "Lily liked the red ball. Will she like the blue ball?",
        "Tom",
        "Once upon a time, there was a little dog named Max. Max loved to run in the park with his friend, a cat named Tim. One day they found a big box.",
        "The girl watched the following movies and rated them: ['0. Toy Story (1995) (5 stars)', '1. Heat (1995) (2 stars)']. Will she like Jumanji?",
        "Yes or no?",
        "She read the book about the sun and the moon, and she smiled.",
        "A",
    ];

    private static IEnumerable<TestCaseData> Backends() =>
        TestBackends.Factories().Where(f => !f.Emulated).Select(f => new TestCaseData(f).SetArgDisplayNames(f.Name));

    /// <summary>The scored token sequence and answer ids, derived here from the tokenizer alone (independently of the scorer).</summary>
    private static (int[] Ids, int Yes, int No) Expected(LlamaTokenizer tokenizer, PromptTemplate template, string prompt)
    {
        string text = template.Apply(prompt);
        var baseIds = tokenizer.Encode(text, addSpecialTokens: false).ToArray();
        var yes = tokenizer.Encode(text + " Yes", addSpecialTokens: false).Skip(baseIds.Length).ToArray();
        var no = tokenizer.Encode(text + " No", addSpecialTokens: false).Skip(baseIds.Length).ToArray();
        int common = 0;
        while (yes[common] == no[common]) common++;
        return ([.. tokenizer.PrefixIds, .. baseIds, .. yes.Take(common)], yes[common], no[common]);
    }

    [TestCaseSource(nameof(Backends))]
    public void ScoresEqualTheSessionsLastPositionLogits(BackendFactory factory)
    {
        using var backend = factory.Create();
        using var model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), backend);
        foreach (var template in new[] { PromptTemplate.Vicuna, PromptTemplate.None })
        {
            using var scorer = new CtrScorer(model, options: new ScoringOptions { Template = template, BatchSize = 4 });
            var scores = scorer.Score([.. Prompts.Select(p => new CtrRequest(p))]);
            for (int i = 0; i < Prompts.Length; i++)
            {
                var (ids, yes, no) = Expected(model.Tokenizer, template, Prompts[i]);
                Assert.That(scorer.Validate(new CtrRequest(Prompts[i])), Is.EqualTo(ids.Length), $"{template.Name} prompt {i}: token count");
                using var session = model.CreateSession(ids.Length);
                var logits = session.Forward(ids);
                Assert.That(scores[i].LogitYes, Is.EqualTo(logits[yes]).Within(2e-4), $"{template.Name} prompt {i}: logit_yes");
                Assert.That(scores[i].LogitNo, Is.EqualTo(logits[no]).Within(2e-4), $"{template.Name} prompt {i}: logit_no");
                double p = 1 / (1 + Math.Exp((double)logits[no] - logits[yes]));
                Assert.That(scores[i].PYes, Is.EqualTo(p).Within(1e-4), $"{template.Name} prompt {i}: p_yes");
            }
        }
    }

    [Test]
    public void StoriesVocabularySplitsTheAnswersAndTheCommonPrefixIsAppended()
    {
        // stories260K has no ▁Yes/▁No tokens: the answers share leading pieces, which the scorer must append to the prompt.
        using var backend = new CpuBackend(threads: 1);
        using var model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), backend);
        var (ids, yes, no) = Expected(model.Tokenizer, PromptTemplate.Vicuna, Prompts[0]);
        int plain = model.Tokenizer.PrefixIds.Count + model.Tokenizer.Encode(PromptTemplate.Vicuna.Apply(Prompts[0]), false).Count;
        Assert.That(ids.Length, Is.GreaterThan(plain), "the answers share a prefix in this vocabulary");
        Assert.That(yes, Is.Not.EqualTo(no));
        using var scorer = new CtrScorer(model);
        Assert.That(scorer.Validate(new CtrRequest(Prompts[0])), Is.EqualTo(ids.Length));
    }

    [TestCase(AttentionPrecision.Fp32)]
    [TestCase(AttentionPrecision.Int8)]
    public void ScoresDoNotDependOnBatchSizeCompositionOrOrder(AttentionPrecision attention)
    {
        using var backend = new CpuBackend(threads: 2);
        using var model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), backend);
        var requests = Prompts.Select(p => new CtrRequest(p)).ToArray();
        CtrScore[] Run(int batch, CtrRequest[] input)
        {
            using var scorer = new CtrScorer(model, options: new ScoringOptions { BatchSize = batch, Attention = attention });
            return scorer.Score(input);
        }
        var alone = Run(1, requests);
        var permutation = new[] { 3, 0, 6, 2, 5, 1, 4 };
        var shuffled = Run(3, [.. permutation.Select(i => requests[i])]);
        var all = Run(64, requests);
        // One prompt with much longer ones: lots of left padding around it.
        var padded = Run(64, [requests[1], requests[2], requests[2]]);
        for (int i = 0; i < requests.Length; i++)
        {
            Assert.That(all[i].LogitYes, Is.EqualTo(alone[i].LogitYes).Within(1e-4), $"prompt {i}, batch 64 vs 1");
            Assert.That(all[i].PYes, Is.EqualTo(alone[i].PYes).Within(1e-5), $"prompt {i}, batch 64 vs 1");
            int at = Array.IndexOf(permutation, i);
            Assert.That(shuffled[at].PYes, Is.EqualTo(alone[i].PYes).Within(1e-5), $"prompt {i}, shuffled batches of 3");
        }
        Assert.That(padded[0].PYes, Is.EqualTo(alone[1].PYes).Within(1e-5), "short prompt left-padded beside long ones");
        Assert.That(padded[1], Is.EqualTo(padded[2]), "identical prompts in one batch score identically");
    }

    [Test]
    public void Int8AttentionScoresStayCloseToFp32()
    {
        using var backend = new CpuBackend(threads: 2);
        using var model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), backend);
        var requests = Prompts.Select(p => new CtrRequest(p)).ToArray();
        using var fp32 = new CtrScorer(model);
        using var int8 = new CtrScorer(model, options: new ScoringOptions { Attention = AttentionPrecision.Int8 });
        var a = fp32.Score(requests);
        var b = int8.Score(requests);
        // D = 8 heads quantize coarsely (see Stories260KInt8AttentionTests: logit differences up to ~0.5 over 60 tokens).
        for (int i = 0; i < a.Length; i++)
        {
            Assert.That(b[i].LogitYes, Is.EqualTo(a[i].LogitYes).Within(0.6), $"prompt {i}");
            Assert.That(b[i].PYes, Is.EqualTo(a[i].PYes).Within(0.1), $"prompt {i}");
        }
        Assert.That(a.Zip(b).Any(p => p.First.LogitYes != p.Second.LogitYes), "int8 attention actually ran (results differ from fp32 in some bits)");
    }

    [Test]
    public void ProgressReportsEveryBatchAndCancellationStopsBetweenBatches()
    {
        using var backend = new CpuBackend(threads: 1);
        using var model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), backend);
        using var scorer = new CtrScorer(model, options: new ScoringOptions { BatchSize = 2 });
        var reports = new List<WorkProgress>();
        scorer.Score([.. Prompts.Select(p => new CtrRequest(p))], new SyncProgress(reports.Add));
        Assert.That(reports.Select(r => r.Done), Is.EqualTo(new[] { 2, 4, 6, 7 }));
        Assert.That(reports.Select(r => (r.Stage, r.Total)).Distinct(), Is.EqualTo(new[] { ("score", 7) }));
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() => scorer.Score([new CtrRequest("A")], cancellationToken: cts.Token));
    }

    [Test]
    public void BadRequestsAreRefusedWithTheRequestIndexAndNothingIsScored()
    {
        using var backend = new CpuBackend(threads: 1);
        using var model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), backend);
        using var scorer = new CtrScorer(model);
        var r = Assert.Throws<RecordException>(() => scorer.Score([new CtrRequest("fine"), new CtrRequest("a (4 stars)[hist] b")]))!;
        Assert.That(r.Record, Is.EqualTo(1));
        Assert.That(r.Message, Does.StartWith("request 1:").And.Contain("[hist]").And.Contain("no adapter"));
        string tooLong = string.Concat(Enumerable.Repeat("Lily and Tom went to the park. ", 200));
        ArgumentException e = Assert.Throws<PromptTooLongException>(() => scorer.Validate(new CtrRequest(tooLong)))!;
        Assert.That(e.Message, Does.Contain("max_position_embeddings = " + model.Config.MaxPositionEmbeddings));
        Assert.Throws<ArgumentException>(() => new CtrScorer(model, options: new ScoringOptions { YesAnswer = " No" }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CtrScorer(model, options: new ScoringOptions { BatchSize = 0 }));
        r = Assert.Throws<RecordException>(() => new CtrScorer(model, options: new ScoringOptions { YesAnswer = " Yes", NoAnswer = " Yes please" }).Score([new CtrRequest("x")]))!;
        Assert.That(r.Message, Does.Contain("prefix"));
    }

    [TestCaseSource(nameof(Backends))]
    public void ItemEmbeddingsAreTheMeanOfTheSessionsFinalNormHiddenStates(BackendFactory factory)
    {
        using var backend = factory.Create();
        using var model = LlamaModel.Load(ModelPaths.Stories260KOrIgnore(), backend);
        using var embedder = new ItemEmbedder(model, PromptTemplate.None, batchSize: 3);
        var vectors = embedder.Embed(Prompts);
        int h = model.Config.HiddenSize;
        Assert.That(vectors, Has.Length.EqualTo(Prompts.Length * h));
        for (int i = 0; i < Prompts.Length; i++)
        {
            var ids = model.Tokenizer.Encode(Prompts[i]).ToArray(); // BOS included, as the issue says
            using var session = model.CreateSession(ids.Length);
            var hidden = session.ForwardHidden(ids);
            for (int k = 0; k < h; k++)
            {
                double mean = 0;
                for (int t = 0; t < ids.Length; t++) mean += hidden[t * h + k];
                mean /= ids.Length;
                Assert.That(vectors[i * h + k], Is.EqualTo(mean).Within(2e-4), $"item {i}, channel {k}");
            }
        }
        using var one = new ItemEmbedder(model, PromptTemplate.None, batchSize: 1);
        Assert.That(one.Embed([Prompts[2]]), Is.EqualTo(vectors.AsSpan(2 * h, h).ToArray()).Within(1e-5), "batch of one vs batch of three");
    }

    [TestCase("LlamaForCausalLM")]
    [TestCase("Qwen2ForCausalLM")]
    public void ProjectionBiasesReachTheBatchedForward(string architecture)
    {
        // stories260K with random q/k/v (and, for Llama with attention_bias, o_proj) biases added: the batched forward
        // must give the session's logits (the session is checked against TorchSharp with biases in LlamaTorchOracleTests).
        string dir = Directory.CreateTempSubdirectory("rellax-biased").FullName;
        try
        {
            var tensors = new Dictionary<string, (int[] Shape, float[] Data)>();
            using (var checkpoint = SafeTensorsCheckpoint.Open(ModelPaths.Stories260KOrIgnore()))
                foreach (var name in checkpoint.Names)
                    tensors[name] = (checkpoint.Info(name).Shape, checkpoint.ReadFloat32(name));
            var random = new Random(5);
            bool llama = architecture == "LlamaForCausalLM";
            for (int l = 0; l < 5; l++)
                foreach (var (module, n) in new[] { ("q_proj", 64), ("k_proj", 32), ("v_proj", 32), ("o_proj", 64) })
                    if (module != "o_proj" || llama)
                        tensors[$"model.layers.{l}.self_attn.{module}.bias"] = ([n], [.. Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() - 0.5))]);
            SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
            foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
                File.Copy(Path.Combine(ModelPaths.Stories260K, f), Path.Combine(dir, f));
            string config = File.ReadAllText(Path.Combine(ModelPaths.Stories260K, "config.json"))
                .Replace("\"attention_bias\": false", "\"attention_bias\": true").Replace("LlamaForCausalLM", architecture);
            File.WriteAllText(Path.Combine(dir, "config.json"), config);

            using var backend = new CpuBackend(threads: 2);
            using var model = LlamaModel.Load(dir, backend);
            Assert.That(model.Weights.Layers[0].OBias is not null, Is.EqualTo(llama));
            using var scorer = new CtrScorer(model, options: new ScoringOptions { BatchSize = 3 });
            var scores = scorer.Score([.. Prompts.Select(p => new CtrRequest(p))]);
            using var plain = LlamaModel.Load(ModelPaths.Stories260K, backend);
            using var plainScorer = new CtrScorer(plain);
            var unbiased = plainScorer.Score([new CtrRequest(Prompts[0])]);
            Assert.That(Math.Abs(unbiased[0].LogitYes - scores[0].LogitYes), Is.GreaterThan(1e-2), "the biases change the scores");
            for (int i = 0; i < Prompts.Length; i++)
            {
                var (ids, yes, no) = Expected(model.Tokenizer, PromptTemplate.Vicuna, Prompts[i]);
                using var session = model.CreateSession(ids.Length);
                var logits = session.Forward(ids);
                Assert.That(scores[i].LogitYes, Is.EqualTo(logits[yes]).Within(2e-4), $"prompt {i}: logit_yes");
                Assert.That(scores[i].LogitNo, Is.EqualTo(logits[no]).Within(2e-4), $"prompt {i}: logit_no");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    private sealed class SyncProgress(Action<WorkProgress> report) : IProgress<WorkProgress>
    {
        public void Report(WorkProgress value) => report(value);
    }
}
