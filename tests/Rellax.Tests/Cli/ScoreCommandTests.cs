using System.Text.Json;
using NUnit.Framework;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;
using Rellax.Tests.Model;

namespace Rellax.Tests.Cli;

/// <summary>
/// <c>rellax score</c> as a user runs it, on stories260K: with no adapter, and with a random CFLoRA + SPA adapter written
/// in the SPEC §6 file format. The scores must equal the library's <see cref="CtrScorer.Score"/> on the same requests;
/// every bad input must fail with one line naming FILE:LINE and leave no output (an existing output file untouched).
/// </summary>
[TestFixture]
public sealed class ScoreCommandTests
{
    private const int Rank = 4, InstanceDim = 16, EmbedDim = 8;
    private string _dir = null!;
    private string _model = null!;
    private string _adapter = null!;
    private int _layers, _hidden, _qOut, _kvOut;

    [OneTimeSetUp]
    public void WriteAdapter()
    {
        _model = ModelPaths.Stories260KOrIgnore();
        _dir = Directory.CreateTempSubdirectory("rellax-score-").FullName;
        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(_model, "config.json"))))
        {
            var c = config.RootElement;
            _layers = c.GetProperty("num_hidden_layers").GetInt32();
            _hidden = c.GetProperty("hidden_size").GetInt32();
            int headDim = c.GetProperty("head_dim").GetInt32();
            _qOut = c.GetProperty("num_attention_heads").GetInt32() * headDim;
            _kvOut = c.GetProperty("num_key_value_heads").GetInt32() * headDim;
        }
        _adapter = Path.Combine(_dir, "cflora-spa");
        WriteAdapter(_adapter, generators: true, projector: true);
    }

    [OneTimeTearDown] public void Clean() { if (_dir is not null) Directory.Delete(_dir, recursive: true); }

    /// <summary>
    /// A random adapter on q_proj and v_proj of every layer (r = 4), with CFLoRA generators (d_h = 16) and an SPA projector
    /// (E = 8) when asked, in the PEFT/ReLLaX layout of SPEC §6 (names with <c>.default</c>, as PEFT saves them).
    /// </summary>
    private void WriteAdapter(string dir, bool generators, bool projector)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), JsonSerializer.Serialize(new
        {
            peft_type = "LORA", task_type = "CAUSAL_LM", base_model_name_or_path = "stories260K", r = Rank, lora_alpha = 8,
            lora_dropout = 0.05, bias = "none", target_modules = new[] { "q_proj", "v_proj" },
            rellax = new { instance_dim = generators ? InstanceDim : (int?)null, crm_embed_dim = projector ? EmbedDim : (int?)null },
        }, new JsonSerializerOptions { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull }));
        var w = new Rellax.Runtime.SafeTensorsWriter();
        int seed = 100;
        void Add(string name, params int[] shape) =>
            w.Add<float>(name, SafeTensorDType.F32, shape, RandomData.Uniform(RandomData.Product(shape), seed++, -0.3f, 0.3f));
        for (int layer = 0; layer < _layers; layer++)
            foreach (var (module, dOut) in new[] { ("q_proj", _qOut), ("v_proj", _kvOut) })
            {
                string p = $"base_model.model.model.layers.{layer}.self_attn.{module}";
                Add($"{p}.lora_A.default.weight", Rank, _hidden);
                Add($"{p}.lora_B.default.weight", dOut, Rank);
                if (!generators) continue;
                Add($"{p}.lora_gate.0.weight", InstanceDim);
                Add($"{p}.lora_gate.0.bias", InstanceDim);
                Add($"{p}.lora_gate.1.weight", 2 * Rank * Rank, InstanceDim);
                Add($"{p}.lora_gate.1.bias", 2 * Rank * Rank);
                Add($"{p}.lora_gate.3.weight", Rank * Rank, 2 * Rank * Rank);
                Add($"{p}.lora_gate.3.bias", Rank * Rank);
            }
        if (projector)
        {
            Add("ctr_input_embedding_prj.0.weight", _hidden, EmbedDim);
            Add("ctr_input_embedding_prj.0.bias", _hidden);
            Add("ctr_input_embedding_prj.2.weight", _hidden, _hidden);
            Add("ctr_input_embedding_prj.2.bias", _hidden);
        }
        w.Save(Path.Combine(dir, "adapter_model.safetensors"));
    }

    private static (int Code, string Out, string Err) Run(params string[] args) => RellaxCommandTests.Run(args);

    private static float[] Vec(int n, int seed) => RandomData.Uniform(n, seed);

    /// <summary>An SPA + CFLoRA request line: <paramref name="hist"/> [hist] markers and a [target] marker.</summary>
    private static object SpaRequest(object id, int hist, int seed) => new
    {
        id,
        prompt = "The user watched " + string.Concat(Enumerable.Range(0, hist).Select(i => $"{i}. Movie {i} ({i % 5 + 1} stars)[hist], ")) +
                 "Will the user like ***The Target***[target]? Answer yes or no.",
        instance = Vec(InstanceDim, seed),
        hist_embeddings = Enumerable.Range(0, hist).Select(i => Vec(EmbedDim, seed * 100 + i)).ToArray(),
        target_embedding = Vec(EmbedDim, seed + 7),
    };

    /// <summary>The library's scores for the input file's requests (read with the same reader the command uses).</summary>
    private CtrScore[] LibraryScores(string input, string? adapterDir, string template = "vicuna", Kernels.AttentionPrecision attention = Kernels.AttentionPrecision.Fp32)
    {
        using var cpu = new CpuBackend(threads: 1);
        using var model = LlamaModel.Load(_model, cpu);
        var adapter = adapterDir is null ? null : RellaxAdapter.Load(adapterDir, model.Config);
        using var scorer = new CtrScorer(model, adapter, new ScoringOptions { Template = PromptTemplate.Parse(template), Attention = attention });
        using var reader = JsonLinesReader.Open(input, "input file");
        var requests = Rellax.Cli.ScoreRequestsFile.Read(reader).Select(e => e.Request).ToList();
        return scorer.Score(requests);
    }

    private static void AssertScoresMatch(string[] lines, IReadOnlyList<object> ids, CtrScore[] expected)
    {
        Assert.That(lines, Has.Length.EqualTo(expected.Length), "one output line per request");
        for (int i = 0; i < lines.Length; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            var root = doc.RootElement;
            Assert.That(root.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "id", "p_yes", "logit_yes", "logit_no" }), $"line {i + 1}");
            Assert.That(root.GetProperty("id").GetRawText(), Is.EqualTo(JsonSerializer.Serialize(ids[i])), $"line {i + 1}: the id is echoed as given");
            double p = root.GetProperty("p_yes").GetDouble();
            float yes = root.GetProperty("logit_yes").GetSingle(), no = root.GetProperty("logit_no").GetSingle();
            Assert.That(p, Is.InRange(0.0, 1.0), $"line {i + 1}");
            Assert.That(p, Is.EqualTo(1 / (1 + Math.Exp((double)no - yes))).Within(1e-6), $"line {i + 1}: p_yes = softmax([no, yes])[1]");
            // Same backend, same threads, same requests: only the batch the scorer forms may differ (float rounding).
            Assert.That(yes, Is.EqualTo(expected[i].LogitYes).Within(1e-4), $"line {i + 1}: logit_yes");
            Assert.That(no, Is.EqualTo(expected[i].LogitNo).Within(1e-4), $"line {i + 1}: logit_no");
            Assert.That(p, Is.EqualTo(expected[i].PYes).Within(1e-5), $"line {i + 1}: p_yes");
        }
    }

    [Test]
    public void ScoresWithoutAnAdapterEqualTheLibraryAndEchoIdsOfEveryJsonType()
    {
        object?[] idValues = [0, "u1-t2", 2.5, null, new { user = 3, item = new[] { 4, 5 } }, new object[] { 1, "a" }, true, -9007199254740993L];
        string input = Path.Combine(_dir, "plain.jsonl"), output = Path.Combine(_dir, "plain-out.jsonl");
        var lines = idValues.Select((id, i) => JsonSerializer.Serialize(new
        {
            id,
            prompt = i % 2 == 0 ? $"Once upon a time there was a girl number {i}. Did she like the park?" : "Lily saw a dog.",
        })).ToList();
        lines.Insert(3, "");
        File.WriteAllLines(input, lines);
        var (code, stdout, stderr) = Run("score", "--input", input, "--output", output, "--backend", "cpu", "--threads", "1", "--batch-size", "3", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        using (var summary = JsonDocument.Parse(stdout))
        {
            var s = summary.RootElement;
            Assert.That(s.GetProperty("count").GetInt32(), Is.EqualTo(idValues.Length));
            Assert.That(s.GetProperty("backend").GetString(), Is.EqualTo("cpu"));
            Assert.That(s.GetProperty("attention").GetString(), Is.EqualTo("fp32"));
            Assert.That(s.GetProperty("template").GetString(), Is.EqualTo("vicuna"));
            Assert.That(s.GetProperty("tokens").GetInt64(), Is.GreaterThan(idValues.Length * 30L), "the vicuna preamble alone is over 30 tokens");
            Assert.That(s.GetProperty("tokens_per_second").GetDouble(), Is.GreaterThan(0));
        }
        var expected = LibraryScores(input, null);
        var echoed = idValues.Select(v => v is null ? (object)JsonDocument.Parse("null").RootElement : v).ToList();
        AssertScoresMatch(File.ReadAllLines(output), echoed, expected);
        Assert.That(expected.Select(e => e.PYes).Distinct().Count(), Is.GreaterThan(1), "different prompts, different scores");
    }

    [Test]
    public void WithoutOutputTheScoresGoToStdoutAndTheSummaryToStderr()
    {
        string input = Path.Combine(_dir, "stdout.jsonl");
        File.WriteAllLines(input, [
            """{"id": "a", "prompt": "Tom had a ball."}""",
            """{"id": "b", "prompt": "The sun was hot and the cat slept."}""",
        ]);
        var (code, stdout, stderr) = Run("score", "--input", input, "--template", "none", "--backend", "cpu", "--threads", "1", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        AssertScoresMatch(lines, ["a", "b"], LibraryScores(input, null, "none"));
        using var summary = JsonDocument.Parse(stderr.Trim());
        Assert.That(summary.RootElement.GetProperty("count").GetInt32(), Is.EqualTo(2));
        Assert.That(summary.RootElement.GetProperty("template").GetString(), Is.EqualTo("none"));
    }

    [Test]
    public void Int8AttentionScoresEqualTheLibrarysInt8Scores()
    {
        string input = Path.Combine(_dir, "int8.jsonl"), output = Path.Combine(_dir, "int8-out.jsonl");
        var requests = Enumerable.Range(0, 5).Select(i => SpaRequest($"q{i}", hist: i, seed: 40 + i)).ToList();
        File.WriteAllLines(input, requests.Select(r => JsonSerializer.Serialize(r)));
        var (code, stdout, stderr) = Run("score", "--input", input, "--output", output, "--adapter", _adapter, "--attention", "int8",
            "--backend", "cpu", "--threads", "1", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        using (var summary = JsonDocument.Parse(stdout))
        {
            Assert.That(summary.RootElement.GetProperty("attention").GetString(), Is.EqualTo("int8"));
            Assert.That(summary.RootElement.GetProperty("adapter_parts").GetString(), Is.EqualTo("cflora+spa"));
        }
        AssertScoresMatch(File.ReadAllLines(output), Enumerable.Range(0, 5).Select(i => (object)$"q{i}").ToList(),
            LibraryScores(input, _adapter, attention: Kernels.AttentionPrecision.Int8));
    }

    [Test]
    public void CfloraAndSpaScoresEqualTheLibraryAndDoNotDependOnTheBatchSize()
    {
        string input = Path.Combine(_dir, "spa.jsonl");
        var requests = Enumerable.Range(0, 9).Select(i => SpaRequest(i % 3 == 0 ? $"r{i}" : i, hist: i % 4, seed: i + 1)).ToList();
        File.WriteAllLines(input, requests.Select(r => JsonSerializer.Serialize(r)));
        var expected = LibraryScores(input, _adapter);
        var ids = Enumerable.Range(0, 9).Select(i => i % 3 == 0 ? (object)$"r{i}" : i).ToList();
        foreach (var (batch, maxTokens) in new[] { ("1", "8192"), ("4", "8192"), ("16", "8192"), ("16", "200") })
        {
            string output = Path.Combine(_dir, $"spa-out-{batch}-{maxTokens}.jsonl");
            var (code, _, stderr) = Run("score", "--input", input, "--output", output, "--adapter", _adapter, "--batch-size", batch,
                "--max-batch-tokens", maxTokens, "--backend", "cpu", "--threads", "1");
            Assert.That(code, Is.EqualTo(0), stderr);
            Assert.That(stderr, Does.Contain("cflora+spa"));
            AssertScoresMatch(File.ReadAllLines(output), ids, expected);
        }
        Assert.That(expected.Select(e => e.PYes).Distinct().Count(), Is.GreaterThan(1));
    }

    /// <summary>Each bad request, on line 3 of an otherwise good file (a blank line 2 included).</summary>
    private static IEnumerable<TestCaseData> BadRequests()
    {
        string longPrompt = string.Concat(Enumerable.Repeat("Once upon a time there was a little girl. ", 120));
        yield return new TestCaseData("""{"id": 5, "prompt": "x", }""", true, new[] { "not valid JSON at byte 26", "comma" }).SetName("MalformedJson");
        yield return new TestCaseData("""{"id": 5}""", true, new[] { "\"prompt\"" }).SetName("MissingPrompt");
        yield return new TestCaseData("""{"id": 5, "prompt": "x", "instance": [1, "a"]}""", true, new[] { "\"instance\"[1]" }).SetName("IllTypedInstance");
        yield return new TestCaseData(JsonSerializer.Serialize(new { id = 5, prompt = "no instance" }), true, new[] { "instance" }).SetName("MissingInstanceWithCflora");
        yield return new TestCaseData(JsonSerializer.Serialize(new { id = 5, prompt = "short instance", instance = new float[InstanceDim - 1] }), true,
            new[] { "instance", $"{InstanceDim}", $"{InstanceDim - 1}" }).SetName("WrongInstanceLength");
        yield return new TestCaseData(JsonSerializer.Serialize(new
        {
            id = 5, prompt = "a (4 stars)[hist], b (3 stars)[hist], c[target]", instance = new float[InstanceDim],
            hist_embeddings = new[] { new float[EmbedDim] }, target_embedding = new float[EmbedDim],
        }), true, new[] { "2 [hist]", "hist_embeddings" }).SetName("MoreMarkersThanEmbeddings");
        yield return new TestCaseData(JsonSerializer.Serialize(new
        {
            id = 5, prompt = "a[hist] c[target]", instance = new float[InstanceDim],
            hist_embeddings = new[] { new float[EmbedDim + 2] }, target_embedding = new float[EmbedDim],
        }), true, new[] { $"{EmbedDim}", $"{EmbedDim + 2}" }).SetName("WrongEmbeddingLength");
        yield return new TestCaseData(JsonSerializer.Serialize(new { id = 5, prompt = longPrompt }), false,
            new[] { "max_position_embeddings", "512" }).SetName("PromptLongerThanMaxPositions");
        yield return new TestCaseData(JsonSerializer.Serialize(new { id = 5, prompt = "a movie[target]" }), false, new[] { "[target]" }).SetName("MarkerWithoutSpaAdapter");
    }

    [TestCaseSource(nameof(BadRequests))]
    public void BadInputNamesFileAndLineAndLeavesAnExistingOutputAlone(string badLine, bool withAdapter, string[] mentions)
    {
        string name = TestContext.CurrentContext.Test.Name;
        string input = Path.Combine(_dir, $"bad-{name}.jsonl"), output = Path.Combine(_dir, $"bad-{name}-out.jsonl");
        object good = withAdapter ? SpaRequest(1, 2, 3) : new { id = 1, prompt = "A good line." };
        File.WriteAllLines(input, [JsonSerializer.Serialize(good), "", badLine, JsonSerializer.Serialize(good)]);
        const string previous = "{\"id\": \"from an earlier run\"}\n";
        File.WriteAllText(output, previous);
        var args = new List<string> { "score", "--input", input, "--output", output, "--backend", "cpu", "--threads", "1" };
        if (withAdapter) args.AddRange(["--adapter", _adapter]);
        var (code, stdout, stderr) = Run([.. args]);
        Assert.That(code, Is.Not.EqualTo(0), stderr);
        Assert.That(stdout, Is.Empty);
        TestContext.Out.WriteLine(stderr.TrimEnd());
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), stderr);
        Assert.That(stderr, Does.StartWith($"rellax: {input}:3: "));
        foreach (string m in mentions) Assert.That(stderr, Does.Contain(m));
        Assert.That(File.ReadAllText(output), Is.EqualTo(previous), "a failed run leaves the old output as it was");
        Assert.That(Directory.GetFiles(_dir, "*.tmp-*"), Is.Empty, "no temporary file left");

        // Without a previous file, nothing appears at --output.
        File.Delete(output);
        (code, _, _) = Run([.. args]);
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(File.Exists(output), Is.False);
    }

    [Test]
    public void APlainLoraAdapterNeedsNoInstanceAndRefusesMarkers()
    {
        string lora = Path.Combine(_dir, "lora");
        WriteAdapter(lora, generators: false, projector: false);
        string input = Path.Combine(_dir, "lora.jsonl"), output = Path.Combine(_dir, "lora-out.jsonl");
        File.WriteAllLines(input, ["""{"id": 1, "prompt": "Lily had a red ball."}""", """{"id": 2, "prompt": "Tom ran.", "instance": [1, 2]}"""]);
        var (code, _, stderr) = Run("score", "--input", input, "--output", output, "--adapter", lora, "--backend", "cpu", "--threads", "1");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stderr, Does.Contain("adapter lora]"));
        AssertScoresMatch(File.ReadAllLines(output), [1, 2], LibraryScores(input, lora));
        var plain = LibraryScores(input, null);
        Assert.That(File.ReadAllLines(output).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("p_yes").GetDouble()),
            Is.Not.EqualTo(plain.Select(p => p.PYes)), "the adapter changes the scores");

        File.AppendAllLines(input, ["""{"id": 3, "prompt": "A film[target]", "target_embedding": [1, 2, 3, 4, 5, 6, 7, 8]}"""]);
        (code, _, stderr) = Run("score", "--input", input, "--output", output, "--adapter", lora, "--backend", "cpu", "--threads", "1");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.StartWith($"rellax: {input}:3: id 3: ").And.Contain("[target]"));
    }

    [Test]
    public void AnInputOfBlankLinesGivesAnEmptyOutput()
    {
        string input = Path.Combine(_dir, "blank.jsonl"), output = Path.Combine(_dir, "blank-out.jsonl");
        File.WriteAllText(input, "\n   \n\t\n");
        File.WriteAllText(output, "stale");
        var (code, stdout, stderr) = Run("score", "--input", input, "--output", output, "--backend", "cpu", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        using (var summary = JsonDocument.Parse(stdout)) Assert.That(summary.RootElement.GetProperty("count").GetInt32(), Is.EqualTo(0));
        Assert.That(File.ReadAllText(output), Is.Empty, "a successful run replaces the old file");
    }

    [Test]
    public void MissingFilesAndBadOptionsFailBeforeLoadingAnything()
    {
        string input = Path.Combine(_dir, "ok.jsonl");
        File.WriteAllLines(input, ["""{"id": 1, "prompt": "x"}"""]);
        var (code, _, stderr) = Run("score", "--input", Path.Combine(_dir, "nope.jsonl"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("nope.jsonl"));
        (code, _, stderr) = Run("score", "--input", input, "--output", Path.Combine(_dir, "no-such-dir", "out.jsonl"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("no-such-dir"));
        (code, _, stderr) = Run("score", "--input", input, "--batch-size", "0");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("--batch-size"));
        (code, _, stderr) = Run("score", "--input", input, "--max-batch-tokens", "0");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("--max-batch-tokens"));
        (code, _, stderr) = Run("score", "--input", input, "--template", "chatml");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.Contain("chatml"));
        (code, _, stderr) = Run("score", "--input", input, "--adapter", Path.Combine(_dir, "no-adapter"), "--backend", "cpu");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(stderr, Does.StartWith("rellax: ").And.Contain("no-adapter"));
    }

    /// <summary>Runs <c>rellax</c> in this process (so <see cref="Rellax.Cli.ScoreCommand.ChunkRequests"/> applies) with
    /// chunks of <paramref name="chunk"/> requests; returns the exit code, stderr and the most requests held at once.</summary>
    private static (int Code, string Err, int Held) RunChunked(int chunk, params string[] args)
    {
        var saved = Console.Error;
        using var err = new StringWriter();
        Console.SetError(err);
        Rellax.Cli.ScoreCommand.ChunkRequests = chunk;
        try
        {
            int code = Rellax.Cli.RellaxCli.Run(args);
            return (code, err.ToString(), Rellax.Cli.ScoreCommand.MostRequestsHeld);
        }
        finally
        {
            Rellax.Cli.ScoreCommand.ChunkRequests = 0;
            Console.SetError(saved);
        }
    }

    private static string[] StoryLines(int n, int first = 0) => [.. Enumerable.Range(first, n).Select(i => JsonSerializer.Serialize(new
    {
        id = $"s{i}",
        prompt = string.Concat(Enumerable.Repeat("Once upon a time ", i % 5 + 1)) + $"girl number {i} saw a dog. Did she like it?",
    }))];

    [Test, NonParallelizable] // sets the process-wide ScoreCommand.ChunkRequests
    public void ManyChunksGiveTheLibrarysScoresHoldingAtMostOneChunk()
    {
        string input = Path.Combine(_dir, "chunks.jsonl");
        var lines = StoryLines(11).ToList();
        lines.Insert(4, "");
        File.WriteAllLines(input, lines);
        var ids = Enumerable.Range(0, 11).Select(i => (object)$"s{i}").ToList();
        string[] common = ["score", "--model", _model, "--input", input, "--template", "none", "--backend", "cpu", "--threads", "1"];

        string output = Path.Combine(_dir, "chunks-out.jsonl");
        var (code, err, held) = RunChunked(3, [.. common, "--output", output, "--batch-size", "2", "--json"]);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(held, Is.EqualTo(3), "11 requests in chunks of 3: never more than 3 held, and a full chunk was");
        AssertScoresMatch(File.ReadAllLines(output), ids, LibraryScores(input, null, "none"));

        // One prompt per batch: the batches are the same whatever the chunks, so the bytes are the same as a one-chunk run.
        string single = Path.Combine(_dir, "chunks-single.jsonl"), chunked = Path.Combine(_dir, "chunks-chunked.jsonl");
        (code, err, held) = RunChunked(0, [.. common, "--output", single, "--batch-size", "1"]);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(held, Is.EqualTo(11), "the default chunk (64 × --batch-size) holds the whole short file");
        (code, err, held) = RunChunked(2, [.. common, "--output", chunked, "--batch-size", "1"]);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(held, Is.EqualTo(2));
        Assert.That(File.ReadAllBytes(chunked), Is.EqualTo(File.ReadAllBytes(single)));
    }

    [Test]
    public void ABadLineAfterManyGoodOnesFailsBeforeAnyOutput()
    {
        // 400 good lines (over 6 default chunks at --batch-size 1) and a bad one: nothing may reach stdout.
        string input = Path.Combine(_dir, "late-bad.jsonl");
        File.WriteAllLines(input, [.. StoryLines(400), """{"id": "bad", "prompt": "a movie[target]"}"""]);
        var (code, stdout, stderr) = Run("score", "--input", input, "--template", "none", "--batch-size", "1", "--backend", "cpu", "--threads", "1");
        Assert.That(code, Is.EqualTo(1), stderr);
        Assert.That(stdout, Is.Empty, "validated before anything is scored or written");
        Assert.That(stderr, Does.StartWith($"rellax: {input}:401: id \"bad\"").And.Contain("[target]"));
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), stderr);
    }

    /// <summary>Makes a FIFO and writes <paramref name="lines"/> into it from another thread (the writer blocks until
    /// the command opens it).</summary>
    private string Fifo(string name, IEnumerable<string> lines, out Task writer)
    {
        string fifo = Path.Combine(_dir, name);
        using (var mk = System.Diagnostics.Process.Start("mkfifo", fifo)) mk.WaitForExit();
        Assume.That(File.Exists(fifo), "mkfifo is needed");
        writer = Task.Run(() => File.WriteAllLines(fifo, lines));
        return fifo;
    }

    [Test, NonParallelizable] // sets the process-wide ScoreCommand.ChunkRequests
    public void AFifoInputIsReadOnceInChunks()
    {
        var lines = StoryLines(7);
        string copy = Path.Combine(_dir, "fifo-copy.jsonl"), output = Path.Combine(_dir, "fifo-out.jsonl");
        File.WriteAllLines(copy, lines);
        string fifo = Fifo("requests.fifo", lines, out var writer);
        var (code, err, held) = RunChunked(2, "score", "--model", _model, "--input", fifo, "--output", output, "--template", "none",
            "--backend", "cpu", "--threads", "1", "--batch-size", "2", "--json");
        Assert.That(writer.Wait(TimeSpan.FromSeconds(30)), Is.True);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(held, Is.EqualTo(2));
        AssertScoresMatch(File.ReadAllLines(output), Enumerable.Range(0, 7).Select(i => (object)$"s{i}").ToList(), LibraryScores(copy, null, "none"));

        // A bad line in a FIFO fails with its chunk, named by line; --output (a regular file) is still not written.
        string badOutput = Path.Combine(_dir, "fifo-bad-out.jsonl");
        fifo = Fifo("bad.fifo", [.. StoryLines(5), """{"id": 9, "prompt": "x[target]"}"""], out writer);
        (code, err, _) = RunChunked(2, "score", "--model", _model, "--input", fifo, "--output", badOutput, "--template", "none",
            "--backend", "cpu", "--threads", "1");
        Assert.That(writer.Wait(TimeSpan.FromSeconds(30)), Is.True);
        Assert.That(code, Is.EqualTo(1), err);
        Assert.That(err, Does.StartWith($"rellax: {fifo}:6: id 9: ").And.Contain("[target]"));
        Assert.That(File.Exists(badOutput), Is.False);
        Assert.That(Directory.GetFiles(_dir, "*.tmp-*"), Is.Empty);
    }

    [Test]
    public void HelpShowsTheFormatsAndExamples()
    {
        var (code, stdout, stderr) = Run("score", "--help");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("\"hist_embeddings\"").And.Contain("\"p_yes\"").And.Contain("Examples:")
            .And.Contain("rellax score --input").And.Contain("--template <vicuna|none>").And.Contain("--adapter"));
    }
}
