using Rellax.Kernels.Cpu;
using Rellax.Runtime;
using System.Diagnostics;
using Rellax.Rec;
using Rellax.Runtime.Training;
using TorchSharp;
using static TorchSharp.torch;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Rellax.Benchmarks;

/// <summary>
/// DIN training, ours against a TorchSharp autograd trainer of the same model (<c>--crm-training DATA_DIR EPOCHS THREADS</c>),
/// and one epoch of ours on a synthetic ML-1M-sized set (<c>--crm-ml1m THREADS</c>).
/// </summary>
/// <remarks>
/// Both sides start from the same initial weights (ours, copied into torch tensors), see the same batches in the same
/// order (one seeded shuffle per epoch), use AdamW (β 0.9/0.999, ε 1e-8) with the same lr and weight decay, the same
/// batch size and the same number of threads (torch.set_num_threads). The torch side is the reference's form: histories
/// padded to K with a 0/1 mask, attention over the concatenation [t, h, t − h, t ⊙ h], f32. The padded input tensors are
/// built once for the whole split (not per batch), so the torch epoch time is the model's forward, backward and
/// optimizer only, as ours is. Each side is scored on the test split after the last epoch (no selection).
/// </remarks>
public static class CrmTrainingComparison
{
    public static void Run(string dataDir, int epochs, int threads, int k = 30, int batchSize = 256, float lr = 1e-3f, double initStd = 1)
    {
        var set = PreparedDataset.Load(dataDir);
        var config = DinConfig.For(set.Dataset, 32);
        var encoding = DinEncoding.Create(config, set.Dataset);
        var train = DinTraining.Encode(encoding, set, SampleSplit.Train, k);
        var test = DinTraining.Encode(encoding, set, SampleSplit.Test, k);
        Console.WriteLine($"CPU: {Cpu()}; threads {threads}; {train.Count} train samples, batch {batchSize}, K {k}, E 32, lr {lr}, {epochs} epochs");

        using var cpu = new CpuBackend(threads);
        using var ours = new DinTrainer(cpu, config, train, null, batchSize, seed: 42, embeddingInitStd: initStd);
        var initial = ours.Parameters.ToDictionary(p => p.Name, p => (float[])p.Value.Clone());
        var options = new TrainingOptions { Epochs = epochs, BatchSize = batchSize, LearningRate = lr, Patience = 0, Seed = 42 };
        var loop = new TrainingLoop(ours, options);
        var ourSeconds = new List<double>();
        var ourCpu = new List<double>();
        var cpuMark = CpuSeconds();
        loop.EpochCompleted += r =>
        {
            ourSeconds.Add(r.Seconds);
            double now = CpuSeconds();
            ourCpu.Add(now - cpuMark);
            cpuMark = now;
        };
        loop.Run();
        var ourTest = ours.Evaluate(test);

        torch.set_num_threads(threads);
        var torchModel = new TorchDinTrainer(config, initial, k);
        var torchSeconds = new List<double>();
        var torchCpu = new List<double>();
        var order = Enumerable.Range(0, train.Count).ToArray();
        var random = new Random(options.Seed);
        using (var data = torchModel.Pad(train))
        using (var opt = torch.optim.AdamW(torchModel.Parameters, lr: lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0))
        {
            for (int epoch = 0; epoch < epochs; epoch++)
            {
                random.Shuffle(order);
                var clock = Stopwatch.StartNew();
                double cpu0 = CpuSeconds();
                for (int first = 0; first < order.Length; first += batchSize)
                {
                    using var scope = torch.NewDisposeScope();
                    int count = Math.Min(batchSize, order.Length - first);
                    var idx = torch.tensor(order.AsSpan(first, count).ToArray().Select(i => (long)i).ToArray(), dtype: int64);
                    opt.zero_grad();
                    var logits = torchModel.Forward(data, idx);
                    var loss = nn.functional.binary_cross_entropy_with_logits(logits, data.Labels.index_select(0, idx));
                    loss.backward();
                    opt.step();
                }
                torchSeconds.Add(clock.Elapsed.TotalSeconds);
                torchCpu.Add(CpuSeconds() - cpu0);
            }
        }
        double torchAuc;
        using (var data = torchModel.Pad(test))
        using (torch.no_grad())
        {
            var p = new double[test.Count];
            for (int first = 0; first < test.Count; first += 1024)
            {
                using var scope = torch.NewDisposeScope();
                int count = Math.Min(1024, test.Count - first);
                var logits = torchModel.Forward(data, torch.arange(first, first + count, dtype: int64));
                var z = logits.data<float>().ToArray();
                for (int i = 0; i < count; i++) p[first + i] = 1 / (1 + Math.Exp(-(double)z[i]));
            }
            torchAuc = CtrMetrics.Compute(p, [.. test.Labels.Select(l => l > 0)]).Auc;
        }
        Console.WriteLine("| epoch | rellax wall (s) | torchsharp wall (s) | wall torch / rellax | rellax CPU (s) | torchsharp CPU (s) | CPU torch / rellax |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|");
        for (int e = 0; e < epochs; e++)
            Console.WriteLine($"| {e + 1} | {ourSeconds[e]:F2} | {torchSeconds[e]:F2} | {torchSeconds[e] / ourSeconds[e]:F2}x | {ourCpu[e]:F2} | {torchCpu[e]:F2} | {torchCpu[e] / ourCpu[e]:F2}x |");
        double medOurs = Median(ourSeconds), medTorch = Median(torchSeconds);
        Console.WriteLine($"median epoch wall: rellax {medOurs:F2} s ({train.Count / medOurs:F0} samples/s), torchsharp {medTorch:F2} s ({train.Count / medTorch:F0} samples/s): {medTorch / medOurs:F2}x");
        Console.WriteLine($"median epoch CPU time: rellax {Median(ourCpu):F2} s, torchsharp {Median(torchCpu):F2} s: {Median(torchCpu) / Median(ourCpu):F2}x");
        Console.WriteLine($"test AUC after {epochs} epochs: rellax {ourTest.Auc:F4}, torchsharp {torchAuc:F4} (difference {ourTest.Auc - torchAuc:+0.0000;-0.0000})");
    }

    /// <summary>One epoch of ours on random ML-1M-shaped inputs: 1M samples, 6040 users, 3706 items, MovieLens-1M's
    /// profile fields and genres, K = 30 (every sample a full window), random labels (speed only).</summary>
    public static void RunMl1mSized(int threads, int batchSize = 256)
    {
        const int samples = 1_000_000, users = 6040, items = 3706, k = 30;
        var config = new DinConfig
        {
            EmbedDim = 32,
            Fields =
            [
                new DinField("user", users), new DinField("item", items), new DinField("gender", 3, ["F", "M"]),
                new DinField("age", 8, [.. Enumerable.Range(0, 7).Select(i => $"a{i}")]), new DinField("job", 22, [.. Enumerable.Range(0, 21).Select(i => $"j{i}")]),
                new DinField("genre", 19, [.. Enumerable.Range(0, 18).Select(i => $"g{i}")]),
            ],
            RatingValues = [1, 2, 3, 4, 5],
        };
        var random = new Random(1);
        var fieldRows = new int[samples * 6];
        int[] offsets = [.. Enumerable.Range(0, 6).Select(config.FieldOffset)];
        for (int s = 0; s < samples; s++)
            for (int f = 0; f < 6; f++) fieldRows[s * 6 + f] = offsets[f] + random.Next(config.Fields[f].VocabularySize);
        var starts = new int[samples + 1];
        for (int s = 0; s < samples; s++) starts[s + 1] = starts[s] + k;
        var itemRows = new int[samples * k];
        var ratingRows = new int[samples * k];
        for (int p = 0; p < itemRows.Length; p++) { itemRows[p] = offsets[1] + random.Next(items); ratingRows[p] = config.RatingOffset + random.Next(5); }
        var labels = new float[samples];
        for (int s = 0; s < samples; s++) labels[s] = random.Next(2);
        var data = new DinEncodedSamples(samples, fieldRows, starts, itemRows, ratingRows, labels, [.. Enumerable.Range(0, samples)]);
        using var cpu = new CpuBackend(threads);
        using var trainer = new DinTrainer(cpu, config, data, null, batchSize, seed: 1);
        var loop = new TrainingLoop(trainer, new TrainingOptions { Epochs = 1, BatchSize = batchSize, Patience = 0 });
        double seconds = 0;
        loop.EpochCompleted += r => seconds = r.Seconds;
        loop.Run();
        Console.WriteLine($"CPU: {Cpu()}; threads {threads}; synthetic ML-1M-sized epoch: {samples} samples, batch {batchSize}, K {k}, E 32: {seconds:F1} s, {samples / seconds:F0} samples/s");
    }

    /// <summary>CPU time of the whole process (user + system), in seconds.</summary>
    private static double CpuSeconds() => Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }

    private static string Cpu() =>
        File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?" : "?";
}

/// <summary>The DIN in TorchSharp autograd (f32), written as the reference does: padded histories with a mask.</summary>
internal sealed class TorchDinTrainer
{
    private readonly DinConfig _config;
    private readonly int _k;
    private readonly Dictionary<string, TorchSharp.Modules.Parameter> _p = [];

    public TorchDinTrainer(DinConfig config, Dictionary<string, float[]> initial, int k)
    {
        _config = config;
        _k = k;
        foreach (var (name, shape) in DinModel.TensorShapes(config))
            _p[name] = new TorchSharp.Modules.Parameter(torch.tensor(initial[name], [.. shape.Select(d => (long)d)], dtype: float32));
    }

    public IEnumerable<TorchSharp.Modules.Parameter> Parameters => _p.Values;

    /// <summary>A split as padded tensors: X [S, F], ids / ratings [S, K] (padding: row 0), mask [S, K], labels [S].</summary>
    public sealed class Padded(TorchTensor x, TorchTensor ids, TorchTensor ratings, TorchTensor mask, TorchTensor labels) : IDisposable
    {
        public TorchTensor X { get; } = x;
        public TorchTensor Ids { get; } = ids;
        public TorchTensor Ratings { get; } = ratings;
        public TorchTensor Mask { get; } = mask;
        public TorchTensor Labels { get; } = labels;

        public void Dispose()
        {
            X.Dispose(); Ids.Dispose(); Ratings.Dispose(); Mask.Dispose(); Labels.Dispose();
        }
    }

    public Padded Pad(DinEncodedSamples s)
    {
        int f = _config.Fields.Count;
        var ids = new long[(long)s.Count * _k];
        var ratings = new long[(long)s.Count * _k];
        var mask = new float[(long)s.Count * _k];
        for (int i = 0; i < s.Count; i++)
            for (int j = 0; j < s.Starts[i + 1] - s.Starts[i]; j++)
            {
                ids[(long)i * _k + j] = s.ItemRows[s.Starts[i] + j];
                ratings[(long)i * _k + j] = s.RatingRows[s.Starts[i] + j];
                mask[(long)i * _k + j] = 1;
            }
        return new Padded(torch.tensor(s.FieldRows.Select(v => (long)v).ToArray(), [s.Count, f]), torch.tensor(ids, [s.Count, _k]),
            torch.tensor(ratings, [s.Count, _k]), torch.tensor(mask, [s.Count, _k]), torch.tensor(s.Labels));
    }

    public TorchTensor Forward(Padded data, TorchTensor idx)
    {
        int e = _config.EmbedDim, fields = _config.Fields.Count;
        var table = _p[DinModel.TableName];
        var x = data.X.index_select(0, idx);
        long b = x.shape[0];
        var feat = table.index_select(0, x.flatten()).view(b, fields, e);
        var ids = data.Ids.index_select(0, idx);
        var hist = torch.cat([table.index_select(0, ids.flatten()).view(b, _k, e), table.index_select(0, data.Ratings.index_select(0, idx).flatten()).view(b, _k, e)], -1);
        hist = nn.functional.relu(nn.functional.linear(hist, _p[DinModel.MapWeight], _p[DinModel.MapBias]));
        var t = feat[.., _config.ItemFieldIndex, ..].unsqueeze(1).expand(-1, _k, -1);
        var a = torch.cat([t, hist, t - hist, t * hist], -1);
        for (int i = 0; i < _config.AttentionSizes.Count; i++)
            a = nn.functional.relu(nn.functional.linear(a, _p[DinModel.AttentionWeight(i)], _p[DinModel.AttentionBias(i)]));
        var s = nn.functional.linear(a, _p[DinModel.ScoreWeight], _p[DinModel.ScoreBias]).squeeze(-1) * data.Mask.index_select(0, idx);
        var u = (s.unsqueeze(-1) * hist).sum(1);
        var h = torch.cat([feat.flatten(1), u], 1);
        for (int i = 0; i < _config.TowerSizes.Count; i++)
            h = nn.functional.relu(nn.functional.linear(h, _p[DinModel.TowerWeight(i)], _p[DinModel.TowerBias(i)]));
        return nn.functional.linear(h, _p[DinModel.OutWeight], _p[DinModel.OutBias]).squeeze(-1);
    }
}
