using BenchmarkDotNet.Attributes;
using Rellax.Kernels;
using Rellax.Kernels.Cpu;
using Rellax.Rec;

namespace Rellax.Benchmarks;

/// <summary>
/// The pipeline's stages around the model on real MovieLens-100K (100,000 ratings, 95,285 samples, a 9,529-sample test
/// split): reading the raw files, building ReLLa samples, saving and loading the prepared folder, rendering K = 30
/// prompts with SPA markers, SUBR-30 over the test split through the batched kernel (a random 512-d table over the 1,682
/// items: the pipeline's gathering of histories plus the kernel), and a DIN (E = 32, tower 3 × 128) over the test split.
/// The data is read from <c>shared/data/movielens/ml-100k</c> (never copied into the repository): set
/// <c>RELLAX_SHARED_DATA</c> or run from a checkout beside <c>shared/</c>.
/// </summary>
[MemoryDiagnoser]
public class PipelineBenchmarks
{
    private string _raw = null!;
    private string _folder = null!;
    private RatingDataset _data = null!;
    private SampleSet _set = null!;
    private List<ReLLaSample> _test = null!;
    private ReLLaPromptBuilder _builder = null!;
    private int[][] _recent = null!;
    private CpuBackend _backend = null!;
    private SubrIndex _index = null!;
    private DinModel _din = null!;

    [GlobalSetup]
    public void Setup()
    {
        _raw = Path.Combine(SharedData(), "movielens", "ml-100k");
        _data = DatasetReader.Read(DatasetKind.MovieLens100K, _raw);
        _set = ReLLaSamples.Build(_data);
        _test = _set.InSplit(SampleSplit.Test).ToList();
        _builder = new ReLLaPromptBuilder(_set, new PromptOptions { SpaMarkers = true });
        _recent = SampleRetrieval.Recent(_set, _test, 30);
        _folder = Path.Combine(Directory.CreateTempSubdirectory("rellax-bench-prepared-").FullName, "ml100k");
        PreparedDataset.Save(_set, _folder);
        _backend = new CpuBackend();
        var rng = new Random(1);
        var vectors = new float[_data.Items.Count * 512];
        for (int i = 0; i < vectors.Length; i++) vectors[i] = (float)(rng.NextDouble() * 2 - 1);
        _index = SubrIndex.Build(_backend, vectors, _data.Items.Count, 512);
        _din = DinModel.CreateRandom(DinConfig.For(_data), seed: 1);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _index.Dispose();
        _backend.Dispose();
        Directory.Delete(Path.GetDirectoryName(_folder)!, recursive: true);
    }

    /// <summary>u.data, u.item, u.user → <see cref="RatingDataset"/>.</summary>
    [Benchmark]
    public int ReadRawFiles() => DatasetReader.Read(DatasetKind.MovieLens100K, _raw).Ratings.Length;

    /// <summary>Global sort, histories, the &gt;= 5 rule, the 8:1:1 split.</summary>
    [Benchmark]
    public int BuildSamples() => ReLLaSamples.Build(_data).Samples.Count;

    /// <summary>The prepared folder, written atomically.</summary>
    [Benchmark]
    public void SavePrepared() => PreparedDataset.Save(_set, _folder);

    /// <summary>The prepared folder, read and validated.</summary>
    [Benchmark]
    public int LoadPrepared() => PreparedDataset.Load(_folder).Samples.Count;

    /// <summary>9,529 recent-30 prompts with SPA markers.</summary>
    [Benchmark]
    public long BuildTestPrompts()
    {
        long chars = 0;
        for (int i = 0; i < _test.Count; i++) chars += _builder.Build(_test[i], _recent[i]).Text.Length;
        return chars;
    }

    /// <summary>SUBR-30 for the 9,529 test samples (histories of 5 to 736 events) on a 1,682 × 512 table.</summary>
    [Benchmark]
    public int RetrieveSubrTestSplit() => SampleRetrieval.Subr(_index, _set, _test, 30).Length;

    /// <summary>DIN h_u for the 9,529 test samples (30-event histories) plus every item's embedding.</summary>
    [Benchmark]
    public int DinFeaturizeTestSplit() => _din.Featurize(_backend, _set, _test).StateDim;

    private static string SharedData()
    {
        if (Environment.GetEnvironmentVariable("RELLAX_SHARED_DATA") is { Length: > 0 } env) return env;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared", "data");
            if (Directory.Exists(Path.Combine(candidate, "movielens", "ml-100k"))) return candidate;
        }
        throw new DirectoryNotFoundException("shared/data/movielens/ml-100k was not found; set RELLAX_SHARED_DATA");
    }
}
