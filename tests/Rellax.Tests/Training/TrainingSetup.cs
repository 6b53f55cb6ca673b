using System.Runtime.InteropServices;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Runtime;
using Rellax.Runtime.Training;
using Rellax.Tests.Model;

namespace Rellax.Tests.Training;

/// <summary>
/// A model (stories260K, or a synthetic family model written in F32/F16/BF16), a seeded random ReLLaX adapter for it, labelled
/// short prompts, our <see cref="LlamaModel"/> on a 2-thread <see cref="CpuBackend"/>, and <see cref="TorchAdapterOracle"/> over
/// the same weights and adapter. Disposing frees the model and deletes a synthetic model's folder.
/// </summary>
internal sealed class TrainingSetup : IDisposable
{
    private readonly string? _tempDir;
    private readonly CpuBackend _backend;

    private TrainingSetup(string dir, string? tempDir, OracleWeights weights, LlamaModule[] modules, int rank, int? instanceDim, int? crmDim,
        int count, int seed, ModelLoadOptions? load = null)
    {
        _tempDir = tempDir;
        _backend = new CpuBackend(threads: 2);
        try
        {
            Model = LlamaModel.Load(dir, _backend, load);
            var (config, targets, projector) = ScoringOracle.RandomAdapter(Model.Config, seed, modules, rank, instanceDim, crmDim);
            Adapter = RellaxAdapter.Create(config, targets, projector, Model.Config);
            Oracle = new TorchAdapterOracle(OracleConfig.Read(dir), weights, config, targets, projector);
            var rng = new Random(seed + 1);
            Examples = [.. ShortRequests(seed + 2, count, instanceDim, crmDim).Select((r, i) => new CtrExample(r, i < 2 ? i : rng.Next(2)))];
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The embedded stories260K (F32; 5 layers, MHA 8 heads of D = 8, tied head), or the test is ignored without it.</summary>
    public static TrainingSetup Stories(IReadOnlyList<LlamaModule> modules, int rank, int? instanceDim, int? crmDim, int count = 5, int seed = 11)
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        return new TrainingSetup(dir, null, OracleWeights.Read(dir), [.. modules], rank, instanceDim, crmDim, count, seed);
    }

    /// <summary>
    /// stories260K loaded with <c>--weights int8</c> at <paramref name="threshold"/>, and the oracle on the dequantized weights
    /// (every matrix, embedding included, replaced by q · scale_row with the int8 quantizer's q and scale, rounded to f32 as
    /// the kernels read them): the model whose gradient the int8 base's straight-through backward is.
    /// </summary>
    public static TrainingSetup StoriesInt8(IReadOnlyList<LlamaModule> modules, int rank, int? instanceDim, int? crmDim, float threshold,
        int count = 5, int seed = 11)
    {
        string dir = ModelPaths.Stories260KOrIgnore();
        var weights = OracleWeights.Read(dir);
        var dequantized = weights.Dequantized();
        return new TrainingSetup(dir, null, dequantized, [.. modules], rank, instanceDim, crmDim, count, seed,
            new ModelLoadOptions { Weights = WeightFormat.Int8, OutlierThreshold = threshold });
    }

    /// <summary>A synthetic model of <paramref name="spec"/> with weights in <paramref name="dtype"/> (F32, F16, BF16).</summary>
    public static TrainingSetup Synthetic(SyntheticModelSpec spec, string dtype, IReadOnlyList<LlamaModule> modules, int rank, int? instanceDim,
        int? crmDim, int count = 5, int seed = 11)
    {
        ModelPaths.Stories260KOrIgnore();
        var (dir, weights) = SyntheticModel.WriteTemp(spec, seed + 20, dtype);
        try
        {
            return new TrainingSetup(dir, dir, weights, [.. modules], rank, instanceDim, crmDim, count, seed);
        }
        catch
        {
            Directory.Delete(dir, true);
            throw;
        }
    }

    /// <summary>Our model.</summary>
    public LlamaModel Model { get; } = null!;

    /// <summary>The random adapter (LoRA B not zero, so every A gets a gradient).</summary>
    public RellaxAdapter Adapter { get; } = null!;

    /// <summary>The float64 oracle of the same model and adapter.</summary>
    public TorchAdapterOracle Oracle { get; } = null!;

    /// <summary>Labelled prompts of different lengths (the first two labelled 0 and 1).</summary>
    public List<CtrExample> Examples { get; } = [];

    /// <summary>Every example's index.</summary>
    public int[] All => [.. Enumerable.Range(0, Examples.Count)];

    /// <summary>The examples prepared for the oracle.</summary>
    public List<OracleExample> OracleBatch(CtrLoss loss, AdapterTrainingOptions options) =>
        [.. Examples.Select(e => Oracle.Prepare(Model.Tokenizer, e, loss, options))];

    /// <summary>
    /// Short SPA-style prompts (1 to 4 history items with a <c>[hist]</c> marker each when <paramref name="crmDim"/> is given,
    /// a <c>[target]</c> marker), of different lengths (about 30 to 90 tokens), with h_u and CRM embeddings as needed.
    /// </summary>
    public static List<CtrRequest> ShortRequests(int seed, int count, int? instanceDim, int? crmDim)
    {
        string[] titles = ["Heat (1995)", "Casino (1995)", "Nixon (1995)", "Balto (1995)", "Toy Story (1995)", "Sabrina (1995)", "Get Shorty (1995)"];
        var rng = new Random(seed);
        bool markers = crmDim is not null;
        var list = new List<CtrRequest>();
        for (int s = 0; s < count; s++)
        {
            int items = 1 + (s * 3 + seed) % 4;
            var hist = Enumerable.Range(0, items).Select(k => $"'{titles[rng.Next(titles.Length)]} ({1 + rng.Next(5)} stars){(markers ? "[hist]" : "")}'");
            string prompt = $"Watched: {string.Join(", ", hist)}. Will the user like ***{titles[rng.Next(titles.Length)]}***{(markers ? "[target]" : "")}?";
            list.Add(new CtrRequest(prompt,
                instanceDim is { } dh ? ScoringOracle.Uniform(rng, dh, 1.5) : null,
                crmDim is { } e ? [.. Enumerable.Range(0, items).Select(_ => ScoringOracle.Uniform(rng, e, 1.0))] : null,
                crmDim is { } e2 ? ScoringOracle.Uniform(rng, e2, 1.0) : null));
        }
        return list;
    }

    /// <summary>A copy of every weight buffer of <paramref name="model"/> (matrices, norms, biases, RoPE tables), as bytes.</summary>
    public static List<byte[]> WeightBytes(LlamaModel model)
    {
        var w = model.Weights;
        var buffers = new List<DeviceBuffer?> { w.Embedding.Dense, w.FinalNorm, w.LmHead.Dense, w.RopeCos, w.RopeSin };
        foreach (var l in w.Layers)
            buffers.AddRange([l.InputNorm, l.Q.Dense, l.K.Dense, l.V.Dense, l.QBias, l.KBias, l.VBias, l.O.Dense, l.OBias, l.PostAttentionNorm,
                l.Gate.Dense, l.Up.Dense, l.Down.Dense]);
        return [.. buffers.OfType<DeviceBuffer>().Select(Bytes)];

        static byte[] Bytes(DeviceBuffer b) => b.DType switch
        {
            DType.F32 => Copy<float>(b),
            DType.F16 => Copy<Half>(b),
            DType.BF16 => Copy<BFloat16>(b),
            _ => throw new NotSupportedException($"weight buffer of {b.DType}"),
        };

        static byte[] Copy<T>(DeviceBuffer b) where T : unmanaged
        {
            var values = new T[b.Length];
            b.CopyTo<T>(values);
            return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Model?.Dispose();
        _backend.Dispose();
        if (_tempDir is not null && Directory.Exists(_tempDir)) Directory.Delete(_tempDir, true);
    }
}
