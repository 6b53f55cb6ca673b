using System.Text.Json.Nodes;
using NUnit.Framework;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;
using Rellax.Tests.Model;

namespace Rellax.Tests.Runtime;

/// <summary>
/// A plain LoRA adapter loaded from disk means what PEFT means by it: scoring stories260K with the adapter equals scoring
/// a copy of stories260K whose weights were merged here, <c>W' = W0 + scale · B A</c> (scale = alpha/r, or alpha/√r with
/// rsLoRA), A [r, d_in], B [d_out, r]. This checks the loader's orientation and scale conventions end to end through
/// <see cref="CtrScorer"/>.
/// </summary>
[TestFixture]
public sealed class RellaxAdapterScoringTests
{
    private string _tmp = "";

    [SetUp]
    public void SetUp()
    {
        _tmp = Path.Combine(Path.GetTempPath(), "rellax-adapter-score-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_tmp);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_tmp, recursive: true); } catch (IOException) { }
    }

    private static readonly string[] Prompts =
    [
        "Lily liked the red ball. Will she like the blue ball?",
        "Tom had a big dog.",
        "Once upon a time, there was a little girl who loved to play in the park with her friends.",
    ];

    [TestCase(false, "q_proj,v_proj")]
    [TestCase(true, "all-linear")]
    public void ScoresWithTheAdapterEqualScoresOfTheMergedModel(bool rsLora, string targets)
    {
        string src = ModelPaths.Stories260KOrIgnore();
        LlamaConfig config = LlamaConfig.Load(src);
        string[] modules = targets == "all-linear"
            ? ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            : targets.Split(',');
        const int R = 4;
        const double Alpha = 6;
        double scale = rsLora ? Alpha / Math.Sqrt(R) : Alpha / R;

        // The adapter, written in PEFT layout.
        var rng = new Random(31);
        var adapter = new Dictionary<string, (int[] Shape, float[] Data)>();
        for (int layer = 0; layer < config.NumHiddenLayers; layer++)
            foreach (string m in modules)
            {
                var d = AdapterKit.Dims(config, m);
                string p = AdapterKit.Prefix(layer, m, d.Section);
                adapter[p + "lora_A.weight"] = ([R, d.In], Gaussian(rng, R * d.In, 0.15));
                adapter[p + "lora_B.weight"] = ([d.Out, R], Gaussian(rng, d.Out * R, 0.15));
            }
        JsonNode targetNode = targets == "all-linear" ? JsonValue.Create("all-linear")! : AdapterKit.List(modules);
        string adapterDir = AdapterKit.Write(Path.Combine(_tmp, "adapter"),
            AdapterKit.Config(R, Alpha, targetNode, ("use_rslora", rsLora)), adapter);

        // The merged model: every file of stories260K, with W0 + scale·B·A (in double) for the adapted weights.
        string merged = Path.Combine(_tmp, "merged");
        Directory.CreateDirectory(merged);
        foreach (string f in Directory.GetFiles(src).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(merged, Path.GetFileName(f)));
        var weights = new Dictionary<string, (int[] Shape, float[] Data)>();
        using (SafeTensorsFile file = SafeTensorsFile.Open(Path.Combine(src, "model.safetensors")))
        {
            foreach ((string name, SafeTensorInfo info) in file.Tensors)
                weights[name] = (info.Shape, file.ReadFloat32(name));
        }
        foreach ((string name, (int[] shape, float[] a)) in adapter.Where(kv => kv.Key.EndsWith("lora_A.weight", StringComparison.Ordinal)))
        {
            string stem = name[..^"lora_A.weight".Length];
            float[] b = adapter[stem + "lora_B.weight"].Data;
            string w0Name = stem["base_model.model.".Length..] + "weight";
            (int[] w0Shape, float[] w0) = weights[w0Name];
            int dOut = w0Shape[0], dIn = w0Shape[1];
            Assert.That(shape, Is.EqualTo(new[] { R, dIn }), w0Name);
            var w = new float[w0.Length];
            for (int o = 0; o < dOut; o++)
                for (int i = 0; i < dIn; i++)
                {
                    double s = 0;
                    for (int k = 0; k < R; k++) s += (double)b[o * R + k] * a[k * dIn + i];
                    w[o * dIn + i] = (float)(w0[o * dIn + i] + scale * s);
                }
            weights[w0Name] = (w0Shape, w);
        }
        Model.SafeTensorsWriter.Write(Path.Combine(merged, "model.safetensors"), weights);

        using var backend = new CpuBackend();
        using var baseModel = LlamaModel.Load(src, backend);
        using var mergedModel = LlamaModel.Load(merged, backend);
        RellaxAdapter loaded = RellaxAdapter.Load(adapterDir, baseModel.Config);
        Assert.That(loaded.Targets, Has.Count.EqualTo(config.NumHiddenLayers * modules.Length));

        CtrRequest[] requests = [.. Prompts.Select(p => new CtrRequest(p))];
        CtrScore[] withAdapter, ofMerged, ofBase;
        using (var scorer = new CtrScorer(baseModel, loaded)) withAdapter = scorer.Score(requests);
        using (var scorer = new CtrScorer(mergedModel)) ofMerged = scorer.Score(requests);
        using (var scorer = new CtrScorer(baseModel)) ofBase = scorer.Score(requests);

        for (int i = 0; i < requests.Length; i++)
        {
            TestContext.Out.WriteLine($"prompt {i}: adapter logit_yes {withAdapter[i].LogitYes:F6} merged {ofMerged[i].LogitYes:F6} base {ofBase[i].LogitYes:F6}; "
                + $"p_yes {withAdapter[i].PYes:F6} / {ofMerged[i].PYes:F6} / {ofBase[i].PYes:F6}");
            Assert.Multiple(() =>
            {
                Assert.That(withAdapter[i].LogitYes, Is.EqualTo(ofMerged[i].LogitYes).Within(1e-3), $"prompt {i}: logit_yes");
                Assert.That(withAdapter[i].LogitNo, Is.EqualTo(ofMerged[i].LogitNo).Within(1e-3), $"prompt {i}: logit_no");
                Assert.That(withAdapter[i].PYes, Is.EqualTo(ofMerged[i].PYes).Within(1e-4), $"prompt {i}: p_yes");
            });
        }
        // The comparison means something only if the adapter moves the logits well beyond the tolerance.
        double moved = Enumerable.Range(0, requests.Length).Max(i => Math.Abs(ofMerged[i].LogitYes - ofBase[i].LogitYes));
        Assert.That(moved, Is.GreaterThan(0.05), "the adapter barely changes the logits; the test would not see a wrong scale or orientation");
    }

    private static float[] Gaussian(Random rng, int n, double std)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++)
            v[i] = (float)(std * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return v;
    }
}
